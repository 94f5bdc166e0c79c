"""A small stdlib netlink codec: message and attribute framing plus one dump exchange.

pyroute2 does the same, but importing it costs ~150 ms of start-up and its dumps run about
ten times slower; `opaudit sockets` as a whole process must beat `ss -tlnp`. The decoders
here are pure `bytes -> data` functions that raise ParseError on anything malformed.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from dataclasses import dataclass

from agent.collect.errors import CollectError, ParseError

# include/uapi/linux/netlink.h
NLMSG_HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLA_HEADER = struct.Struct("=HH")  # len, type
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLM_F_DUMP_INTR = 0x10  # the dump raced a table change: retry it
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED and NLA_F_NET_BYTEORDER
_ERROR_CODE = struct.Struct("=i")

# Kernel dump skbs are at most 32 KiB (netlink_dump); twice that never truncates.
RECV_BUFFER = 65536
DUMP_RETRIES = 3
_sequence = itertools.count(1)  # next() is atomic under the GIL: safe across netns threads


class NetlinkError(CollectError):
    """The kernel answered a netlink request with an error (errno in `code`)."""

    def __init__(self, what: str, code: int) -> None:
        self.code = code
        super().__init__(f"netlink {what}: {os.strerror(code)}")


@dataclass(frozen=True, slots=True)
class NetlinkMessage:
    type: int
    flags: int
    seq: int
    payload: bytes


def align4(length: int) -> int:
    return (length + 3) & ~3


def parse_messages(buf: bytes, what: str) -> list[NetlinkMessage]:
    """Split a datagram into netlink messages; ParseError on a bad length."""
    messages: list[NetlinkMessage] = []
    offset = 0
    size = len(buf)
    while offset < size:
        if size - offset < NLMSG_HEADER.size:
            raise ParseError(what, f"{size - offset} trailing bytes, shorter than a header")
        length, msg_type, flags, seq, _ = NLMSG_HEADER.unpack_from(buf, offset)
        if length < NLMSG_HEADER.size or length > size - offset:
            raise ParseError(what, f"message length {length} at offset {offset} of {size}")
        payload = bytes(buf[offset + NLMSG_HEADER.size : offset + length])
        messages.append(NetlinkMessage(msg_type, flags, seq, payload))
        offset += align4(length)
    return messages


def parse_attributes(buf: bytes, what: str) -> dict[int, bytes]:
    """rtattr/nlattr list -> {type: payload}; a repeated type keeps its last value."""
    attributes: dict[int, bytes] = {}
    offset = 0
    size = len(buf)
    while offset < size:
        if size - offset < NLA_HEADER.size:
            # The kernel pads the last attribute to 4 bytes; fewer than a header is padding.
            if any(buf[offset:]):
                raise ParseError(what, f"{size - offset} non-zero trailing attribute bytes")
            break
        length, attr_type = NLA_HEADER.unpack_from(buf, offset)
        if length < NLA_HEADER.size or length > size - offset:
            raise ParseError(what, f"attribute length {length} at offset {offset} of {size}")
        start = offset + NLA_HEADER.size
        attributes[attr_type & NLA_TYPE_MASK] = bytes(buf[start : offset + length])
        offset += align4(length)
    return attributes


def error_code(message: NetlinkMessage, what: str) -> int:
    """The errno carried by NLMSG_ERROR / NLMSG_DONE (0 when none)."""
    if len(message.payload) < _ERROR_CODE.size:
        if message.type == NLMSG_DONE:
            return 0  # kernels before 4.x sent an empty DONE
        raise ParseError(what, "netlink error message without an error code")
    (code,) = _ERROR_CODE.unpack_from(message.payload)
    return -code if code < 0 else 0


def build_request(msg_type: int, body: bytes, seq: int) -> bytes:
    header = NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), msg_type,
                               NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    return header + body


def open_socket(protocol: int, what: str) -> socket.socket:
    """A netlink socket in the network namespace of the calling thread.

    A netlink socket belongs to the netns it was created in, whatever thread uses it later.
    """
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, protocol)
    except OSError as exc:
        raise CollectError(f"cannot open netlink socket for {what}: {exc.strerror}") from exc


def dump(sock: socket.socket, msg_type: int, body: bytes, what: str) -> list[NetlinkMessage]:
    """Send one dump request on `sock` and return every answer message.

    Raises NetlinkError (the kernel said no), ParseError or CollectError.
    """
    messages: list[NetlinkMessage] = []
    for _ in range(DUMP_RETRIES):
        try:
            seq = next(_sequence) & 0xFFFFFFFF
            sock.sendall(build_request(msg_type, body, seq))
            messages, interrupted = _receive_dump(sock, seq, what)
        except OSError as exc:
            raise CollectError(f"netlink {what}: {exc.strerror or exc}") from exc
        if not interrupted:
            break
    return messages  # after DUMP_RETRIES races, the last answer is still a usable snapshot


def _receive_dump(sock: socket.socket, seq: int, what: str) -> tuple[list[NetlinkMessage], bool]:
    buffer = bytearray(RECV_BUFFER)
    view = memoryview(buffer)
    answers: list[NetlinkMessage] = []
    interrupted = False
    while True:
        received = sock.recv_into(buffer, RECV_BUFFER, socket.MSG_TRUNC)
        if received > RECV_BUFFER:
            raise CollectError(f"netlink {what}: message of {received} bytes truncated")
        if received == 0:
            raise CollectError(f"netlink {what}: socket closed before the dump ended")
        for message in parse_messages(bytes(view[:received]), what):
            if message.seq != seq:
                continue  # the tail of an earlier dump on this socket that was abandoned
            interrupted = interrupted or bool(message.flags & NLM_F_DUMP_INTR)
            if message.type == NLMSG_DONE:
                code = error_code(message, what)
                if code:
                    raise NetlinkError(what, code)
                return answers, interrupted
            if message.type == NLMSG_ERROR:
                raise NetlinkError(what, error_code(message, what) or errno.EPROTO)
            if message.type != NLMSG_NOOP:
                answers.append(message)
