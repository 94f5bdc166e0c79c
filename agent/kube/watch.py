"""The pod cache of the `run` loop: list, then watch, the selected pods on this node.

A daemon thread keeps `PodWatcher.pods()` current and puts a pod's uid on the trigger
queue when it has a running container the loop has not audited yet: a pod that appeared,
or a container that restarted (a new containerID, or, crash-looping, a higher
restartCount). It never dies: API errors are logged, counted and retried with backoff.

Gentle with the API server at fleet scale, as the kubelet's own pod reflector (client-go's
`tools/cache/reflector.go`) is; the README's "The API server at fleet scale" has the figures:
- the first list waits a random `startup_jitter`, so a fleet started together (a rollout,
  a node pool created at once) does not list in the same second, and asks for
  resourceVersion=0: the API server's watch cache answers it, not etcd;
- the watch asks for bookmarks and each watch resumes from the last resourceVersion seen
  (of an event or a bookmark): a watch that ended or broke costs one watch request, no
  list. Only 410 Gone (the version left the server's history) lists again, after a new
  jitter, at least as new as the version seen, which the watch cache serves too;
- each watch asks for a random timeout (client-go does the same), so watches started
  together do not end together, and is given up if still open past its deadline (a
  half-open connection: `agent.kube.watchstream`);
- retries back off exponentially with jitter, and wait out a 429's Retry-After.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from agent.collect.errors import error_line
from agent.kube.containers import Fingerprint, Pod, pod_uid, restart_marks, running_containers
from agent.kube.errors import KubeError, WatchExpired

log = logging.getLogger(__name__)

# The longest watch: each asks the server for a random timeout from 2/3 of this to this
# (180-270 s), so a half-open one is given up within 300 s (its timeout + 30 s).
WATCH_SECONDS = 270
MAX_BACKOFF = 30.0
FIRST_BACKOFF = 1.0
SHORTEST_WATCH_SECONDS = 1.0
STARTUP_JITTER = 10.0  # `opaudit run --startup-jitter`'s default
FROM_WATCH_CACHE = "0"  # a list's resourceVersion: any recent state, from the watch cache


class PodApi(Protocol):
    def list_pods(
        self, node: str, selector: str | None, namespace: str | None, *,
        resource_version: str | None = None,
    ) -> tuple[list[dict[str, Any]], str]: ...

    def watch_pods(
        self, node: str, selector: str | None, namespace: str | None,
        resource_version: str, timeout_seconds: int,
    ) -> Iterator[tuple[str, dict[str, Any]]]: ...


class PodWatcher:
    """Thread-safe cache of the selected pods on `node`, fed by list + watch."""

    def __init__(
        self,
        api: PodApi,
        node: str,
        selector: str | None,
        namespace: str | None,
        *,
        triggers: queue.Queue[str],
        stop: threading.Event,
        on_api_error: Callable[[int | None], None] = lambda code: None,
        on_listed: Callable[[], None] = lambda: None,
        on_answer: Callable[[], None] = lambda: None,
        watch_seconds: int = WATCH_SECONDS,
        startup_jitter: float = 0.0,
    ) -> None:
        self._api = api
        self._node = node
        self._selector = selector
        self._namespace = namespace
        self._triggers = triggers
        self._stop = stop
        self._on_api_error = on_api_error
        self._on_listed = on_listed  # readiness: the list answered
        self._on_answer = on_answer  # readiness: the watch answered
        self._watch_seconds = watch_seconds
        self._startup_jitter = max(0.0, startup_jitter)
        # Drawn now, so that the loop knows how long the first list may take to come.
        self.first_list_delay = random.uniform(0.0, self._startup_jitter)
        self._lock = threading.Lock()
        self._pods: dict[str, Pod] = {}
        self._seen: dict[str, Fingerprint] = {}
        self.synced = threading.Event()
        self.resource_version = ""  # the newest seen: of the last list, event or bookmark

    def pods(self) -> list[Pod]:
        with self._lock:
            return list(self._pods.values())

    def relist(self, resource_version: str = FROM_WATCH_CACHE) -> str:
        """Replace the cache with a fresh list; returns the list's resourceVersion.
        `resource_version` as `Api.list_pods` takes it ("": a consistent read)."""
        items, listed_version = self._api.list_pods(
            self._node, self._selector, self._namespace,
            resource_version=resource_version or None)
        with self._lock:
            self._pods = {pod_uid(p): p for p in items if pod_uid(p)}
            changed = [uid for uid, pod in self._pods.items() if self._remember(uid, pod)]
            self._seen = {uid: fp for uid, fp in self._seen.items() if uid in self._pods}
            self.resource_version = listed_version
        for uid in changed:
            self._triggers.put(uid)
        self.synced.set()
        self._on_listed()
        return listed_version

    def apply(self, kind: str, pod: Pod) -> None:
        """One watch event: ADDED / MODIFIED / DELETED, or a BOOKMARK, which only moves the
        resourceVersion to resume from."""
        version = (pod.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)
        uid = pod_uid(pod)
        if not uid or kind == "BOOKMARK":
            return
        with self._lock:
            if kind == "DELETED":
                self._pods.pop(uid, None)
                self._seen.pop(uid, None)
                return
            self._pods[uid] = pod
            changed = self._remember(uid, pod)
        if changed:
            log.info("pod needs an audit", extra={"pod": _pod_name(pod), "trigger": kind})
            self._triggers.put(uid)

    def _remember(self, uid: str, pod: Pod) -> bool:
        """Record the pod's running containers and restarts; True when one is new since last
        time (a crash loop has no running container, only restarts)."""
        current = running_containers(pod) + restart_marks(pod)
        previous = self._seen.get(uid, ())
        self._seen[uid] = current
        return bool(set(current) - set(previous))

    def run(self) -> None:
        """Thread body, until `stop`: list once (after the start-up jitter), then watch,
        resuming each watch where the last one ended; list again only after 410 Gone."""
        list_from: str | None = FROM_WATCH_CACHE  # the next list's version; None: none owed
        delay = self.first_list_delay
        log.info("pod list and watch starting", extra={
            "node": self._node, "first_list_in_seconds": round(delay, 3)})
        backoff = FIRST_BACKOFF
        while not self._stop.is_set():
            try:
                if list_from is not None:
                    if delay > 0 and self._stop.wait(delay):
                        return
                    delay = 0.0
                    self.relist(list_from)
                    list_from = None
                if self._watch_once():
                    backoff = FIRST_BACKOFF  # the server ended the watch itself: all is well
            except WatchExpired as exc:
                # The version left the server's history. A list at least as new as the
                # version seen is served from the watch cache (client-go does the same); a
                # list refused so (its version is gone too) is read from etcd instead.
                refused_list = list_from is not None
                list_from = "" if refused_list else (self.resource_version or FROM_WATCH_CACHE)
                delay = random.uniform(0.0, self._startup_jitter)  # a fleet got it too
                log.info("pod watch expired (410 Gone); listing again", extra={
                    "error": str(exc), "delay_seconds": round(delay, 1)})
            except KubeError as exc:
                self._on_api_error(exc.status)
                log.error("pod list/watch failed", extra={"status": exc.status, "error": str(exc)})
                backoff = self._back_off(backoff, exc.retry_after)
            except Exception as exc:  # noqa: BLE001 - connection errors of any library layer
                self._on_api_error(None)
                log.error("pod list/watch failed", extra={"error": error_line(exc)})
                backoff = self._back_off(backoff, None)

    def _watch_once(self) -> bool:
        """One watch from the version seen; True when the server ended it (its timeout).

        A watch that ends within a second with no event at all is an error, as in client-go's
        watchHandler ("very short watch"): a proxy or server that closes every watch at once
        would otherwise get them back-to-back, bounded only by the request limit."""
        timeout = max(1, round(self._watch_seconds * random.uniform(2 / 3, 1)))
        started = time.monotonic()
        events = self._api.watch_pods(self._node, self._selector, self._namespace,
                                      self.resource_version, timeout)
        self._on_answer()  # the server accepted the watch
        seen = 0
        for kind, pod in events:
            if self._stop.is_set():
                return False
            self._on_answer()
            self.apply(kind, pod)
            seen += 1
        lasted = time.monotonic() - started
        if not seen and lasted < SHORTEST_WATCH_SECONDS:
            raise KubeError(None, "Unreachable", f"very short watch: it ended after "
                            f"{lasted:.2f} s without an event (timeoutSeconds={timeout})")
        self._on_answer()
        return True

    def _back_off(self, backoff: float, retry_after: float | None) -> float:
        """Wait `backoff` to twice that (the jitter spreads a fleet's retries, as client-go's
        reflector does), or a 429's Retry-After if longer; returns the next backoff."""
        self._stop.wait(max(backoff * (1.0 + random.random()), retry_after or 0.0))
        return min(backoff * 2, MAX_BACKOFF)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="opaudit-podwatch", daemon=True)
        thread.start()
        return thread


def _pod_name(pod: Pod) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
