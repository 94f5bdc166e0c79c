"""One policy report per audited Pod (README: Policy reports): its name, its results and its body.

Both APIs carry the same result shape (openreports.io/v1alpha1 `Report` and
wgpolicyk8s.io/v1alpha2 `PolicyReport`, one chosen by `discovery.py`); only the openreports
`Report` has a top-level `source` and `configuration.limits`, so those two go only there.
Every result also names `source`, which both result types have.

A result per finding (`fail` for low and above, `warn` for info), then per container and
rule: `error` when the rule could not be evaluated (naming the facts), `skip` when a
--config waiver silenced it, `pass` when it ran and did not fire.

A result keeps its identity across container restarts: Policy Reporter identifies a result
by `properties.resultID` when set, else by a hash of its message among other fields
(kyverno/policy-reporter, pkg/openreports result ID). `resultID` is a hash of pod uid,
container, rule and the finding's subject (the port, the path), and the message names no
pid (pids go in `properties.pid`). `content` is the report without timestamps and pids: a
cycle writes only when it differs from what the server holds, so a restarted container
(new pids, same findings) costs no write.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from agent.model import AuditResult, Finding, Outcome, PodRef, Severity, TargetResult, Verdict
from agent.output.events.body import compact_fix, sanitize_text
from agent.output.policyreports.discovery import OPENREPORTS, ReportApi

POLICY = "opaudit"
SOURCE = "opaudit"
MANAGED_BY = {"app.kubernetes.io/managed-by": "opaudit"}
# The node whose agent wrote the report: at start an agent lists only its own node's reports
# (a label selector), to delete those of pods it no longer selects.
NODE_LABEL = "opaudit.dev/node"
LABEL_VALUE_LIMIT = 63  # apimachinery IsValidLabelValue
VOLATILE_PROPERTIES = ("pid",)  # not part of a result's content: a restart changes them
# What names a pid in a rule's text: "comm (pid 42)", "(pid 42, uid 0)", "(pids 4, 5)",
# "process 42 does not exist", "/proc/42/fd".
_PID_ALONE = re.compile(r" ?\(pids? \d+(?:, \d+)*\)")
_PID_FIRST = re.compile(r"\(pids? \d+(?:, \d+)*, ")
_PROCESS_PID = re.compile(r"\bprocess \d+\b")
_PROC_PID = re.compile(r"/proc/\d+/")
_PID_WORD = re.compile(r"\bpids? \d+(?:, \d+)*")
DEFAULT_MAX_RESULTS = 100
# Order in which results are kept when a report holds more than --report-max-results.
RESULT_ORDER = ("fail", "warn", "error", "skip", "pass")


def report_name(pod: PodRef) -> str:
    """Stable across agent restarts and pod renames: the Pod's uid (as Kyverno names its)."""
    return f"opaudit-{pod.uid}"


@dataclass(frozen=True, slots=True)
class PodReport:
    """What one Pod's report must hold, timestamps aside."""

    pod: PodRef
    results: tuple[dict[str, Any], ...]
    dropped: int  # results beyond --report-max-results
    gone: bool = False  # the Pod left the selection (or the node): delete its report
    node: str | None = None  # the node whose agent audits the Pod (a label on the report)
    # What is compared each cycle against the report last written: made once, not per look.
    content: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "content", content_key(list(self.results)))

    @property
    def name(self) -> str:
        return report_name(self.pod)


def pod_reports(audit_result: AuditResult, max_results: int = DEFAULT_MAX_RESULTS
                ) -> list[PodReport]:
    """One PodReport per Pod audited in `audit_result` (targets without a Pod have no
    report)."""
    by_pod: dict[str, list[TargetResult]] = {}
    for target in audit_result.targets:
        if target.declared is not None:
            by_pod.setdefault(target.declared.pod.uid, []).append(target)
    out = []
    for targets in by_pod.values():
        assert targets[0].declared is not None
        results = pod_results(targets)
        out.append(PodReport(targets[0].declared.pod, tuple(results[:max_results]),
                             max(0, len(results) - max_results), node=audit_result.node))
    return out


