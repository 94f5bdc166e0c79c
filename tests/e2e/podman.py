"""podman with storage, run state and configuration owned by the test run.

`--root`/`--runroot`/`--tmpdir` under a temporary directory: nothing lands in
/var/lib/containers, and runs from parallel worktrees never see each other's pods or images.
`CONTAINERS_CONF` points at a containers.conf the run writes (never /etc): podman's default
rlimits need CAP_SYS_RESOURCE, which this sandbox does not give, so `default_ulimits = []`;
the OCI runtime is runc, the one scripts/bootstrap installs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from e2e.image import (
    ENTRYPOINT,
    SANDBOX_ENTRYPOINT,
    SANDBOX_IMAGE_NAME,
    SANDBOX_USER,
    WORKDIR,
    Image,
)

CONTAINERS_CONF = """[containers]
default_ulimits = []
[engine]
runtime = "runc"
events_logger = "file"
"""
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


class PodmanError(RuntimeError):
    pass


@dataclass(frozen=True)
class PlayedPod:
    name: str
    pod_id: str
    container: str  # podman's container name: <pod>-<container>
    container_id: str
    pid: int
    netns_inode: int  # with `--network none` podman pins no /run/netns file: processes hold it


def playable_copy(manifest: Mapping[str, Any], name: str, image: str,
                  env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What `podman kube play` can run, keeping every securityContext and volume mount.

    - `ports` go: kube play would publish each containerPort on the host.
    - probes go: kube play turns them into healthchecks that need systemd timers.
    - the projected service-account volume goes: kube play 4.3 supports only hostPath,
      configMap, emptyDir and PVC volumes.
    - each emptyDir is renamed `<pod>-<volume>`: kube play makes a named podman volume per
      emptyDir name, which another pod with the same volume name would reuse.
    opaudit still gets the original manifest as `--pod-spec`.
    """
    pod = copy.deepcopy(dict(manifest))
    pod.pop("status", None)
    pod["metadata"] = {"name": name, "labels": dict(pod["metadata"].get("labels", {}))}
    projected = {v["name"] for v in pod["spec"].get("volumes", []) if "projected" in v}
    pod["spec"]["volumes"] = [{**v, "name": f"{name}-{v['name']}"}
                              for v in pod["spec"].get("volumes", []) if "projected" not in v]
    for container in pod["spec"]["containers"]:
        container["image"] = image
        container.pop("ports", None)
        for probe in PROBES:
            container.pop(probe, None)
        container["volumeMounts"] = [{**m, "name": f"{name}-{m['name']}"}
                                     for m in container.get("volumeMounts", [])
                                     if m["name"] not in projected]
        if env:
            container["env"] = [*container.get("env", []),
                                *({"name": k, "value": v} for k, v in env.items())]
    return pod


