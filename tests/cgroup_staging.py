"""Real kubepods-style cgroups for tests: what the kubelet and a runtime would create.

On a hybrid host (cgroup v1 controllers plus cgroup v2 at /sys/fs/cgroup/unified) this
makes systemd-driver scopes in the v2 hierarchy and cgroupfs-driver directories in v1
hierarchies, under one directory unique to the test run, moves processes in, and undoes
it all in `close()`: processes go back to the root cgroup, directories are removed.

Never touches the v1 `memory` hierarchy (moving a task there charges it to a new
memcg). v1 `cpuset` starts each new cgroup with empty cpus/mems, which refuses tasks
(ENOSPC), so both are copied from the parent at every new level.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from agent.model import DeclaredContainer, PodRef

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNIFIED = CGROUP_ROOT / "unified"
V1_HIERARCHIES = ("pids", "cpu", "freezer", "systemd", "cpuset")  # never "memory"
_counter = itertools.count()


def random_pod_uid() -> str:
    return str(uuid.uuid4())


def random_container_id() -> str:
    return secrets.token_hex(32)


def random_config_hash() -> str:
    return secrets.token_hex(16)


def declared(
    pod_uid: str, name: str, container_id: str | None, config_hash: str | None = None,
    namespace: str = "default", pod_name: str = "pod",
) -> DeclaredContainer:
    """A DeclaredContainer with only what pod -> process mapping reads filled in."""
    return DeclaredContainer(
        pod=PodRef(namespace=namespace, name=pod_name, uid=pod_uid, config_hash=config_hash),
        container_name=name, container_id=container_id, labels=(), run_as_user=None,
        run_as_group=None, run_as_non_root=None, privileged=None,
        allow_privilege_escalation=None, capabilities_add=(), capabilities_drop=(),
        seccomp_profile=None, read_only_root_filesystem=None, ports=(), probes=(),
        volume_mounts=(), pod_ips=(),
    )


def systemd_scope(
    pod_uid: str, container_id: str, qos: str = "besteffort",
    runtime: str = "cri-containerd", sub: str | None = None,
) -> str:
    """`kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/<runtime>-<id>.scope`.

    The systemd driver escapes the uid's dashes as underscores; `qos=""` is Guaranteed.
    """
    slice_prefix = f"kubepods-{qos}" if qos else "kubepods"
    parts = ["kubepods.slice"]
    if qos:
        parts.append(f"{slice_prefix}.slice")
    parts.append(f"{slice_prefix}-pod{pod_uid.replace('-', '_')}.slice")
    parts.append(f"{runtime}-{container_id}.scope")
    if sub:
        parts.append(sub)
    return "/".join(parts)


def cgroupfs_dir(pod_uid: str, container_id: str, qos: str = "besteffort") -> str:
    """`kubepods/<qos>/pod<uid>/<id>` (cgroupfs driver; `qos=""` is Guaranteed)."""
    return "/".join(p for p in ("kubepods", qos, f"pod{pod_uid}", container_id) if p)


def unavailable_reason() -> str | None:
    """Why this machine cannot stage hybrid kubepods cgroups, or None when it can."""
    if os.geteuid() != 0:
        return "creates cgroups and moves processes: needs root"
    if not (UNIFIED / "cgroup.procs").exists():
        return f"no cgroup v2 hierarchy at {UNIFIED} (hybrid layout expected)"
    for name in V1_HIERARCHIES:
        if not (CGROUP_ROOT / name / "cgroup.procs").exists():
            return f"no cgroup v1 {name} hierarchy at {CGROUP_ROOT / name}"
    return None


class KubepodsCgroups:
    """Creates cgroups below a unique top directory in each hierarchy it is asked for."""

    def __init__(self) -> None:
        self.top = f"opaudit-test-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"
        self.created: list[Path] = []
        self.moved: list[tuple[int, Path]] = []  # (pid, hierarchy mount) to restore

    def path(self, mount: Path, rel: str) -> Path:
        return mount / self.top / rel

    def make(self, mount: Path, rel: str) -> Path:
        current = mount
        for part in [self.top, *Path(rel).parts]:
            parent, current = current, current / part
            if current.exists():
                continue
            current.mkdir()
            self.created.append(current)
            if mount.name == "cpuset":
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (current / knob).write_text((parent / knob).read_text())
        return current

    def move(self, pid: int, mount: Path, rel: str) -> Path:
        target = self.make(mount, rel)
        (target / "cgroup.procs").write_text(f"{pid}\n")
        self.moved.append((pid, mount))
        return target

    def place_v2(self, pid: int, rel: str) -> Path:
        return self.move(pid, UNIFIED, rel)

    def place_v1(self, pid: int, rel: str, hierarchies: Iterable[str] = V1_HIERARCHIES) -> None:
        for name in hierarchies:
            self.move(pid, CGROUP_ROOT / name, rel)

    def procs_files(self, rel_v2: str | None, rel_v1: str | None,
                    hierarchies: Iterable[str] = V1_HIERARCHIES) -> list[Path]:
        """cgroup.procs files (created now) a process can write its own pid to."""
        files = [self.make(UNIFIED, rel_v2) / "cgroup.procs"] if rel_v2 else []
        if rel_v1:
            files += [self.make(CGROUP_ROOT / n, rel_v1) / "cgroup.procs" for n in hierarchies]
        return files

    def leftovers(self) -> list[Path]:
        return [p for p in self.created if p.exists()]

    def close(self) -> None:
        """Undo everything; keeps going past a failure and raises the first one at the end."""
        errors: list[OSError] = []
        for pid, mount in reversed(self.moved):
            try:
                (mount / "cgroup.procs").write_text(f"{pid}\n")
            except OSError as exc:
                if exc.errno != errno.ESRCH:  # ESRCH: it exited, nothing to move
                    errors.append(exc)
        self.moved.clear()
        for directory in sorted(self.created, key=lambda p: len(p.parts), reverse=True):
            try:
                _rmdir(directory)
            except OSError as exc:
                errors.append(exc)
        self.created.clear()
        if errors:
            raise errors[0]


def _rmdir(directory: Path) -> None:
    # A task that has just exited can keep its cgroup busy until it is reaped.
    for _ in range(50):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.05)
    directory.rmdir()


def staged_cgroups() -> Iterator[KubepodsCgroups]:
    tree = KubepodsCgroups()
    try:
        yield tree
    finally:
        tree.close()
