"""Network facts of a process's network namespace, read with ONE entry per namespace.

A dedicated short-lived thread calls setns(CLONE_NEWNET) and does every read there: the
sysctls under /proc/sys/net answer for the reading thread's netns, and a netlink socket
belongs to the netns it was created in. The thread exits afterwards and is never reused,
so the agent's own threads never change namespace (what pyroute2's NetNS does with a child).
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from agent.collect.errors import CollectError, Missing, error_line
from agent.collect.fileio import access_denied, capability_hint, own_netns_inode
from agent.collect.libc import libc_function
from agent.collect.procfs import ProcFS
from agent.collect.rtnetlink import read_interfaces
from agent.collect.sockdiag import listeners_in_netns
from agent.collect.sockets import scan_socket_owners
from agent.model import (
    Fact,
    Gap,
    InterfaceAddress,
    Listener,
    NetnsFacts,
    OwnerReader,
    SocketOwner,
    Sysctls,
)

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
SYSCTL_FILES = (  # Sysctls field -> the sysctl (its file under /proc/sys: the name, / for .)
    ("bindv6only", Fact.BINDV6ONLY),
    ("disable_ipv6", Fact.DISABLE_IPV6),
    ("ip_unprivileged_port_start", Fact.UNPRIVILEGED_PORT_START),
)

_setns = libc_function("setns", (ctypes.c_int, ctypes.c_int), ctypes.c_int)


def read_netns_facts(pid: int, proc: ProcFS | None = None, *, owners: bool = True) -> NetnsFacts:
    """Sysctls, addresses and listeners (with owners) of PID's netns; raises CollectError."""
    result = read_many_netns([pid], proc, owners=owners, workers=1)[pid]
    if isinstance(result, CollectError):
        raise result
    return result


def read_many_netns(
    pids: Iterable[int], proc: ProcFS | None = None, *, owners: bool = True, workers: int = 4,
    on_fault: Callable[[Exception], None] = lambda exc: None,
) -> dict[int, NetnsFacts | CollectError]:
    """Per pid: its netns facts or the error. Each netns is entered once, owners scanned once.
    `proc` defaults to `ProcFS()` (HOST_PROC, else /proc). An unexpected failure of the owner
    scan is passed to `on_fault` (the agent counts it) and costs only owners."""
    proc = proc if proc is not None else ProcFS()
    results: dict[int, NetnsFacts | CollectError] = {}
    ns_fds: dict[int, int] = {}  # netns inode -> an fd holding that netns
    pids_by_ns: dict[int, list[int]] = {}
    with proc.cycle():
        try:
            for pid in dict.fromkeys(pids):
                try:
                    inode = _open_netns(pid, proc, ns_fds)
                except CollectError as exc:
                    results[pid] = exc
                    continue
                pids_by_ns.setdefault(inode, []).append(pid)
            inside = _read_inside_all(ns_fds, pids_by_ns, proc, workers)
        finally:
            for fd in ns_fds.values():
                os.close(fd)
        host_ino, host_gap = _host_netns(proc)
        facts = _assemble(inside, host_ino, host_gap, proc, owners, on_fault)
    for inode, members in pids_by_ns.items():
        for pid in members:
            results[pid] = facts[inode]
    return results


def _open_netns(pid: int, proc: ProcFS, ns_fds: dict[int, int]) -> int:
    """Open PID's ns/net once per namespace; the fd pins the netns even if PID exits."""
    fd = proc.process(pid).open_netns()
    inode = os.fstat(fd).st_ino
    if inode in ns_fds:
        os.close(fd)
    else:
        ns_fds[inode] = fd
    return inode


def _host_netns(proc: ProcFS) -> tuple[int | None, Gap | None]:
    # A hostNetwork pod shares the node's initial netns. Kernel threads always live there, so
    # kthreadd (pid 2 under hostPID) is the surest reference; pid 1 may be a sandbox
    # supervisor whose ns link is refused even to root.
    error: CollectError | None = None
    for pid in (2, 1):
        try:
            process = proc.process(pid)
            if pid == 2 and process.comm() != "kthreadd":
                continue
            return process.netns_inode(), None
        except CollectError as exc:
            error = exc  # pid 1's, the last resort
    return None, Gap(Fact.HOST_NETWORK, str(error))