def node_label_value(node: str) -> str:
    """`node` as a label value: a node name is a DNS subdomain of up to 253 characters, a
    label value at most 63; a longer name keeps its start and a hash of the whole."""
    if len(node) <= LABEL_VALUE_LIMIT:
        return node
    digest = hashlib.sha256(node.encode()).hexdigest()[:8]
    return f"{node[:LABEL_VALUE_LIMIT - 9]}-{digest}"


def own_reports_selector(node: str) -> str:
    """The label selector of the reports that the agent on `node` wrote."""
    (key, value), = MANAGED_BY.items()
    return f"{key}={value},{NODE_LABEL}={node_label_value(node)}"


def result_id(pod_uid: str, container: str, rule: str, subject: str) -> str:
    """Stable across restarts and rewording: what the result is about, hashed."""
    identity = json.dumps([pod_uid, container, rule, subject], separators=(",", ":"))
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def stable_text(text: str) -> str:
    """`text` without the pids it names ("java (pid 42) runs as uid 0" -> "java runs as uid
    0"): a restart changes them, and Policy Reporter would take the result for a new one."""
    text = _PID_FIRST.sub("(", _PID_ALONE.sub("", text))
    text = _PROC_PID.sub("/proc/PID/", _PROCESS_PID.sub("the process", text))
    return " ".join(_PID_WORD.sub("the process", text).split())


def pod_results(targets: list[TargetResult]) -> list[dict[str, Any]]:
    """Every result of a Pod's targets, most important first (what a cap keeps); findings
    with one identity (several processes of a container) are one result naming every pid."""
    categories = {v.rule: v.category for t in targets for v in t.verdicts}
    pod_uid = targets[0].declared.pod.uid if targets[0].declared else ""
    by_id: dict[str, dict[str, Any]] = {}
    for target in targets:
        for finding in target.findings:
            entry = finding_result(finding, categories.get(finding.rule, ""), pod_uid)
            same = by_id.setdefault(entry["properties"]["resultID"], entry)
            if same is not entry and entry["properties"].get("pid"):
                pids = same["properties"].get("pid", "").split(", ")
                same["properties"]["pid"] = ", ".join(
                    dict.fromkeys(p for p in (*pids, entry["properties"]["pid"]) if p))
    results = list(by_id.values())
    by_container: dict[str, dict[str, list[Verdict]]] = {}
    for target in targets:
        container = target.declared.container_name if target.declared else ""
        for verdict in target.verdicts:
            by_container.setdefault(container, {}).setdefault(verdict.rule, []).append(verdict)
    for container, rules in by_container.items():
        for verdicts in rules.values():
            checked = verdict_result(container, verdicts, pod_uid)
            if checked is not None:
                results.append(checked)
    rank = {name: index for index, name in enumerate(RESULT_ORDER)}
    severity_rank = {s.value: s.rank for s in Severity}
    results.sort(key=lambda r: (rank[r["result"]], -severity_rank.get(r.get("severity", ""), -1)))
    return results


def finding_result(finding: Finding, category: str = "", pod_uid: str = "") -> dict[str, Any]:
    container = finding.container or ""
    properties = {"resultID": result_id(pod_uid, container, finding.rule, finding.subject),
                  "container": container, "subject": finding.subject,
                  "pid": ", ".join(map(str, finding.pids or (finding.pid or "",))),
                  "observed": stable_text(sanitize_text(finding.observed or "")),
                  "declared": stable_text(sanitize_text(finding.declared or "")),
                  "fix": stable_text(sanitize_text(compact_fix(finding.remediation)))}
    result = "fail" if finding.severity.rank >= Severity.LOW.rank else "warn"
    return _result(finding.rule, result, category, finding.severity,
                   stable_text(sanitize_text(finding.message)), properties)


