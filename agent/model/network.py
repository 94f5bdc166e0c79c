"""Facts of one network namespace: sysctls, addresses, listeners and their owners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.model.facts import Gap
from agent.model.protocols import IpVersion, ListenerProtocol


@dataclass(frozen=True, slots=True)
class Sysctls:
    bindv6only: int | None
    disable_ipv6: int | None
    ip_unprivileged_port_start: int | None


@dataclass(frozen=True, slots=True)
class InterfaceAddress:
    interface: str
    family: IpVersion
    address: str
    prefixlen: int
    scope: str  # "global" | "link" | "host" | ...


@dataclass(frozen=True, slots=True)
class SocketOwner:
    pid: int
    comm: str
    fd: int
    start_time: int | None = None  # /proc/PID/stat field 22: (pid, start_time) survives pid reuse


@dataclass(frozen=True, slots=True)
class Listener:
    protocol: ListenerProtocol
    family: IpVersion
    address: str  # "0.0.0.0", "::", "127.0.0.1", "::ffff:192.0.2.1", ...
    port: int
    v6only: bool | None  # None for IPv4 sockets
    inode: int
    interface: str | None = None  # SO_BINDTODEVICE, as ss prints `%eth0`
    owners: tuple[SocketOwner, ...] = ()

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(sorted({o.pid for o in self.owners}))


FdReader = Literal["proc", "bpf"]  # what read the fd tables for socket owners


@dataclass(frozen=True, slots=True)
class OwnerReader:
    """Which reader found the listeners' owners (`agent.collect.sockets`) and why not the
    other, in one line. `fallback` is set when the BPF iterator was wanted but could not
    run: a fixed word for what refused (`fditer.Cause`, or "pid_namespace")."""

    reader: FdReader
    why: str
    fallback: str = ""


@dataclass(frozen=True, slots=True)
class NetnsFacts:
    inode: int
    sysctls: Sysctls
    addresses: tuple[InterfaceAddress, ...]
    listeners: tuple[Listener, ...]
    host_network: bool = False
    gaps: tuple[Gap, ...] = ()
    owner_reader: OwnerReader | None = None  # None: no listener, so no owner looked for
