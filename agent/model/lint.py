"""lint: facts predicted from manifests (`opaudit lint`)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.model.declared import DeclaredContainer, Profile
from agent.model.findings import Finding, Verdict
from agent.model.observed import ObservedProcess


@dataclass(frozen=True, slots=True)
class ManifestObject:
    """A workload object of the input, and where its container is written."""

    kind: str  # "Deployment", "Pod", "CronJob", ...
    namespace: str  # metadata.namespace as written ("" when the manifest leaves it out)
    name: str
    file: str  # the input as named on the command line ("-" is "stdin")
    line: int  # 1-based line of the container's entry in that file


@dataclass(frozen=True, slots=True)
class RuntimePrediction:
    """The snapshot predicted under one runtime model, for one alternative (`condition`:
    None when certain, else what must hold about the image, such as its file capabilities)."""

    runtime: str
    observed: ObservedProcess
    condition: str | None = None


@dataclass(frozen=True, slots=True)
class LintFinding:
    """A predicted finding and the runtimes under which it holds. `conditions` names, per
    runtime, what must hold for it there (empty: it holds for certain on those runtimes)."""

    finding: Finding
    runtimes: tuple[str, ...]
    conditions: tuple[tuple[str, str], ...] = ()  # (runtime, condition)


@dataclass(frozen=True, slots=True)
class LintContainer:
    source: ManifestObject
    declared: DeclaredContainer
    profile: Profile
    init: bool
    findings: tuple[LintFinding, ...]
    unknown: tuple[Verdict, ...]  # rules that could not be judged, with the missing facts
    predictions: tuple[RuntimePrediction, ...]


@dataclass(frozen=True, slots=True)
class LintResult:
    containers: tuple[LintContainer, ...]
    runtimes: tuple[str, ...]  # the models evaluated
    skipped: tuple[tuple[str, int], ...] = ()  # (kind, count) of objects with no pod template
    objects: int = 0  # workload objects read
    labels: tuple[tuple[str, str], ...] = ()  # runtime name -> as people say it
    sources: tuple[tuple[str, tuple[str, ...]], ...] = ()  # runtime name -> its model's sources

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f.finding for c in self.containers for f in c.findings)