def verdict_result(container: str, verdicts: list[Verdict], pod_uid: str = ""
                   ) -> dict[str, Any] | None:
    """The container's entry for a rule that did not fire in any of its processes."""
    if any(v.outcome is Outcome.FIRED for v in verdicts):
        return None  # its findings are the results
    first = verdicts[0]
    identity = {"resultID": result_id(pod_uid, container, first.rule, ""),
                "container": container}
    unknown = [v for v in verdicts if v.outcome is Outcome.UNKNOWN]
    if unknown:
        missing = dict.fromkeys(f"{g.fact}: {g.reason}" for v in unknown for g in v.missing)
        facts = ", ".join(dict.fromkeys(g.fact for v in unknown for g in v.missing))
        return _result(first.rule, "error", first.category, first.severity,
                       sanitize_text(f"{first.rule} could not be evaluated: {facts} unknown"),
                       {**identity, "missing": stable_text(sanitize_text("; ".join(missing)))})
    waived = next((v for v in verdicts if v.outcome is Outcome.WAIVED), None)
    if waived is not None:
        reason = f": {sanitize_text(waived.reason)}" if waived.reason else ""
        return _result(first.rule, "skip", first.category, first.severity,
                       f"{first.rule} fired but is waived by --config{reason}", identity)
    return _result(first.rule, "pass", first.category, first.severity,
                   f"{first.rule} checked: did not fire", identity)


def _result(rule: str, result: str, category: str, severity: Severity | None, message: str,
            properties: dict[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"source": SOURCE, "policy": POLICY, "rule": rule, "result": result,
                             "scored": True, "message": message,
                             "properties": {k: v for k, v in properties.items() if v},
                             # A finding whose rule had no verdict of its own (a rule that
                             # crashed reports InspectionIncomplete) is about inspection.
                             "category": category or "inspection"}
    if severity is not None:
        entry["severity"] = severity.value
    return entry


def summary(results: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(("pass", "fail", "warn", "error", "skip"), 0)
    for result in results:
        counts[result["result"]] += 1
    return counts


def content_key(results: list[dict[str, Any]]) -> str:
    """The results as the server would compare them, without their timestamps and pids."""
    bare = [{**{k: v for k, v in r.items() if k != "timestamp"},
             "properties": {k: v for k, v in (r.get("properties") or {}).items()
                            if k not in VOLATILE_PROPERTIES}} for r in results]
    return json.dumps(bare, sort_keys=True, separators=(",", ":"))


def with_timestamps(results: tuple[dict[str, Any], ...], existing: list[dict[str, Any]],
                    now_seconds: int, now_nanos: int) -> list[dict[str, Any]]:
    """Each result stamped when it was first found: an unchanged result keeps the stamp the
    server holds, so an unchanged report stays byte-for-byte the same."""
    seen = {content_key([r]): r.get("timestamp") for r in existing}
    fresh = {"seconds": now_seconds, "nanos": now_nanos}
    return [{**r, "timestamp": seen.get(content_key([r])) or fresh} for r in results]


def report_body(api: ReportApi, pod: PodReport, results: list[dict[str, Any]],
                max_results: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": api.api_version,
        "kind": api.kind,
        "metadata": {
            "name": pod.name,
            "namespace": pod.pod.namespace,
            "labels": {**MANAGED_BY,
                       **({NODE_LABEL: node_label_value(pod.node)} if pod.node else {})},
            # The Pod owns its report: the garbage collector deletes it with the Pod.
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod.pod.name,
                                 "uid": pod.pod.uid}],
        },
        "scope": {"apiVersion": "v1", "kind": "Pod", "namespace": pod.pod.namespace,
                  "name": pod.pod.name, "uid": pod.pod.uid},
        "summary": summary(results),
        "results": results,
    }
    if api is OPENREPORTS:
        body["source"] = SOURCE
        body["configuration"] = {"limits": {"maxResults": max_results}}
    return body
