"""A catalogue entry: the rule's id, severity and words sit beside the function that checks it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.model import DeclaredContainer, Finding, ObservedProcess, Profile, Severity

Check = Callable[[ObservedProcess, DeclaredContainer | None, Profile], Iterable[Finding]]


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of SPEC §3. `id` is also the Kubernetes Event `reason`."""

    id: str
    severity: Severity
    title: str  # what it checks, one line
    why: str  # why it matters, one line
    fix: str  # the remediation in one line; findings carry the full snippet
    check: Check

    def finding(self, message: str, remediation: str, severity: Severity | None = None) -> Finding:
        return Finding(rule=self.id, severity=severity or self.severity, message=message,
                       remediation=remediation)
