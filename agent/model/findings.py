"""Findings, verdicts and the result of an audit."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from agent.model.declared import DeclaredContainer, Profile
from agent.model.facts import Gap
from agent.model.observed import ObservedProcess


class Severity(enum.Enum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown severity {text!r} (one of: {names})") from None


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: Severity
    message: str
    remediation: str
    pid: int | None = None
    pod: str | None = None  # "namespace/name"
    container: str | None = None
    observed: str | None = None  # what the kernel showed, in a few words
    declared: str | None = None  # what the pod (or its profile) declares, when it matters
    fix_line: str = ""  # the catalogue's one-line fix, for where a snippet does not fit
    # What the finding is about, stable across restarts and rewording ("tcp/8081", "/tmp",
    # "NET_BIND_SERVICE"; "" for the container as a whole): with rule and container it names
    # one finding (a policy report result's resultID, the Event's series).
    subject: str = ""
    # Every process of the container it was seen in (`pid` is the first), with their comms:
    # a rule fires once per container and subject, however many processes it holds.
    pids: tuple[int, ...] = ()
    comms: tuple[str, ...] = ()


class Outcome(enum.Enum):
    """A rule's verdict on one process (the policy report's fail/warn, pass, skip, error)."""

    FIRED = "fired"
    PASSED = "passed"  # evaluated with every fact it needs, and did not fire
    WAIVED = "waived"  # fired, but a --config waiver silences it
    UNKNOWN = "unknown"  # a fact it needs could not be read: silence is not a pass


@dataclass(frozen=True, slots=True)
class Verdict:
    rule: str
    outcome: Outcome
    findings: tuple[Finding, ...] = ()
    missing: tuple[Gap, ...] = ()  # UNKNOWN: the facts that were missing, and why
    category: str = ""  # identity | privileges | filesystem | network | inspection
    severity: Severity | None = None  # the rule's severity (after --config overrides)
    reason: str = ""  # WAIVED: the reason the --config waiver gives


@dataclass(frozen=True, slots=True)
class TargetResult:
    """One audited process with its declared side (when known), its findings (most severe
    first) and every rule's verdict (catalogue order), on this process.

    A container is judged as a whole: its findings, one per rule and subject naming every
    pid (`Finding.pids`), sit on the target of its first process; its other processes'
    targets carry their facts and verdicts, and no findings. `AuditResult.findings` is thus
    one entry per rule x container x subject."""

    observed: ObservedProcess
    declared: DeclaredContainer | None
    profile: Profile
    findings: tuple[Finding, ...] = field(default=())
    verdicts: tuple[Verdict, ...] = field(default=())

    @property
    def container_key(self) -> tuple[str, str, str, str] | None:
        """The declared container this process belongs to (pod uid, namespace, name,
        container), which judgement and every output group by; None without a declared side."""
        d = self.declared
        return None if d is None else (d.pod.uid, d.pod.namespace, d.pod.name, d.container_name)


@dataclass(frozen=True, slots=True)
class AuditCycle:
    """What one `run` cycle covered, for sinks that keep node-wide state (metrics, reports):
    a pod audited with no process found has no target, yet its old findings are gone."""

    trigger: str  # "interval" | "watch" | "once"
    seconds: float  # wall time of the audit
    pod_uids: tuple[str, ...]  # every pod audited, with or without targets
    partial: bool  # only the pods a watch event named; the others keep their last audit


@dataclass(frozen=True, slots=True)
class AuditResult:
    node: str | None
    targets: tuple[TargetResult, ...]
    cycle: AuditCycle | None = None  # None for `diagnose`

    @property
    def findings(self) -> tuple[Finding, ...]:
        """One per rule x container x subject (see TargetResult), most severe first per
        container: what the table, JSON, Events, reports, log and metrics count."""
        return tuple(f for t in self.targets for f in t.findings)
