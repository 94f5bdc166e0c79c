"""PrivilegedPortNotBindable on hand-built snapshots: a live process, and a crash-looping
container judged through its pod's sandbox (declared side only)."""

from __future__ import annotations

import dataclasses

from rules.rule_snapshots import (
    GO_LISTENERS,
    caps,
    declared,
    listener,
    network,
    observed,
    profile_for,
)

from agent.model import (
    DEFAULT_CONFIG,
    DeclaredContainer,
    Finding,
    Identity,
    ObservedProcess,
    Verdict,
)
from agent.rules.catalogue import CATALOGUE, WITHOUT_PROCESS
from agent.rules.entry import Rule
from agent.rules.evaluate import evaluate, findings_of

NBS = 1 << 10
RULE = "PrivilegedPortNotBindable"


def webhook_on(port: int, **changes: object) -> DeclaredContainer:
    """The chart's default webhook with `webhook.port=<port>` (containerPort and flag)."""
    base = declared("spark-operator-webhook.yaml", pod_ips=("192.0.2.41",))
    ports = tuple(dataclasses.replace(p, port=port) if p.name == "webhook" else p
                  for p in base.ports)
    return dataclasses.replace(base, ports=ports, **changes)


def mine(snap: ObservedProcess, decl: DeclaredContainer,
         rules: tuple[Rule, ...] = CATALOGUE) -> list[Finding]:
    found = findings_of(evaluate(snap, decl, profile_for(decl), DEFAULT_CONFIG, rules))
    return [f for f in found if f.rule == RULE]


def sandbox(port_start: int = 1024) -> ObservedProcess:
    """The stand-in the engine builds for a container with no live process."""
    return observed(pid=77, comm="pause", cmdline=(), capabilities=None, no_new_privs=None,
                    seccomp=None, filesystem=None, environ=(), paths=(),
                    identity=Identity(None, None, None, None, None, None),
                    network=network(port_start=port_start), via_sandbox=True)


def test_live_non_root_process_without_the_capability() -> None:
    [f] = mine(observed(network=network(*GO_LISTENERS)), webhook_on(443))
    assert f.severity.value == "high"
    assert "containerPort webhook 443/TCP" in f.message
    assert "ip_unprivileged_port_start=1024" in f.message
    assert "permission denied" in f.message and "#2331" in f.message
    assert "uid 185" in f.message and "not even in its bounding set" in f.message
    # Both ways out: the chart's port, and the safe sysctl at the pod level.
    assert "webhook:\n  port: 9443" in f.remediation
    assert "webhook.podSecurityContext" in f.remediation
    assert "- name: net.ipv4.ip_unprivileged_port_start" in f.remediation
    assert 'value: "443"' in f.remediation


def test_added_capability_only_in_the_bounding_set_still_fires() -> None:
    snap = observed(capabilities=caps(0, NBS))
    [f] = mine(snap, webhook_on(443, capabilities_add=("NET_BIND_SERVICE",)))
    assert "only in its bounding set" in f.message


def test_near_misses() -> None:
    decl = webhook_on(443)
    assert mine(observed(capabilities=caps(NBS, NBS, ambient=NBS)), decl) == []  # effective
    assert mine(observed(network=network(*GO_LISTENERS, port_start=443)), decl) == []
    assert mine(observed(network=network(*GO_LISTENERS, listener(443))), decl) == []  # bound
    assert mine(observed(), webhook_on(9443)) == []
    assert mine(observed(capabilities=None), decl) == []  # unknown caps: silent, not a pass


def test_a_probe_port_below_the_threshold_fires_too() -> None:
    decl = declared(probes=tuple(dataclasses.replace(p, port=80)
                                 for p in declared().probes))
    found = mine(observed(), decl)
    assert found and all("probe" in f.message and " 80/" not in f.message for f in found)


