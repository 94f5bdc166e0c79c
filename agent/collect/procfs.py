"""The one owner of /proc: its root, every read of it, and the one errno mapping.

`ProcFS` is the node's /proc tree: `HOST_PROC` when set (a container that mounts the
node's /proc elsewhere, tests), else /proc. `ProcFS.process(pid)` is a handle on one
process, in the spirit of psutil's `oneshot()`: it holds an fd of /proc/PID and caches what
it read, so a file several facts share is read once. Every read goes through that fd, and
the kernel answers ESRCH/ENOENT through it once the process it was opened on is gone, even
when the pid was reused (fs/proc/base.c: lookups go through the struct pid, not the
number); a handle therefore never mixes up two processes. Within `ProcFS.cycle()` the same
pid gives the same handle and `walk()` makes one pass over /proc; all is closed at its end.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

from agent.collect.cgroups import parse_cgroup_file
from agent.collect.errors import AccessDenied, CollectError, Missing, ProcessGone
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

# A container controls its cmdline and environ: never read more than this of either.
PROC_FILE_LIMIT = 1 << 20
# mountinfo is written by the kernel, but a node can hold many thousands of mounts.
MOUNTINFO_LIMIT = 16 << 20
# The agent's own process and threads, seen through its own /proc whatever HOST_PROC says.
OWN_PROC = "/proc"
PROC_ROOT_INO = 1  # fs/proc/root.c: the root of every procfs mount
Needs = str | tuple[str, ...] | None  # capabilities that would allow a denied read


def map_oserror(exc: OSError, pid: int | None, what: str, missing: Needs = None) -> CollectError:
    """The one errno mapping: ENOENT/ESRCH of a process -> ProcessGone, EACCES/EPERM ->
    AccessDenied (naming `missing`), ENOENT of anything else -> Missing."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return AccessDenied(pid, what, missing)
    if exc.errno in (errno.ENOENT, errno.ESRCH):
        return ProcessGone(pid, what) if pid is not None else Missing(f"{what} does not exist")
    return CollectError(f"cannot read {what}: {exc.strerror or exc}")


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


def read_bounded(fd: int, limit: int, chunk_size: int = 1 << 16) -> tuple[bytes, bool]:
    """Up to `limit` bytes from `fd`, and whether there was more: a container controls the
    size of what we read, so never read it whole."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, min(chunk_size, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    return data[:limit], len(data) > limit


def read_file(path: str, *, dir_fd: int | None = None, limit: int = PROC_FILE_LIMIT,
              pid: int | None = None, what: str | None = None,
              missing: Needs = None) -> tuple[bytes, bool]:
    """Up to `limit` bytes of `path` (relative to `dir_fd` when given), errno mapped; `what`
    names the file in an error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=dir_fd)
        try:
            return read_bounded(fd, limit)
        finally:
            os.close(fd)
    except OSError as exc:
        raise map_oserror(exc, pid, what or path, missing) from exc


def read_own(name: str, limit: int = PROC_FILE_LIMIT) -> bytes:
    """`name` under the agent's own /proc (`thread-self/status`, `self/fdinfo/3`)."""
    return read_file(f"{OWN_PROC}/{name}", limit=limit)[0]


def own_netns_inode() -> int:
    """The network namespace of the calling thread."""
    return os.stat(f"{OWN_PROC}/thread-self/ns/net").st_ino


def own_thread_count() -> int:
    try:
        return len(os.listdir(f"{OWN_PROC}/self/task"))
    except OSError:
        return 1


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


class ProcFS:
    """The /proc tree of the node: `HOST_PROC` when set (tests, containers), else /proc."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root if root is not None else os.environ.get("HOST_PROC", "/proc")
        self._last_cap: int | None = None
        self._handles: dict[int, ProcessHandle] | None = None  # inside cycle()
        self._walk: ProcWalk | None = None
        self.walks = 0  # passes over /proc made, for the tests that count reads
        # pid -> (inode of /proc/PID, cgroup text) of processes in a container's scope; see
        # `_cgroup_text`. Only on a real procfs (its root is inode 1): a recorded tree's
        # files may be rewritten under the same inode.
        self._container_cgroups: dict[int, tuple[int, str]] = {}
        self._real_procfs: bool | None = None

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
        return [pid for pid, _ in self._pid_dirs()]

    def _pid_dirs(self) -> list[tuple[int, int]]:
        """(pid, inode of /proc/PID): getdents gives both, no stat needed."""
        try:
            with os.scandir(self.root) as entries:
                # isdigit() accepts non-ASCII digits; /proc names are ASCII decimal.
                return [(int(e.name), e.inode()) for e in entries
                        if e.name.isascii() and e.name.isdigit()]
        except OSError as exc:
            raise CollectError(f"cannot list {self.root}: {exc.strerror or exc}") from exc

    def walk(self, *, cgroups: bool = False) -> ProcWalk:
        """Every process's netns inode (and cgroup text); once per cycle when inside one."""
        cached = self._walk
        if cached is not None and (cached.with_cgroups or not cgroups):
            return cached
        self.walks += 1
        entries: list[ProcEntry] = []
        gone = denied = 0
        pid_dirs = self._pid_dirs()
        for pid, inode in pid_dirs:
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
            alive = {pid for pid, _ in pid_dirs}
            for pid in self._container_cgroups.keys() - alive:
                del self._container_cgroups[pid]
        walk = ProcWalk(tuple(entries), cgroups, gone, denied)
        if self._handles is not None:
            self._walk = walk
        return walk

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
