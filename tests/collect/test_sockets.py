"""Listeners and owners against `ss` on the real kernel, and the sock_diag decoder on any bytes."""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading

import pytest
from collect.socket_owners import parse_ss_line, ss_sockets
from hypothesis import given
from hypothesis import strategies as st
from proc_reads import netns_inode_of, start_time_of
from staging import Sock, Stage, Staged

from agent.collect import sockets
from agent.collect.errors import ParseError, ProcessGone
from agent.collect.netns import read_netns_facts
from agent.collect.procfs import ProcessHandle
from agent.collect.procparse import parse_stat
from agent.collect.sockdiag import decode_listener
from agent.collect.sockets import scan_socket_owners
from agent.model import Listener


def test_parse_ss_line_forms() -> None:
    star = parse_ss_line('tcp LISTEN 0 64 *:8083 *:* users:(("python3",pid=7,fd=6))')
    assert (star.address, star.v6only, star.users) == ("::", False, frozenset({(7, 6)}))
    mapped = parse_ss_line("tcp LISTEN 0 64 [::ffff:192.0.2.10]:8088 *:*")
    assert (mapped.address, mapped.port) == ("::ffff:192.0.2.10", 8088)
    bound = parse_ss_line("udp UNCONN 0 0 192.0.2.10%veth0:5358 0.0.0.0:*")
    assert (bound.address, bound.interface) == ("192.0.2.10", "veth0")
    wild6 = parse_ss_line("udp UNCONN 0 0 [::]%lo:5359 [::]:*")
    assert (wild6.address, wild6.v6only, wild6.interface) == ("::", True, "lo")


def _key(listener: Listener) -> tuple[str, str, int, str | None]:
    return listener.protocol, listener.address, listener.port, listener.interface


# Each staged socket with the v6only the kernel must report (None for IPv4).
MIXED: tuple[tuple[Sock, bool | None], ...] = (
    (Sock("tcp", 4, "0.0.0.0", 8080), None),
    (Sock("tcp", 4, "127.0.0.1", 8081), None),
    (Sock("tcp", 4, "192.0.2.10", 8082), None),
    (Sock("tcp", 6, "::", 8083, v6only=0), False),
    (Sock("tcp", 6, "::", 8084, v6only=1), True),
    (Sock("tcp", 6, "::", 8085), True),  # default follows net.ipv6.bindv6only=1
    (Sock("tcp", 6, "::1", 8086), True),
    # Binding a specific, non-mapped IPv6 address sets v6only whatever was asked (__inet6_bind).
    (Sock("tcp", 6, "2001:db8::10", 8087, v6only=0), True),
    (Sock("tcp", 6, "::ffff:192.0.2.10", 8088, v6only=0), False),
    (Sock("tcp", 4, "0.0.0.0", 8089, device="veth0"), None),
    (Sock("udp", 4, "0.0.0.0", 5353), None),
    (Sock("udp", 4, "127.0.0.1", 5354), None),
    (Sock("udp", 6, "::", 5355, v6only=0), False),
    (Sock("udp", 6, "::", 5356, v6only=1), True),
    (Sock("udp", 6, "2001:db8::10", 5357), True),
    (Sock("udp", 4, "192.0.2.10", 5358, device="veth0"), None),
    (Sock("udp", 6, "::", 5359, device="lo"), True),
)
SECOND: tuple[tuple[Sock, bool | None], ...] = (
    (Sock("tcp", 4, "0.0.0.0", 9090), None),
    (Sock("tcp", 6, "::", 9090, v6only=1), True),
)


def _stage_mixed(stage: Stage) -> tuple[str, Staged, Staged]:
    netns = stage.netns(sysctls={"net.ipv6.bindv6only": 1})
    first = stage.spawn([s for s, _ in MIXED], netns=netns, comm="mixed-srv")
    second = stage.spawn([s for s, _ in SECOND], netns=netns, uid=1000, bounding=[],
                         comm="second\x1bsrv")
    return netns, first, second


