"""The lane's container image, built locally (no registry is reachable).

A root filesystem like the Spark Operator image's where opaudit looks: busybox-static for a
shell, `/usr/bin/spark-operator` = the listener stand-in compiled from `listener.c`, passwd
with uid 185 `spark` (home `/nonexistent`, as in apache/spark 4.0), the cert dir and
`/home/spark` owned by 185, `USER 185:185`. runc runs the directory; podman imports its tar.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

SPARK_UID = 185
CERT_DIR = "/etc/k8s-webhook-server/serving-certs"
ENTRYPOINT = "/usr/bin/spark-operator"
WORKDIR = "/opt/spark/work-dir"
LISTENER_SOURCE = Path(__file__).with_name("listener.c")
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
# Mount points the runtimes create inside the root; made here so a read-only root needs no writes.
MOUNT_POINTS = ("proc", "sys", "dev", "tmp", "run", "etc/hosts", "etc/hostname",
                "etc/resolv.conf")
PASSWD = "root:x:0:0:root:/root:/bin/sh\nspark:x:185:185::/nonexistent:/bin/sh\n"
GROUP = "root:x:0:\nspark:x:185:\n"
# The pod sandbox's image for containerd's CRI (its `sandbox_image`): catatonit in pause mode
# (`-P`: sleeps, reaps, exits on SIGTERM/SIGINT), as podman's pods use it, statically linked,
# as the pause user 65535 of registry.k8s.io/pause.
SANDBOX_IMAGE_NAME = "localhost/opaudit-pause:e2e"
SANDBOX_ENTRYPOINT = ("/pause", "-P")
SANDBOX_USER = "65535:65535"
CATATONIT = shutil.which("catatonit") or "/usr/bin/catatonit"


@dataclass(frozen=True)
class Image:
    rootfs: Path  # a directory runc can use as root.path (read-only by the spec)
    tar: Path  # the same tree, for `podman import`
    sandbox_tar: Path  # the pause image's tree, for `podman import`
    user: str = f"{SPARK_UID}:{SPARK_UID}"


def compile_listener(out: Path) -> Path:
    subprocess.run(["gcc", "-static", "-Os", "-Wall", "-Werror", "-o", str(out),
                    str(LISTENER_SOURCE)], check=True, capture_output=True, timeout=120)
    return out


def build_image(workdir: Path) -> Image:
    root = workdir / "rootfs"
    # No /nonexistent: as in the image, uid 185's home does not exist.
    for d in ("bin", "usr/bin", "etc", CERT_DIR.lstrip("/"), "home/spark", WORKDIR.lstrip("/")):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    for applet in ("sh", "sleep", "cat", "ls", "id", "touch"):
        (root / "bin" / applet).symlink_to("busybox")
    compile_listener(root / ENTRYPOINT.lstrip("/"))
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    for name in MOUNT_POINTS:
        target = root / name
        if name in ("proc", "sys", "dev", "tmp", "run"):
            target.mkdir(exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    os.chmod(root, 0o755)
    os.chmod(root / "tmp", 0o1777)
    for owned in (CERT_DIR, "/etc/k8s-webhook-server", "/home/spark"):
        os.chown(root / owned.lstrip("/"), SPARK_UID, SPARK_UID)
    tar = workdir / "rootfs.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(root, arcname=".")
    return Image(rootfs=root, tar=tar, sandbox_tar=build_sandbox_tar(workdir))


def build_sandbox_tar(workdir: Path) -> Path:
    root = workdir / "pause-rootfs"
    for d in ("dev", "proc", "sys", "etc"):
        (root / d).mkdir(parents=True)
    shutil.copy2(CATATONIT, root / SANDBOX_ENTRYPOINT[0].lstrip("/"))
    tar = workdir / "pause.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(root, arcname=".")
    shutil.rmtree(root)
    return tar
