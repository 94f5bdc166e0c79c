"""The one owner of /proc: its root, and a handle per process that every read goes through.

`ProcFS` is the node's /proc tree: `HOST_PROC` when set (a container that mounts the
node's /proc elsewhere, tests), else /proc. `ProcFS.process(pid)` is a handle on one
process, in the spirit of psutil's `oneshot()`: it holds an fd of /proc/PID and caches what
it read, so a file several facts share is read once. Every read goes through that fd, and
the kernel answers ESRCH/ENOENT through it once the process it was opened on is gone, even
when the pid was reused (fs/proc/base.c: lookups go through the struct pid, not the
number); a handle therefore never mixes up two processes. Within `ProcFS.cycle()` the same
pid gives the same handle and `walk()` makes one pass over /proc; all is closed at its end.
The bounded reads and the errno mapping are `fileio`'s; the node-wide pass is `nodewalk`'s.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from agent.collect.errors import CollectError, ProcessGone
from agent.collect.fileio import PROC_FILE_LIMIT, Needs, map_oserror, read_file
from agent.collect.nodewalk import NodeWalker, ProcWalk, pid_dirs
from agent.collect.procparse import (
    parse_decimal,
    parse_environ,
    parse_id_map,
    parse_nul_list,
    parse_stat,
    parse_status,
)
from agent.collect.text import sanitize
from agent.model import IdMapRange, ProcStat, Status

# mountinfo is written by the kernel, but a node can hold many thousands of mounts.
MOUNTINFO_LIMIT = 16 << 20


class ProcFS:
    """The /proc tree of the node: `HOST_PROC` when set (tests, containers), else /proc."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root if root is not None else os.environ.get("HOST_PROC", "/proc")
        self._last_cap: int | None = None
        self._handles: dict[int, ProcessHandle] | None = None  # inside cycle()
        self._walk: ProcWalk | None = None
        self._walker = NodeWalker(self.root)  # keeps containers' cgroups across passes
        self.walks = 0  # passes over /proc made, for the tests that count reads

    @contextmanager
    def cycle(self) -> Iterator[ProcFS]:
        """One audit: each pid's handle and the node-wide pass are made once, closed after."""
        outer = self._handles is not None
        if not outer:
            self._handles = {}
        try:
            yield self
        finally:
            if not outer:
                handles, self._handles, self._walk = self._handles or {}, None, None
                for handle in handles.values():
                    handle.close()

    def process(self, pid: int) -> ProcessHandle:
        """A handle on `pid`; ProcessGone when there is no such process. Inside `cycle()`
        the same handle each time (do not close it); else the caller closes it."""
        if self._handles is None:
            return ProcessHandle(self, pid)
        handle = self._handles.get(pid)
        if handle is None:
            handle = self._handles[pid] = ProcessHandle(self, pid)
        return handle

    def exists(self, pid: int) -> bool:
        return pid > 0 and os.path.isdir(f"{self.root}/{pid}")

    def is_own_pid_namespace(self) -> bool:
        """Whether this tree's pids are ours: its `self` is our pid (a recorded tree, or a
        /proc mounted from another pid namespace, says otherwise or nothing)."""
        try:
            return os.readlink(f"{self.root}/self") == str(os.getpid())
        except OSError:
            return False

    def pids(self) -> list[int]:
        return [pid for pid, _ in pid_dirs(self.root)]

    def walk(self, *, cgroups: bool = False) -> ProcWalk:
        """Every process's netns inode (and cgroup text); once per cycle when inside one."""
        cached = self._walk
        if cached is not None and (cached.with_cgroups or not cgroups):
            return cached
        self.walks += 1
        walk = self._walker.walk(cgroups=cgroups)
        if self._handles is not None:
            self._walk = walk
        return walk

    def read_cap_last_cap(self) -> int:
        if self._last_cap is None:
            data = self.read_sys("kernel/cap_last_cap")
            self._last_cap = parse_decimal(data.decode("ascii", "replace").strip(),
                                           "cap_last_cap")
        return self._last_cap

    def read_sys(self, name: str) -> bytes:
        """/proc/sys/`name`; the net/ ones answer for the CALLING THREAD's netns. Missing
        when the kernel has no such file."""
        return read_file(f"{self.root}/sys/{name}", limit=64)[0]


