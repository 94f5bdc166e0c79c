"""Reachability from the pod IP: wildcard, v6only, specific, loopback, IPv6 disabled."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rules.rule_snapshots import declared, listener, network

from agent.model import Listener
from agent.rules.reach import (
    is_loopback,
    pod_addresses,
    pod_families,
    primary_family,
    served_families,
)


def serves(sock: Listener, **net: int) -> set[int]:
    facts = network(sock, **net)
    return set(served_families(sock, facts, pod_addresses(None, facts)))


@pytest.mark.parametrize(("address", "v6only", "expected"), [
    ("0.0.0.0", None, {4}),
    ("::", False, {4, 6}),
    ("::", True, {6}),
    ("192.0.2.41", None, {4}),        # the pod's own address
    ("192.0.2.99", None, set()),      # an address the pod does not have
    ("2001:db8::29", True, {6}),
    ("2001:db8::99", True, set()),
    ("127.0.0.1", None, set()),
    ("127.0.0.53", None, set()),
    ("::1", True, set()),
    ("::ffff:127.0.0.1", False, set()),
    ("::ffff:192.0.2.41", False, {4}),
])
def test_served_families(address: str, v6only: bool | None, expected: set[int]) -> None:
    assert serves(listener(8080, address, v6only)) == expected


def test_socket_flag_wins_over_sysctl() -> None:
    # Go and the JVM set IPV6_V6ONLY=0 themselves, whatever net.ipv6.bindv6only says.
    assert serves(listener(8080, "::", False), bindv6only=1) == {4, 6}
    assert serves(listener(8080, "::", True), bindv6only=0) == {6}


def test_unknown_socket_flag_falls_back_to_sysctl() -> None:
    assert serves(listener(8080, "::", None), bindv6only=1) == {6}
    assert serves(listener(8080, "::", None), bindv6only=0) == {4, 6}


def test_ipv6_disabled() -> None:
    assert serves(listener(8080, "::", False), disable_ipv6=1) == {4}
    assert serves(listener(8080, "::", True), disable_ipv6=1) == set()
    assert serves(listener(8080, "0.0.0.0", None), disable_ipv6=1) == {4}


def test_bound_to_lo_device_is_loopback() -> None:
    sock = dataclasses.replace(listener(8080, "0.0.0.0", None), interface="lo")
    assert is_loopback(sock) and serves(sock) == set()


def test_primary_family_from_status_then_netns() -> None:
    assert primary_family(declared(), network()) == 4
    assert primary_family(declared(pod_ips=("2001:db8::5", "192.0.2.5")), network()) == 6
    assert primary_family(None, network()) == 4  # both global families: IPv4 first
    assert primary_family(None, network(v4=None)) == 6
    assert primary_family(None, network(v6=None)) == 4
    assert primary_family(None, network(v4=None, v6=None)) is None
    assert pod_families(None, network()) == (4, 6)
    assert pod_families(None, network(disable_ipv6=1)) == (4,)


@given(address=st.sampled_from(["0.0.0.0", "::", "127.0.0.1", "::1", "192.0.2.41",
                                "2001:db8::29", "::ffff:192.0.2.41", "198.51.100.1"]),
       v6only=st.sampled_from([None, False, True]), bindv6only=st.integers(0, 1),
       disable_ipv6=st.integers(0, 1))
def test_reachability_invariants(address: str, v6only: bool | None, bindv6only: int,
                                 disable_ipv6: int) -> None:
    sock = listener(8080, address, v6only)
    served = serves(sock, bindv6only=bindv6only, disable_ipv6=disable_ipv6)
    assert served <= {4, 6}
    if disable_ipv6:
        assert 6 not in served
    if is_loopback(sock):
        assert served == set()
    if sock.family == 4:
        assert 6 not in served
    if sock.family == 6 and sock.v6only:
        assert 4 not in served
