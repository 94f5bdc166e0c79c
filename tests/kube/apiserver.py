"""An in-process Kubernetes API server for tests, spoken to by the official client over HTTP.

Serves the REST paths opaudit uses: pods list/get/watch (fieldSelector, labelSelector,
resourceVersion, timeoutSeconds, allowWatchBookmarks) and Events create/get/list/patch on both
`/apis/events.k8s.io/v1` and core `/api/v1` (one store, two views). Every object it
receives is validated (`apischema`) and an invalid one gets 422 Invalid, as from
kube-apiserver. Faults are injected per method and path: 500, 429 + Retry-After, 403 with
kube-apiserver's RBAC message, 410 (an ERROR watch event on a watch), a dropped
connection, a hung connection, a watch answered and then silent (a half-open connection).
`request_log` keeps every request's method, path, query and arrival time.

    with ApiServer() as server:
        api = load_api(configuration=server.configuration())
        server.add_pod(pod)
        server.inject("POST", r"/events$", status=429, retry_after=1)

HTTP/1.0: every response closes its connection, so `stop()` joins every handler thread.
A watch is sent in chunks (one event per chunk), as kube-apiserver does.
"""

from __future__ import annotations

import bisect
import copy
import json
import math
import os
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any

from kube import apischema
from kube.apicrd import CustomStore
from kube.apiexec import ExecHandler
from kube.apihttp import (
    ApiError,
    Fault,
    RequestRecord,
    expired_status,
    forbidden_message,
    handler_for,
    status_object,
)
from kube.selector_match import field_matcher, label_matcher

__all__ = ["ApiServer", "RequestRecord", "forbidden_message", "merge_patch", "status_object"]