class ProcessHandle:
    """One process: an fd of /proc/PID and what has been read through it (psutil's oneshot).

    Raises ProcessGone / AccessDenied / ParseError / CollectError, never OSError.
    """

    def __init__(self, proc: ProcFS, pid: int) -> None:
        self.proc = proc
        self.pid = pid
        if pid <= 0:
            raise ProcessGone(pid)
        try:
            self._dir: int | None = os.open(f"{proc.root}/{pid}",
                                            os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise map_oserror(exc, pid, f"{proc.root}/{pid}") from exc
        self._cache: dict[str, object] = {}
        self._root_fd: int | None = None
        self.reads: dict[str, int] = {}  # file -> times read or opened, for tests to count

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for fd in (self._root_fd, self._dir):
            if fd is not None:
                os.close(fd)
        self._root_fd = self._dir = None

    def where(self, name: str) -> str:
        return f"{self.proc.root}/{self.pid}/{name}"

    def _fd(self) -> int:
        if self._dir is None:
            raise CollectError(f"the handle of process {self.pid} is closed")
        return self._dir

    def read(self, name: str, *, limit: int = PROC_FILE_LIMIT,
             missing: Needs = None) -> tuple[bytes, bool]:
        """Up to `limit` bytes of /proc/PID/`name`, and whether there was more (uncached)."""
        self.reads[name] = self.reads.get(name, 0) + 1
        return read_file(name, dir_fd=self._fd(), limit=limit, pid=self.pid,
                         what=self.where(name), missing=missing)

    def read_text(self, name: str, *, limit: int = PROC_FILE_LIMIT) -> str:
        data, truncated = self.read(name, limit=limit)
        if truncated:
            raise CollectError(f"{self.where(name)} is larger than {limit} bytes")
        return data.decode("utf-8", errors="surrogateescape")

    def stat(self) -> ProcStat:
        found = self._cache.get("stat")
        if not isinstance(found, ProcStat):
            found = self._cache["stat"] = parse_stat(self.read("stat", limit=4096)[0])
        return found

    def start_time(self) -> int:
        return self.stat().start_time

    def comm(self) -> str:
        return self.stat().comm

    def status(self) -> Status:
        found = self._cache.get("status")
        if not isinstance(found, Status):
            text = self.read_text("status")
            found = self._cache["status"] = parse_status(text, self.proc.read_cap_last_cap())
        return found

    def cmdline(self) -> tuple[str, ...]:
        return parse_nul_list(self.read("cmdline")[0])

    def environ(self) -> tuple[tuple[str, str], ...]:
        # environ is mode 0400 for its owner and also needs PTRACE_MODE_READ access (proc(5)).
        data, _ = self.read("environ", missing=("SYS_PTRACE", "DAC_READ_SEARCH"))
        return parse_environ(data)

    def exe(self) -> str:
        """The executable's path; a replaced or deleted binary keeps its name (no suffix)."""
        self.reads["exe"] = self.reads.get("exe", 0) + 1
        try:
            target = os.readlink("exe", dir_fd=self._fd())
        except OSError as exc:
            # Reading /proc/PID/exe needs PTRACE_MODE_READ_FSCREDS (proc(5)).
            raise map_oserror(exc, self.pid, self.where("exe"), "SYS_PTRACE") from exc
        return sanitize(target.removesuffix(" (deleted)"), 4096)

    def uid_map(self) -> tuple[IdMapRange, ...]:
        return parse_id_map(self.read_text("uid_map"))

    def gid_map(self) -> tuple[IdMapRange, ...]:
        return parse_id_map(self.read_text("gid_map"))

    def mountinfo(self) -> str:
        return self.read_text("mountinfo", limit=MOUNTINFO_LIMIT)

    def cgroup(self) -> str:
        return self.read_text("cgroup")

    def root_fd(self) -> int:
        """An O_PATH fd of /proc/PID/root (the process's root, in its mount namespace), opened
        once; the handle closes it."""
        if self._root_fd is None:
            self._root_fd = self._open("root", os.O_PATH | os.O_DIRECTORY, "SYS_PTRACE")
        return self._root_fd

    def open_netns(self) -> int:
        """An fd of ns/net (the caller closes it): it pins the netns even if PID exits."""
        # ns/net of another user's process needs ptrace read access (PTRACE_MODE_READ_FSCREDS).
        return self._open("ns/net", os.O_RDONLY, "SYS_PTRACE")

    def netns_inode(self) -> int:
        try:
            return os.stat("ns/net", dir_fd=self._fd()).st_ino
        except OSError as exc:
            raise map_oserror(exc, self.pid, self.where("ns/net"), "SYS_PTRACE") from exc

    def open_fd_dir(self) -> int:
        """A directory fd of /proc/PID/fd (the caller closes it)."""
        # fd/ is mode 0500 for its owner, and readlink needs ptrace access (proc(5)).
        return self._open("fd", os.O_RDONLY | os.O_DIRECTORY, ("SYS_PTRACE", "DAC_READ_SEARCH"))

    def _open(self, name: str, flags: int, missing: Needs) -> int:
        self.reads[name] = self.reads.get(name, 0) + 1
        try:
            return os.open(name, flags | os.O_CLOEXEC, dir_fd=self._fd())
        except OSError as exc:
            raise map_oserror(exc, self.pid, self.where(name), missing) from exc
