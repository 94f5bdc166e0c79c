"""ProbePortNotListening, ListenerLoopbackOnly, ListenerFamilyMismatch, DualStackListenerGap,
IPv6ListenerWithIPv6Disabled, DeclaredPortNotListening, UndeclaredListener."""

from __future__ import annotations

from rules.rule_snapshots import GO_LISTENERS, declared, listener, network, observed

from agent.model import GENERIC_PROFILE, DeclaredPort, DeclaredProbe, Severity
from agent.rules.listeners import (
    declared_port_not_listening,
    ipv6_listener_with_ipv6_disabled,
    undeclared_listener,
)
from agent.rules.network import (
    dual_stack_listener_gap,
    listener_family_mismatch,
    listener_loopback_only,
    probe_port_not_listening,
)
from agent.rules.profiles import SPARK_OPERATOR_CONTROLLER

CONTROLLER = "spark-operator-controller-hardened.yaml"


def test_probe_port_not_listening() -> None:
    snap = observed(network=network(listener(8080)))
    [f] = probe_port_not_listening(snap, declared(CONTROLLER), GENERIC_PROFILE)
    assert f.severity is Severity.HIGH and "TCP port 8081" in f.message
    assert "The liveness probe (httpGet) and readiness probe (httpGet) target TCP" in f.message
    assert f.subject == "tcp/8081"


def test_probe_port_listening_is_a_near_miss_even_when_not_declared() -> None:
    assert list(probe_port_not_listening(observed(), declared(CONTROLLER), GENERIC_PROFILE)) == []
    # a UDP socket does not answer an HTTP probe
    snap = observed(network=network(listener(8080), listener(8081, protocol="udp")))
    assert len(list(probe_port_not_listening(snap, declared(CONTROLLER), GENERIC_PROFILE))) == 1


def test_probe_with_unresolvable_named_port() -> None:
    decl = declared(probes=(DeclaredProbe("readiness", "httpGet", None, port_name="health"),))
    [f] = probe_port_not_listening(observed(), decl, GENERIC_PROFILE)
    assert "'health'" in f.message
    exec_probe = declared(probes=(DeclaredProbe("liveness", "exec", None),))
    assert list(probe_port_not_listening(observed(), exec_probe, GENERIC_PROFILE)) == []


def test_loopback_only() -> None:
    snap = observed(network=network(listener(8080), listener(8081, "127.0.0.1", None),
                                    listener(8081, "::1", True)))
    [f] = listener_loopback_only(snap, declared(CONTROLLER), GENERIC_PROFILE)
    assert "8081" in f.message and "127.0.0.1" in f.message and "[::1]" in f.message
    # loopback plus a wildcard socket on the same port: reachable, no finding
    snap = observed(network=network(*GO_LISTENERS, listener(8081, "127.0.0.1", None)))
    assert list(listener_loopback_only(snap, declared(CONTROLLER), GENERIC_PROFILE)) == []


def test_family_mismatch_v6only_on_ipv4_pod() -> None:
    snap = observed(network=network(listener(8080, "::", True), listener(8081), bindv6only=1))
    [f] = listener_family_mismatch(snap, declared(CONTROLLER), SPARK_OPERATOR_CONTROLLER)
    assert f.severity is Severity.HIGH
    assert "8080" in f.message and "v6only=1" in f.message and "IPv4" in f.message
    assert "net.ipv6.bindv6only" in f.remediation and "IPV6_V6ONLY=0" in f.remediation


def test_family_mismatch_ipv4_socket_on_ipv6_pod() -> None:
    decl = declared(CONTROLLER, pod_ips=("2001:db8::29",))
    snap = observed(network=network(listener(8080, "0.0.0.0", None), listener(8081)))
    [f] = listener_family_mismatch(snap, decl, GENERIC_PROFILE)
    assert "IPv6" in f.message and "8080" in f.message


