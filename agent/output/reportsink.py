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
- The writer is injected (`ReportWriter`); `report` imports nothing from `kube`.
- Retries are the Event sink's: 429 waits for Retry-After; no answer, 401, 403, 408 and
  5xx back off exponentially (0.25 s doubling, capped at 30 s) and the write stays owed;
  other rejections drop it (`rejected`). Owed writes are one per Pod (the latest content
  wins), at most `queue_size` Pods; beyond that a write is dropped (`queue_full`).
The sink never raises to its caller.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from agent.api_error import ApiError
from agent.model import AuditResult, PodRef
from agent.output.policyreport import (
    DEFAULT_MAX_RESULTS,
    PodReport,
    ReportApi,
    content_key,
    own_reports_selector,
    pod_reports,
    report_body,
    report_name,
    with_timestamps,
)
from agent.output.retry import Backoff

log = logging.getLogger(__name__)


class ReportWriter(Protocol):
    """Read, create, replace and delete on the one report resource in use; failures raise ApiError
    (`agent.kube.reports.ReportClient` is one)."""

    def get(self, namespace: str, name: str, *, timeout: float) -> dict[str, Any] | None: ...
    def create(self, namespace: str, body: dict[str, Any], *, timeout: float
               ) -> dict[str, Any]: ...
    def replace(self, namespace: str, name: str, body: dict[str, Any], *, timeout: float
                ) -> dict[str, Any]: ...
    def delete(self, namespace: str, name: str, *, timeout: float) -> None: ...
    def list(self, label_selector: str, *, timeout: float) -> list[dict[str, Any]]: ...


class ReportMetrics(Protocol):
    def report_written(self) -> None: ...
    def report_dropped(self, reason: str) -> None: ...  # queue_full|rejected|shutdown
    def report_results_cut(self, count: int) -> None: ...  # beyond --report-max-results
    def api_error(self, code: str) -> None: ...


class PolicyReportSink:
    """Writes each audited Pod's policy report; `publish` queues, `pump`/`flush` write."""

    def __init__(self, writer: ReportWriter, api: ReportApi, *,
                 max_results: int = DEFAULT_MAX_RESULTS, queue_size: int = 1000,
                 metrics: ReportMetrics | None = None, node: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.writer, self.api = writer, api
        self.max_results, self.queue_size = max_results, queue_size
        self.metrics, self.clock, self.wall = metrics, clock, wall
        self.written = self.dropped = self.api_errors = 0
        self._backoff = Backoff("report", clock, sleep)
        self._lock, self._pump_lock = threading.Lock(), threading.Lock()
        self._known: dict[str, PodReport] = {}  # report name -> what the server holds
        self._owed: OrderedDict[str, PodReport] = OrderedDict()
        self.node = node
        # The pod uids of the first full cycle, until this node's old reports were listed;
        # without a node name nothing is listed.
        self._prune: set[str] | None = None
        self._pruned = node is None

    @property
    def pending(self) -> int:
        """Writes owed, and the list of old reports while it is owed."""
        with self._lock:
            return len(self._owed) + (self._prune is not None)

    def publish(self, report: AuditResult) -> None:
        try:
            owed = [p for p in pod_reports(report, self.max_results)
                    if p.name not in self._known or self._known[p.name].content != p.content]
            if report.cycle is not None and not report.cycle.partial:
                audited = set(report.cycle.pod_uids)
                owed += [dataclasses.replace(known, results=(), gone=True)
                         for known in self._known.values() if known.pod.uid not in audited]
            with self._lock:
                if not self._pruned and report.cycle is not None and not report.cycle.partial:
                    self._prune, self._pruned = set(report.cycle.pod_uids), True
                for pod in owed:
                    if pod.name not in self._owed and len(self._owed) >= self.queue_size:
                        self._drop("queue_full")
                        continue
                    self._owed[pod.name] = pod
        except Exception:  # the sink must never take the audit loop down
            log.exception("report sink: cannot queue reports for this cycle")

    def flush(self, timeout: float) -> bool:
        self.pump(self.clock() + timeout)
        return self.pending == 0

    def abandon(self) -> int:
        """Drop every report still owed (the agent is exiting), counted as `shutdown`."""
        with self._lock:
            owed = len(self._owed)
            self._owed.clear()
            self._prune = None  # a list, not a write: nothing to count
            for _ in range(owed):
                self._drop("shutdown")
        return owed

    def pump(self, deadline: float) -> None:
        """Write owed reports until `deadline` (the sink's clock); never raises."""
        try:
            with self._pump_lock:
                self._pump(deadline)
        except Exception:
            log.exception("report sink: unexpected failure while writing reports")

    def _pump(self, deadline: float) -> None:
        """The owed writes, then (when they are done) the list of old reports, whose
        deletions it queues."""
        while True:
            with self._lock:
                if not self._owed and self._prune is None:
                    return
                name, pod = next(iter(self._owed.items())) if self._owed else ("", None)
            left = self._backoff.time_left(deadline)
            if left is None:
                return
            if pod is None:
                self._list_stale(timeout=max(0.2, left))
                continue
            try:
                wrote = self._write(pod, timeout=max(0.2, left))
            except ApiError as exc:
                self._failed(name, exc)
                continue
            except Exception as exc:  # a client bug must not end the loop: back off, keep it
                log.exception("report sink: unexpected failure writing report %s", name)
                self._failed(name, ApiError(None, "ClientError", f"{type(exc).__name__}: {exc}"))
                continue
            self._succeeded(pod, wrote)

    def _list_stale(self, *, timeout: float) -> None:
        """Queue the deletion of this node's reports whose Pods the first full cycle did not
        audit. A failed list is retried after the backoff, a refused one (401, 403: no
        `list` verb; 404) given up, with one line: the old reports stay."""
        assert self._prune is not None and self.node is not None
        try:
            found = self.writer.list(own_reports_selector(self.node), timeout=timeout)
        except ApiError as exc:
            self._failed(None, exc)
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
                self._owed.setdefault(pod.name, pod)

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

    def _succeeded(self, pod: PodReport, wrote: bool) -> None:
        with self._lock:
            if self._owed.get(pod.name) is pod:
                del self._owed[pod.name]
            if pod.gone:
                self._known.pop(pod.name, None)
            else:
                self._known[pod.name] = pod
            if wrote:
                self.written += 1
        if wrote and self.metrics is not None:
            self.metrics.report_written()
        self._backoff.succeeded()

    def _failed(self, name: str | None, exc: ApiError) -> None:
        """A write (or, `name` None, the list of old reports) failed: back off, or drop."""
        self.api_errors += 1
        if self.metrics is not None:
            self.metrics.api_error(exc.code)
        # 409: the report changed since it was read; the retry reads it again.
        retried = self._backoff.failed(exc, retry_conflict=True)
        if name is None:
            if not retried or exc.status in (401, 403):  # no `list` verb: do without
                self._give_up_list(str(exc))
            return
        if not retried:
            with self._lock:
                self._owed.pop(name, None)
                self._drop("rejected")

    def _drop(self, reason: str) -> None:
        """Count a write given up on; called with `_lock` held."""
        self.dropped += 1
        if self.metrics is not None:
            self.metrics.report_dropped(reason)
