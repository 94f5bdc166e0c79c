"""Run every rule in isolation, then apply --config waivers and severity overrides."""

from __future__ import annotations

import dataclasses

from agent.model import (
    DEFAULT_CONFIG,
    AuditConfig,
    DeclaredContainer,
    Finding,
    ObservedProcess,
    Profile,
    Severity,
    Waiver,
)
from agent.rules.catalogue import CATALOGUE
from agent.rules.entry import Rule
from agent.rules.incomplete import INSPECTION_INCOMPLETE
from agent.rules.profiles import selector_matches


def run_rule(rule: Rule, observed: ObservedProcess, declared: DeclaredContainer | None,
             profile: Profile) -> list[Finding]:
    """The rule's findings; a rule that raises becomes one entry naming it, never a crash."""
    try:
        return list(rule.check(observed, declared, profile))
    except Exception as exc:  # noqa: BLE001 - one broken rule must not hide the others
        message = (f"Rule {rule.id} failed on {observed.comm} (pid {observed.pid}): "
                   f"{type(exc).__name__}: {exc}. Its verdict is unknown.")
        return [INSPECTION_INCOMPLETE.finding(message, "# Report this as an opaudit bug.")]


def waived(finding: Finding, declared: DeclaredContainer | None, waivers: tuple[Waiver, ...]
           ) -> bool:
    """A waiver needs the pod's namespace/labels, so without a declared side nothing is waived."""
    if declared is None:
        return False
    for waiver in waivers:
        if waiver.rule != finding.rule:
            continue
        if waiver.namespace is not None and waiver.namespace != declared.pod.namespace:
            continue
        if selector_matches(waiver.selector, declared.labels):
            return True
    return False


def evaluate(observed: ObservedProcess, declared: DeclaredContainer | None, profile: Profile,
             config: AuditConfig = DEFAULT_CONFIG,
             rules: tuple[Rule, ...] = CATALOGUE) -> tuple[Finding, ...]:
    """All findings for one process, most severe first, stamped with pid, pod and container."""
    overrides: dict[str, Severity] = dict(config.severity_overrides)
    pod = f"{declared.pod.namespace}/{declared.pod.name}" if declared else None
    container = declared.container_name if declared else None
    order = {rule.id: index for index, rule in enumerate(rules)}
    findings: list[Finding] = []
    for rule in rules:
        for finding in run_rule(rule, observed, declared, profile):
            if waived(finding, declared, config.waivers):
                continue
            findings.append(dataclasses.replace(
                finding, severity=overrides.get(finding.rule, finding.severity),
                pid=observed.pid, pod=pod, container=container))
    findings.sort(key=lambda f: (-f.severity.rank, order.get(f.rule, len(order))))
    return tuple(findings)
