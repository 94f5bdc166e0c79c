"""A catalogue entry: the rule's id, severity, words, facts and fix sit beside its check."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.model import (
    GENERIC_PROFILE,
    DeclaredContainer,
    Fact,
    Finding,
    ObservedProcess,
    Profile,
    Severity,
    SocketOwner,
)
from agent.rules.fixes import container_security_fix, pod_security_fix

Check = Callable[[ObservedProcess, DeclaredContainer | None, Profile], Iterable[Finding]]


class FixSite(enum.Enum):
    """Where a remediation template's text goes (the fix says so, with the Helm values path)."""

    TEXT = "text"  # the template is the whole fix
    CONTAINER_SECURITY_CONTEXT = "spec.containers[].securityContext"
    POD_SECURITY_CONTEXT = "spec.securityContext"


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the README's rule catalogue. `id` is also the Kubernetes Event `reason`.

    `facts` names what the check reads (`agent.rules.facts.FACTS`): without one of them
    the verdict is UNKNOWN. `remediation` is the fix as a `str.format` template; a check
    passes its parameters to `finding`, which renders it at `site` for the profile.
    """

    id: str
    severity: Severity
    title: str  # what it checks, one line
    why: str  # why it matters, one line
    fix: str  # the remediation in one line; findings carry the full snippet
    check: Check
    facts: tuple[Fact, ...] = ()
    remediation: str = ""
    site: FixSite = FixSite.TEXT
    category: str = ""  # set by the catalogue from the rule's module

    def finding(self, message: str, remediation: str | None = None,
                severity: Severity | None = None, *, profile: Profile = GENERIC_PROFILE,
                observed: str | None = None, declared: str | None = None,
                subject: str = "", holders: tuple[SocketOwner, ...] = (),
                **params: object) -> Finding:
        """A finding of this rule; without `remediation`, the template filled with `params`.
        `observed` and `declared` are the values compared, in a few words each; `subject`
        what it is about ("tcp/8081", "/tmp", "NET_BIND_SERVICE"; "" for the container);
        `holders` the processes it is about when not the audited one (a socket's owners)."""
        if remediation is None:
            remediation = self.render_fix(profile, **params)
        return Finding(rule=self.id, severity=severity or self.severity, message=message,
                       remediation=remediation, observed=observed, declared=declared,
                       fix_line=self.fix, subject=subject,
                       pids=tuple(sorted({o.pid for o in holders})),
                       comms=tuple(dict.fromkeys(o.comm for o in holders if o.comm)))

    def render_fix(self, profile: Profile, **params: object) -> str:
        body = self.remediation.format(**params)
        if self.site is FixSite.TEXT:
            return body
        if self.site is FixSite.CONTAINER_SECURITY_CONTEXT:
            return container_security_fix(profile, body)
        return pod_security_fix(profile, body)
