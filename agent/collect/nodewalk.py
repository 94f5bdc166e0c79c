"""The node-wide pass over /proc: every process, its netns and (when asked) its cgroups.

Socket owners need every process of a netns, and the pod -> process mapping needs every
process's cgroups: one pass serves both (`ProcFS.walk` makes it once per audit cycle).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from agent.collect.cgroups import parse_cgroup_file
from agent.collect.errors import CollectError
from agent.collect.fileio import read_file

PROC_ROOT_INO = 1  # fs/proc/root.c: the root of every procfs mount


@dataclass(frozen=True, slots=True)
class ProcEntry:
    """One process seen by the node-wide pass."""

    pid: int
    netns: int | None  # inode of ns/net; None when it could not be read
    cgroup: str | None  # /proc/PID/cgroup text, when asked for and readable


@dataclass(frozen=True, slots=True)
class ProcWalk:
    """One pass over /proc: every process, its netns and (when asked) its cgroups."""

    entries: tuple[ProcEntry, ...]
    with_cgroups: bool
    netns_gone: int  # exited while the pass ran: normal, not a gap
    netns_denied: int  # ns/net refused (needs CAP_SYS_PTRACE): a gap when it matters


def netns_inode(path: str) -> int:
    """The inode of the netns a `ns/net` link names: its text `net:[4026531840]` says it, and
    readlink costs ~30% less than the stat that follows the link (a pass makes thousands).
    A link of another shape (a recorded tree) is stat'ed. Raises OSError."""
    try:
        link = os.readlink(path)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: not a link at all
            raise
        link = ""
    if link.startswith("net:[") and link.endswith("]") and link[5:-1].isdecimal():
        return int(link[5:-1])
    return os.stat(path).st_ino


def pid_dirs(root: str) -> list[tuple[int, int]]:
    """(pid, inode of /proc/PID) under `root`: getdents gives both, no stat needed."""
    try:
        with os.scandir(root) as entries:
            # isdigit() accepts non-ASCII digits; /proc names are ASCII decimal.
            return [(int(e.name), e.inode()) for e in entries
                    if e.name.isascii() and e.name.isdigit()]
    except OSError as exc:
        raise CollectError(f"cannot list {root}: {exc.strerror or exc}") from exc


class NodeWalker:
    """Makes the passes over one /proc tree, keeping the cgroups of containers' processes
    from one pass to the next."""

    def __init__(self, root: str) -> None:
        self.root = root
        # pid -> (inode of /proc/PID, cgroup text) of processes in a container's scope; see
        # `_cgroup_text`. Only on a real procfs (its root is inode 1): a recorded tree's
        # files may be rewritten under the same inode.
        self._container_cgroups: dict[int, tuple[int, str]] = {}
        self._real_procfs: bool | None = None

    def walk(self, *, cgroups: bool = False) -> ProcWalk:
        """Every process's netns inode (and cgroup text)."""
        entries: list[ProcEntry] = []
        gone = denied = 0
        found = pid_dirs(self.root)
        for pid, inode in found:
            try:
                netns: int | None = netns_inode(f"{self.root}/{pid}/ns/net")
            except (FileNotFoundError, ProcessLookupError):
                netns = None  # exited, or a /proc tree without namespaces (fixtures)
            except PermissionError:
                denied, netns = denied + 1, None
            text = self._cgroup_text(pid, inode) if cgroups else None
            if netns is None and text is None and not os.path.isdir(f"{self.root}/{pid}"):
                gone += 1
                continue
            entries.append(ProcEntry(pid, netns, text))
        if cgroups:  # forget the processes that exited
            alive = {pid for pid, _ in found}
            for pid in self._container_cgroups.keys() - alive:
                del self._container_cgroups[pid]
        return ProcWalk(tuple(entries), cgroups, gone, denied)

    def _cgroup_text(self, pid: int, inode: int) -> str | None:
        """/proc/PID/cgroup, or None when gone or unreadable.

        Reading it for every process is most of a pass over a busy node (~10 µs each), and a
        process does not leave its container's scope: runtimes place it before it runs the
        container's program, and nothing moves it out. So the text of a process in a
        container's scope is kept, keyed by the inode of /proc/PID, which a reused pid
        does not share (the dead task's proc dentries are dropped). Processes outside any
        container, which runc may yet move into one, are read every time.
        """
        known = self._container_cgroups.get(pid)
        if known is not None and known[0] == inode:
            return known[1]
        try:
            data, _ = read_file(f"{self.root}/{pid}/cgroup")
        except CollectError:
            return None  # gone or unreadable: not a process we can attribute
        text = data.decode("utf-8", errors="surrogateescape")
        if self._is_real_procfs():
            try:
                in_container = parse_cgroup_file(text).container_id is not None
            except CollectError:
                in_container = False
            if in_container:
                self._container_cgroups[pid] = (inode, text)
        return text

    def _is_real_procfs(self) -> bool:
        if self._real_procfs is None:
            try:
                self._real_procfs = os.stat(self.root).st_ino == PROC_ROOT_INO
            except OSError:
                self._real_procfs = False
        return self._real_procfs
