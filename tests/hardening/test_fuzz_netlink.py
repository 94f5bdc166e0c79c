"""Netlink decoding fuzzed: attributes, message framing, sock_diag listeners, rtnetlink
links and addresses. A correct decode or a ParseError, nothing else (see fuzzing.py)."""

from __future__ import annotations

import socket
import struct
from collections import Counter
from typing import Any

from hardening.fuzzing import MAX_ID, assert_printable, mutated_bytes, no_expectation, outcome
from hypothesis import given
from hypothesis import strategies as st

from agent.collect import netlink
from agent.collect.rtnetlink import decode_addresses, decode_links
from agent.collect.sockdiag import decode_listener

# --- netlink: messages, attributes, sock_diag, links, addresses ---------------------

ATTRS = st.lists(st.tuples(st.integers(0, netlink.NLA_TYPE_MASK), st.binary(max_size=40)),
                 max_size=6)


def attr_bytes(attrs: list[tuple[int, bytes]]) -> bytes:
    out = b""
    for kind, payload in attrs:
        length = netlink.NLA_HEADER.size + len(payload)
        out += netlink.NLA_HEADER.pack(length, kind) + payload
        out += b"\0" * (netlink.align4(length) - length)
    return out


def message_bytes(kind: int, payload: bytes, seq: int = 1) -> bytes:
    length = netlink.NLMSG_HEADER.size + len(payload)
    header = netlink.NLMSG_HEADER.pack(length, kind, 0, seq, 0)
    return header + payload + b"\0" * (netlink.align4(length) - length)


@st.composite
def diag_payloads(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    family = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6]))
    port = draw(st.integers(0, 65535))
    src = draw(st.binary(min_size=16, max_size=16))
    inode = draw(st.integers(0, MAX_ID))
    v6only = draw(st.sampled_from([None, 0, 1]))
    head = struct.pack("=BBBB2s2s16s16sI8sIIIII", family, 10, 0, 0, port.to_bytes(2, "big"),
                       b"\0\0", src, bytes(16), 0, bytes(8), 0, 0, 0, 0, inode)
    attrs = [(11, bytes([v6only]))] if v6only is not None else []
    attrs += [(21, struct.pack("=Q", draw(st.integers(0, (1 << 64) - 1))))]
    expected = {"family": 4 if family == socket.AF_INET else 6, "port": port, "inode": inode,
                "address": socket.inet_ntop(family, src[:4] if family == socket.AF_INET else src),
                "v6only": None if family == socket.AF_INET or v6only is None else bool(v6only)}
    return head + attr_bytes(draw(st.permutations(attrs))), expected


@given(st.one_of(
    ATTRS.map(lambda a: (attr_bytes(a), a)),
    no_expectation(mutated_bytes(ATTRS.map(attr_bytes))),
    no_expectation(st.binary(max_size=300)),
))
def test_netlink_attributes(fuzz_counts: Counter[str], case: tuple[bytes, Any]) -> None:
    fuzz_counts["netlink attributes"] += 1
    raw, attrs = case
    parsed = outcome(lambda: netlink.parse_attributes(raw, "fuzz"))
    if attrs is not None:
        assert parsed == {kind: payload for kind, payload in attrs}
    messages = outcome(lambda: netlink.parse_messages(raw, "fuzz"))
    for message in messages or ():
        code = outcome(lambda m=message: netlink.error_code(m, "fuzz"))  # type: ignore[misc]
        assert code is None or code >= 0


@given(st.one_of(
    diag_payloads(),
    no_expectation(mutated_bytes(diag_payloads().map(lambda d: d[0]))),
    no_expectation(st.binary(max_size=200)),
))
def test_sock_diag_listener(fuzz_counts: Counter[str], case: tuple[bytes, Any]) -> None:
    fuzz_counts["sock_diag messages"] += 1
    payload, expected = case
    listener = outcome(lambda: decode_listener(payload, "tcp", {}))
    if expected is not None:
        assert listener is not None
        assert (listener.family, listener.port, listener.inode, listener.address,
                listener.v6only) == (expected["family"], expected["port"], expected["inode"],
                                     expected["address"], expected["v6only"])
    if listener is not None:
        assert 0 <= listener.port <= 65535


@st.composite
def rtnetlink_dumps(draw: st.DrawFn) -> bytes:
    """A link and an address dump's messages, concatenated as one datagram."""
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        index = draw(st.integers(0, 2**31 - 1))
        body = struct.pack("=BxHiII", 0, 1, index, 0, 0)
        name = draw(st.binary(max_size=20)) + b"\0"
        out += message_bytes(16, body + attr_bytes([(3, name)]))
        family = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6, 0]))
        width = 16 if family == socket.AF_INET6 else 4
        addr = draw(st.binary(min_size=width, max_size=width))
        head = struct.pack("=BBBBI", family, draw(st.integers(0, 128)), 0,
                           draw(st.sampled_from([0, 253, 254, 17])), index)
        out += message_bytes(20, head + attr_bytes([(2, addr), (1, addr)]))
    return out


@given(st.one_of(rtnetlink_dumps(), mutated_bytes(rtnetlink_dumps()), st.binary(max_size=300)))
def test_rtnetlink_links_and_addresses(fuzz_counts: Counter[str], raw: bytes) -> None:
    fuzz_counts["rtnetlink links/addresses"] += 1
    messages = outcome(lambda: netlink.parse_messages(raw, "fuzz"))
    if messages is None:
        return
    names = outcome(lambda: decode_links(messages))
    if names is None:
        return
    for name in names.values():
        assert_printable(name)
    addresses = outcome(lambda: decode_addresses(messages, names))
    for address in addresses or ():
        assert address.family in (4, 6)
        assert_printable(address.interface)
