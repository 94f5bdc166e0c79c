"""Facts of one process from /proc: ids, capabilities, status, mounts, passwd, paths."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IdQuad:
    """real, effective, saved, filesystem ids, as the container sees them."""

    real: int
    effective: int
    saved: int
    fs: int


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Raw capability masks from /proc/PID/status, plus the kernel's highest known bit."""

    effective: int
    permitted: int
    inheritable: int
    bounding: int
    ambient: int
    last_cap: int

    @property
    def full_mask(self) -> int:
        return (1 << (self.last_cap + 1)) - 1


@dataclass(frozen=True, slots=True)
class Status:
    """What /proc/PID/status says, ids still in the host's (initial user namespace) view."""

    name: str
    uid: IdQuad
    gid: IdQuad
    groups: tuple[int, ...]
    capabilities: Capabilities
    no_new_privs: bool | None
    seccomp: str | None  # "disabled" | "strict" | "filter"


@dataclass(frozen=True, slots=True)
class ProcStat:
    """What opaudit takes from /proc/PID/stat."""

    comm: str  # sanitised
    start_time: int  # clock ticks after boot: (pid, start_time) names one process for good
    state: str = ""  # field 3: "Z" for a zombie
    ppid: int = 0  # field 4
    kernel_thread: bool = False  # field 9 (flags) holds PF_KTHREAD


@dataclass(frozen=True, slots=True)
class IdMapRange:
    """One line of /proc/PID/uid_map: inside-id, outside-id, count."""

    inside: int
    outside: int
    count: int


@dataclass(frozen=True, slots=True)
class Mount:
    mount_id: int
    parent_id: int
    root: str  # the path inside the source filesystem (a subPath shows here)
    mount_point: str
    fstype: str
    source: str
    readonly: bool


@dataclass(frozen=True, slots=True)
class Filesystem:
    root_readonly: bool | None
    writable_mounts: tuple[str, ...]
    mounts: tuple[Mount, ...]


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True, slots=True)
class PathAccess:
    """Whether the process can write `path`, judged from inside its own root.

    `writable` combines the mount's ro flag, the mode bits against the process's fs uid,
    gid and groups, and CAP_DAC_OVERRIDE. None means it could not be told; `error` says why.
    """

    path: str
    exists: bool | None
    is_dir: bool | None
    on_readonly_mount: bool | None
    writable: bool | None
    error: str | None = None
