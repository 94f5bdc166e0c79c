"""Kubernetes Events sink: one events.k8s.io/v1 Event per (pod, container, rule), deduplicated.

How writes stay few (README: Deployment, Performance):
- The Event name is `<pod>.<sha256(pod uid, container, rule)[:16]>`, so a restarted agent's
  create answers 409 and it updates that Event's `series` instead of making a duplicate.
- A finding seen again updates `series` at once the first time (count 2, as client-go's
  tools/events does), then at most once per `SERIES_REFRESH_SECONDS` (client-go's 30 min
  heartbeat); in between only the in-memory count grows. Steady state: 0 new objects.
- A per-pod token bucket (burst 25, one token per 5 min, client-go's EventCorrelator spam
  filter) is charged when a write is queued; without a token the write is dropped and
  counted (`rate_limited`), and the next cycle offers it again.
- The queue holds at most `queue_size` distinct owed Events; a new one beyond that is
  rejected and counted (`queue_full`): the oldest owed Events are kept until delivered.
  Repeats of a queued Event merge into it, so an outage does not fill the queue.
- Retries, backoff and drops are the delivery engine's (`agent.output.delivery`): 429
  waits for Retry-After; 5xx, 401, 403 and connection errors back off and the write stays
  owed; other rejections (400, 404, 422) drop it (`rejected`).
- When a finding disappears from a container that was audited again, a Normal Event with
  the same reason and a "Cleared" note is posted (its own name: type is immutable).
The sink never raises to its caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from agent.api_error import ApiError
from agent.model import AuditResult, Finding, PodRef
from agent.output.delivery import Counters, Delivery
from agent.output.events.body import EventKey, event_body, event_series

SERIES_REFRESH_SECONDS = 30 * 60  # client-go tools/events refreshTime
BUCKET_BURST = 25  # client-go EventCorrelator defaultSpamBurst
BUCKET_REFILL_SECONDS = 300.0  # defaultSpamQPS = 1/300
STATE_TTL_SECONDS = 2 * 3600  # forget a pod unseen this long (Events themselves live 1 h)


class EventWriter(Protocol):
    """The API calls the sink makes (`agent.kube.events.EventClient`); they raise ApiError."""

    def create_event(
        self, namespace: str, body: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]: ...

    def get_event(
        self, namespace: str, name: str, *, timeout: float | None = None
    ) -> dict[str, Any] | None: ...

    def patch_event(
        self, namespace: str, name: str, patch: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]: ...


class EventMetrics(Protocol):
    """What the sink reports; `agent.output.metrics.AgentMetrics` implements it."""

    def event_written(self) -> None: ...
    def event_dropped(self, reason: str) -> None: ...  # queue_full|rate_limited|rejected|shutdown
    def api_error(self, code: str) -> None: ...  # HTTP status as text, or "connection"


@dataclass(slots=True)
class _Owed:
    """One Event this process knows about: what to create, and how far the server is."""

    namespace: str
    name: str
    body: dict[str, Any]
    count: int  # occurrences, including the server's count learned after a 409
    last_observed: datetime
    seen_at: float  # sink clock
    written_count: int = 0  # series count the server has; 0: not known to exist
    last_write: float = 0.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        refill = max(0.0, now - self.updated) / BUCKET_REFILL_SECONDS
        self.tokens = min(float(BUCKET_BURST), self.tokens + refill)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class EventSink(Delivery[EventKey, _Owed]):
    """Posts findings as Events on their Pods; `publish` queues, `pump`/`flush` write."""

    what = "Event"

    def __init__(
        self,
        writer: EventWriter,
        node: str,
        *,
        queue_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        metrics: EventMetrics | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        counters = None if metrics is None else Counters(
            metrics.event_written, metrics.event_dropped, metrics.api_error)
        super().__init__(queue_size=queue_size, counters=counters, clock=clock, sleep=sleep)
        self.writer, self.node = writer, node
        self._owed: dict[EventKey, _Owed] = {}  # every Event known, queued or not
        self._buckets: dict[str, _Bucket] = {}

    # --- queueing ---------------------------------------------------------------------

    def _queue_results(self, audit_result: AuditResult) -> None:
        with self._lock:
            self._publish(audit_result)

    def _publish(self, audit_result: AuditResult) -> None:
        now, wall = self.clock(), datetime.now(UTC)
        grouped: dict[EventKey, tuple[PodRef, list[Finding]]] = {}
        audited: set[tuple[str, str]] = set()
        for target in audit_result.targets:
            if target.declared is None:
                continue  # no pod to hang an Event on (`diagnose --pid`)
            pod, container = target.declared.pod, target.declared.container_name
            audited.add((pod.uid, container))
            for finding in target.findings:
                key = EventKey(pod.uid, container, finding.rule)
                grouped.setdefault(key, (pod, []))[1].append(finding)
        for key in [k for k in self._owed if not k.cleared and k not in grouped]:
            if (key.pod_uid, key.container) in audited:
                self._clear(key, now, wall)
        for key, (pod, findings) in grouped.items():
            self._observe(key, pod, findings, now, wall)
        self._forget_stale(now)

    def _observe(
        self, key: EventKey, pod: PodRef, findings: list[Finding], now: float, wall: datetime
    ) -> None:
        owed = self._owed.get(key)
        if owed is None:
            body = event_body(pod, key, findings, self.node, wall)
            owed = _Owed(pod.namespace, body["metadata"]["name"], body, 1, wall, now)
            self._owed[key] = owed
            self._owe(key, owed)
            return
        owed.count += 1
        owed.last_observed, owed.seen_at = wall, now
        if key in self._queue:
            return  # the queued write will carry the new count
        first_repeat = owed.written_count == 1  # client-go starts the series at once
        refresh_due = now - owed.last_write >= SERIES_REFRESH_SECONDS
        if owed.written_count == 0 or first_repeat or refresh_due:
            self._owe(key, owed)

    def _clear(self, key: EventKey, now: float, wall: datetime) -> None:
        owed = self._owed.pop(key)
        self._queue.pop(key, None)
        if owed.written_count == 0:
            return  # the Warning never reached the server: nothing to clear
        pod = PodRef(owed.namespace, owed.body["regarding"]["name"], key.pod_uid)
        clear_key = EventKey(key.pod_uid, key.container, key.rule, cleared=True)
        self._observe(clear_key, pod, [], now, wall)

    def _owe(self, key: EventKey, owed: _Owed) -> None:
        if not self._has_room(key):
            return
        bucket = self._buckets.setdefault(key.pod_uid, _Bucket(float(BUCKET_BURST), self.clock()))
        if not bucket.take(self.clock()):
            self._drop("rate_limited")
            return
        self._queue[key] = owed

    def _forget_stale(self, now: float) -> None:
        stale = [
            k for k, o in self._owed.items()
            if now - o.seen_at > STATE_TTL_SECONDS and k not in self._queue
        ]
        for key in stale:
            del self._owed[key]
        live_pods = {k.pod_uid for k in self._owed}
        for uid in [u for u in self._buckets if u not in live_pods]:
            del self._buckets[uid]

    # --- writing ----------------------------------------------------------------------

    def _next(self) -> tuple[EventKey, _Owed]:
        """The oldest Event the server has never seen, else the oldest series update: a
        pod's first Event must not wait behind count bumps (a full cycle repeats every
        finding). Called with `_lock` held and the queue not empty."""
        for key, owed in self._queue.items():
            if owed.written_count == 0:
                return key, owed
        return next(iter(self._queue.items()))

    def _label(self, key: EventKey, value: _Owed) -> str:
        return value.name

    def _send(self, value: _Owed, *, timeout: float) -> bool:
        self._write(value, timeout=timeout)
        return True

    def _write(self, owed: _Owed, *, timeout: float) -> None:
        if owed.written_count > 0:
            try:
                self._patch_series(owed, owed.count, timeout)
                return
            except ApiError as exc:
                if exc.status != 404:
                    raise
                owed.written_count = 0  # the server expired it (Event TTL): create it anew
        body = dict(owed.body)
        if owed.count >= 2:
            body["series"] = event_series(owed.count, owed.last_observed)
        try:
            self.writer.create_event(owed.namespace, body, timeout=timeout)
        except ApiError as exc:
            if exc.status != 409:
                raise
            self._continue_series(owed, body, timeout)  # a previous agent created it
            return
        owed.written_count, owed.last_write = owed.count, self.clock()

    def _continue_series(self, owed: _Owed, body: dict[str, Any], timeout: float) -> None:
        existing = self.writer.get_event(owed.namespace, owed.name, timeout=timeout)
        if existing is None:  # deleted between our create and get
            self.writer.create_event(owed.namespace, body, timeout=timeout)
            owed.written_count, owed.last_write = owed.count, self.clock()
            return
        series = existing.get("series") or {}
        server_count = int(series.get("count") or 1)
        self._patch_series(owed, server_count + owed.count, timeout)

    def _patch_series(self, owed: _Owed, count: int, timeout: float) -> None:
        patch = {"series": event_series(count, owed.last_observed)}
        self.writer.patch_event(owed.namespace, owed.name, patch, timeout=timeout)
        owed.count = owed.written_count = count
        owed.last_write = self.clock()
