"""The seed's acceptance scenarios, on hand-built snapshots (test_rules_staged.py stages them)."""

from __future__ import annotations

import dataclasses

from rules.rule_snapshots import (
    CERTS,
    GO_LISTENERS,
    PRIVILEGE_RULES,
    caps,
    declared,
    listener,
    network,
    observed,
    readonly,
    rule_ids,
    with_paths,
    writable,
)

from agent.model import DEFAULT_CONFIG, DeclaredPort, Severity
from agent.rules.evaluate import evaluate, findings_of
from agent.rules.profiles import match_profile

NBS = 1 << 10


def run(snapshot, decl):  # type: ignore[no-untyped-def]
    return findings_of(
        evaluate(snapshot, decl, match_profile(decl, DEFAULT_CONFIG), DEFAULT_CONFIG))


def test_hardened_controller_with_home_on_tmp_has_nothing_at_low_or_above() -> None:
    found = run(observed(), declared("spark-operator-controller-hardened.yaml"))
    assert [f for f in found if f.severity.rank >= Severity.LOW.rank] == []


def test_hardened_controller_with_home_on_readonly_root() -> None:
    ident = dataclasses.replace(observed().identity, home="/home/spark", env_home="/home/spark")
    snap = with_paths(observed(identity=ident, environ=(("HOME", "/home/spark"),
                                                        *observed().environ[1:])),
                      readonly("/home/spark"))
    found = run(snap, declared("spark-operator-controller-hardened.yaml"))
    [f] = [f for f in found if f.severity.rank >= Severity.LOW.rank]
    assert f.rule == "HomeDirectoryUnusable"
    assert "/home/spark" in f.message
    assert "SPARK_SUBMIT_OPTS" in f.remediation and "-Divy.home=/tmp/ivy2" in f.remediation


def test_default_controller_without_ivy_fix_and_nonexistent_home() -> None:
    ident = dataclasses.replace(observed().identity, home="/nonexistent", env_home="/nonexistent")
    found = run(observed(identity=ident, environ=()), declared("spark-operator-controller.yaml"))
    [f] = [f for f in found if f.severity.rank >= Severity.LOW.rank]
    assert f.rule == "HomeDirectoryUnusable" and f.severity is Severity.MEDIUM


def test_seed_netbind_config_yields_exactly_the_two_privilege_findings() -> None:
    snap = observed(capabilities=caps(0, NBS))
    found = run(snap, declared("spark-operator-controller-netbind.yaml"))
    assert sorted(set(rule_ids(found)) & PRIVILEGE_RULES) == [
        "CapabilityAddedButIneffective", "NetBindServiceUnneeded"]


def test_webhook_without_writable_cert_dir() -> None:
    snap = observed(network=network(listener(9443), *GO_LISTENERS))
    found = run(snap, declared("spark-operator-webhook-hardened.yaml"))
    [f] = [f for f in found if f.rule == "WritablePathMissing"]
    assert CERTS in f.message
    fixed = run(with_paths(snap, writable(CERTS)), declared("spark-operator-webhook-hardened.yaml"))
    assert [f for f in fixed if f.severity.rank >= Severity.LOW.rank] == []


def test_default_v6only_under_bindv6only_on_ipv4_pod() -> None:
    decl = declared(pod_ips=("192.0.2.41",))
    snap = observed(network=network(listener(8080, "::", True), listener(8081, "::", True),
                                    bindv6only=1, v6=None))
    assert rule_ids(run(snap, decl)).count("ListenerFamilyMismatch") == 2
    go = observed(network=network(*GO_LISTENERS, bindv6only=1, v6=None))
    assert "ListenerFamilyMismatch" not in rule_ids(run(go, decl))


def test_ipv6_disabled_with_v6only_socket_fires() -> None:
    snap = observed(network=network(listener(8080, "::", True), listener(8081), disable_ipv6=1))
    found = run(snap, declared())
    [f] = [f for f in found if f.rule == "ListenerFamilyMismatch"]
    assert "8080" in f.message and "IPv6 is disabled" in f.message


def test_ipv6_disabled_with_dual_stack_socket_is_info_only() -> None:
    snap = observed(network=network(*GO_LISTENERS, disable_ipv6=1))
    found = run(snap, declared())
    assert set(rule_ids(found)) == {"IPv6ListenerWithIPv6Disabled"}
    assert {f.severity for f in found} == {Severity.INFO}


def test_ambient_net_bind_service_needed_for_port_80() -> None:
    decl = declared(capabilities_add=("NET_BIND_SERVICE",), ports=())
    needed = observed(capabilities=caps(NBS, NBS, ambient=NBS),
                      network=network(listener(80), listener(8081)))
    assert "NetBindServiceUnneeded" not in rule_ids(run(needed, decl))
    unneeded = dataclasses.replace(needed, network=network(listener(80), listener(8081),
                                                           port_start=0))
    assert "NetBindServiceUnneeded" in rule_ids(run(unneeded, decl))


def test_no_capability_sysctl_0_port_80_no_finding() -> None:
    decl = declared(ports=(DeclaredPort(80, "TCP", "http"),))
    snap = observed(network=network(listener(80), listener(8081), port_start=0))
    assert [f for f in run(snap, decl) if f.severity.rank >= Severity.LOW.rank] == []
