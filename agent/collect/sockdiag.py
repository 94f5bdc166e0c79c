"""sock_diag: the TCP listeners and bound UDP sockets of the calling thread's netns.

The dump is kernel-filtered (what `ss -tuln` asks), so its cost does not grow with
established connections; the decoders are pure `bytes -> data` functions that raise
ParseError on anything malformed, framed by `netlink`. Their owners are `sockets`'s.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping

from agent.collect import netlink
from agent.collect.errors import CollectError, ParseError
from agent.model import Fact, Gap, IpVersion, Listener, ListenerProtocol

# include/uapi/linux/sock_diag.h, inet_diag.h, net/tcp_states.h
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
TCP_LISTEN = 10
TCP_CLOSE = 7  # a bound, unconnected UDP socket sits in TCP_CLOSE (ss shows UNCONN)
INET_DIAG_SKV6ONLY = 11  # sent unasked for LISTEN/CLOSE IPv6 sockets (inet_diag_msg_attrs_fill)

# inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid.
_REQUEST = struct.Struct("=BBBxI48x")
# inet_diag_msg: family, state, timer, retrans, sport, dport (big-endian), src[16], dst[16],
# bound_dev_if, cookie[8], expires, rqueue, wqueue, uid, inode.
_DIAG_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")

# Only the LISTEN bit for TCP: any other state bit makes inet_diag_dump_icsk walk the
# established hash of the whole host (~200 ms with 100k connections).
LISTENER_DUMPS: tuple[tuple[ListenerProtocol, int, int, int], ...] = (
    ("tcp", socket.AF_INET, socket.IPPROTO_TCP, 1 << TCP_LISTEN),
    ("tcp", socket.AF_INET6, socket.IPPROTO_TCP, 1 << TCP_LISTEN),
    ("udp", socket.AF_INET, socket.IPPROTO_UDP, 1 << TCP_CLOSE),
    ("udp", socket.AF_INET6, socket.IPPROTO_UDP, 1 << TCP_CLOSE),
)


def diag_request(address_family: int, protocol: int, states: int) -> bytes:
    return _REQUEST.pack(address_family, protocol, 0, states)


def decode_listener(payload: bytes, protocol: ListenerProtocol,
                    interfaces: Mapping[int, str]) -> Listener:
    """One inet_diag_msg (+ attributes) -> Listener; ParseError when malformed."""
    what = f"sock_diag {protocol} message"
    if len(payload) < _DIAG_MSG.size:
        raise ParseError(what, f"{len(payload)} bytes, need {_DIAG_MSG.size}")
    fields = _DIAG_MSG.unpack_from(payload)
    address_family, sport, src, ifindex = fields[0], fields[4], fields[6], fields[8]
    inode = fields[14]
    attributes = netlink.parse_attributes(payload[_DIAG_MSG.size :], what)
    version: IpVersion
    if address_family == socket.AF_INET:
        version, address, v6only = 4, socket.inet_ntop(socket.AF_INET, src[:4]), None
    elif address_family == socket.AF_INET6:
        version, address = 6, socket.inet_ntop(socket.AF_INET6, src)
        v6only = _v6only(attributes, what)
    else:
        raise ParseError(what, f"address family {address_family}")
    return Listener(
        protocol=protocol,
        family=version,
        address=address,
        port=int.from_bytes(sport, "big"),
        v6only=v6only,
        inode=inode,
        interface=(interfaces.get(ifindex) or f"if{ifindex}") if ifindex else None,
    )


def _v6only(attributes: Mapping[int, bytes], what: str) -> bool | None:
    raw = attributes.get(INET_DIAG_SKV6ONLY)
    if raw is None:
        return None  # kernels before 3.19 do not say
    if len(raw) < 1:
        raise ParseError(what, "empty INET_DIAG_SKV6ONLY")
    return raw[0] != 0


def decode_listeners(messages: list[netlink.NetlinkMessage], protocol: ListenerProtocol,
                     interfaces: Mapping[int, str]) -> list[Listener]:
    return [decode_listener(m.payload, protocol, interfaces)
            for m in messages if m.type == SOCK_DIAG_BY_FAMILY]


def listeners_in_netns(
    interfaces: Mapping[int, str] | None = None,
) -> tuple[tuple[Listener, ...], tuple[Gap, ...]]:
    """TCP LISTEN and unconnected UDP sockets, IPv4 and IPv6, of the CALLING THREAD's netns.

    `netns.read_netns_facts` calls this from a short-lived thread it moved with setns.
    `interfaces` maps ifindex -> name for sockets bound to a device. A dump that fails is
    returned as a Gap; the other dumps still count. Owners are not filled in here. Raises
    CollectError only when no sock_diag socket can be opened at all.
    """
    names = interfaces or {}
    listeners: list[Listener] = []
    gaps: list[Gap] = []
    sock = netlink.open_socket(NETLINK_SOCK_DIAG, "sock_diag")
    with sock:
        for protocol, address_family, ipproto, states in LISTENER_DUMPS:
            v6 = "6" if address_family == socket.AF_INET6 else ""
            label = Fact(f"{Fact.LISTENERS}.{protocol}{v6}")
            try:
                answer = netlink.dump(sock, SOCK_DIAG_BY_FAMILY,
                                      diag_request(address_family, ipproto, states), label)
                listeners.extend(decode_listeners(answer, protocol, names))
            except CollectError as exc:
                gaps.append(Gap(label, str(exc)))
    listeners.sort(key=lambda s: (s.protocol, s.port, s.family, s.address, s.inode))
    return tuple(listeners), tuple(gaps)
