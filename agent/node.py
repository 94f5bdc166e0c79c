"""`opaudit run`: the DaemonSet loop.

Pods (list + watch, `agent.kube.watch`) -> declared containers and their pids
(`agent.audit`) -> `audit.audit` -> the sinks (`agent.output.sink`: metrics always, plus
Kubernetes Events or JSON lines on stdout).
A cycle audits every selected pod each `--interval` seconds; as soon as the watch reports
a pod with a new running container, a cycle audits that pod alone, so its Events do not
wait for the others. The sink is pumped between cycles. SIGTERM/SIGINT flush pending Events
for at most 5 s and exit 0.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from agent.audit import audit, container_requests, declared_containers, sandbox_requests
from agent.collect.errors import error_line
from agent.collect.procfs import ProcFS
from agent.kube.containers import pod_uid
from agent.kube.ratelimit import DEFAULT_BURST, DEFAULT_QPS
from agent.kube.watch import WATCH_SECONDS, PodApi, PodWatcher
from agent.logs import setup_json_logging
from agent.model import DEFAULT_CONFIG, AuditConfig, AuditCycle, AuditResult
from agent.output.metrics import AgentMetrics, MetricsSink
from agent.output.probe_server import serve_metrics
from agent.output.sink import DocumentSink, FanOut, Sink
from agent.privilege import PrivilegeState, restrict_self

log = logging.getLogger(__name__)

ONCE_FLUSH_SECONDS = 10.0  # --once retries undelivered Events (429, 5xx) this long
STOP_FLUSH_SECONDS = 4.5  # SIGTERM: flush for at most 5 s in all, exit included
WAKE_SECONDS = 1.0  # the loop wakes at least this often: heartbeat, sink retries
FIRST_LIST_SECONDS = 10.0  # the first cycle waits this long for the pod list
COALESCE_SECONDS = 0.05  # watch events this close together make one cycle
PUMP_SLICE_SECONDS = 0.05  # Event writes between two looks at the watch's queue


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What `opaudit run` is told on its command line."""

    node: str | None = None
    selector: str | None = None
    namespace: str | None = None
    once: bool = False
    interval: float = 60.0
    sink: str = "events"  # "events" | "stdout" | "reports"
    sinks: tuple[str, ...] = ()  # several of them (`--sink events --sink reports`); wins
    report_api: str | None = None  # "openreports" | "wgpolicyk8s": no discovery
    report_max_results: int = 100
    metrics_port: int | None = None
    kubeconfig: str | None = None
    config: AuditConfig = DEFAULT_CONFIG
    # The API server at fleet scale (README): the CLI's defaults are STARTUP_JITTER and the
    # kubelet's QPS; an embedding caller (tests, the bench) lists at once unless it asks.
    startup_jitter: float = 0.0
    api_qps: float = DEFAULT_QPS
    api_burst: int = DEFAULT_BURST


@dataclass(frozen=True, slots=True)
class RunContext:
    """What the process around the loop provides: the command line's defaults, or an
    embedding caller's (tests, the bench) own API server, /proc tree and capabilities."""

    configuration: Any = None  # a kubernetes.client.Configuration, instead of kubeconfig
    proc_root: str | None = None  # default: HOST_PROC, else /proc
    metrics_host: str | None = None  # None: dual-stack `::` (0.0.0.0 where IPv6 is off)
    restrict_privileges: bool = True  # drop our own capabilities + no_new_privs first
    # What `agent.privilege.restrict_self` already did (the CLI calls it before anything
    # else): logged, not done again.
    privileges: PrivilegeState | None = None
    log_level: str = "INFO"
    event_queue_size: int = 1000


