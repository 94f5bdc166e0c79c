"""Findings as the outputs show them (table, JSON/YAML, Events): the engine has already made
them one per rule, container and subject, each naming every pid it was seen in
(`agent.rules.container`); this pairs each with its pids and groups targets by container.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.model import AuditResult, Finding, TargetResult


@dataclass(frozen=True, slots=True)
class MergedFinding:
    finding: Finding  # its message names every pid
    pids: tuple[int, ...]


def pid_phrase(pids: tuple[int, ...]) -> str:
    return f"pid {pids[0]}" if len(pids) == 1 else f"pids {', '.join(map(str, pids))}"


def merge_findings(findings: Iterable[Finding]) -> list[MergedFinding]:
    """Each finding with its pids (`Finding.pids`, else its one `pid`), in order."""
    return [MergedFinding(f, f.pids or ((f.pid,) if f.pid is not None else ()))
            for f in findings]


def container_groups(audit_result: AuditResult) -> list[list[TargetResult]]:
    """The audit result's targets, one group per container (declared), else one per process."""
    groups: dict[tuple[str, ...], list[TargetResult]] = {}
    for target in audit_result.targets:
        key = target.container_key or ("pid", str(target.observed.pid))
        groups.setdefault(key, []).append(target)
    return list(groups.values())
