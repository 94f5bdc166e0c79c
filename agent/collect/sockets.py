"""The processes holding given sockets, from the fd tables of a netns's processes.

Only the processes in the target network namespaces are read: `/proc/PID/fd/*` symlinks,
or a BPF iterator when there are many (`fditer`). The sockets themselves are dumped by
`sockdiag`.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from agent.collect import fditer
from agent.collect.errors import CollectError, ProcessGone
from agent.collect.fditer import FdIterUnavailable
from agent.collect.fileio import map_oserror
from agent.collect.procfs import ProcessHandle, ProcFS
from agent.model import FdReader, OwnerReader, SocketOwner

MAX_FD_GAP = 256  # fd numbers tried in vain before listing /proc/PID/fd instead
# Fewer fds than this in the target netns's processes: readlink (~3-4.5 µs each) costs less
# than the BPF iterator's one-time read of the kernel's BTF (~40 ms).
ITERATOR_MIN_FDS = 10_000
ReaderSetting = Literal["auto", "proc", "bpf"]
READER_SETTINGS: tuple[ReaderSetting, ...] = ("auto", "proc", "bpf")
READER_VARIABLE = "OPAUDIT_FD_READER"


@dataclass(frozen=True, slots=True)
class OwnerScan:
    owners: Mapping[int, tuple[SocketOwner, ...]]  # socket inode -> holders
    processes_gone: int  # exited during the scan: normal, not a gap
    processes_denied: int  # EACCES on ns/net, fd/ or stat: a gap (needs CAP_SYS_PTRACE)
    reader: OwnerReader = OwnerReader("proc", "no socket to look for")

    @property
    def fd_reader(self) -> FdReader:
        return self.reader.reader

    @property
    def iterator_error(self) -> str | None:
        """Why the BPF iterator was not used, when it was wanted."""
        return self.reader.why if self.reader.fallback else None


@lru_cache(maxsize=1)
def fd_reader_setting() -> ReaderSetting:
    """OPAUDIT_FD_READER, read once per process: auto (default; also when empty), proc
    (never BPF) or bpf (whatever the fd count). ValueError for anything else: the command
    line says so in one line (exit 2) rather than guess."""
    value = os.environ.get(READER_VARIABLE) or "auto"
    for setting in READER_SETTINGS:
        if value == setting:
            return setting
    raise ValueError(f"{READER_VARIABLE}={value!r} is not one of {', '.join(READER_SETTINGS)}")


def scan_socket_owners(inodes: Collection[int], netns_inodes: int | Collection[int],
                       proc: ProcFS | None = None,
                       reader: ReaderSetting | None = None) -> OwnerScan:
    """The holders of the sockets, among processes of the given network namespaces: the
    cycle's one pass over /proc (`ProcFS.walk`) says which processes those are, and only
    their fd tables are read (socket inodes are host-unique).

    Each fd table is read by readlink of /proc/PID/fd/N, or, when those tables hold at least
    ITERATOR_MIN_FDS fds and the kernel lets us, by the BPF iterator of `fditer` (same
    answer, a few % of the cost). `reader` overrides OPAUDIT_FD_READER.
    """
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    if not wanted:
        return OwnerScan({}, 0, 0)
    proc = proc if proc is not None else ProcFS()
    targets = {netns_inodes} if isinstance(netns_inodes, int) else set(netns_inodes)
    setting = reader or fd_reader_setting()
    found: dict[int, list[SocketOwner]] = {}
    with proc.cycle():
        walk = proc.walk()
        gone, denied = 0, walk.netns_denied
        fd_counts: dict[int, int] = {}
        for entry in walk.entries:
            if entry.netns not in targets:
                continue
            try:  # the same access check for both readers: PTRACE_MODE_READ on fd/
                fd_counts[entry.pid] = _fd_count(proc.process(entry.pid))
            except ProcessGone:
                gone += 1
            except CollectError:
                denied += 1
        by_iterator, used = _read_by_iterator(fd_counts, wanted.values(), proc, setting)
        for pid in fd_counts:
            try:
                process = proc.process(pid)
                held = (by_iterator.get(pid, []) if by_iterator is not None
                        else _held_sockets(process, wanted))
                stat = process.stat() if held else None
            except ProcessGone:
                gone += 1
                continue
            except CollectError:  # AccessDenied, or an fd table that cannot be read
                denied += 1
                continue
            for fd, inode in held:
                owner = SocketOwner(pid=pid, comm=stat.comm if stat else "", fd=fd,
                                    start_time=stat.start_time if stat else None)
                found.setdefault(inode, []).append(owner)
    owners = {inode: tuple(sorted(h, key=lambda o: (o.pid, o.fd))) for inode, h in found.items()}
    return OwnerScan(owners, gone, denied, used)


def _read_by_iterator(fd_counts: Mapping[int, int], inodes: Collection[int], proc: ProcFS,
                      setting: ReaderSetting,
                      ) -> tuple[dict[int, list[tuple[int, int]]] | None, OwnerReader]:
    """The iterator's answer, or None when the fd tables are read from /proc; and which
    reader it is, and why.

    Below ITERATOR_MIN_FDS, /proc is cheaper than reading the kernel's BTF (~40 ms once per
    process). Kernels before 6.2 report no fd count (0), so they are read from /proc unless
    forced. The iterator's pids are those of our pid namespace: only when /proc is ours."""
    if setting == "proc":
        return None, OwnerReader("proc", f"{READER_VARIABLE}=proc")
    if not fd_counts:
        return None, OwnerReader("proc", "no readable process in these network namespaces")
    total = sum(fd_counts.values())
    if setting == "auto" and total == 0:
        return None, OwnerReader("proc", "the kernel gives no fd count (before Linux 6.2): "
                                         f"the BPF iterator only with {READER_VARIABLE}=bpf")
    if setting == "auto" and total < ITERATOR_MIN_FDS:
        return None, OwnerReader("proc", f"fewer than {ITERATOR_MIN_FDS:,} fds in these "
                                         "processes: cheaper than loading the BPF iterator")
    if not proc.is_own_pid_namespace():
        return None, OwnerReader("proc", f"BPF iterator not used: {proc.root} is not this "
                                         "process's pid namespace", "pid_namespace")
    try:
        held = fditer.socket_fds(fd_counts, inodes)
    except FdIterUnavailable as exc:
        return None, OwnerReader("proc", f"BPF iterator unavailable: {exc}", exc.cause)
    why = (f"{READER_VARIABLE}=bpf" if setting == "bpf"
           else f"{ITERATOR_MIN_FDS:,} fds or more in these processes")
    return held, OwnerReader("bpf", why)


