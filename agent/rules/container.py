"""The container is the unit of judgement: its processes' findings become one finding per
rule and subject, naming every pid and comm (README "One finding per container").

Rules read one process's snapshot, but what they judge belongs to the container: its
securityContext, its capabilities, its listeners (whichever process opened them), and the
fix goes into the container's spec. A prefork server's four processes running as root are
one RunsAsRoot, not four. A capability declared in `capabilities.add` is ineffective only
when no process of the container holds it effective (a root parent binding :80 uses it for
its non-root workers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

from agent.model import Finding, Outcome, TargetResult, Verdict, capability_bit

CAPABILITY_ADDED_BUT_INEFFECTIVE = "CapabilityAddedButIneffective"
PRIVILEGED_PORT_NOT_BINDABLE = "PrivilegedPortNotBindable"
NET_BIND_SERVICE_BIT = 10
WHO_MARK, PID_MARK = "\0who\0", "\0pid\0"


def pid_phrase(pids: Sequence[int]) -> str:
    """`pid 4242` / `pids 4242, 4243`."""
    return f"pid {pids[0]}" if len(pids) == 1 else f"pids {', '.join(map(str, pids))}"


def judge_container(targets: Sequence[TargetResult]) -> list[TargetResult]:
    """The targets of one container's processes (or of one process with no container): the
    container's findings on the first, none on the others; verdicts stay each process's."""
    if not targets:
        return []
    targets = _used_capabilities_kept(targets)
    order = {v.rule: i for i, v in enumerate(targets[0].verdicts)}
    merged = merge_by_subject(f for t in targets for f in t.findings)
    merged.sort(key=lambda f: (-f.severity.rank, order.get(f.rule, len(order))))
    first, *rest = targets
    return [dataclasses.replace(first, findings=tuple(merged)),
            *(dataclasses.replace(t, findings=()) for t in rest)]


def merge_by_subject(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per (pod, container, rule, subject), in first-seen order; a finding with
    no container is its process's own."""
    groups: dict[tuple[object, ...], list[Finding]] = {}
    for finding in findings:
        owner: tuple[object, ...] = ((finding.pod, finding.container)
                                     if finding.container is not None else ("pid", finding.pid))
        groups.setdefault((*owner, finding.rule, finding.subject), []).append(finding)
    return [combine(group) for group in groups.values()]


def combine(group: Sequence[Finding]) -> Finding:
    """The findings of one rule and subject in several processes, as one that names them all:
    the most severe one's fix; its message with every comm and pid when the processes' messages
    differ only in who they name, else each distinct message in turn."""
    lead = max(group, key=lambda f: f.severity.rank)  # the first of the most severe
    pids = sorted({p for f in group for p in (f.pids or _own(f.pid))})
    comms = tuple(dict.fromkeys(c for f in group for c in f.comms if c))
    if len(group) == 1 and len(pids) <= 1:
        return dataclasses.replace(lead, pids=tuple(pids), comms=comms)
    templates = {_template(f) for f in group}
    if len(templates) == 1:
        template = templates.pop()
        who = f"{', '.join(comms)} ({pid_phrase(pids)}" if comms else f"({pid_phrase(pids)}"
        if len(comms) > 1 and template.startswith(WHO_MARK):
            who = f"Each of {who}"  # "Each of httpd, nc (pids 10, 12) runs ...": one verb
        message = template.replace(WHO_MARK, who).replace(PID_MARK, pid_phrase(pids))
    else:
        message = " ".join(dict.fromkeys(f.message for f in (lead, *group)))
    return dataclasses.replace(
        lead, message=message, pid=pids[0] if pids else lead.pid, pids=tuple(pids), comms=comms,
        observed=_joined(f.observed for f in (lead, *group)),
        declared=_joined(f.declared for f in (lead, *group)))


def _own(pid: int | None) -> tuple[int, ...]:
    return () if pid is None else (pid,)


def _template(finding: Finding) -> str:
    """The message with its process named by a mark: `java (pid 4242` and a bare `pid 4242`."""
    text = finding.message
    if finding.pid is None:
        return text
    for comm in finding.comms:
        text = text.replace(f"{comm} (pid {finding.pid}", WHO_MARK)
    needle, pieces, start = f"pid {finding.pid}", [], 0
    while (at := text.find(needle, start)) >= 0:
        end = at + len(needle)
        whole = (at == 0 or not text[at - 1].isalnum()) and not text[end:end + 1].isdigit()
        pieces += [text[start:at], PID_MARK if whole else needle]
        start = end
    return "".join([*pieces, text[start:]])


def _joined(values: Iterable[str | None]) -> str | None:
    kept = list(dict.fromkeys(v for v in values if v))
    return "; ".join(kept) if kept else None


def _needed_capability(finding: Finding) -> int | None:
    """The capability whose absence from every effective set the finding is about."""
    if finding.rule == CAPABILITY_ADDED_BUT_INEFFECTIVE and finding.subject:
        return capability_bit(finding.subject)
    if finding.rule == PRIVILEGED_PORT_NOT_BINDABLE:
        return NET_BIND_SERVICE_BIT
    return None


def _used_capabilities_kept(targets: Sequence[TargetResult]) -> list[TargetResult]:
    """Drop what another process of the container disproves by holding the capability
    effective: an `add` that gives a root parent NET_BIND_SERVICE is not ineffective, and a
    port below ip_unprivileged_port_start that it can bind is bindable by the container."""
    effective = 0
    for target in targets:
        caps = target.observed.capabilities
        effective |= caps.effective if caps is not None else 0

    def used(finding: Finding) -> bool:
        bit = _needed_capability(finding)
        return bit is not None and bool(effective >> bit & 1)

    kept = []
    for target in targets:
        if not any(used(f) for f in target.findings):
            kept.append(target)
            continue
        verdicts = tuple(_without(v, used) for v in target.verdicts)
        kept.append(dataclasses.replace(
            target, verdicts=verdicts,
            findings=tuple(f for f in target.findings if not used(f))))
    return kept


def _without(verdict: Verdict, used: Callable[[Finding], bool]) -> Verdict:
    findings = tuple(f for f in verdict.findings if not used(f))
    if findings == verdict.findings:
        return verdict
    outcome = verdict.outcome if findings else Outcome.PASSED
    return dataclasses.replace(verdict, findings=findings, outcome=outcome)