def test_family_mismatch_near_misses() -> None:
    decl = declared(CONTROLLER)
    go = observed(network=network(*GO_LISTENERS, bindv6only=1))
    assert list(listener_family_mismatch(go, decl, GENERIC_PROFILE)) == []
    # no listener at all is ProbePortNotListening / DeclaredPortNotListening, not a mismatch
    assert list(listener_family_mismatch(observed(network=network()), decl,
                                         GENERIC_PROFILE)) == []


def test_dual_stack_gap() -> None:
    snap = observed(network=network(listener(8080, "0.0.0.0", None), listener(8081)))
    [f] = dual_stack_listener_gap(snap, declared(CONTROLLER), GENERIC_PROFILE)
    assert f.severity is Severity.MEDIUM and "serves only IPv4" in f.message and "8080" in f.message


def test_dual_stack_gap_near_misses() -> None:
    assert list(dual_stack_listener_gap(observed(), declared(CONTROLLER), GENERIC_PROFILE)) == []
    single = declared(CONTROLLER, pod_ips=("192.0.2.41",))
    snap = observed(network=network(listener(8080, "0.0.0.0", None), listener(8081)))
    assert list(dual_stack_listener_gap(snap, single, GENERIC_PROFILE)) == []


def test_ipv6_disabled_dual_stack_socket_is_info() -> None:
    snap = observed(network=network(*GO_LISTENERS, disable_ipv6=1))
    found = list(ipv6_listener_with_ipv6_disabled(snap, None, SPARK_OPERATOR_CONTROLLER))
    assert [f.severity for f in found] == [Severity.INFO, Severity.INFO]
    assert "IPv4 only, through IPv4-mapped addresses" in found[0].message
    assert "No capability is involved" in found[0].message
    assert "--metrics-bind-address=0.0.0.0:8080" in found[0].remediation


def test_ipv6_disabled_near_misses() -> None:
    assert list(ipv6_listener_with_ipv6_disabled(observed(), None, GENERIC_PROFILE)) == []
    snap = observed(network=network(listener(8080, "0.0.0.0", None), disable_ipv6=1))
    assert list(ipv6_listener_with_ipv6_disabled(snap, None, GENERIC_PROFILE)) == []


def test_declared_port_not_listening_is_protocol_aware() -> None:
    decl = declared(CONTROLLER, ports=(DeclaredPort(8080, "TCP", "metrics"),
                                       DeclaredPort(5353, "UDP", "mdns")))
    snap = observed(network=network(*GO_LISTENERS, listener(5353, protocol="tcp")))
    [f] = declared_port_not_listening(snap, decl, GENERIC_PROFILE)
    assert "5353/UDP" in f.message and "check `protocol`" in f.message
    snap = observed(network=network(*GO_LISTENERS, listener(5353, protocol="udp")))
    assert list(declared_port_not_listening(snap, decl, GENERIC_PROFILE)) == []


def test_undeclared_listener() -> None:
    snap = observed(network=network(*GO_LISTENERS, listener(6060)))
    [f] = undeclared_listener(snap, declared(CONTROLLER), GENERIC_PROFILE)
    assert f.severity is Severity.LOW and "6060" in f.message


def test_undeclared_listener_near_misses() -> None:
    decl = declared(CONTROLLER)
    extra = (listener(6060, "127.0.0.1", None),  # loopback
             listener(7070, pid=99),             # another process (e.g. the pause sandbox)
             listener(7071, pid=None))           # owner unknown: not attributed
    snap = observed(network=network(*GO_LISTENERS, *extra))
    assert list(undeclared_listener(snap, decl, GENERIC_PROFILE)) == []
    # 8081 is only a probe port; 6060 would be allowed by a profile port
    snap = observed(network=network(*GO_LISTENERS, listener(6060)))
    profile = SPARK_OPERATOR_CONTROLLER.__class__(name="p", ports=(6060,))
    assert list(undeclared_listener(snap, decl, profile)) == []
    assert list(undeclared_listener(snap, None, GENERIC_PROFILE)) == []
