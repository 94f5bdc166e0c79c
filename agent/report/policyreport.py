"""One policy report per audited Pod (SPEC §4b): its name, its results and its body.

Both APIs carry the same result shape (openreports.io/v1alpha1 `Report`, the successor,
and wgpolicyk8s.io/v1alpha2 `PolicyReport`, which Kyverno 1.19 still writes); only the
openreports `Report` has a top-level `source` and `configuration.limits`, so those two go
only there. Every result also names `source`, which both result types have.

A result per finding (`fail` for low and above, `warn` for info), then per container and
rule: `error` when the rule could not be evaluated (naming the facts), `skip` when a
--config waiver silenced it, `pass` when it ran and did not fire. `content` is the report
without timestamps: a cycle writes only when it differs from what the server holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent.model import Finding, Outcome, PodRef, Report, Severity, TargetReport, Verdict
from agent.report.event_object import compact_fix, sanitize_text

POLICY = "opaudit"
SOURCE = "opaudit"
MANAGED_BY = {"app.kubernetes.io/managed-by": "opaudit"}
DEFAULT_MAX_RESULTS = 100
# Order in which results are kept when a report holds more than --report-max-results.
RESULT_ORDER = ("fail", "warn", "error", "skip", "pass")


@dataclass(frozen=True, slots=True)
class ReportApi:
    group: str
    version: str
    kind: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


OPENREPORTS = ReportApi("openreports.io", "v1alpha1", "Report", "reports")
WGPOLICY = ReportApi("wgpolicyk8s.io", "v1alpha2", "PolicyReport", "policyreports")
REPORT_APIS = {"openreports": OPENREPORTS, "wgpolicyk8s": WGPOLICY}


def choose_report_api(served: set[str], override: str | None = None) -> ReportApi | None:
    """openreports when served, else wgpolicyk8s, never both; `override` names one.

    Policy Reporter reads both APIs and would count a finding written to each twice.
    """
    if override is not None:
        chosen = REPORT_APIS[override]
        return chosen if chosen.api_version in served else None
    for api in (OPENREPORTS, WGPOLICY):
        if api.api_version in served:
            return api
    return None


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

    @property
    def name(self) -> str:
        return report_name(self.pod)

    @property
    def content(self) -> str:
        return content_key(list(self.results))


def pod_reports(report: Report, max_results: int = DEFAULT_MAX_RESULTS) -> list[PodReport]:
    """One PodReport per Pod audited in `report` (targets without a Pod have no report)."""
    by_pod: dict[str, list[TargetReport]] = {}
    for target in report.targets:
        if target.declared is not None:
            by_pod.setdefault(target.declared.pod.uid, []).append(target)
    out = []
    for targets in by_pod.values():
        assert targets[0].declared is not None
        results = pod_results(targets)
        out.append(PodReport(targets[0].declared.pod, tuple(results[:max_results]),
                             max(0, len(results) - max_results)))
    return out


def pod_results(targets: list[TargetReport]) -> list[dict[str, Any]]:
    """Every result of a Pod's targets, most important first (what a cap keeps)."""
    categories = {v.rule: v.category for t in targets for v in t.verdicts}
    results = [finding_result(f, categories.get(f.rule, "")) for t in targets for f in t.findings]
    by_container: dict[str, dict[str, list[Verdict]]] = {}
    for target in targets:
        container = target.declared.container_name if target.declared else ""
        for verdict in target.verdicts:
            by_container.setdefault(container, {}).setdefault(verdict.rule, []).append(verdict)
    for container, rules in by_container.items():
        for verdicts in rules.values():
            entry = verdict_result(container, verdicts)
            if entry is not None:
                results.append(entry)
    rank = {name: index for index, name in enumerate(RESULT_ORDER)}
    severity_rank = {s.value: s.rank for s in Severity}
    results.sort(key=lambda r: (rank[r["result"]], -severity_rank.get(r.get("severity", ""), -1)))
    return results


def finding_result(finding: Finding, category: str = "") -> dict[str, Any]:
    properties = {"container": finding.container or "", "pid": str(finding.pid or ""),
                  "observed": finding.observed or "", "declared": finding.declared or "",
                  "fix": sanitize_text(compact_fix(finding.remediation))}
    result = "fail" if finding.severity.rank >= Severity.LOW.rank else "warn"
    return _result(finding.rule, result, category, finding.severity,
                   sanitize_text(finding.message), properties)


def verdict_result(container: str, verdicts: list[Verdict]) -> dict[str, Any] | None:
    """The container's entry for a rule that did not fire in any of its processes."""
    if any(v.outcome is Outcome.FIRED for v in verdicts):
        return None  # its findings are the results
    first = verdicts[0]
    unknown = [v for v in verdicts if v.outcome is Outcome.UNKNOWN]
    if unknown:
        missing = dict.fromkeys(f"{g.fact}: {g.reason}" for v in unknown for g in v.missing)
        facts = ", ".join(dict.fromkeys(g.fact for v in unknown for g in v.missing))
        return _result(first.rule, "error", first.category, first.severity,
                       sanitize_text(f"{first.rule} could not be evaluated: {facts} unknown"),
                       {"container": container, "missing": sanitize_text("; ".join(missing))})
    waived = next((v for v in verdicts if v.outcome is Outcome.WAIVED), None)
    if waived is not None:
        reason = f": {sanitize_text(waived.reason)}" if waived.reason else ""
        return _result(first.rule, "skip", first.category, first.severity,
                       f"{first.rule} fired but is waived by --config{reason}",
                       {"container": container})
    return _result(first.rule, "pass", first.category, first.severity,
                   f"{first.rule} checked: did not fire",
                   {"container": container})


def _result(rule: str, result: str, category: str, severity: Severity | None, message: str,
            properties: dict[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"source": SOURCE, "policy": POLICY, "rule": rule, "result": result,
                             "scored": True, "message": message,
                             "properties": {k: v for k, v in properties.items() if v}}
    if category:
        entry["category"] = category
    if severity is not None:
        entry["severity"] = severity.value
    return entry


def summary(results: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(("pass", "fail", "warn", "error", "skip"), 0)
    for result in results:
        counts[result["result"]] += 1
    return counts


def content_key(results: list[dict[str, Any]]) -> str:
    """The results as the server would compare them, without their timestamps."""
    bare = [{k: v for k, v in r.items() if k != "timestamp"} for r in results]
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
            "labels": dict(MANAGED_BY),
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