def run_agent(
    options: RunOptions,
    context: RunContext = RunContext(),  # noqa: B008 - frozen, never mutated
    *,
    metrics: AgentMetrics | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run the agent; 0 on a clean stop (or a complete --once), 1 when an internal error
    ended the --once cycle or it could not deliver all its Events or reports, 2 for a usage
    or environment error (no node name, no usable kubeconfig, the metrics port taken;
    --once: the pods could not be listed). `RUN_EXIT` in `agent.arguments` says the same in
    `run --help`.

    `metrics` and `stop` are for embedding (tests): setting `stop` ends the loop like
    SIGTERM does, from any thread.
    """
    setup_json_logging(context.log_level)
    node = options.node or os.environ.get("NODE_NAME")
    if not node:
        log.error("no node name: pass --node or set NODE_NAME (the DaemonSet sets it "
                  "from the downward API spec.nodeName)")
        return 2
    from agent.collect.sockets import fd_reader_setting

    try:
        fd_reader_setting()  # read once; an unknown value is a mistake, not a silent `auto`
    except ValueError as exc:
        log.error("bad environment", extra={"error": str(exc)})
        return 2
    privileges = context.privileges
    if privileges is None and context.restrict_privileges:
        privileges = restrict_self()  # before any thread: capabilities are per thread
    if privileges is not None:
        level = logging.WARNING if privileges.problems else logging.INFO
        log.log(level, "own privileges", extra=privileges.log_fields())
    from agent.kube.client import load_api

    try:
        api = load_api(options.kubeconfig, configuration=context.configuration,
                       qps=options.api_qps, burst=options.api_burst)
    except Exception as exc:  # noqa: BLE001 - bad kubeconfig, no in-cluster env: one line
        log.error("cannot configure the Kubernetes API client", extra={"error": str(exc)})
        return 2
    if metrics is None:
        # Ready needs an API answer within a few intervals; an idle watch answers at its end.
        metrics = AgentMetrics(liveness_window=max(3 * options.interval, 30.0),
                               readiness_window=max(3 * options.interval, WATCH_SECONDS + 60))
    try:
        server = (serve_metrics(metrics, options.metrics_port, context.metrics_host)
                  if options.metrics_port is not None else None)
    except OSError as exc:  # port taken, or below 1024 without NET_BIND_SERVICE
        log.error("cannot serve metrics", extra={"port": options.metrics_port, "error": str(exc)})
        return 2
    sink = make_sink(options.sinks or (options.sink,), api, node, metrics,
                     context.event_queue_size, report_api=options.report_api,
                     report_max_results=options.report_max_results)
    agent = NodeAgent(api, node, options, sink, metrics, stop or threading.Event(),
                      ProcFS(context.proc_root))
    try:
        return agent.run_once() if options.once else agent.run_forever()
    finally:
        if server is not None:
            server.close()


def make_sink(
    kinds: str | Sequence[str], api: Any, node: str, metrics: AgentMetrics,
    queue_size: int = 1000, *, report_api: str | None = None, report_max_results: int = 100,
) -> Sink:
    """The metrics sink, and the sinks `--sink` names (repeatable), as one. A reports sink
    without a policy-report API is left out with one log line; the others carry on."""
    sinks: list[Sink] = [MetricsSink(metrics)]
    for kind in dict.fromkeys([kinds] if isinstance(kinds, str) else kinds):
        if kind == "stdout":
            sinks.append(DocumentSink(sys.stdout, "json-lines"))
        elif kind == "reports":
            from agent.kube.policyreports import PolicyReportsApi
            from agent.output.policyreports.sink import ReportsSink

            sinks.append(ReportsSink(PolicyReportsApi(api), metrics, report_api,
                                     report_max_results, node=node))
        else:
            from agent.kube.events import EventClient
            from agent.output.events.sink import EventSink

            sinks.append(EventSink(EventClient(api), node, metrics=metrics,
                                   queue_size=queue_size))
    for sink in sinks:  # each reads 0 from the start, so a dashboard shows 0, not nothing
        metrics.sink_errors.labels(sink=type(sink).__name__)
    return FanOut(sinks, on_error=metrics.sink_failed)


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
            self.metrics.pods_api_error(getattr(exc, "status", None))
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
    import ctypes

    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only (not musl)
    if trim is not None:
        trim(0)
