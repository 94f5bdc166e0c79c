"""Which address families a listening socket serves from the pod's IP, from kernel facts alone.

The socket's own IPV6_V6ONLY decides whether `::` also takes IPv4 (as mapped addresses); the
`net.ipv6.bindv6only` sysctl is only the default for new sockets, and Go and the JVM override it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from agent.model import (
    DeclaredContainer,
    Listener,
    ListenerProtocol,
    NetnsFacts,
    ObservedProcess,
)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _unmapped(address: IpAddress) -> IpAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(listener: Listener) -> bool:
    """127.0.0.0/8, ::1, ::ffff:127.x, or a socket bound to the `lo` device."""
    if listener.interface == "lo":
        return True
    address = parse_ip(listener.address)
    return address is not None and _unmapped(address).is_loopback


def ipv6_disabled(network: NetnsFacts) -> bool:
    return network.sysctls.disable_ipv6 == 1


def v6only_of(listener: Listener, network: NetnsFacts) -> bool:
    """The socket's own flag; only when it is unknown does the netns default stand in."""
    if listener.v6only is not None:
        return listener.v6only
    return network.sysctls.bindv6only == 1


def pod_addresses(declared: DeclaredContainer | None, network: NetnsFacts) -> frozenset[IpAddress]:
    """The pod's IPs from status plus the netns's own global addresses."""
    found = [parse_ip(ip) for ip in (declared.pod_ips if declared else ())]
    found += [parse_ip(a.address) for a in network.addresses if a.scope == "global"]
    return frozenset(a for a in found if a is not None)


def served_families(listener: Listener, network: NetnsFacts,
                    addresses: frozenset[IpAddress]) -> frozenset[int]:
    """The families (4, 6) a connection to the pod's IP can reach this socket on."""
    address = parse_ip(listener.address)
    if address is None or is_loopback(listener):
        return frozenset()
    if listener.family == 4:
        return frozenset({4}) if address.is_unspecified or address in addresses else frozenset()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A v4-mapped bind takes IPv4 only, and only with v6only off (the kernel refuses it
        # otherwise: net/ipv6/af_inet6.c __inet6_bind).
        if v6only_of(listener, network) or address.ipv4_mapped not in addresses:
            return frozenset()
        return frozenset({4})
    v6 = not ipv6_disabled(network)
    if address.is_unspecified:
        families = {6} if v6 else set()
        if not v6only_of(listener, network):
            families.add(4)
        return frozenset(families)
    return frozenset({6}) if v6 and address in addresses else frozenset()


def listeners_on(network: NetnsFacts, port: int,
                 protocol: ListenerProtocol) -> tuple[Listener, ...]:
    return tuple(s for s in network.listeners if s.port == port and s.protocol == protocol)


def families_serving(listeners: Iterable[Listener], network: NetnsFacts,
                     addresses: frozenset[IpAddress]) -> frozenset[int]:
    served: set[int] = set()
    for listener in listeners:
        served |= served_families(listener, network, addresses)
    return frozenset(served)


def pod_families(declared: DeclaredContainer | None, network: NetnsFacts) -> tuple[int, ...]:
    """The pod's IP families in order: status.podIPs when known, else global netns addresses."""
    ips = [parse_ip(ip) for ip in (declared.pod_ips if declared else ())]
    families: list[int] = [a.version for a in ips if a is not None]
    if not families:
        families = sorted({a.family for a in network.addresses if a.scope == "global"})
        if ipv6_disabled(network):
            families = [f for f in families if f == 4]
    return tuple(dict.fromkeys(families))


def primary_family(declared: DeclaredContainer | None, network: NetnsFacts) -> int | None:
    """status.podIPs[0] decides; without status, IPv4 when the netns has a global IPv4 address."""
    families = pod_families(declared, network)
    return families[0] if families else None


def owner_pids(observed: ObservedProcess) -> frozenset[int]:
    """The processes whose sockets are the target's: its container's when the audit knows
    the container (a listener belongs to the container, whichever process opened it)."""
    return frozenset(observed.container_pids or (observed.pid,))


def own_listeners(observed: ObservedProcess, network: NetnsFacts,
                  include_unowned: bool = True) -> tuple[Listener, ...]:
    """Sockets held by the target's container (the target alone when its container is not
    known); with `include_unowned`, also those whose owner is unknown."""
    mine = owner_pids(observed)
    return tuple(
        s for s in network.listeners
        if mine.intersection(s.pids) or (include_unowned and not s.owners)
    )


def owners_phrase(listener: Listener) -> str:
    """`nc (pid 4243)`, `httpd, httpd (pids 10, 11)`: who holds the socket."""
    comms = ", ".join(dict.fromkeys(o.comm for o in listener.owners if o.comm)) or "?"
    pids = listener.pids
    return f"{comms} (pid{'s' if len(pids) > 1 else ''} {', '.join(map(str, pids))})"


def describe(listener: Listener, network: NetnsFacts) -> str:
    """`tcp [::]:8081 (v6only=1)` / `tcp 0.0.0.0:8080`."""
    host = f"[{listener.address}]" if ":" in listener.address else listener.address
    text = f"{listener.protocol} {host}:{listener.port}"
    if listener.family == 6:
        text += f" (v6only={int(v6only_of(listener, network))})"
    return text
