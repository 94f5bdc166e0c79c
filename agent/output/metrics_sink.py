"""The metrics as a sink: each cycle's audit result counted into `AgentMetrics`."""

from __future__ import annotations

from agent.model import AuditCycle, AuditResult
from agent.output.metrics import AgentMetrics
from agent.output.sink import WrittenSink

FindingCounts = dict[tuple[str, str], int]  # (rule, severity) -> findings


class MetricsSink(WrittenSink):
    """The metrics as a sink: node-wide totals, where a partial cycle (one pod the watch
    named) replaces that pod's counts and keeps the others' from their last audit."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics
        self.findings_by_pod: dict[str, FindingCounts] = {}
        self.targets_by_pod: dict[str, int] = {}

    def publish(self, audit_result: AuditResult) -> None:
        cycle = audit_result.cycle or AuditCycle("once", 0.0, (), partial=False)
        if not cycle.partial:
            self.findings_by_pod.clear()
            self.targets_by_pod.clear()
        for uid in cycle.pod_uids:
            self.findings_by_pod[uid] = {}
            self.targets_by_pod[uid] = 0
        readers = [t.observed.network.owner_reader for t in audit_result.targets
                   if t.observed.network is not None and t.observed.network.owner_reader]
        if readers:  # one scan per cycle; a fallback, if any, is what the gauge must show
            self.metrics.fd_reader_used(max(readers, key=lambda r: bool(r.fallback)))
        for target in audit_result.targets:
            uid = target.declared.pod.uid if target.declared is not None else ""
            counts = self.findings_by_pod.setdefault(uid, {})
            for finding in target.findings:
                key = (finding.rule, finding.severity.value)
                counts[key] = counts.get(key, 0) + 1
            self.targets_by_pod[uid] = self.targets_by_pod.get(uid, 0) + 1
        totals: FindingCounts = {}
        for counts in self.findings_by_pod.values():
            for key, count in counts.items():
                totals[key] = totals.get(key, 0) + count
        self.metrics.record_audit(totals, sum(self.targets_by_pod.values()), cycle.seconds,
                                  cycle.trigger)
