"""The pod cache of the `run` loop: list, then watch, the selected pods on this node.

A daemon thread keeps `PodWatcher.pods()` current and puts a pod's uid on the trigger
queue when it has a running container the loop has not audited yet: a pod that appeared,
or a container that restarted (a new containerID, or, crash-looping, a higher
restartCount). It re-lists after 410 Gone and after every watch end, and never dies: API
errors are logged, counted and retried with backoff.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from agent.kube.client import KubeError, WatchExpired
from agent.kube.containers import Fingerprint, Pod, pod_uid, restart_marks, running_containers

log = logging.getLogger(__name__)

# The server ends a watch after this many seconds; the watcher then re-lists.
WATCH_SECONDS = 240
MAX_BACKOFF = 30.0


class PodApi(Protocol):
    def list_pods(
        self, node: str, selector: str | None, namespace: str | None
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
        self._lock = threading.Lock()
        self._pods: dict[str, Pod] = {}
        self._seen: dict[str, Fingerprint] = {}
        self.synced = threading.Event()

    def pods(self) -> list[Pod]:
        with self._lock:
            return list(self._pods.values())

    def relist(self) -> str:
        """Replace the cache with a fresh list; returns the list's resourceVersion."""
        items, resource_version = self._api.list_pods(self._node, self._selector, self._namespace)
        with self._lock:
            self._pods = {pod_uid(p): p for p in items if pod_uid(p)}
            changed = [uid for uid, pod in self._pods.items() if self._remember(uid, pod)]
            self._seen = {uid: fp for uid, fp in self._seen.items() if uid in self._pods}
        for uid in changed:
            self._triggers.put(uid)
        self.synced.set()
        self._on_listed()
        return resource_version

    def apply(self, kind: str, pod: Pod) -> None:
        """One watch event: ADDED / MODIFIED / DELETED (BOOKMARK carries no pod change)."""
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
        """Thread body: list, watch until it ends or expires, re-list; until `stop`."""
        backoff = 1.0
        while not self._stop.is_set():
            try:
                resource_version = self.relist()
                backoff = 1.0
                events = self._api.watch_pods(
                    self._node, self._selector, self._namespace,
                    resource_version, self._watch_seconds,
                )
                for kind, pod in events:
                    if self._stop.is_set():
                        return
                    self._on_answer()
                    self.apply(kind, pod)
                self._on_answer()  # the server ended the watch at its timeout
            except WatchExpired:
                log.info("pod watch expired (410 Gone); re-listing")
            except KubeError as exc:
                self._on_api_error(exc.status)
                log.error("pod list/watch failed", extra={"status": exc.status, "error": str(exc)})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception as exc:  # noqa: BLE001 - connection errors of any library layer
                self._on_api_error(None)
                log.error("pod list/watch failed", extra={"error": _one_line(exc)})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="opaudit-podwatch", daemon=True)
        thread.start()
        return thread


def _pod_name(pod: Pod) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