class _HttpServer(ThreadingHTTPServer):
    # A listen backlog as a Go server's (the kernel's somaxconn), not socketserver's 5: a
    # fleet connecting at once must not wait out SYN retransmits the real server never causes.
    request_queue_size = 4096


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiServer:
    """The test API server. Thread-safe; use as a context manager (start/stop)."""

    def __init__(self, report_apis: tuple[str, ...] = ()) -> None:
        """`report_apis`: the policy-report group versions to serve (`openreports.io/v1alpha1`,
        `wgpolicyk8s.io/v1alpha2`): either, both or neither, as a cluster may."""
        self._cond = threading.Condition()
        self.stopping = threading.Event()
        self._rv = 1
        self._compacted_rv = 0
        self._pods: dict[tuple[str, str], dict[str, Any]] = {}
        # Pods by spec.nodeName, as kube-apiserver's watch cache indexes them: a node's list
        # does not walk every pod of a fleet.
        self._pods_on: dict[str, set[tuple[str, str]]] = {}
        self._events: dict[tuple[str, str], dict[str, Any]] = {}  # events.k8s.io/v1 shape
        self._pod_history: list[tuple[int, str, dict[str, Any]]] = []
        self._faults: list[Fault] = []
        # pods/exec runs through this (tests/kube/apiexec.py); None: exec is 404.
        self.exec_handler: ExecHandler | None = None
        self.request_log: list[RequestRecord] = []
        # Bookmarks on a watch that asks for them, this often (kube-apiserver: about a minute).
        self.bookmark_seconds = 60.0
        self.bookmarks_sent = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.custom = CustomStore(report_apis, self._next_resource_version)

    def _next_resource_version(self, peek: bool = False) -> int:
        with self._cond:
            if not peek:
                self._rv += 1
            return self._rv

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> ApiServer:
        """Listen on 127.0.0.1 (the same port again after a `stop()`)."""
        handler = handler_for(self)
        httpd = _HttpServer(("127.0.0.1", self.port), handler)
        httpd.daemon_threads = False  # so server_close() joins every handler thread
        self.port = httpd.server_address[1]
        self.stopping.clear()
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="test-apiserver")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self.stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd, self._thread = None, None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configuration(self) -> Any:
        """A `kubernetes.client.Configuration` pointing at this server."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return configuration

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> str:
        """A kubeconfig for this server (token auth), for `opaudit ... --kubeconfig`."""
        with open(path, "w") as f:
            json.dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": self.url}}],
                "users": [{"name": "test", "user": {"token": "test-token"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            }, f)
        return os.fspath(path)

    # --- test API: pods ---------------------------------------------------------------

    def add_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        """Store a Pod (schema-validated; uid, namespace filled in) and emit ADDED."""
        pod = copy.deepcopy(pod)
        pod.setdefault("apiVersion", "v1")
        pod.setdefault("kind", "Pod")
        meta = pod.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        errors = apischema.schema_errors(pod)
        if errors:
            raise ValueError(f"invalid Pod: {errors}")
        return self._record_pod("ADDED", pod)

    def update_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        """Replace a stored Pod (same namespace/name) and emit MODIFIED."""
        pod = copy.deepcopy(pod)
        pod.setdefault("apiVersion", "v1")
        pod.setdefault("kind", "Pod")
        pod["metadata"].setdefault("namespace", "default")
        key = (pod["metadata"].get("namespace", "default"), pod["metadata"]["name"])
        with self._cond:
            old = self._pods[key]
        pod["metadata"].setdefault("uid", old["metadata"]["uid"])
        errors = apischema.schema_errors(pod)
        if errors:
            raise ValueError(f"invalid Pod: {errors}")
        return self._record_pod("MODIFIED", pod)

    def delete_pod(self, namespace: str, name: str) -> None:
        with self._cond:
            pod = self._pods[(namespace, name)]
        self._record_pod("DELETED", pod)

    def compact(self) -> None:
        """Forget watch history: a watch from an older resourceVersion gets 410 Gone."""
        with self._cond:
            self._compacted_rv = self._rv
            self._pod_history.clear()

    def _record_pod(self, kind: str, pod: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            self._rv += 1
            pod["metadata"]["resourceVersion"] = str(self._rv)
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            old = self._pods.pop(key, None)
            if old is not None:
                self._pods_on.get(_node_of(old), set()).discard(key)
            if kind != "DELETED":
                self._pods[key] = pod
                self._pods_on.setdefault(_node_of(pod), set()).add(key)
            self._pod_history.append((self._rv, kind, copy.deepcopy(pod)))
            self._cond.notify_all()
            return copy.deepcopy(pod)

    # --- test API: custom resources (policy reports) ---------------------------------

    def custom_objects(self, group_version: str) -> list[dict[str, Any]]:
        """Every stored object of a served CRD (e.g. `openreports.io/v1alpha1`)."""
        resource = self.custom.resources[group_version]
        with self.custom.lock:
            return copy.deepcopy(list(resource.objects.values()))

    def writes(self, path_regex: str) -> list[RequestRecord]:
        """The POST/PUT/PATCH/DELETE requests whose path matches and that succeeded (2xx)."""
        pattern = re.compile(path_regex)
        return [r for r in list(self.request_log)
                if r.method in ("POST", "PUT", "PATCH", "DELETE") and pattern.search(r.path)
                and r.status is not None and 200 <= r.status < 300]

    # --- test API: events and faults --------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        """Every stored Event, in the events.k8s.io/v1 shape."""
        with self._cond:
            return copy.deepcopy(list(self._events.values()))

    def event_count(self) -> int:
        with self._cond:
            return len(self._events)

    def regarding_uids(self) -> set[str]:
        """The uids the stored Events are about, without copying them (latency probes)."""
        with self._cond:
            return {str(e["regarding"].get("uid", "")) for e in self._events.values()}

    def inject(
        self,
        method: str,
        path_regex: str,
        status: int | None = 500,
        *,
        count: int = 1,
        retry_after: float | None = None,
        drop_connection: bool = False,
        hang_seconds: float = 0.0,
        reset_connection: bool = False,
        silent_seconds: float = 0.0,
    ) -> None:
        """Answer the next `count` requests whose method and URL path match with a fault.

        `status` 403 carries kube-apiserver's RBAC message; 410 on a watch is an ERROR
        event; `drop_connection` closes without a response (FIN); `reset_connection`
        aborts it (RST: "connection reset by peer"); `hang_seconds` holds the
        connection open that long (or until stop) and then closes it without a response;
        `silent_seconds` (watches only) answers 200 as a watch does and then sends nothing
        that long (or until stop), whatever its timeoutSeconds, then ends the watch: longer
        than the watch's timeout, a half-open connection as the client sees one (no FIN, no
        RST, no byte); much shorter, a server ending each watch at once.
        """
        fault = Fault(method.upper(), re.compile(path_regex), status, count, retry_after,
                      drop_connection, hang_seconds, reset_connection, silent_seconds)
        with self._cond:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    def take_fault(self, method: str, path: str, watch: bool = False) -> Fault | None:
        """The fault for this request, if one is armed; a silent one only for a watch."""
        with self._cond:
            for fault in self._faults:
                if fault.silent_seconds and not watch:
                    continue
                if fault.method in ("*", method) and fault.path_regex.search(path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # --- request handling (called from handler threads) -------------------------------

    def list_pods(self, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        match = _pod_filter(namespace, query)
        with self._cond:
            items = [copy.deepcopy(p) for p in self._candidates(query) if match(p)]
            rv = str(self._rv)
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv},
                "items": items}

    def _candidates(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """The pods a selector may match: one node's, when it names exactly one node."""
        node = re.fullmatch(r"spec\.nodeName=([^,!=]*)", query.get("fieldSelector", ""))
        if node is None:
            return list(self._pods.values())
        return [self._pods[key] for key in self._pods_on.get(node[1], ())]

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        with self._cond:
            pod = self._pods.get((namespace, name))
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found',
                           {"name": name, "kind": "pods"})
        return copy.deepcopy(pod)

    def watch_pods(self, namespace: str | None, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Watch events (dicts) until timeoutSeconds passes or the server stops; BOOKMARK
        events too when the query has allowWatchBookmarks=true.

        Raises ApiError for a bad selector or version before the stream starts.
        """
        match = _pod_filter(namespace, query)
        timeout = float(query.get("timeoutSeconds") or 1800)
        since = query.get("resourceVersion") or "0"
        if not since.isdigit():
            raise ApiError(400, "BadRequest", f"invalid resourceVersion: {since!r}")
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        return self._watch_stream(match, since, _monotonic() + timeout, bookmarks)

    def _watch_stream(self, match: Any, since: str, deadline: float,
                      bookmarks: bool) -> Iterator[dict[str, Any]]:
        with self._cond:
            expired = since != "0" and int(since) < self._compacted_rv
            oldest = self._compacted_rv
            if since == "0":  # no version: the current state as ADDED, then changes
                initial = [copy.deepcopy(p) for p in self._pods.values() if match(p)]
                last = self._rv
            else:
                initial, last = [], int(since)
        if expired:
            yield {"type": "ERROR", "object": expired_status(since, oldest)}
            return
        for pod in initial:
            yield {"type": "ADDED", "object": pod}
        bookmark_at = self._next_bookmark(deadline) if bookmarks else math.inf
        while not self.stopping.is_set() and (now := _monotonic()) < deadline:
            if now >= bookmark_at:
                bookmark_at = self._next_bookmark(deadline)
                with self._cond:
                    self.bookmarks_sent += 1
                yield {"type": "BOOKMARK", "object": _bookmark(last)}
                continue
            with self._cond:
                fresh = self._pod_history[bisect.bisect_right(
                    self._pod_history, last, key=lambda h: h[0]):]
                if not fresh:
                    # Nothing this watch has not seen up to the newest version: a bookmark
                    # may carry that one (kube-apiserver's cacher bookmarks its own).
                    last = max(last, self._rv)
                    self._cond.wait(max(0.0, min(1.0, deadline - now, bookmark_at - now)))
                    continue
            for rv, kind, pod in fresh:
                last = rv
                shown = self._as_seen(kind, pod, rv, match)
                if shown is not None:
                    yield {"type": shown, "object": copy.deepcopy(pod)}

    def _next_bookmark(self, deadline: float) -> float:
        """As kube-apiserver's cacheWatcher.nextBookmarkTime: every `bookmark_seconds`, and
        2 s before the watch's deadline, so a watch ends with its freshest version."""
        every = _monotonic() + self.bookmark_seconds
        before_end = deadline - 2.0
        return before_end if _monotonic() < before_end < every else every

    def _as_seen(self, kind: str, pod: dict[str, Any], rv: int, match: Any) -> str | None:
        """The event a selector-filtered watch sees, as kube-apiserver's cacheWatcher
        (convertToWatchEvent) makes it: an update that leaves the selection is DELETED,
        one that enters it ADDED."""
        if kind != "MODIFIED":
            return kind if match(pod) else None
        with self._cond:
            before = [p for r, k, p in self._pod_history if r < rv and k != "DELETED"
                      and p["metadata"]["uid"] == pod["metadata"]["uid"]]
        was = bool(before) and match(before[-1])
        if match(pod):
            return "MODIFIED" if was else "ADDED"
        return "DELETED" if was else None

    def create_event(self, core_api: bool, namespace: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body is not a JSON object")
        # Like kube-apiserver, take apiVersion and kind from the endpoint when absent.
        expected = ("v1" if core_api else "events.k8s.io/v1", "Event")
        body = {**body, "apiVersion": body.get("apiVersion") or expected[0],
                "kind": body.get("kind") or expected[1]}
        if (body["apiVersion"], body["kind"]) != expected:
            raise ApiError(400, "BadRequest", f"the API version in the data ({body['apiVersion']}) "
                           f"does not match the expected API version ({expected[0]})")
        meta = body.get("metadata") or {}
        if meta.get("namespace") not in (None, namespace):
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not "
                           "match the namespace sent on the request")
        if core_api:
            errors = apischema.core_event_errors(body, namespace)
            event = apischema.core_to_events(body)
        else:
            errors, event = apischema.event_errors(body, namespace), copy.deepcopy(body)
        name = str(meta.get("name") or "")
        if errors:
            raise _invalid(name, errors, core_api)
        with self._cond:
            if (namespace, name) in self._events:
                raise ApiError(409, "AlreadyExists",
                               f'{_resource(core_api)} "{name}" already exists',
                               {"name": name, "group": _group(core_api), "kind": "events"})
            self._rv += 1
            event["metadata"] = {**meta, "namespace": namespace, "uid": str(uuid.uuid4()),
                                 "resourceVersion": str(self._rv), "creationTimestamp": _now()}
            self._events[(namespace, name)] = event
            return _view(event, core_api)

    def get_event(self, core_api: bool, namespace: str, name: str) -> dict[str, Any]:
        with self._cond:
            event = self._events.get((namespace, name))
            if event is None:
                raise ApiError(404, "NotFound", f'{_resource(core_api)} "{name}" not found',
                               {"name": name, "group": _group(core_api), "kind": "events"})
            return _view(event, core_api)

    def list_events(self, core_api: bool, namespace: str | None) -> dict[str, Any]:
        with self._cond:
            items = [_view(e, core_api) for (ns, _), e in self._events.items()
                     if namespace is None or ns == namespace]
            rv = str(self._rv)
        kind, version = ("EventList", "v1") if core_api else ("EventList", "events.k8s.io/v1")
        return {"kind": kind, "apiVersion": version, "metadata": {"resourceVersion": rv},
                "items": items}

    def patch_event(
        self, core_api: bool, namespace: str, name: str, content_type: str, patch: Any
    ) -> dict[str, Any]:
        if content_type not in ("application/merge-patch+json",
                                "application/strategic-merge-patch+json"):
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format: {content_type}")
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        with self._cond:
            stored = self._events.get((namespace, name))
            if stored is None:
                raise ApiError(404, "NotFound", f'{_resource(core_api)} "{name}" not found',
                               {"name": name, "group": _group(core_api), "kind": "events"})
            old = _view(stored, core_api)
            new = merge_patch(old, patch)
            new_event = apischema.core_to_events(new) if core_api else new
            for field in ("name", "namespace", "uid"):
                new_event.setdefault("metadata", {})[field] = stored["metadata"][field]
            errors = apischema.event_update_errors(_without_meta(new_event),
                                                   _without_meta(stored), namespace)
            if core_api:  # the legacy API does not apply the strict events.k8s.io/v1 rules
                errors = apischema.schema_errors(new)
            if errors:
                raise _invalid(name, errors, core_api)
            self._rv += 1
            new_event["metadata"]["resourceVersion"] = str(self._rv)
            self._events[(namespace, name)] = new_event
            return _view(new_event, core_api)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: null deletes, objects merge, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _without_meta(event: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (event.get("metadata") or {}).items()
            if k in ("name", "namespace", "labels", "annotations")}
    return {**event, "metadata": meta}


def _view(event: dict[str, Any], core_api: bool) -> dict[str, Any]:
    return apischema.events_to_core(copy.deepcopy(event)) if core_api else copy.deepcopy(event)


def _resource(core_api: bool) -> str:
    return "events" if core_api else "events.events.k8s.io"


def _group(core_api: bool) -> str:
    return "" if core_api else "events.k8s.io"


def _invalid(name: str, errors: list[str], core_api: bool) -> ApiError:
    kind = "Event" if core_api else "Event.events.k8s.io"
    causes = [{"reason": "FieldValueInvalid", "message": e, "field": e.split(":", 1)[0]}
              for e in errors]
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: [{", ".join(errors)}]',
                    {"name": name, "group": _group(core_api), "kind": "Event", "causes": causes})


def _node_of(pod: dict[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def _bookmark(resource_version: int) -> dict[str, Any]:
    """A BOOKMARK's object: the kind, and only the version in its metadata."""
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"resourceVersion": str(resource_version)}}


def _pod_filter(namespace: str | None, query: dict[str, str]) -> Any:
    try:
        by_field = field_matcher(query.get("fieldSelector", ""))
        by_label = label_matcher(query.get("labelSelector", ""))
    except ValueError as exc:
        raise ApiError(400, "BadRequest", str(exc)) from None

    def match(pod: dict[str, Any]) -> bool:
        meta = pod.get("metadata") or {}
        if namespace is not None and meta.get("namespace") != namespace:
            return False
        return by_field(pod) and by_label(meta.get("labels") or {})

    return match


def _monotonic() -> float:
    import time

    return time.monotonic()
