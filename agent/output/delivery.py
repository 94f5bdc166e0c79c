"""How the Events and policy-report sinks deliver to the API: one queue, one writer, one
retry schedule (README: Deployment, Performance).

- `publish` turns a cycle's results into owed writes (the sink's own rules), without a
  network call; `pump` writes the oldest owed one at a time until a deadline; `flush`
  pumps for a while (SIGTERM, --once); `abandon` drops what is left at exit (`shutdown`).
- A write the queue has no room for is dropped and counted (`queue_full`): the oldest
  owed writes are kept until delivered.
- 429 waits for Retry-After; no answer, 401, 403, 408 and 5xx (and a 409 the sink calls
  retryable) back off exponentially, 0.25 s doubling, capped at 30 s, and the write stays
  owed, so writes arrive once RBAC or the API is fixed; any other rejection drops the write
  (`rejected`). A failure is logged once until the API answers again.
- Two locks: `_lock` guards the queue (publish and pump may run on different threads),
  `_pump_lock` keeps one writer at a time; no API call is made holding `_lock`.
The sinks never raise to their caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from agent.api_error import ApiError
from agent.model import AuditResult

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 30.0
DEFAULT_RETRY_AFTER_SECONDS = 1.0
MIN_WRITE_TIMEOUT = 0.2  # a write started just before the deadline still gets this long

K = TypeVar("K")
V = TypeVar("V")


class Backoff:
    """When the sink may next write to the API."""

    def __init__(self, what: str, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.what = what  # "Event", "report": for the log lines
        self.clock, self.sleep = clock, sleep
        self.failures = 0
        self.not_before = 0.0
        self.last_error: ApiError | None = None

    def time_left(self, deadline: float) -> float | None:
        """Seconds left before `deadline` for a write that may go now (after sleeping out a
        backoff that ends before it); None when the next attempt falls after the deadline."""
        now = self.clock()
        if now < self.not_before:
            if self.not_before >= deadline:
                return None
            self.sleep(self.not_before - now)
            now = self.clock()
        return deadline - now if deadline > now else None

    def succeeded(self) -> None:
        if self.last_error is not None:
            log.info("%s writes work again after: %s", self.what, self.last_error)
        self.failures, self.last_error = 0, None

    def failed(self, exc: ApiError, *, retry_conflict: bool = False) -> bool:
        """Schedule the retry; False when the write is rejected for good (drop it)."""
        if self.last_error is None or str(self.last_error) != str(exc):
            log.warning("cannot write %s: %s", self.what, exc)
        self.last_error = exc
        now = self.clock()
        if exc.status == 429:
            self.not_before = now + (exc.retry_after or DEFAULT_RETRY_AFTER_SECONDS)
            return True
        if exc.retryable or (retry_conflict and exc.status == 409):
            self.failures += 1
            delay = BACKOFF_BASE_SECONDS * 2 ** min(self.failures - 1, 16)
            self.not_before = now + min(BACKOFF_CAP_SECONDS, delay)
            return True
        return False


@dataclass(frozen=True, slots=True)
class Counters:
    """Where a sink's outcomes are counted (its metrics' methods)."""

    written: Callable[[], None]
    dropped: Callable[[str], None]  # queue_full|rate_limited|rejected|shutdown
    api_error: Callable[[str], None]  # HTTP status as text, or "connection"


class Delivery(Generic[K, V]):
    """The owed writes of one sink, keyed by `K` (one write per key: the latest wins) and
    written one at a time. A sink says how to queue a cycle (`_queue_results`), which
    write goes next (`_next`) and how to make it (`_send`)."""

    what = "write"  # "Event", "report": the log lines' word
    retry_conflict = False  # a 409 is retried (the sink read the object first)

    def __init__(self, *, queue_size: int, counters: Counters | None,
                 clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.queue_size, self.counters, self.clock, self.sleep = queue_size, counters, clock, sleep
        self.written = self.dropped = self.api_errors = 0
        self._backoff = Backoff(self.what, clock, sleep)
        self._lock, self._pump_lock = threading.Lock(), threading.Lock()
        self._queue: OrderedDict[K, V] = OrderedDict()

    @property
    def last_error(self) -> ApiError | None:
        """The API's answer to the last failed write, until a write succeeds."""
        return self._backoff.last_error

    @property
    def pending(self) -> int:
        """Writes owed to the API server (and a sweep, while it is owed)."""
        with self._lock:
            return len(self._queue) + self._sweep_owed()

    def publish(self, audit_result: AuditResult) -> None:
        """Queue the writes this cycle's results call for; never blocks on the API, never
        raises."""
        try:
            self._queue_results(audit_result)
        except Exception:  # the sink must never take the audit loop down
            log.exception("%s sink: cannot queue %ss for this cycle", self.what, self.what)

    def pump(self, deadline: float) -> None:
        """Write owed writes until `deadline` (a value of the sink's clock).

        Returns early when nothing is owed or the next attempt (backoff, Retry-After)
        falls after the deadline. Never raises.
        """
        try:
            with self._pump_lock:
                self._pump(deadline)
        except Exception:
            log.exception("%s sink: unexpected failure while writing %ss", self.what, self.what)

    def flush(self, timeout: float) -> bool:
        """Write for at most `timeout` seconds (SIGTERM, --once); True when nothing is owed."""
        self.pump(self.clock() + timeout)
        return self.pending == 0

    def abandon(self) -> int:
        """Drop every write still owed (the agent is exiting), counted as `shutdown`."""
        with self._lock:
            owed = len(self._queue)
            self._queue.clear()
            self._drop_sweep()
            for _ in range(owed):
                self._drop("shutdown")
        return owed

    # --- what a sink defines ----------------------------------------------------------

    def _queue_results(self, audit_result: AuditResult) -> None:
        raise NotImplementedError

    def _next(self) -> tuple[K, V]:
        """The write to make next; called with `_lock` held and the queue not empty."""
        return next(iter(self._queue.items()))

    def _send(self, value: V, *, timeout: float) -> bool:
        """Make the write (raising ApiError); False when the server already held it."""
        raise NotImplementedError

    def _label(self, key: K, value: V) -> str:
        """The write's name in a log line."""
        return str(key)

    def _delivered(self, key: K, value: V) -> None:
        """Note what the server now holds; called with `_lock` held."""

    def _sweep_owed(self) -> bool:
        """Whether a sweep is owed once the queue is empty; called with `_lock` held."""
        return False

    def _sweep(self, *, timeout: float) -> None:
        """Work done once the queue is empty (the report sink's deletion of old reports);
        it handles its own failures."""

    def _drop_sweep(self) -> None:
        """Give up the sweep (at exit); called with `_lock` held."""

    # --- the engine -------------------------------------------------------------------

    def _has_room(self, key: K) -> bool:
        """Whether `key` may be queued (called with `_lock` held); counts `queue_full`."""
        if key not in self._queue and len(self._queue) >= self.queue_size:
            self._drop("queue_full")
            return False
        return True

    def _pump(self, deadline: float) -> None:
        while True:
            with self._lock:
                if not self._queue and not self._sweep_owed():
                    return
                item = self._next() if self._queue else None
            left = self._backoff.time_left(deadline)
            if left is None:
                return
            timeout = max(MIN_WRITE_TIMEOUT, left)
            if item is None:
                self._sweep(timeout=timeout)
                continue
            key, value = item
            try:
                wrote = self._send(value, timeout=timeout)
            except ApiError as exc:
                self._failed(key, exc)
                continue
            except Exception as exc:  # a client bug must not end the loop: back off, keep it
                log.exception("%s sink: unexpected failure writing %s %s", self.what, self.what,
                              self._label(key, value))
                self._failed(key, ApiError(None, "ClientError", f"{type(exc).__name__}: {exc}"))
                continue
            self._succeeded(key, value, wrote)

    def _succeeded(self, key: K, value: V, wrote: bool) -> None:
        with self._lock:
            if self._queue.get(key) is value:  # not a newer write queued meanwhile
                del self._queue[key]
            self._delivered(key, value)
            if wrote:
                self.written += 1
        if wrote and self.counters is not None:
            self.counters.written()
        self._backoff.succeeded()

    def _count_failure(self, exc: ApiError) -> bool:
        """Count a failed call and schedule its retry; False when it is rejected for good."""
        self.api_errors += 1
        if self.counters is not None:
            self.counters.api_error(exc.code)
        return self._backoff.failed(exc, retry_conflict=self.retry_conflict)

    def _failed(self, key: K, exc: ApiError) -> None:
        if not self._count_failure(exc):
            with self._lock:
                self._queue.pop(key, None)
                self._drop("rejected")

    def _drop(self, reason: str) -> None:
        """Count a write given up on; called with `_lock` held."""
        self.dropped += 1
        if self.counters is not None:
            self.counters.dropped(reason)
