"""Prometheus metrics for the `run` loop, and the state behind /healthz and /readyz.

One `AgentMetrics` per process (own registry, so tests can make several) implements the
`EventMetrics` and `ReportMetrics` protocols the Events and policy-report sinks count into;
`agent.output.metrics_sink.MetricsSink` feeds it each cycle's audit result, like any other
sink; `agent.output.probe_server` serves it: `/metrics` (text format), `/healthz` (200 while
the loop's heartbeat is recent), `/readyz` (200 once the first audit cycle finished).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from agent.model import OwnerReader

log = logging.getLogger(__name__)

# A cycle audits up to ~100 targets in well under a second; 30 s means something is stuck.
# Connection failures this long in a row (the watch retries within 1, 2, 4, 8 s): not ready.
UNREACHABLE_GRACE_SECONDS = 10.0
CYCLE_OUTCOMES = ("ok", "api_error", "error")
AUDIT_FAULT_STAGES = ("target", "container", "network", "socket_owners")
_SCAN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AgentMetrics:
    """The agent's counters and its liveness/readiness state (thread-safe)."""

    def __init__(
        self,
        *,
        liveness_window: float = 90.0,
        readiness_window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.liveness_window = liveness_window
        self.readiness_window = readiness_window
        self._clock = clock
        self._lock = threading.Lock()
        self._last_heartbeat = clock()
        self._ready = False  # a first audit cycle finished
        self._listed = False  # the pods were listed at least once
        self._last_api_answer: float | None = None
        self._unreachable_since: float | None = None  # first connection failure since
        self._events_refused: str | None = None  # HTTP status while Event writes get 401/403
        self._pods_refused: str | None = None  # HTTP status while the pod list gets 401/403
        self._finding_labels: set[tuple[str, str]] = set()
        self.findings = Gauge(
            "opaudit_findings", "Findings in the last audit cycle, by rule and severity",
            ["rule", "severity"], registry=self.registry,
        )
        self.targets = Gauge(
            "opaudit_targets", "Processes audited in the last cycle", registry=self.registry
        )
        self.scan_duration = Histogram(
            "opaudit_scan_duration_seconds", "Wall time of one audit cycle",
            buckets=_SCAN_BUCKETS, registry=self.registry,
        )
        self.cycles = Counter(
            "opaudit_cycles", "Audit cycles run", ["trigger"], registry=self.registry
        )
        # How each cycle ended: `ok`; `api_error`, the pods could not be listed (none audited
        # when never listed, else the last list's); `error`, an unexpected fault ended it.
        self.cycle_outcomes = Counter(
            "opaudit_cycle_outcomes", "Audit cycles by outcome (ok, api_error, error)",
            ["outcome"], registry=self.registry,
        )
        # Each made some facts unknown (InspectionIncomplete) and the cycle went on.
        self.audit_faults = Counter(
            "opaudit_audit_faults", "Unexpected faults while auditing, by stage: target (one "
            "target's audit), container (judging one container as a whole), network (every "
            "netns), socket_owners (the fd reader)",
            ["stage"], registry=self.registry,
        )
        self.sink_errors = Counter(
            "opaudit_sink_errors", "Unexpected failures of a sink, by sink (the others went on)",
            ["sink"], registry=self.registry,
        )
        self.api_errors = Counter(
            "opaudit_api_errors", "Kubernetes API errors, by HTTP status (or 'connection')",
            ["code"], registry=self.registry,
        )
        self.events_written = Counter(
            "opaudit_events_written", "Kubernetes Events created or updated",
            registry=self.registry,
        )
        self.events_dropped = Counter(
            "opaudit_events_dropped", "Kubernetes Events given up on, by reason",
            ["reason"], registry=self.registry,
        )
        self.reports_written = Counter(
            "opaudit_reports_written", "Policy reports created, replaced or deleted",
            registry=self.registry,
        )
        self.reports_dropped = Counter(
            "opaudit_reports_dropped", "Policy report writes given up on, by reason",
            ["reason"], registry=self.registry,
        )
        self.results_cut = Counter(
            "opaudit_report_results_cut", "Results left out of policy reports written, "
            "beyond --report-max-results", registry=self.registry,
        )
        self.fd_reader = Gauge(
            "opaudit_fd_reader", "1 for the reader that found socket owners in the last "
            "audit that looked for some (proc or bpf); `fallback` says what refused the BPF "
            "iterator when it was wanted (kernel, btf, refused, error, pid_namespace)",
            ["reader", "fallback"], registry=self.registry,
        )
        self._fd_reader_labels: tuple[str, str] | None = None
        self._fallback_logged = False
        # Every drop reason reads 0 from the start, so a dashboard shows 0 rather than nothing.
        for reason in ("queue_full", "rate_limited", "rejected", "shutdown"):
            self.events_dropped.labels(reason=reason)
        for reason in ("queue_full", "rejected", "shutdown"):
            self.reports_dropped.labels(reason=reason)
        for outcome in CYCLE_OUTCOMES:
            self.cycle_outcomes.labels(outcome=outcome)
        for stage in AUDIT_FAULT_STAGES:
            self.audit_faults.labels(stage=stage)
        # process_resident_memory_bytes, process_cpu_seconds_total, ...: the agent's footprint
        # (the dashboard's RSS and CPU panels), read from /proc/self.
        ProcessCollector(registry=self.registry)

    # --- EventMetrics protocol (agent.output.events.sink) ----------------------------

    def event_written(self) -> None:
        self.events_written.inc()
        with self._lock:
            self._events_refused = None
        self.api_answered()

    def event_dropped(self, reason: str) -> None:
        self.events_dropped.labels(reason=reason).inc()

    # --- ReportMetrics protocol (agent.output.policyreports.sink) --------------------

    def report_written(self) -> None:
        self.reports_written.inc()

    def report_dropped(self, reason: str) -> None:
        self.reports_dropped.labels(reason=reason).inc()

    def report_results_cut(self, count: int) -> None:
        self.results_cut.inc(count)

    def api_error(self, code: int | str | None) -> None:
        """A write of the Events or policy-report sink failed."""
        label = self._count_error(code)
        if label in ("401", "403"):
            with self._lock:
                self._events_refused = label

    def pods_api_error(self, code: int | str | None) -> None:
        """The pod list or watch failed."""
        label = self._count_error(code)
        if label in ("401", "403"):
            with self._lock:
                self._pods_refused = label

    def _count_error(self, code: int | str | None) -> str:
        label = str(code) if code else "connection"
        self.api_errors.labels(code=label).inc()
        with self._lock:
            if label == "connection" and self._unreachable_since is None:
                self._unreachable_since = self._clock()
        return label

    def fd_reader_used(self, used: OwnerReader) -> None:
        """The reader of the last owner scan is the gauge's one series; the first time the
        BPF iterator could not run, one log line says why (later cycles say it only here)."""
        labels = (used.reader, used.fallback)
        with self._lock:
            previous, self._fd_reader_labels = self._fd_reader_labels, labels
            first_fallback = bool(used.fallback) and not self._fallback_logged
            self._fallback_logged |= bool(used.fallback)
        if previous is not None and previous != labels:
            self.fd_reader.remove(*previous)
        self.fd_reader.labels(*labels).set(1)
        if first_fallback:
            log.warning("the BPF fd iterator cannot run: socket owners are read from /proc",
                        extra={"fallback": used.fallback, "reason": used.why})

    # --- readiness: can the agent do its job? -----------------------------------------

    def api_answered(self) -> None:
        """The API server answered a request (a list, a watch event, an Event write)."""
        with self._lock:
            self._last_api_answer = self._clock()
            self._unreachable_since = None

    def pods_listed(self) -> None:
        with self._lock:
            self._listed = True
            self._pods_refused = None
        self.api_answered()

    def not_ready_reason(self) -> str | None:
        """Why READY should be false, or None: the pods were listed and a cycle audited
        them, the API answered within `readiness_window` and has not been unreachable
        for `UNREACHABLE_GRACE_SECONDS`, and Event writes are not refused."""
        with self._lock:
            now = self._clock()
            if not self._listed:
                return "pods not listed yet"
            if not self._ready:
                return "first cycle pending"
            if self._pods_refused:
                return f"the pod list is refused ({self._pods_refused}): check the RBAC"
            if self._events_refused:
                return f"Event writes are refused ({self._events_refused}): check the RBAC"
            down = self._unreachable_since
            if down is not None and now - down >= UNREACHABLE_GRACE_SECONDS:
                return f"API server unreachable for {now - down:.0f} s"
            quiet = now - (self._last_api_answer or now)
            if quiet > self.readiness_window:
                return f"no answer from the API server for {quiet:.0f} s"
        return None

    # --- the loop ---------------------------------------------------------------------

    def record_audit(
        self, counts: Mapping[tuple[str, str], int], targets: int, seconds: float,
        trigger: str = "interval",
    ) -> None:
        """Publish one finished cycle from node-wide totals (see `MetricsSink`): findings per
        (rule, severity), targets, duration; the agent is ready from then on."""
        with self._lock:
            # A finding that cleared must read 0, not keep its last value.
            for rule, severity in self._finding_labels - counts.keys():
                self.findings.labels(rule=rule, severity=severity).set(0)
            for (rule, severity), count in counts.items():
                self.findings.labels(rule=rule, severity=severity).set(count)
            self._finding_labels |= counts.keys()
            self._ready = True
        self.targets.set(targets)
        self.scan_duration.observe(seconds)
        self.cycles.labels(trigger=trigger).inc()
        self.heartbeat()

    def cycle_finished(self, outcome: str) -> None:
        """One cycle of the loop ended: `ok`, `api_error` or `error` (CYCLE_OUTCOMES)."""
        self.cycle_outcomes.labels(outcome=outcome).inc()

    def audit_fault(self, stage: str) -> None:
        """An unexpected fault while auditing (`agent.audit.audit`'s `on_fault`)."""
        self.audit_faults.labels(stage=stage).inc()

    def sink_failed(self, sink: str) -> None:
        self.sink_errors.labels(sink=sink).inc()

    def heartbeat(self) -> None:
        with self._lock:
            self._last_heartbeat = self._clock()

    @property
    def ready(self) -> bool:
        return self.not_ready_reason() is None

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._clock() - self._last_heartbeat <= self.liveness_window

    def render(self) -> bytes:
        return generate_latest(self.registry)
