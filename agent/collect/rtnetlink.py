"""rtnetlink: the links and addresses of the calling thread's network namespace.

One RTM_GETLINK and one RTM_GETADDR dump on a NETLINK_ROUTE socket (what `ip -o addr`
asks); the decoders are pure `messages -> data` functions that raise ParseError on
anything malformed, framed by `netlink`.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Mapping

from agent.collect import netlink
from agent.collect.errors import ParseError
from agent.collect.text import sanitize
from agent.model import InterfaceAddress, IpVersion

# include/uapi/linux/rtnetlink.h, if_addr.h, if_link.h; scope names as /etc/iproute2/rt_scopes.
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
SCOPE_NAMES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}


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
