"""PrivilegedContainer, PrivilegeEscalationAllowed, CapabilitiesNotDropped,
CapabilityAddedButIneffective, NetBindServiceUnneeded, SeccompUnconfined."""

from __future__ import annotations

import dataclasses

from rules.rule_snapshots import LAST_CAP, caps, declared, ids, listener, network, observed

from agent.model import GENERIC_PROFILE, Identity, Severity
from agent.rules.privileges import (
    capabilities_not_dropped,
    capability_added_but_ineffective,
    net_bind_service_unneeded,
    privilege_escalation_allowed,
    privileged_container,
    seccomp_unconfined,
)
from agent.rules.profiles import SPARK_OPERATOR_CONTROLLER

NBS = 1 << 10
FULL = (1 << (LAST_CAP + 1)) - 1


def test_privileged_by_full_bounding_set() -> None:
    [f] = privileged_container(observed(capabilities=caps(FULL, FULL)), None, GENERIC_PROFILE)
    assert f.severity is Severity.CRITICAL and f"cap_last_cap ({LAST_CAP})" in f.message


def test_privileged_by_declaration() -> None:
    decl = declared(privileged=True)
    [f] = privileged_container(observed(), decl, GENERIC_PROFILE)
    assert "privileged: true is declared" in f.message
    assert "privileged: false" in f.remediation


def test_privileged_near_miss_one_bit_short() -> None:
    almost = FULL & ~(1 << 21)  # SYS_ADMIN dropped
    assert list(privileged_container(observed(capabilities=caps(almost, almost)), declared(),
                                     GENERIC_PROFILE)) == []


def test_privilege_escalation_drift() -> None:
    [f] = privilege_escalation_allowed(observed(no_new_privs=False), declared(),
                                       SPARK_OPERATOR_CONTROLLER)
    assert f.severity is Severity.HIGH
    assert "drift" in f.message and "allowPrivilegeEscalation: false is declared" in f.message
    assert "controller:\n  securityContext:\n    allowPrivilegeEscalation: false" in f.remediation


def test_privilege_escalation_drift_is_not_excused_by_an_added_sys_admin() -> None:
    """The API refuses allowPrivilegeEscalation: false only with privileged: true or an add
    spelled CAP_SYS_ADMIN (pkg/apis/core/validation); "SYS_ADMIN" passes and the kubelet still
    asks for no_new_privs (this project's DaemonSet runs so). NoNewPrivs 0 is drift then."""
    decl = declared(capabilities_add=("SYS_ADMIN",))
    [f] = privilege_escalation_allowed(observed(no_new_privs=False), decl, GENERIC_PROFILE)
    assert "This is drift" in f.message
    assert "SYS_ADMIN" not in f.message and "overrides" not in f.message
    assert "whenever the field is false, added capabilities or not" in f.message


def test_privilege_escalation_not_declared() -> None:
    decl = declared(allow_privilege_escalation=None)
    [f] = privilege_escalation_allowed(observed(no_new_privs=False), decl, GENERIC_PROFILE)
    assert "drift" not in f.message and "explicitly false" in f.message


def test_privilege_escalation_near_miss() -> None:
    assert list(privilege_escalation_allowed(observed(), declared(), GENERIC_PROFILE)) == []
    assert list(privilege_escalation_allowed(observed(no_new_privs=None), None,
                                             GENERIC_PROFILE)) == []


def test_capabilities_not_dropped_names_extras() -> None:
    bounding = NBS | 1 << 0 | 1 << 13  # NET_BIND_SERVICE, CHOWN, NET_RAW
    [f] = capabilities_not_dropped(observed(capabilities=caps(0, bounding)), None,
                                   GENERIC_PROFILE)
    assert "keeps CHOWN, NET_RAW in its bounding set" in f.message
    assert "drop: [ALL]" in f.remediation


def test_capabilities_not_dropped_allows_net_bind_service() -> None:
    assert list(capabilities_not_dropped(observed(capabilities=caps(0, NBS)), None,
                                         GENERIC_PROFILE)) == []