def test_crash_loop_through_the_sandbox_from_the_declared_side() -> None:
    decl = webhook_on(443, status_uid=None)  # no runAsUser; runAsNonRoot: true
    [f] = mine(sandbox(), decl, WITHOUT_PROCESS)
    assert "has no running process" in f.message and "sandbox (pid 77)" in f.message
    assert "runAsNonRoot" in f.message and "ip_unprivileged_port_start=1024" in f.message
    assert mine(sandbox(port_start=0), decl, WITHOUT_PROCESS) == []
    # The capability a maintainer would suggest (#2331) changes nothing under Kubernetes.
    [f] = mine(sandbox(), dataclasses.replace(decl, capabilities_add=("NET_BIND_SERVICE",)),
               WITHOUT_PROCESS)
    assert "only puts it in the bounding set" in f.message


def test_crash_loop_uid_from_run_as_user_or_the_status() -> None:
    unknown = webhook_on(443, run_as_non_root=None, status_uid=None)
    assert mine(sandbox(), unknown, WITHOUT_PROCESS) == []  # the image's uid is unknown
    [f] = mine(sandbox(), dataclasses.replace(unknown, status_uid=185), WITHOUT_PROCESS)
    assert "uid 185 (containerStatuses[].user)" in f.message
    [f] = mine(sandbox(), dataclasses.replace(unknown, run_as_user=1000), WITHOUT_PROCESS)
    assert "uid 1000 (runAsUser)" in f.message


def test_crash_loop_with_an_unknown_uid_is_unknown_not_passed() -> None:
    """No runAsUser, no runAsNonRoot, no status user: the image's USER decides, which
    nothing here reads, so the verdict says unknown and why."""
    unknown = webhook_on(443, run_as_non_root=None, status_uid=None)

    def verdict(snap: ObservedProcess, decl: DeclaredContainer) -> Verdict:
        [only] = evaluate(snap, decl, profile_for(decl), DEFAULT_CONFIG, WITHOUT_PROCESS)
        return only

    found = verdict(sandbox(), unknown)
    assert found.outcome.value == "unknown" and not found.findings
    [missing] = found.missing
    assert missing.fact == "identity.uid.declared" and "USER" in missing.reason
    # Where the uid does not matter, a miss is a pass: no port below the sysctl, or the
    # port is held already (by another container of the pod).
    assert verdict(sandbox(port_start=443), unknown).outcome.value == "passed"
    held = dataclasses.replace(sandbox(), network=network(listener(443, "::", v6only=False)))
    assert verdict(held, unknown).outcome.value == "passed"
    root = dataclasses.replace(unknown, run_as_user=0, capabilities_drop=())
    assert verdict(sandbox(), root).outcome.value == "passed"


def test_crash_loop_root_binds_unless_net_bind_service_is_dropped() -> None:
    root = webhook_on(443, run_as_non_root=None, run_as_user=0, capabilities_drop=(),
                      status_uid=None)
    assert mine(sandbox(), root, WITHOUT_PROCESS) == []
    dropped = dataclasses.replace(root, capabilities_drop=("ALL",))
    [f] = mine(sandbox(), dropped, WITHOUT_PROCESS)
    assert "drop" in f.message
    added_back = dataclasses.replace(dropped, capabilities_add=("NET_BIND_SERVICE",))
    assert mine(sandbox(), added_back, WITHOUT_PROCESS) == []


def test_only_the_without_process_rules_judge_a_sandbox() -> None:
    verdicts = evaluate(sandbox(), webhook_on(443), profile_for(webhook_on(443)),
                        DEFAULT_CONFIG, WITHOUT_PROCESS)
    assert [(v.rule, v.outcome.value) for v in verdicts] == [(RULE, "fired")]
    # Judged from the declared side: no process fact is missing, so a miss is a pass.
    [passed] = evaluate(sandbox(port_start=443), webhook_on(443), profile_for(webhook_on(443)),
                        DEFAULT_CONFIG, WITHOUT_PROCESS)
    assert passed.outcome.value == "passed"


def test_a_live_process_with_unknown_capabilities_is_unknown_not_passed() -> None:
    verdicts = evaluate(observed(capabilities=None), webhook_on(443),
                        profile_for(webhook_on(443)), DEFAULT_CONFIG)
    [mine_] = [v for v in verdicts if v.rule == RULE]
    assert mine_.outcome.value == "unknown"
    assert [g.fact for g in mine_.missing] == ["capabilities"]
