"""The client-side limit on API requests: a token bucket every request of one `Api` waits on.

As client-go's `flowcontrol.NewTokenBucketRateLimiter` (rest.Config QPS and Burst): up to
`burst` requests at once, then `qps` per second. It bounds what one agent can ask of the API
server whatever its loops do (a retry storm, a 429 storm, a bug): the README's "The API
server at fleet scale" gives the defaults and why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# The kubelet's own defaults since Kubernetes 1.27 (kubeAPIQPS 50, kubeAPIBurst 100,
# kubernetes/kubernetes#116121): an agent never asks more of the API than its node's kubelet
# may. The churn target of the README's node bench (5 pods/s, ~4 Events each) needs ~20/s.
DEFAULT_QPS = 50.0
DEFAULT_BURST = 100


class RequestLimiter:
    """Thread-safe token bucket; `acquire()` blocks until a request may go."""

    def __init__(
        self,
        qps: float = DEFAULT_QPS,
        burst: int = DEFAULT_BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"a request limit needs qps > 0 and burst >= 1, not {qps}/{burst}")
        self.qps, self.burst = float(qps), int(burst)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = clock()
        self.waited = 0.0  # seconds callers spent waiting, in all

    def acquire(self) -> None:
        """Take one token, waiting for it. Tokens are reserved in arrival order: a caller
        that must wait owes its token already, so no later caller can overtake it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst),
                               self._tokens + (now - self._updated) * self.qps)
            self._updated = now
            self._tokens -= 1.0
            wait = -self._tokens / self.qps if self._tokens < 0 else 0.0
            self.waited += wait
        if wait > 0:
            self._sleep(wait)