def test_added_but_ineffective_for_non_root() -> None:
    decl = declared("spark-operator-controller-netbind.yaml")
    [f] = capability_added_but_ineffective(observed(capabilities=caps(0, NBS)), decl,
                                           SPARK_OPERATOR_CONTROLLER)
    assert f.severity is Severity.LOW
    assert "NET_BIND_SERVICE" in f.message
    assert "non-root process" in f.message and "without ambient or file capabilities" in f.message
    assert "bounding set" in f.message
    assert "controller.securityContext" in f.remediation
    assert "ip_unprivileged_port_start" in f.remediation


def test_added_and_effective_is_a_near_miss() -> None:
    decl = declared("spark-operator-controller-netbind.yaml")
    ambient = observed(capabilities=caps(NBS, NBS, ambient=NBS))
    assert list(capability_added_but_ineffective(ambient, decl, GENERIC_PROFILE)) == []
    root = observed(identity=Identity(ids(0), ids(0), (), "root", "/root", "/root"),
                    capabilities=caps(NBS, NBS))
    assert list(capability_added_but_ineffective(root, decl, GENERIC_PROFILE)) == []
    assert list(capability_added_but_ineffective(observed(capabilities=caps(0, NBS)), None,
                                                 GENERIC_PROFILE)) == []


def test_net_bind_service_unneeded_names_ports_and_threshold() -> None:
    snap = observed(capabilities=caps(0, NBS))
    [f] = net_bind_service_unneeded(snap, declared("spark-operator-controller-netbind.yaml"),
                                    SPARK_OPERATOR_CONTROLLER)
    assert f.severity is Severity.MEDIUM
    assert "(8080, 8081)" in f.message
    assert "ip_unprivileged_port_start=1024" in f.message
    assert "no capability is involved in binding them" in f.message
    assert "add:" not in f.remediation and "drop: [ALL]" in f.remediation


def test_net_bind_service_needed_for_port_80() -> None:
    snap = observed(capabilities=caps(NBS, NBS, ambient=NBS), network=network(listener(80)))
    assert list(net_bind_service_unneeded(snap, None, GENERIC_PROFILE)) == []


def test_net_bind_service_unneeded_when_threshold_is_0() -> None:
    snap = observed(capabilities=caps(NBS, NBS, ambient=NBS),
                    network=network(listener(80), port_start=0))
    [f] = net_bind_service_unneeded(snap, None, GENERIC_PROFILE)
    assert "(80)" in f.message and "=0" in f.message and "effective" in f.message


def test_net_bind_service_no_capability_no_finding() -> None:
    snap = observed(network=network(listener(80), port_start=0))
    assert list(net_bind_service_unneeded(snap, None, GENERIC_PROFILE)) == []


def test_net_bind_service_counts_unattributed_listeners() -> None:
    # A port-80 socket whose owner could not be read might be the target's: do not claim
    # the capability is unneeded.
    snap = observed(capabilities=caps(0, NBS),
                    network=network(listener(8080), listener(80, pid=None)))
    assert list(net_bind_service_unneeded(snap, None, GENERIC_PROFILE)) == []
    other = observed(capabilities=caps(0, NBS),
                     network=network(listener(8080), listener(80, pid=7)))
    assert len(list(net_bind_service_unneeded(other, None, GENERIC_PROFILE))) == 1


def test_net_bind_service_unknown_threshold_is_silent() -> None:
    facts = network(listener(8080))
    unknown = dataclasses.replace(facts.sysctls, ip_unprivileged_port_start=None)
    snap = observed(capabilities=caps(0, NBS), network=dataclasses.replace(facts, sysctls=unknown))
    assert list(net_bind_service_unneeded(snap, None, GENERIC_PROFILE)) == []


def test_seccomp_unconfined() -> None:
    [f] = seccomp_unconfined(observed(seccomp="disabled"), declared(), GENERIC_PROFILE)
    assert "RuntimeDefault is declared" in f.message and "type: RuntimeDefault" in f.remediation
    assert list(seccomp_unconfined(observed(), declared(), GENERIC_PROFILE)) == []
    assert list(seccomp_unconfined(observed(seccomp=None), None, GENERIC_PROFILE)) == []
