"""`--sink reports`: one policy report per audited Pod, written only when its content changed.

How writes stay few (README: Policy reports, Performance):
- A cycle's report for a Pod is compared with the content this process last wrote or read
  back for it; the same content owes nothing (steady state: no request at all).
- A report this process does not know yet (first cycle, also after a restart) is read
  first: the same results (timestamps aside) owe no write; others replace it. So a finding
  that vanished while the agent was down leaves the report at the first cycle.
- A Pod that a full cycle no longer audits (relabelled, moved) loses the report this process
  wrote for it; a deleted Pod's report is the garbage collector's (its ownerReference).
- At the first full cycle, once the owed writes are done, the reports that this node's
  agents wrote (a label selector) are listed once: those of Pods the cycle did not audit
  (de-selected while no agent ran) are deleted too. A failed list is retried with the
  writes' backoff; a refused one (no `list` verb) is given up with one line.
- The API is injected (`ReportsApi`, `ReportWriter`); `output` imports nothing from `kube`.
- Retries, backoff and drops are the delivery engine's (`agent.output.delivery`), as for
  Events, and a 409 (the report changed since it was read) is retried from a fresh read.
  Owed writes are one per Pod (the latest content wins), at most `queue_size` Pods;
  beyond that a write is dropped (`queue_full`).
The sink never raises to its caller.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from agent.api_error import ApiError
from agent.model import AuditResult, PodRef
from agent.output.delivery import Counters, Delivery
from agent.output.policyreports.body import (
    DEFAULT_MAX_RESULTS,
    PodReport,
    content_key,
    own_reports_selector,
    pod_reports,
    report_body,
    report_name,
    with_timestamps,
)
from agent.output.policyreports.discovery import Discovery, ReportApi

log = logging.getLogger(__name__)


class ReportWriter(Protocol):
    """Read, create, replace and delete on the one report resource in use; failures raise
    ApiError (`agent.kube.policyreports.ReportClient` is one)."""

    def get(self, namespace: str, name: str, *, timeout: float) -> dict[str, Any] | None: ...
    def create(self, namespace: str, body: dict[str, Any], *, timeout: float
               ) -> dict[str, Any]: ...
    def replace(self, namespace: str, name: str, body: dict[str, Any], *, timeout: float
                ) -> dict[str, Any]: ...
    def delete(self, namespace: str, name: str, *, timeout: float) -> None: ...
    def list(self, label_selector: str, *, timeout: float) -> list[dict[str, Any]]: ...


class ReportsApi(Protocol):
    """Discovery, then one report resource (`agent.kube.policyreports.PolicyReportsApi`)."""

    def served_group_versions(self) -> set[str]: ...
    def resource(self, group: str, version: str, plural: str) -> ReportWriter: ...


class ReportMetrics(Protocol):
    def report_written(self) -> None: ...
    def report_dropped(self, reason: str) -> None: ...  # queue_full|rejected|shutdown
    def report_results_cut(self, count: int) -> None: ...  # beyond --report-max-results
    def api_error(self, code: str) -> None: ...


class ReportsSink:
    """The policy-report sink once discovery found its API; nothing before, or without one."""

    def __init__(self, api: ReportsApi, metrics: ReportMetrics, override: str | None,
                 max_results: int, clock: Callable[[], float] = time.monotonic,
                 node: str | None = None) -> None:
        self.api, self.metrics, self.node, self.max_results = api, metrics, node, max_results
        self.discovery = Discovery(api.served_group_versions, override, metrics, clock)
        self.sink: PolicyReportSink | None = None

    def publish(self, audit_result: AuditResult) -> None:
        chosen = self.discovery.poll()
        if chosen is not None:
            writer = self.api.resource(chosen.group, chosen.version, chosen.plural)
            self.sink = PolicyReportSink(writer, chosen, max_results=self.max_results,
                                         metrics=self.metrics, node=self.node)
        if self.sink is not None:
            self.sink.publish(audit_result)

    def pump(self, deadline: float) -> None:
        if self.sink is not None:
            self.sink.pump(deadline)

    def flush(self, timeout: float) -> bool:
        return self.sink.flush(timeout) if self.sink is not None else True

    def abandon(self) -> int:
        return self.sink.abandon() if self.sink is not None else 0


class PolicyReportSink(Delivery[str, PodReport]):
    """Writes each audited Pod's policy report; `publish` queues, `pump`/`flush` write.
    Its queue maps a report's name to what it must hold."""

    what = "report"
    retry_conflict = True  # 409: the report changed since it was read; the retry reads it

    def __init__(self, writer: ReportWriter, api: ReportApi, *,
                 max_results: int = DEFAULT_MAX_RESULTS, queue_size: int = 1000,
                 metrics: ReportMetrics | None = None, node: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        counters = None if metrics is None else Counters(
            metrics.report_written, metrics.report_dropped, metrics.api_error)
        super().__init__(queue_size=queue_size, counters=counters, clock=clock, sleep=sleep)
        self.writer, self.api, self.max_results = writer, api, max_results
        self.metrics, self.wall, self.node = metrics, wall, node
        self._known: dict[str, PodReport] = {}  # report name -> what the server holds
        # The pod uids of the first full cycle, until this node's old reports were listed;
        # without a node name nothing is listed.
        self._prune: set[str] | None = None
        self._pruned = node is None

    def _queue_results(self, audit_result: AuditResult) -> None:
        owed = [p for p in pod_reports(audit_result, self.max_results)
                if p.name not in self._known or self._known[p.name].content != p.content]
        cycle = audit_result.cycle
        full = cycle if cycle is not None and not cycle.partial else None  # all pods audited
        if full is not None:
            audited = set(full.pod_uids)
            owed += [dataclasses.replace(known, results=(), gone=True)
                     for known in self._known.values() if known.pod.uid not in audited]
        with self._lock:
            if not self._pruned and full is not None:
                self._prune, self._pruned = set(full.pod_uids), True
            for pod in owed:
                if self._has_room(pod.name):
                    self._queue[pod.name] = pod

    def _send(self, value: PodReport, *, timeout: float) -> bool:
        return self._write(value, timeout=timeout)

    def _delivered(self, key: str, value: PodReport) -> None:
        if value.gone:
            self._known.pop(key, None)
        else:
            self._known[key] = value

    # --- the list of this node's old reports, once the writes are done ------------------

    def _sweep_owed(self) -> bool:
        return self._prune is not None

    def _sweep(self, *, timeout: float) -> None:
        self._list_stale(timeout=timeout)

    def _drop_sweep(self) -> None:
        self._prune = None  # a list, not a write: nothing to count

    def _list_stale(self, *, timeout: float) -> None:
        """Queue the deletion of this node's reports whose Pods the first full cycle did not
        audit. A failed list is retried after the backoff, a refused one (401, 403: no
        `list` verb; 404) given up, with one line: the old reports stay."""
        assert self._prune is not None and self.node is not None
        try:
            found = self.writer.list(own_reports_selector(self.node), timeout=timeout)
        except ApiError as exc:
            if not self._count_failure(exc) or exc.status in (401, 403):  # no `list` verb
                self._give_up_list(str(exc))
            return
        except Exception as exc:  # a client bug: the cleanup is lost, not the writes
            log.exception("report sink: unexpected failure listing this node's reports")
            self._give_up_list(f"{type(exc).__name__}: {exc}")
            return
        self._backoff.succeeded()
        stale = []
        for item in found:
            scope, meta = item.get("scope") or {}, item.get("metadata") or {}
            uid = str(scope.get("uid") or "")
            ref = PodRef(str(meta.get("namespace") or ""), str(scope.get("name") or ""), uid)
            if uid and uid not in self._prune and meta.get("name") == report_name(ref):
                stale.append(PodReport(ref, (), 0, gone=True, node=self.node))
        if stale:
            log.info("report sink: deleting the reports of pods no longer selected",
                     extra={"reports": [p.name for p in stale]})
        with self._lock:
            self._prune = None
            for pod in stale:
                self._queue.setdefault(pod.name, pod)

    def _give_up_list(self, error: str) -> None:
        with self._lock:
            self._prune = None
        log.error("report sink: cannot list this node's reports; those of pods no longer "
                  "selected stay", extra={"error": error})

    def _write(self, pod: PodReport, *, timeout: float) -> bool:
        """Make the server's report hold `pod`'s results; False when it already did."""
        namespace = pod.pod.namespace
        if pod.gone:
            self.writer.delete(namespace, pod.name, timeout=timeout)
            return True
        existing = self.writer.get(namespace, pod.name, timeout=timeout)
        old_results = list((existing or {}).get("results") or [])
        if existing is not None and content_key(old_results) == pod.content:
            return False
        wall = self.wall()
        results = with_timestamps(pod.results, old_results, int(wall), int(wall % 1 * 1e9))
        body = report_body(self.api, pod, results, self.max_results)
        if pod.dropped:
            log.warning("report sink: results beyond --report-max-results left out",
                        extra={"report": pod.name, "left_out": pod.dropped})
            if self.metrics is not None:
                self.metrics.report_results_cut(pod.dropped)
        if existing is None:
            self.writer.create(namespace, body, timeout=timeout)
        else:
            # The resourceVersion makes a concurrent change a 409, retried from a fresh read.
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            self.writer.replace(namespace, pod.name, body, timeout=timeout)
        return True
