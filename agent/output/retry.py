"""When a sink may next write to the API: the one retry schedule of Events and reports.

429 waits for Retry-After; no answer, 401, 403, 408, 5xx (and a 409 the caller calls
retryable) back off exponentially, 0.25 s doubling, capped at 30 s; anything else is a
rejection the caller drops. A failure is logged once until the API answers again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agent.api_error import ApiError

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 30.0
DEFAULT_RETRY_AFTER_SECONDS = 1.0


class Backoff:
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
