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
import os
import socket
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.collect import netlink
from agent.collect.errors import AccessDenied, CollectError, Missing, ParseError, capability_hint
from agent.collect.procfs import ProcFS, own_netns_inode
from agent.collect.sockets import listeners_in_netns, scan_socket_owners
from agent.collect.text import sanitize
from agent.model import (
    Gap,
    InterfaceAddress,
    IpVersion,
    Listener,
    NetnsFacts,
    OwnerReader,
    SocketOwner,
    Sysctls,
)

CLONE_NEWNET = 0x40000000
SYSCTL_FILES = (
    ("bindv6only", "net/ipv6/bindv6only"),
    ("disable_ipv6", "net/ipv6/conf/all/disable_ipv6"),
    ("ip_unprivileged_port_start", "net/ipv4/ip_unprivileged_port_start"),
)
# include/uapi/linux/rtnetlink.h, if_addr.h, if_link.h; scope names as /etc/iproute2/rt_scopes.
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
SCOPE_NAMES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.setns.restype = ctypes.c_int


def read_netns_facts(pid: int, proc: ProcFS | None = None, *, owners: bool = True) -> NetnsFacts:
    """Sysctls, addresses and listeners (with owners) of PID's netns; raises CollectError."""
    result = read_many_netns([pid], proc, owners=owners, workers=1)[pid]
    if isinstance(result, CollectError):
        raise result
    return result