# --- inside the namespace ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _NetnsReading:
    """What one thread read inside one network namespace."""

    sysctls: Sysctls
    addresses: tuple[InterfaceAddress, ...]
    listeners: tuple[Listener, ...]
    gaps: tuple[Gap, ...]


def _read_inside_all(ns_fds: Mapping[int, int], pids_by_ns: Mapping[int, list[int]],
                     proc: ProcFS, workers: int) -> dict[int, _NetnsReading | CollectError]:
    """One fresh thread per netns, at most `workers` at a time (netlink waits drop the GIL)."""
    own_ino = own_netns_inode()
    running = threading.BoundedSemaphore(max(1, workers))  # reader threads at a time
    outcomes: dict[int, list[_NetnsReading | CollectError]] = {}  # each filled by its thread
    threads: list[threading.Thread] = []
    for inode, fd in ns_fds.items():
        outcome: list[_NetnsReading | CollectError] = []
        outcomes[inode] = outcome
        pid = pids_by_ns[inode][0]
        running.acquire()
        thread = threading.Thread(
            target=_thread_main, args=(fd, inode != own_ino, pid, proc, outcome, running),
            name=f"opaudit-netns-{inode}", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # out of threads (RLIMIT_NPROC, pids cgroup)
            running.release()
            outcome.append(CollectError(f"cannot start a thread for the netns of {pid}: {exc}"))
            continue
        threads.append(thread)
    for thread in threads:
        thread.join()
    return {inode: outcome[0] if outcome else CollectError("netns reader thread died")
            for inode, outcome in outcomes.items()}


def _thread_main(ns_fd: int, enter: bool, pid: int, proc: ProcFS,
                 outcome: list[_NetnsReading | CollectError],
                 running: threading.BoundedSemaphore) -> None:
    """Runs in its own thread, which ends here: a thread moved by setns is never reused."""
    try:
        if enter and _setns(ns_fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            if code == errno.EPERM:
                raise access_denied(pid, f"the network namespace of {pid} (setns)",
                                    missing="SYS_ADMIN")
            raise CollectError(f"setns into the netns of {pid}: {os.strerror(code)}")
        outcome.append(_read_inside(proc))
    except CollectError as exc:
        outcome.append(exc)
    except Exception as exc:  # a bug must become an error for this pid, not a dead thread
        outcome.append(CollectError(f"reading the netns of {pid}: {type(exc).__name__}: {exc}"))
    finally:
        running.release()


def _read_inside(proc: ProcFS) -> _NetnsReading:
    sysctls, gaps = read_sysctls(proc)
    interfaces: dict[int, str] = {}
    addresses: tuple[InterfaceAddress, ...] = ()
    try:
        interfaces, addresses = read_interfaces()
    except CollectError as exc:
        gaps.append(Gap(Fact.ADDRESSES, str(exc)))
    listeners: tuple[Listener, ...] = ()
    try:
        listeners, listener_gaps = listeners_in_netns(interfaces)
        gaps.extend(listener_gaps)
    except CollectError as exc:
        gaps.append(Gap(Fact.LISTENERS, str(exc)))
    return _NetnsReading(sysctls, addresses, listeners, tuple(gaps))


def read_sysctls(proc: ProcFS) -> tuple[Sysctls, list[Gap]]:
    """The calling thread's netns sysctls; an unreadable one is None plus a Gap."""
    values: dict[str, int | None] = {}
    gaps: list[Gap] = []
    for field, name in SYSCTL_FILES:
        rel = name.replace(".", "/")
        try:
            values[field] = int(proc.read_sys(rel).strip())
        except Missing:
            values[field] = None
            # Booted with ipv6.disable=1 there is no /proc/sys/net/ipv6 at all.
            why = "absent: IPv6 disabled at boot (ipv6.disable=1)" if "ipv6" in rel else "absent"
            gaps.append(Gap(name, why))
        except (CollectError, ValueError) as exc:
            values[field] = None
            gaps.append(Gap(name, f"unreadable: {exc}"))
    return Sysctls(**values), gaps


# --- owners and assembly -----------------------------------------------------------------


def unreadable_processes(count: int) -> str:
    """`1 process unreadable (needs ...)`: why some socket owners may be unknown."""
    # /proc/PID/fd is mode 0500 for its owner, and readlink needs ptrace access.
    hint = capability_hint(("SYS_PTRACE", "DAC_READ_SEARCH"))
    return f"{count} {'process' if count == 1 else 'processes'} unreadable{hint}"


def _assemble(inside: Mapping[int, _NetnsReading | CollectError], host_ino: int | None,
              host_gap: Gap | None, proc: ProcFS, owners: bool,
              on_fault: Callable[[Exception], None]) -> dict[int, NetnsFacts | CollectError]:
    read = {inode: part for inode, part in inside.items() if isinstance(part, _NetnsReading)}
    wanted = {ns: [s.inode for s in part.listeners] for ns, part in read.items()
              if part.listeners}
    owner_map, owner_errors, readers = (_owners(wanted, proc, on_fault) if owners and wanted
                                        else ({}, {}, {}))
    facts: dict[int, NetnsFacts | CollectError] = {}
    for inode, part in inside.items():
        if not isinstance(part, _NetnsReading):
            facts[inode] = part
            continue
        listeners = tuple(
            dataclasses.replace(s, owners=owner_map[s.inode]) if s.inode in owner_map else s
            for s in part.listeners)
        owner_gap = _owner_gap(listeners, owner_errors.get(inode))
        gaps = [g for g in (host_gap, owner_gap) if g is not None]
        facts[inode] = NetnsFacts(inode=inode, sysctls=part.sysctls, addresses=part.addresses,
                                  listeners=listeners, host_network=inode == host_ino,
                                  gaps=(*part.gaps, *gaps),
                                  owner_reader=readers.get(inode))
    return facts


OwnerMap = Mapping[int, tuple[SocketOwner, ...]]  # socket inode -> its holders
# The holders; per netns inode, why some could not be looked for, and the reader used.
OwnerScans = tuple[OwnerMap, dict[int, str], dict[int, OwnerReader]]


def _owners(wanted: Mapping[int, list[int]], proc: ProcFS,
            on_fault: Callable[[Exception], None]) -> OwnerScans:
    """The holders of the listeners' sockets (`wanted`: netns inode -> socket inodes), in one
    scan; per netns, why some could not be looked for, and which reader looked.

    An unexpected failure of that scan (an OSError the fd reader did not wrap, a reader bug)
    costs the owners of the netns that causes it, not the others': each netns is then
    scanned alone."""
    try:
        return _scan_owners(wanted, proc)
    except Exception as exc:  # noqa: BLE001 - the owners are lost, not the audit
        log.error("cannot scan socket owners; scanning each network namespace alone",
                  exc_info=True, extra={"error": error_line(exc)})
        on_fault(exc)
    owners: dict[int, tuple[SocketOwner, ...]] = {}
    errors: dict[int, str] = {}
    readers: dict[int, OwnerReader] = {}
    for netns, inodes in wanted.items():
        try:
            found, why, reader = _scan_owners({netns: inodes}, proc)
        except Exception as exc:  # noqa: BLE001 - this netns's owners are unknown, and why
            errors[netns] = f"socket owners: {error_line(exc)}"
            continue
        owners.update(found)
        errors.update(why)
        readers.update(reader)
    return owners, errors, readers


def _scan_owners(wanted: Mapping[int, list[int]], proc: ProcFS) -> OwnerScans:
    try:
        scan = scan_socket_owners([i for inodes in wanted.values() for i in inodes],
                                  wanted.keys(), proc)
    except CollectError as exc:
        return {}, dict.fromkeys(wanted, str(exc)), {}
    why = (dict.fromkeys(wanted, unreadable_processes(scan.processes_denied))
           if scan.processes_denied else {})
    return scan.owners, why, dict.fromkeys(wanted, scan.reader)


def _owner_gap(listeners: tuple[Listener, ...], error: str | None) -> Gap | None:
    """Unreadable processes matter only when some listener of this netns found no owner."""
    orphans = [f"{s.protocol} {f'[{s.address}]' if s.family == 6 else s.address}:{s.port}"
               for s in listeners if not s.owners]
    if error is None or not orphans:
        return None
    return Gap(Fact.OWNERS, f"{error}; no owner found for {', '.join(orphans)}")
