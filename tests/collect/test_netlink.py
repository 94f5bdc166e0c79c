"""The netlink framing decoder on arbitrary bytes: a correct parse or ParseError, nothing else."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.collect import netlink
from agent.collect.errors import ParseError
from agent.collect.rtnetlink import decode_addresses, decode_links, read_interfaces

_HEADER = struct.Struct("=IHHII")


def _message(msg_type: int, payload: bytes, seq: int = 1, flags: int = 2) -> bytes:
    length = _HEADER.size + len(payload)
    return _HEADER.pack(length, msg_type, flags, seq, 0) + payload + bytes(-length % 4)


def _attribute(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + bytes(-length % 4)


@given(st.binary(max_size=512))
def test_parse_messages_on_any_bytes(raw: bytes) -> None:
    try:
        messages = netlink.parse_messages(raw, "fuzz")
    except ParseError:
        return
    assert sum(_HEADER.size + len(m.payload) for m in messages) <= len(raw)


@given(st.binary(max_size=512))
def test_parse_attributes_on_any_bytes(raw: bytes) -> None:
    try:
        attributes = netlink.parse_attributes(raw, "fuzz")
    except ParseError:
        return
    assert all(0 <= kind <= netlink.NLA_TYPE_MASK for kind in attributes)


@given(st.lists(st.tuples(st.integers(4, 0xFFFF), st.binary(max_size=40)), max_size=8))
def test_messages_round_trip(parts: list[tuple[int, bytes]]) -> None:
    raw = b"".join(_message(kind, payload, seq=i) for i, (kind, payload) in enumerate(parts))
    decoded = netlink.parse_messages(raw, "fuzz")
    assert [(m.type, m.payload, m.seq) for m in decoded] == [
        (kind, payload, i) for i, (kind, payload) in enumerate(parts)]


@given(st.dictionaries(st.integers(0, netlink.NLA_TYPE_MASK), st.binary(max_size=40),
                       max_size=8))
def test_attributes_round_trip(attributes: dict[int, bytes]) -> None:
    raw = b"".join(_attribute(kind, payload) for kind, payload in attributes.items())
    assert netlink.parse_attributes(raw, "fuzz") == attributes


def test_length_beyond_the_buffer_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        netlink.parse_messages(_HEADER.pack(64, 20, 0, 1, 0) + bytes(8), "short")
    with pytest.raises(ParseError):
        netlink.parse_attributes(struct.pack("=HH", 2, 1), "tiny")
    with pytest.raises(ParseError):
        netlink.parse_attributes(b"\x01\x02", "garbage tail")


@given(st.lists(st.tuples(st.sampled_from([16, 20, 3]), st.binary(max_size=80)), max_size=6))
def test_route_decoders_on_any_payload(parts: list[tuple[int, bytes]]) -> None:
    messages = [netlink.NetlinkMessage(kind, 0, 1, payload) for kind, payload in parts]
    try:
        names = decode_links(messages)
        addresses = decode_addresses(messages, names)
    except ParseError:
        return
    assert all(a.family in (4, 6) for a in addresses)


def test_address_round_trip() -> None:
    link = netlink.NetlinkMessage(16, 0, 1, struct.pack("=BxHiII", 0, 1, 7, 0, 0)
                                  + _attribute(3, b"veth0\0"))
    raw = socket.inet_pton(socket.AF_INET6, "2001:db8::10")
    addr = netlink.NetlinkMessage(20, 0, 1, struct.pack("=BBBBI", socket.AF_INET6, 64, 0, 0, 7)
                                  + _attribute(1, raw))
    names = decode_links([link])
    assert names == {7: "veth0"}
    [address] = decode_addresses([addr], names)
    assert (address.interface, address.address, address.prefixlen, address.scope) == (
        "veth0", "2001:db8::10", 64, "global")


def test_dump_error_is_typed() -> None:
    # An unknown rtnetlink message type gets an NLMSG_ERROR answer, raised as NetlinkError.
    sock = netlink.open_socket(socket.NETLINK_ROUTE, "test")
    with sock, pytest.raises(netlink.NetlinkError):
        netlink.dump(sock, 0x7FF, bytes(16), "bogus dump")


def test_read_interfaces_in_own_netns_has_loopback() -> None:
    names, addresses = read_interfaces()
    assert "lo" in names.values()
    assert any(a.interface == "lo" and a.address == "127.0.0.1" for a in addresses)