def test_listeners_match_ss(stage: Stage) -> None:
    netns, first, second = _stage_mixed(stage)
    facts = read_netns_facts(first.pid)
    seen = ss_sockets(netns)
    assert {_key(s) for s in facts.listeners} == {
        (s.protocol, s.address, s.port, s.interface) for s in seen}
    assert len(facts.listeners) == len(MIXED) + len(SECOND)
    expected = {(s.proto, s.port, s.family): v6only for s, v6only in (*MIXED, *SECOND)}
    for listener in facts.listeners:
        assert listener.v6only is expected[(listener.protocol, listener.port, listener.family)]
    for ss_socket in seen:  # ss's own `*` / `[::]` verdict for the wildcard agrees too
        if ss_socket.v6only is not None:
            ours = [s for s in facts.listeners if _key(s) == (
                ss_socket.protocol, ss_socket.address, ss_socket.port, ss_socket.interface)]
            assert [s.v6only for s in ours] == [ss_socket.v6only]


def test_owners_match_ss_p(stage: Stage) -> None:
    netns, first, second = _stage_mixed(stage)
    facts = read_netns_facts(first.pid)
    seen = {(s.protocol, s.address, s.port, s.interface): s.users for s in ss_sockets(netns)}
    for listener in facts.listeners:
        assert {(o.pid, o.fd) for o in listener.owners} == seen[_key(listener)]
        assert listener.owners, listener
    by_pid = {o.pid: o for s in facts.listeners for o in s.owners}
    assert by_pid[first.pid].comm == "mixed-srv"
    assert by_pid[second.pid].comm == "second\\x1bsrv"  # the escape byte never reaches output
    assert by_pid[first.pid].start_time == start_time_of(first.pid)
    fds = {(o.pid, o.fd) for s in facts.listeners for o in s.owners}
    assert fds == {(first.pid, fd) for fd in first.fds} | {(second.pid, fd) for fd in second.fds}


def test_owners_skipped_without_the_flag(stage: Stage) -> None:
    netns = stage.netns()
    staged = stage.spawn([Sock("tcp", 4, "0.0.0.0", 7070)], netns=netns)
    facts = read_netns_facts(staged.pid, owners=False)
    assert [(s.port, s.owners) for s in facts.listeners] == [(7070, ())]


