"""The real-runtime lane: one locally built image, podman and runc owned by the test run
(containerd, started on demand from the same image, is in e2e/containerd.py).

Everything is named with a prefix unique to this run (`opa<pid>e<hex>`), so parallel runs
from other worktrees never collide and the "nothing left behind" checks look only at ours.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from e2e.cri import Runc
from e2e.image import Image, build_image
from e2e.podman import Podman, processes_naming
from staging import Stage, leftover_netns

TOOLS = ("podman", "runc", "gcc", "capsh", "nsenter", "ss", "busybox")
_lanes = itertools.count()


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "starts containers with podman and runc: needs root (CI runs as root)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"scripts/bootstrap installs {', '.join(missing)}; not found on PATH"
    return None


@dataclass
class Lane:
    prefix: str
    workdir: Path
    image: Image
    podman: Podman
    runc: Runc
    stage: Stage

    def leftovers(self) -> list[str]:
        return (traces(self.prefix) + self.podman.leftovers() + self.runc.leftovers()
                + leftover_netns())

    def close(self) -> None:
        try:
            self.podman.close()
        finally:
            try:
                self.runc.close()
            finally:
                self.stage.close()
                shutil.rmtree(self.workdir, ignore_errors=True)


def new_prefix() -> str:
    return f"opa{os.getpid()}e{next(_lanes)}{secrets.token_hex(2)}"


def traces(prefix: str) -> list[str]:
    """Anything on the machine named with `prefix`: temp dirs, mounts, cgroup trees, and
    processes (conmon, runc, containers) whose command line names the lane's directory."""
    found = [str(p) for p in Path(tempfile.gettempdir()).glob(f"{prefix}-*")]
    found += [str(top) for h in Path("/sys/fs/cgroup").iterdir()
              for top in h.glob(f"{prefix}-*kubepods")]  # runc's and each containerd's
    with open("/proc/self/mountinfo") as mounts:
        found += [line.split()[4] for line in mounts if prefix in line]
    return found + [f"pid {pid}" for pid in processes_naming(prefix.encode())]


def open_lane(prefix: str | None = None) -> Lane:
    prefix = prefix or new_prefix()
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    workdir.chmod(0o711)  # the containers' uid 185 must reach the rootfs and emptyDirs below
    stage = Stage()
    podman = runc = None
    try:
        image = build_image(workdir)
        podman = Podman(workdir, prefix)
        podman.load(image)
        runc = Runc(workdir, prefix, image)
        return Lane(prefix, workdir, image, podman, runc, stage)
    except (OSError, subprocess.SubprocessError, RuntimeError):
        for part in (podman, runc, stage):
            if part is not None:
                part.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