def read_many_netns(
    pids: Iterable[int], proc: ProcFS | None = None, *, owners: bool = True, workers: int = 4
) -> dict[int, NetnsFacts | CollectError]:
    """Per pid: its netns facts or the error. Each netns is entered once, owners scanned once.
    `proc` defaults to `ProcFS()` (HOST_PROC, else /proc)."""
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
        facts = _assemble(inside, host_ino, host_gap, proc, owners)
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
    return None, Gap("network.host_network", str(error))


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
        if enter and _libc.setns(ns_fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            if code == errno.EPERM:
                raise AccessDenied(pid, f"the network namespace of {pid} (setns)",
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
        gaps.append(Gap("network.addresses", str(exc)))
    listeners: tuple[Listener, ...] = ()
    try:
        listeners, listener_gaps = listeners_in_netns(interfaces)
        gaps.extend(listener_gaps)
    except CollectError as exc:
        gaps.append(Gap("network.listeners", str(exc)))
    return _NetnsReading(sysctls, addresses, listeners, tuple(gaps))


def read_sysctls(proc: ProcFS) -> tuple[Sysctls, list[Gap]]:
    """The calling thread's netns sysctls; an unreadable one is None plus a Gap."""
    values: dict[str, int | None] = {}
    gaps: list[Gap] = []
    for field, rel in SYSCTL_FILES:
        name = rel.replace("/", ".")
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


def read_interfaces() -> tuple[dict[int, str], tuple[InterfaceAddress, ...]]:
    """ifindex -> name, and every address, of the calling thread's netns (RTM_GETLINK/ADDR)."""
    sock = netlink.open_socket(socket.NETLINK_ROUTE, "rtnetlink")
    with sock:
        links = netlink.dump(sock, RTM_GETLINK, bytes(_IFINFOMSG.size), "link dump")
        addrs = netlink.dump(sock, RTM_GETADDR, bytes(_IFADDRMSG.size), "address dump")
    names = decode_links(links)
    return names, decode_addresses(addrs, names)


def decode_links(messages: Iterable[netlink.NetlinkMessage]) -> dict[int, str]:
    names: dict[int, str] = {}
    for message in messages:
        if message.type != RTM_NEWLINK:
            continue
        if len(message.payload) < _IFINFOMSG.size:
            raise ParseError("link message", f"{len(message.payload)} bytes")
        index = _IFINFOMSG.unpack_from(message.payload)[2]
        attributes = netlink.parse_attributes(message.payload[_IFINFOMSG.size :], "link message")
        raw = attributes.get(IFLA_IFNAME, b"").split(b"\0", 1)[0]
        names[index] = sanitize(raw, 32) if raw else f"if{index}"  # a pod may name its links
    return names


def decode_addresses(messages: Iterable[netlink.NetlinkMessage],
                     names: Mapping[int, str]) -> tuple[InterfaceAddress, ...]:
    addresses: list[InterfaceAddress] = []
    for message in messages:
        if message.type != RTM_NEWADDR:
            continue
        if len(message.payload) < _IFADDRMSG.size:
            raise ParseError("address message", f"{len(message.payload)} bytes")
        address_family, prefixlen, _, scope, index = _IFADDRMSG.unpack_from(message.payload)
        attributes = netlink.parse_attributes(message.payload[_IFADDRMSG.size :],
                                              "address message")
        # IFA_LOCAL is the interface's own IPv4 address; IFA_ADDRESS is the peer on a p2p link.
        raw = attributes.get(IFA_LOCAL, attributes.get(IFA_ADDRESS))
        if raw is None or address_family not in (socket.AF_INET, socket.AF_INET6):
            continue
        version: IpVersion = 4 if address_family == socket.AF_INET else 6
        width = 4 if version == 4 else 16
        if len(raw) != width:
            raise ParseError("address message", f"{len(raw)}-byte IPv{version} address")
        addresses.append(InterfaceAddress(
            interface=names.get(index, f"if{index}"), family=version,
            address=socket.inet_ntop(address_family, raw), prefixlen=prefixlen,
            scope=SCOPE_NAMES.get(scope, str(scope))))
    return tuple(addresses)


# --- owners and assembly -----------------------------------------------------------------


def unreadable_processes(count: int) -> str:
    """`1 process unreadable (needs ...)`: why some socket owners may be unknown."""
    # /proc/PID/fd is mode 0500 for its owner, and readlink needs ptrace access.
    hint = capability_hint(("SYS_PTRACE", "DAC_READ_SEARCH"))
    return f"{count} {'process' if count == 1 else 'processes'} unreadable{hint}"


def _assemble(inside: Mapping[int, _NetnsReading | CollectError], host_ino: int | None,
              host_gap: Gap | None, proc: ProcFS,
              owners: bool) -> dict[int, NetnsFacts | CollectError]:
    read = {inode: part for inode, part in inside.items() if isinstance(part, _NetnsReading)}
    owner_map: Mapping[int, tuple[SocketOwner, ...]] = {}
    owner_error: str | None = None
    reader: OwnerReader | None = None
    inodes = [s.inode for part in read.values() for s in part.listeners]
    if owners and inodes:
        try:
            scan = scan_socket_owners(inodes, read.keys(), proc)
            owner_map, reader = scan.owners, scan.reader
            if scan.processes_denied:
                owner_error = unreadable_processes(scan.processes_denied)
        except CollectError as exc:
            owner_error = str(exc)
    facts: dict[int, NetnsFacts | CollectError] = {}
    for inode, part in inside.items():
        if not isinstance(part, _NetnsReading):
            facts[inode] = part
            continue
        listeners = tuple(
            dataclasses.replace(s, owners=owner_map[s.inode]) if s.inode in owner_map else s
            for s in part.listeners)
        gaps = [g for g in (host_gap, _owner_gap(listeners, owner_error)) if g is not None]
        facts[inode] = NetnsFacts(inode=inode, sysctls=part.sysctls, addresses=part.addresses,
                                  listeners=listeners, host_network=inode == host_ino,
                                  gaps=(*part.gaps, *gaps),
                                  owner_reader=reader if part.listeners else None)
    return facts


def _owner_gap(listeners: tuple[Listener, ...], error: str | None) -> Gap | None:
    """Unreadable processes matter only when some listener of this netns found no owner."""
    orphans = [f"{s.protocol} {f'[{s.address}]' if s.family == 6 else s.address}:{s.port}"
               for s in listeners if not s.owners]
    if error is None or not orphans:
        return None
    return Gap("network.listeners.owners", f"{error}; no owner found for {', '.join(orphans)}")