def test_process_exiting_mid_scan_keeps_the_others(stage: Stage,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    netns = stage.netns()
    victim = stage.spawn([Sock("tcp", 4, "0.0.0.0", 7071)], netns=netns)
    survivor = stage.spawn([Sock("tcp", 4, "0.0.0.0", 7072)], netns=netns)
    facts = read_netns_facts(survivor.pid, owners=False)
    real_held = sockets._held_sockets

    victim_errors: list[type[Exception]] = []

    def held_then_kill(process: ProcessHandle, wanted: dict[str, int]) -> list[tuple[int, int]]:
        if process.pid != victim.pid:
            return real_held(process, wanted)
        stage.kill(victim)  # reaped: its /proc entry is gone from here on
        try:
            return real_held(process, wanted)
        except Exception as exc:
            victim_errors.append(type(exc))
            raise

    monkeypatch.setattr(sockets, "_held_sockets", held_then_kill)
    scan = scan_socket_owners([s.inode for s in facts.listeners], facts.inode)
    assert victim_errors == [ProcessGone]
    assert scan.processes_gone >= 1  # other processes on the machine may exit meanwhile too
    owners = {o.pid for held in scan.owners.values() for o in held}
    assert owners == {survivor.pid}


def test_socket_owners_ignores_other_netns(stage: Stage) -> None:
    netns = stage.netns()
    staged = stage.spawn([Sock("udp", 4, "127.0.0.1", 7073)], netns=netns)
    facts = read_netns_facts(staged.pid, owners=False)
    inodes = [s.inode for s in facts.listeners]
    assert scan_socket_owners(inodes, facts.inode).owners == {
        inodes[0]: scan_socket_owners(inodes, netns_inode_of(staged.pid)).owners[inodes[0]]}
    assert scan_socket_owners(inodes, netns_inode_of(os.getpid())).owners == {}


def test_parse_stat_comm_and_start() -> None:
    stat = parse_stat(b"42 (a) b) c) S " + b"1 " * 18 + b"777 9\n")
    assert (stat.comm, stat.start_time) == ("a) b) c", 777)
    with pytest.raises(ParseError):
        parse_stat(b"42 no comm")


# --- the decoder, fuzzed -------------------------------------------------------------------

_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")


def _diag_message(family: int, port: int, src: bytes, ifindex: int, inode: int,
                  attributes: bytes) -> bytes:
    return _MSG.pack(family, 10, 0, 0, port.to_bytes(2, "big"), b"\0\0", src.ljust(16, b"\0"),
                     bytes(16), ifindex, bytes(8), 0, 0, 0, 0, inode) + attributes


def _attribute(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + bytes(-length % 4)


@given(st.binary(max_size=256), st.sampled_from(["tcp", "udp"]))
def test_decode_listener_never_crashes(raw: bytes, protocol: str) -> None:
    try:
        listener = decode_listener(raw, protocol, {})
    except ParseError:
        return
    assert listener.family in (4, 6) and 0 <= listener.port <= 65535


@given(st.binary(min_size=16, max_size=16), st.integers(0, 65535), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1), st.booleans(), st.integers(0, 2**64 - 1))
def test_decode_listener_round_trip(src: bytes, port: int, ifindex: int, inode: int,
                                    v6only: bool, cgroup: int) -> None:
    # Attribute 21 (INET_DIAG_CGROUP_ID) comes unasked; opaudit has no use for it.
    attributes = _attribute(11, bytes([v6only])) + _attribute(21, struct.pack("=Q", cgroup))
    raw = _diag_message(socket.AF_INET6, port, src, ifindex, inode, attributes)
    listener = decode_listener(raw, "tcp", {ifindex: "veth0"})
    assert listener == Listener(
        protocol="tcp", family=6, address=socket.inet_ntop(socket.AF_INET6, src), port=port,
        v6only=v6only, inode=inode, interface="veth0" if ifindex else None)
    ipv4 = decode_listener(_diag_message(socket.AF_INET, port, src[:4], 0, inode, b""), "udp", {})
    assert (ipv4.address, ipv4.v6only) == (socket.inet_ntop(socket.AF_INET, src[:4]), None)


def _pyroute2_listeners(pid: int) -> set[tuple[int, int, bool | None]]:
    """(port, inode, v6only) of TCP listeners as pyroute2 decodes them, from a setns thread."""
    from pyroute2 import DiagSocket

    seen: set[tuple[int, int, bool | None]] = set()

    def dump() -> None:
        with open(f"/proc/{pid}/ns/net") as ns:
            _setns(ns.fileno())
        with DiagSocket() as diag:
            diag.bind()
            for family in (socket.AF_INET, socket.AF_INET6):
                for msg in diag.get_sock_stats(family=family, states=1 << 10,
                                               protocol=socket.IPPROTO_TCP):
                    v6only = msg.get_attr("INET_DIAG_SKV6ONLY")
                    seen.add((msg["idiag_sport"], msg["idiag_inode"],
                              None if v6only is None else bool(v6only)))

    worker = threading.Thread(target=dump)  # this thread moves and then ends
    worker.start()
    worker.join()
    return seen


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def test_decoder_agrees_with_pyroute2(stage: Stage) -> None:
    netns, first, _ = _stage_mixed(stage)
    ours = {(s.port, s.inode, s.v6only) for s in read_netns_facts(first.pid).listeners
            if s.protocol == "tcp"}
    assert ours == _pyroute2_listeners(first.pid)
