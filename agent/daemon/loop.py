"""`opaudit run`'s loop (`agent.daemon` tells the whole path, from pods to the sinks).

A cycle audits every selected pod each `--interval` seconds; as soon as the watch reports
a pod with a new running container, a cycle audits that pod alone, so its Events do not
wait for the others. The sinks are pumped between cycles. SIGTERM/SIGINT flush pending
Events and policy reports for at most 5 s and exit 0.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from agent.audit import audit
from agent.collect.errors import error_line
from agent.collect.procfs import ProcFS
from agent.daemon.options import RunOptions
from agent.kube.containers import pod_uid
from agent.kube.watch import PodApi, PodWatcher
from agent.model import AuditCycle, AuditResult
from agent.output.metrics import AgentMetrics
from agent.output.sink import Sink
from agent.targets.requests import container_requests, declared_containers, sandbox_requests

log = logging.getLogger(__name__)

ONCE_FLUSH_SECONDS = 10.0  # --once retries undelivered Events (429, 5xx) this long
STOP_FLUSH_SECONDS = 4.5  # SIGTERM: flush for at most 5 s in all, exit included
WAKE_SECONDS = 1.0  # the loop wakes at least this often: heartbeat, sink retries
FIRST_LIST_SECONDS = 10.0  # the first cycle waits this long for the pod list
COALESCE_SECONDS = 0.05  # watch events this close together make one cycle
PUMP_SLICE_SECONDS = 0.05  # Event writes between two looks at the watch's queue


class NodeAgent:
    def __init__(
        self, api: PodApi, node: str, options: RunOptions, sink: Sink, metrics: AgentMetrics,
        stop: threading.Event, proc: ProcFS | None = None,
    ) -> None:
        self.api = api
        self.node = node
        self.options = options
        self.sink = sink
        self.metrics = metrics
        self.proc = proc if proc is not None else ProcFS()  # HOST_PROC, else /proc
        self.stop = stop
        self.triggers: queue.Queue[str] = queue.Queue()
        # Why the pod list/watch is failing right now (None: it answers): such a cycle's
        # pods are not a current list, so it is not a healthy cycle (outcome `api_error`).
        self.pods_failing: str | None = None
        self.watcher = PodWatcher(
            api, node, options.selector, options.namespace,
            triggers=self.triggers, stop=self.stop, on_api_error=self._pods_failed,
            on_listed=self._pods_answered(metrics.pods_listed),
            on_answer=self._pods_answered(metrics.api_answered),
            startup_jitter=options.startup_jitter,
        )

    def _pods_failed(self, code: int | None) -> None:
        self.pods_failing = f"HTTP {code}" if code else "API server unreachable"
        self.metrics.pods_api_error(code)

    def _pods_answered(self, then: Callable[[], None]) -> Callable[[], None]:
        def answered() -> None:
            self.pods_failing = None
            then()
        return answered

    # --- --once ----------------------------------------------------------------------

    def run_once(self) -> int:
        try:
            self.watcher.relist()
        except Exception as exc:  # noqa: BLE001 - KubeError or a connection error
            self._pods_failed(getattr(exc, "status", None))
            self.metrics.cycle_finished("api_error")
            # An environment error, like an unusable kubeconfig: nothing was audited.
            log.error("cannot list pods: nothing audited", extra={
                "node": self.node, "error": str(exc), "outcome": "api_error"})
            return 2
        if self.cycle("once") is None:
            return 1
        delivered = self.sink.flush(ONCE_FLUSH_SECONDS)
        if not delivered:
            log.error("some Events or policy reports were not delivered")
        return 0 if delivered else 1

    # --- the loop --------------------------------------------------------------------

    def run_forever(self) -> int:
        self._install_signal_handlers()
        self.watcher.start()
        self._await_first_list(min(self.options.interval, FIRST_LIST_SECONDS)
                               + self.watcher.first_list_delay)
        release_free_memory()  # what start-up (imports, the first pod list) left behind
        next_cycle = 0.0  # the first cycle runs as soon as the pods are listed
        while not self.stop.is_set():
            now = time.monotonic()
            triggered = self._wait_for_trigger(min(WAKE_SECONDS, max(0.0, next_cycle - now)))
            if self.stop.is_set():
                break
            if time.monotonic() >= next_cycle:
                self.cycle("watch" if triggered else "interval")
                next_cycle = time.monotonic() + self.options.interval
                release_free_memory()  # the cycle's snapshots are garbage now
            elif triggered:
                # Only the pods the watch named: their Events must not wait for the
                # others' audit. The full cycle keeps its own schedule.
                self.cycle("watch", only=triggered)
                release_free_memory()
            self._pump(WAKE_SECONDS / 2)
            self.metrics.heartbeat()
        return self._shutdown()

    def _pump(self, budget: float) -> None:
        """Write owed Events for up to `budget` seconds, a slice at a time, and hand the loop
        back as soon as the watch names a pod: its audit comes before the older Events'
        writes (after a full cycle, hundreds of series updates)."""
        end = time.monotonic() + budget
        while self.triggers.empty() and (now := time.monotonic()) < end:
            slice_end = min(end, now + PUMP_SLICE_SECONDS)
            self.sink.pump(slice_end)
            if time.monotonic() < slice_end:
                return  # returned early: nothing owed, or the next try is after the slice

    def _await_first_list(self, timeout: float) -> None:
        """Give the first pod list a chance, so the first cycle (and /readyz) is meaningful."""
        deadline = time.monotonic() + timeout
        while not self.stop.is_set() and not self.watcher.synced.is_set():
            if time.monotonic() >= deadline:
                log.warning("no pod list yet; auditing with an empty cache meanwhile")
                return
            self.watcher.synced.wait(0.1)

    def _wait_for_trigger(self, timeout: float) -> set[str]:
        """The uids of the pods the watch asked to audit (empty on timeout or stop); drains
        what arrives right after the first one."""
        try:
            uids = {self.triggers.get(timeout=timeout)}
        except queue.Empty:
            return set()
        time.sleep(COALESCE_SECONDS)
        while True:
            try:
                uids.add(self.triggers.get_nowait())
            except queue.Empty:
                uids.discard("")  # request_stop's wake-up, not a pod
                return set() if self.stop.is_set() else uids

    def _shutdown(self) -> int:
        delivered = self.sink.flush(STOP_FLUSH_SECONDS)
        dropped = self.sink.abandon()  # what the flush could not deliver is lost: say so
        log.info("stopped", extra={"flushed": delivered, "dropped": dropped})
        return 0

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded (tests): the caller stops us through `stop`

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal received, stopping", extra={"signal": signal.Signals(signum).name})
            self.request_stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def request_stop(self) -> None:
        self.stop.set()
        self.triggers.put("")  # wakes the loop at once

    # --- one cycle -------------------------------------------------------------------

    def cycle(self, trigger: str, only: set[str] | None = None) -> AuditResult | None:
        """Audit the selected pods (only those with a uid in `only`, when given) and publish
        the report to the sinks; None when no report was made.

        Never raises: a fault of one target is that target's InspectionIncomplete (`audit`),
        a sink's is that sink's (`FanOut`), and anything else ends this cycle only, logged
        and counted (`opaudit_cycle_outcomes_total{outcome="error"}`); the next one runs.
        """
        failing = self.pods_failing
        if not self.watcher.synced.is_set():
            # Never listed: auditing nothing would read as "no findings", which it is not.
            if failing is None:  # the first list is still on its way (/readyz says so)
                log.info("audit cycle skipped: waiting for the first pod list",
                         extra={"trigger": trigger})
                return None
            self.metrics.cycle_finished("api_error")
            log.error("audit cycle skipped: the pods could not be listed", extra={
                "trigger": trigger, "error": failing, "outcome": "api_error"})
            return None
        try:
            report = self._audit_and_publish(trigger, only, failing)
        except Exception as exc:  # noqa: BLE001 - the loop outlives any one cycle
            self.metrics.cycle_finished("error")
            log.error("audit cycle failed; the next one runs as scheduled", exc_info=True,
                      extra={"trigger": trigger, "error": error_line(exc), "outcome": "error"})
            return None
        self.metrics.cycle_finished("ok" if failing is None else "api_error")
        return report

    def _audit_and_publish(self, trigger: str, only: set[str] | None,
                           failing: str | None) -> AuditResult:
        started = time.monotonic()
        pods = self.watcher.pods()
        if only is not None:
            pods = [pod for pod in pods if pod_uid(pod) in only]
        declared = declared_containers(pods)
        with self.proc.cycle():  # one pass over /proc maps containers and socket owners
            try:
                requests = container_requests(declared, self.proc)
            except Exception as exc:  # noqa: BLE001 - never stop the loop over one bad scan
                log.error("cannot map containers to processes", extra={"error": str(exc)})
                requests = []
            requests += sandbox_requests(pods, self.proc)
            report = audit(requests, config=self.options.config, node=self.node,
                           proc=self.proc,
                           on_fault=lambda stage, exc: self.metrics.audit_fault(stage))
        seconds = time.monotonic() - started
        cycle = AuditCycle(trigger, seconds, tuple(pod_uid(p) for p in pods),
                           partial=only is not None)
        report = dataclasses.replace(report, cycle=cycle)
        self.sink.publish(report)
        fields = {
            "trigger": trigger, "pods": len(pods), "containers": len(declared),
            "targets": len(report.targets), "findings": len(report.findings),
            "seconds": round(seconds, 4), "partial": only is not None,
        }
        if failing is None:
            log.info("audit cycle", extra={**fields, "outcome": "ok"})
        else:  # the API went away after a list: its pods were audited, yet may be stale
            log.warning("audit cycle on the last pod list: the pods cannot be listed now",
                        extra={**fields, "outcome": "api_error", "error": failing})
        return report


def release_free_memory() -> None:
    """Give the heap pages freed since the last call back to the kernel (malloc_trim(3)).

    A cycle's snapshots are freed once published, but glibc keeps the pages (those of the
    netns reader threads' arenas too) until asked; RSS is what a node's memory limit sees.
    """
    from agent.collect.libc import LIBC

    trim = getattr(LIBC, "malloc_trim", None)  # glibc only (not musl)
    if trim is not None:
        trim(0)
