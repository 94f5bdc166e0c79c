"""Every rule names its facts and gets a verdict: fired, passed, waived or unknown (with why)."""

from __future__ import annotations

import dataclasses

from rules.rule_snapshots import declared, observed, profile_for

from agent.model import (
    DEFAULT_CONFIG,
    GENERIC_PROFILE,
    AuditConfig,
    Fact,
    Gap,
    Outcome,
    Severity,
    Verdict,
    Waiver,
)
from agent.rules.catalogue import CATALOGUE
from agent.rules.entry import FixSite
from agent.rules.evaluate import evaluate, findings_of
from agent.rules.facts import FACTS

CAPABILITY_RULES = {"CapabilitiesNotDropped", "CapabilityAddedButIneffective",
                    "NetBindServiceUnneeded", "PrivilegedContainer"}


def by_rule(verdicts: tuple[Verdict, ...]) -> dict[str, Verdict]:
    return {v.rule: v for v in verdicts}


def test_every_rule_names_known_facts() -> None:
    for rule in CATALOGUE:
        assert set(rule.facts) <= FACTS.keys(), rule.id
        # Only InspectionIncomplete reads no fact: it reports the gaps themselves.
        assert bool(rule.facts) == (rule.id != "InspectionIncomplete"), rule.id


def test_a_full_snapshot_gives_every_rule_a_definite_verdict() -> None:
    decl = declared()
    verdicts = evaluate(observed(), decl, profile_for(decl))
    assert [v.rule for v in verdicts] == [r.id for r in CATALOGUE]
    outcomes = {v.rule: v.outcome for v in verdicts}
    assert Outcome.UNKNOWN not in outcomes.values(), outcomes
    fired = {v.rule for v in verdicts if v.outcome is Outcome.FIRED}
    assert fired == {f.rule for f in findings_of(verdicts)}
    assert outcomes["RunsAsRoot"] is Outcome.PASSED


def test_unread_capabilities_make_their_rules_unknown_with_the_reason() -> None:
    decl = declared()
    why = "permission denied reading /proc/4242/status"
    snap = observed(capabilities=None, incomplete=(Gap("capabilities", why),))
    verdicts = by_rule(evaluate(snap, decl, profile_for(decl)))
    for rule_id in CAPABILITY_RULES:
        verdict = verdicts[rule_id]
        assert verdict.outcome is Outcome.UNKNOWN, rule_id
        assert Gap("capabilities", why) in verdict.missing, rule_id
    assert verdicts["RunsAsRoot"].outcome is Outcome.PASSED
    assert verdicts["SeccompUnconfined"].outcome is Outcome.PASSED


def test_a_declared_privileged_pod_fires_without_its_capability_mask() -> None:
    decl = declared(privileged=True)
    snap = observed(capabilities=None, incomplete=(Gap("capabilities", "gone"),))
    verdict = by_rule(evaluate(snap, decl, profile_for(decl)))["PrivilegedContainer"]
    assert verdict.outcome is Outcome.FIRED and verdict.missing == ()


def test_without_a_pod_spec_declared_rules_are_unknown_not_passed() -> None:
    verdicts = by_rule(evaluate(observed(), None, GENERIC_PROFILE))
    needs_spec = {r.id for r in CATALOGUE if Fact.POD_SPEC in r.facts}
    assert {"RunAsGroupMismatch", "EmptyDirWithoutSizeLimit", "UndeclaredListener"} <= needs_spec
    for rule_id in needs_spec:
        verdict = verdicts[rule_id]
        assert verdict.outcome is Outcome.UNKNOWN, rule_id
        [gap] = verdict.missing
        assert gap.fact == Fact.POD_SPEC and "--pod-spec" in gap.reason
    assert verdicts["SeccompUnconfined"].outcome is Outcome.PASSED


def test_a_netns_that_could_not_be_entered_names_the_network_facts() -> None:
    decl = declared()
    snap = observed(network=None, incomplete=(Gap("network", "setns: Operation not permitted"),))
    verdict = by_rule(evaluate(snap, decl, profile_for(decl)))["ProbePortNotListening"]
    assert verdict.outcome is Outcome.UNKNOWN
    assert verdict.missing == (Gap("network.listeners",
                                   "network: setns: Operation not permitted"),)


def test_an_unjudged_path_makes_writable_path_missing_unknown() -> None:
    decl = declared()
    snap = observed(incomplete=(Gap("paths./tmp", "EACCES"),))
    verdict = by_rule(evaluate(snap, decl, profile_for(decl)))["WritablePathMissing"]
    assert verdict.outcome is Outcome.UNKNOWN
    assert verdict.missing == (Gap("paths", "paths./tmp: EACCES"),)


def test_a_waived_finding_is_waived_not_passed() -> None:
    decl = declared()
    waiver = Waiver("SeccompUnconfined", "profiling build", namespace="spark-operator")
    verdicts = by_rule(evaluate(observed(seccomp="disabled"), decl, profile_for(decl),
                                AuditConfig(waivers=(waiver,))))
    waived = verdicts["SeccompUnconfined"]
    assert (waived.outcome, waived.findings) == (Outcome.WAIVED, ())
    assert (waived.category, waived.severity) == ("privileges", Severity.HIGH)


def test_findings_are_stamped_inside_their_verdicts() -> None:
    decl = declared()
    config = dataclasses.replace(DEFAULT_CONFIG, severity_overrides=(
        ("SeccompUnconfined", Severity.LOW),))
    verdict = by_rule(evaluate(observed(seccomp="disabled"), decl, profile_for(decl),
                               config))["SeccompUnconfined"]
    [finding] = verdict.findings
    assert (finding.pid, finding.container, finding.severity) == (
        4242, "spark-operator-controller", Severity.LOW)


def test_remediation_templates_render_for_the_profile() -> None:
    decl = declared()
    profile = profile_for(decl)
    [finding] = by_rule(evaluate(observed(seccomp="disabled"), decl, profile))[
        "SeccompUnconfined"].findings
    rule = next(r for r in CATALOGUE if r.id == "SeccompUnconfined")
    assert rule.site is FixSite.CONTAINER_SECURITY_CONTEXT
    assert finding.remediation == rule.render_fix(profile)
    # the chart-managed controller gets the Helm values path as well as the pod field
    assert "controller.securityContext" in finding.remediation
    assert "    type: RuntimeDefault" in finding.remediation
    for rule in CATALOGUE:  # a template that names a parameter no check passes fails here
        if rule.remediation and "{" not in rule.remediation:
            assert rule.render_fix(profile)


def test_unknown_socket_owners_leave_owner_free_rules_a_verdict() -> None:
    decl = declared()
    base = observed()
    assert base.network is not None
    gap = Gap("network.listeners.owners", "1 processes unreadable")
    snap = dataclasses.replace(base, network=dataclasses.replace(base.network, gaps=(gap,)))
    verdicts = by_rule(evaluate(snap, decl, profile_for(decl)))
    assert verdicts["UndeclaredListener"].missing == (gap,)
    assert verdicts["UndeclaredListener"].outcome is Outcome.UNKNOWN
    assert verdicts["ProbePortNotListening"].outcome is Outcome.PASSED