class Podman:
    def __init__(self, workdir: Path, prefix: str) -> None:
        self.store = workdir / "podman"
        self.store.mkdir(mode=0o700)
        self.conf = self.store / "containers.conf"
        self.conf.write_text(CONTAINERS_CONF)
        self.prefix = prefix
        self.image = f"localhost/{prefix}-spark-operator:e2e"
        self.pods: list[PlayedPod] = []
        self._count = 0

    def cmd(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        argv = ["podman", "--root", str(self.store / "root"), "--runroot",
                str(self.store / "run"), "--tmpdir", str(self.store / "tmp"), *args]
        env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise PodmanError(f"{' '.join(args[:3])}: {result.stderr.strip()[-800:]}")
        return result.stdout

    def load(self, image: Image) -> None:
        self.cmd("import", "--change", f"USER={image.user}",
                 "--change", f'ENTRYPOINT=["{ENTRYPOINT}"]', "--change", f"WORKDIR={WORKDIR}",
                 str(image.tar), self.image)

    def oci_archives(self, image: Image, directory: Path) -> list[Path]:
        """The app image and the pause image as OCI archives, for `ctr images import`."""
        if not self.cmd("images", "--quiet", SANDBOX_IMAGE_NAME, check=False).strip():
            entrypoint = json.dumps(list(SANDBOX_ENTRYPOINT), separators=(",", ":"))
            self.cmd("import", "--change", f"USER={SANDBOX_USER}", "--change",
                     f"ENTRYPOINT={entrypoint}", str(image.sandbox_tar), SANDBOX_IMAGE_NAME)
        archives = []
        for name in (self.image, SANDBOX_IMAGE_NAME):
            path = directory / f"{len(archives)}.oci.tar"
            self.cmd("save", "--format", "oci-archive", "--output", str(path), name)
            archives.append(path)
        return archives

    def play(self, manifest: Mapping[str, Any], env: Mapping[str, str] | None = None) -> PlayedPod:
        self._count += 1
        name = f"{self.prefix}-{self._count}"
        spec_file = self.store / f"{name}.yaml"
        spec_file.write_text(yaml.safe_dump(playable_copy(manifest, name, self.image, env)))
        # No podman network: the host already uses 192.0.2.0/24, and a netns with only lo
        # is enough; the pod's IP family comes from status.podIPs in --pod-spec.
        self.cmd("kube", "play", "--network", "none", str(spec_file))
        container_name = manifest["spec"]["containers"][0]["name"]
        inspect = json.loads(self.cmd("inspect", f"{name}-{container_name}"))[0]
        pod_info = json.loads(self.cmd("pod", "inspect", name))
        pid = int(inspect["State"]["Pid"])
        if pid <= 0:
            logs = self.cmd("logs", inspect["Name"], check=False)
            raise PodmanError(f"{inspect['Name']} is not running: {logs.strip()}")
        played = PlayedPod(name=name, pod_id=pod_info["Id"], container=inspect["Name"],
                           container_id=inspect["Id"], pid=pid,
                           netns_inode=os.stat(f"/proc/{pid}/ns/net").st_ino)
        self.pods.append(played)
        return played

    def remove(self, played: PlayedPod) -> None:
        self.cmd("pod", "rm", "--force", "--time", "0", played.name)
        self.await_cleanup()
        remove_pod_cgroups(played.pod_id)
        self.cmd("volume", "prune", "--force")  # the pod's emptyDirs (no other pod uses them)

    def await_cleanup(self, timeout: float = 15) -> None:
        """Wait for conmon's `podman --root <ours> container cleanup` processes to end: they run
        after a container exits and can leave the pod's cgroup behind after we removed it."""
        needle = str(self.store).encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and processes_naming(needle):
            time.sleep(0.1)

    def close(self) -> None:
        """Remove every pod, volume and image this run made, then the storage itself."""
        try:
            if (self.store / "root").exists():
                # Pods a failed play left untracked are removed too, their cgroups with them.
                listed = self.cmd("pod", "ps", "--all", "--quiet", "--no-trunc", check=False)
                self.cmd("pod", "rm", "--all", "--force", "--time", "0", check=False)
                self.await_cleanup()
                for pod_id in {*listed.split(), *(p.pod_id for p in self.pods)}:
                    remove_pod_cgroups(pod_id)
                self.cmd("volume", "rm", "--all", "--force", check=False)
                self.cmd("rmi", "--all", "--force", check=False)
        finally:
            shutil.rmtree(self.store, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of this run's is still on the machine: store, mounts, netns, cgroups."""
        found = [str(self.store)] if self.store.exists() else []
        with open("/proc/self/mountinfo") as mounts:
            found += [line.split()[4] for line in mounts if str(self.store) in line]
        ids = [p.pod_id for p in self.pods] + [p.container_id for p in self.pods]
        found += holders_of_netns({p.netns_inode for p in self.pods}, ids)
        found += cgroups_naming(ids)
        return found


def processes_naming(needle: bytes) -> list[int]:
    """Pids (not ours) whose command line contains `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # exited meanwhile, or a kernel thread
    return found


def remove_pod_cgroups(pod_id: str) -> None:
    """podman 4.3 with runc on a hybrid host leaves the pod's cgroup in the unified hierarchy
    after `pod rm` (measured here); it is empty, and ours to remove."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        with contextlib.suppress(FileNotFoundError):
            (hierarchy / "libpod_parent" / pod_id).rmdir()


def holders_of_netns(inodes: set[int], pod_ids: Sequence[str]) -> list[str]:
    """Processes of these pods still in one of these network namespaces (while one is, the
    netns lives). The cgroup must name the pod: a freed nsfs inode number is soon reused."""
    holders = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                inode = (entry / "ns/net").stat().st_ino
                if inode in inodes and any(i in (entry / "cgroup").read_text() for i in pod_ids):
                    holders.append(f"pid {entry.name} in netns {inode}")
            except OSError:
                continue  # exited meanwhile
    return holders


def cgroups_naming(ids: Sequence[str], depth: int = 4) -> list[str]:
    """cgroup directories (any hierarchy, up to `depth` below its root) whose name holds an id."""
    hits: list[str] = []
    if not ids:
        return hits
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for top, dirs, _ in os.walk(hierarchy):
            rel_depth = len(Path(top).relative_to(hierarchy).parts)
            if rel_depth >= depth:
                dirs[:] = []
                continue
            hits += [os.path.join(top, d) for d in dirs if any(i in d for i in ids)]
    return hits