def _fd_count(process: ProcessHandle) -> int:
    """Open fds of the process (st_size of /proc/PID/fd, Linux 6.2; 0 before)."""
    dir_fd = process.open_fd_dir()
    try:
        return os.fstat(dir_fd).st_size
    except OSError as exc:
        raise map_oserror(exc, process.pid, process.where("fd")) from exc
    finally:
        os.close(dir_fd)


def _held_sockets(process: ProcessHandle, wanted: Mapping[str, int]) -> list[tuple[int, int]]:
    """(fd, socket inode) for each fd of one process whose link is a wanted socket.

    Since Linux 6.2 the st_size of /proc/PID/fd is the number of open fds, so a dense fd
    table is walked by number without the getdents listing, which instantiates one proc
    dentry per fd (~20% of the scan with 100k sockets). Older kernels say 0 and are listed;
    so is the rest of a sparse table, after MAX_FD_GAP numbers that held nothing.
    """
    dir_fd = process.open_fd_dir()
    held: list[tuple[int, int]] = []
    try:
        open_fds = os.fstat(dir_fd).st_size
        seen = misses = fd = 0
        while seen < open_fds and misses <= MAX_FD_GAP:
            try:
                link = os.readlink(str(fd), dir_fd=dir_fd)
            except FileNotFoundError:
                misses += 1  # a hole in the table, or closed meanwhile
            else:
                seen += 1
                inode = wanted.get(link)
                if inode is not None:
                    held.append((fd, inode))
            fd += 1
        if seen < open_fds or open_fds == 0:
            held.extend(_listed_sockets(dir_fd, wanted, first_fd=fd))
    except OSError as exc:  # the process exited, or readlink was refused
        raise map_oserror(exc, process.pid, process.where("fd")) from exc
    finally:
        os.close(dir_fd)
    return held


def _listed_sockets(dir_fd: int, wanted: Mapping[str, int],
                    first_fd: int) -> list[tuple[int, int]]:
    held: list[tuple[int, int]] = []
    for entry in os.listdir(dir_fd):
        fd = int(entry)
        if fd < first_fd:
            continue  # already read by number
        try:
            inode = wanted.get(os.readlink(entry, dir_fd=dir_fd))
        except FileNotFoundError:
            continue  # closed since the listing
        if inode is not None:
            held.append((fd, inode))
    return held
