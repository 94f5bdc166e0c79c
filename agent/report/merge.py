"""Findings merged per container: a parent and its forked child report one finding, naming
both pids, in every output (table, JSON/YAML, Events).

Rules speak of one process (`java (pid 4242) runs ...`). Two findings of one container
merge when they say the same thing about different pids: same rule, severity, fix, and a
message that differs only in the pid. A process with no declared container is its own group.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from agent.model import Finding, Report, TargetReport

PIDS_MARK = "\0pids\0"


@dataclass(frozen=True, slots=True)
class MergedFinding:
    finding: Finding  # the first one; its message names every pid
    pids: tuple[int, ...]


def pid_phrase(pids: tuple[int, ...]) -> str:
    return f"pid {pids[0]}" if len(pids) == 1 else f"pids {', '.join(map(str, pids))}"


def _template(finding: Finding) -> str:
    if finding.pid is None:
        return finding.message
    return re.sub(rf"\bpid {finding.pid}\b", PIDS_MARK, finding.message)


def merge_findings(findings: Iterable[Finding]) -> list[MergedFinding]:
    """One entry per (container, rule, what was said), in first-seen order."""
    groups: dict[tuple[object, ...], list[Finding]] = {}
    for finding in findings:
        owner: tuple[object, ...] = (
            (finding.pod, finding.container) if finding.container is not None
            else ("pid", finding.pid))
        key = (*owner, finding.rule, finding.severity, finding.remediation, _template(finding))
        groups.setdefault(key, []).append(finding)
    merged: list[MergedFinding] = []
    for group in groups.values():
        first = group[0]
        pids = tuple(sorted({f.pid for f in group if f.pid is not None}))
        message = first.message
        if len(pids) > 1:
            message = _template(first).replace(PIDS_MARK, pid_phrase(pids))
        merged.append(MergedFinding(_with_message(first, message), pids))
    return merged


def _with_message(finding: Finding, message: str) -> Finding:
    return finding if message == finding.message else replace(finding, message=message)


def container_groups(report: Report) -> list[list[TargetReport]]:
    """The report's targets, one group per container (declared), else one per process."""
    groups: dict[tuple[str, ...], list[TargetReport]] = {}
    for target in report.targets:
        declared = target.declared
        key = ((declared.pod.uid, declared.pod.namespace, declared.pod.name,
                declared.container_name) if declared is not None
               else ("pid", str(target.observed.pid)))
        groups.setdefault(key, []).append(target)
    return list(groups.values())
