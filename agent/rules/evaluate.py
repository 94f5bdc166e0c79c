"""Give every rule a verdict, then apply --config waivers and severity overrides.

A rule whose facts were all read runs: it FIRED (findings) or PASSED. A rule with a fact
missing is UNKNOWN, naming the fact, unless it fired anyway on what it had (a declared
`privileged: true` needs no capability mask). A rule that raises is UNKNOWN too, and
becomes an InspectionIncomplete finding naming it; the other rules still run.
"""

from __future__ import annotations

import dataclasses

from agent.model import (
    DEFAULT_CONFIG,
    NO_PROCESS,
    AuditConfig,
    DeclaredContainer,
    Finding,
    Gap,
    ObservedProcess,
    Outcome,
    Profile,
    Severity,
    Verdict,
    Waiver,
)
from agent.rules.catalogue import CATALOGUE
from agent.rules.entry import Rule
from agent.rules.facts import missing_facts
from agent.rules.incomplete import INSPECTION_INCOMPLETE
from agent.rules.profiles import selector_matches


def run_rule(rule: Rule, observed: ObservedProcess, declared: DeclaredContainer | None,
             profile: Profile) -> Verdict:
    """The rule's verdict before waivers; a rule that raises is UNKNOWN, never a crash."""
    missing = missing_facts(rule.facts, observed, declared)
    try:
        findings = tuple(rule.check(observed, declared, profile))
    except Exception as exc:  # noqa: BLE001 - one broken rule must not hide the others
        why = f"{type(exc).__name__}: {exc}"
        message = (f"Rule {rule.id} failed on {observed.comm} (pid {observed.pid}): "
                   f"{why}. Its verdict is unknown.")
        error = INSPECTION_INCOMPLETE.finding(message, "# Report this as an opaudit bug.",
                                              subject=f"rule {rule.id}")
        return Verdict(rule.id, Outcome.UNKNOWN, (error,), (Gap(f"rule {rule.id}", why),))
    if findings:
        return Verdict(rule.id, Outcome.FIRED, findings)
    if missing:
        return Verdict(rule.id, Outcome.UNKNOWN, missing=missing)
    return Verdict(rule.id, Outcome.PASSED)


def waived(finding: Finding, declared: DeclaredContainer | None, waivers: tuple[Waiver, ...]
           ) -> Waiver | None:
    """The first waiver that silences the finding. A waiver needs the pod's namespace/labels,
    so without a declared side nothing is waived."""
    if declared is None:
        return None
    for waiver in waivers:
        if waiver.rule != finding.rule:
            continue
        if waiver.namespace is not None and waiver.namespace != declared.pod.namespace:
            continue
        if selector_matches(waiver.selector, declared.labels):
            return waiver
    return None


def evaluate(observed: ObservedProcess, declared: DeclaredContainer | None, profile: Profile,
             config: AuditConfig = DEFAULT_CONFIG,
             rules: tuple[Rule, ...] = CATALOGUE) -> tuple[Verdict, ...]:
    """One verdict per rule, in catalogue order; findings stamped with pid, comm, pod and
    container (`agent.rules.container` then makes them the container's)."""
    overrides: dict[str, Severity] = dict(config.severity_overrides)
    pod = f"{declared.pod.namespace}/{declared.pod.name}" if declared else None
    container = declared.container_name if declared else None
    pid = None if observed.pid == NO_PROCESS else observed.pid
    comms = (observed.comm,) if observed.comm else ()
    verdicts: list[Verdict] = []
    for rule in rules:
        verdict = run_rule(rule, observed, declared, profile)
        kept = tuple(
            _stamped(finding, overrides.get(finding.rule, finding.severity), pid, comms, pod,
                     container)
            for finding in verdict.findings if not waived(finding, declared, config.waivers))
        if verdict.outcome is Outcome.FIRED and not kept:
            waiver = waived(verdict.findings[0], declared, config.waivers)
            verdict = dataclasses.replace(verdict, outcome=Outcome.WAIVED,
                                          reason=waiver.reason if waiver else "")
        verdicts.append(dataclasses.replace(
            verdict, findings=kept, category=rule.category,
            severity=overrides.get(rule.id, rule.severity)))
    return tuple(verdicts)


def _stamped(finding: Finding, severity: Severity, pid: int | None, comms: tuple[str, ...],
             pod: str | None, container: str | None) -> Finding:
    """The finding with where it was seen: the audited process, unless the rule named the
    processes it is about (a listener's owners, which may be another process of the
    container)."""
    if not finding.pids:
        finding = dataclasses.replace(finding, pids=() if pid is None else (pid,), comms=comms)
    first = finding.pids[0] if finding.pids else None
    return dataclasses.replace(finding, severity=severity, pid=first, pod=pod,
                               container=container)


def findings_of(verdicts: tuple[Verdict, ...]) -> tuple[Finding, ...]:
    """Every finding of the verdicts, most severe first, then in catalogue order."""
    order = {verdict.rule: index for index, verdict in enumerate(verdicts)}
    findings = [f for verdict in verdicts for f in verdict.findings]
    findings.sort(key=lambda f: (-f.severity.rank, order.get(f.rule, len(order))))
    return tuple(findings)
