"""Kubernetes API access on the official `kubernetes` client, answering plain JSON dicts.

`kubernetes` is imported inside functions only: `diagnose --pid` never pays for it.
Every call returns the server's JSON as dicts (`_preload_content=False`): the typed models
refuse real objects, e.g. a kubelet-written events.k8s.io/v1 Event has no `eventTime`.
Every failure becomes a `KubeError` whose `str()` is one line fit for a user
(`agent.kube.errors`). Where the configuration comes from is `agent.kube.apiconfig`; the
Events and policy-report calls are `agent.kube.events` and `agent.kube.policyreports`, on
the calls by path below.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from agent.kube.errors import KubeError, error_from, guarded
from agent.kube.ratelimit import DEFAULT_BURST, DEFAULT_QPS, RequestLimiter
from agent.kube.watchstream import watch_deadline, watch_events

# Seconds to wait for a TCP connect and for each read; a hung server must not block forever.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
_MERGE_PATCH = "application/merge-patch+json"


def load_api(
    kubeconfig: str | None = None,
    *,
    configuration: Any = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    qps: float = DEFAULT_QPS,
    burst: int = DEFAULT_BURST,
) -> Api:
    """An `Api` from `configuration`, else `--kubeconfig`, else in-cluster, else KUBECONFIG.

    An explicit kubeconfig wins; inside a pod (KUBERNETES_SERVICE_HOST set) the
    ServiceAccount is used; otherwise KUBECONFIG or ~/.kube/config. The official loaders of
    `kubernetes.config` fill the configuration (exec plugins, OIDC, inline certificates,
    the ServiceAccount token's rotation). Every request waits on one client-side limit of
    `qps` per second after a `burst` (`agent.kube.ratelimit`). Raises `KubeError`.
    """
    from kubernetes import client

    from agent.kube.apiconfig import load_configuration

    if configuration is None:
        configuration = client.Configuration()
        load_configuration(configuration, kubeconfig)
    # Retries are ours (the sinks back off); urllib3 retrying inside a call hides faults.
    configuration.retries = False
    return Api(
        client.ApiClient(configuration),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        limiter=RequestLimiter(qps, burst),
    )


class Api:
    """The few API calls opaudit makes, on one `kubernetes.client.ApiClient`."""

    def __init__(
        self,
        api_client: Any,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        limiter: RequestLimiter | None = None,
    ) -> None:
        self.api_client = api_client
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.limiter = limiter if limiter is not None else RequestLimiter()

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def close(self) -> None:
        self.api_client.close()

    # --- pods -------------------------------------------------------------------------

    def list_pods(
        self,
        node: str | None = None,
        selector: str | None = None,
        namespace: str | None = None,
        *,
        timeout: float | None = None,
        resource_version: str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """Pods on `node` matching the label `selector`, and the list's resourceVersion.

        `resource_version` "0" lets the API server answer from its watch cache (any recent
        state); another version, a state at least that new (also from the cache); None, a
        consistent read from etcd (the Kubernetes API concepts: "Resource versions").
        """
        answer = self._get_json(
            _pods_path(namespace),
            [("fieldSelector", _node_selector(node)), ("labelSelector", selector or None),
             ("resourceVersion", resource_version)],
            timeout,
        )
        metadata = answer.get("metadata") or {}
        return list(answer.get("items") or []), str(metadata.get("resourceVersion") or "")

    def watch_pods(
        self,
        node: str | None,
        selector: str | None,
        namespace: str | None,
        resource_version: str | None,
        timeout_seconds: int = 300,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Open a watch; returns once the server answered, then (type, pod) for ADDED,
        MODIFIED, DELETED and BOOKMARK until the server ends it after `timeout_seconds`.

        Bookmarks are asked for: a BOOKMARK carries only a newer resourceVersion, so a watch
        resumed from the last version seen starts where this one ended. Track
        `pod["metadata"]["resourceVersion"]` to resume. Raises `WatchExpired` when the
        version is too old (410, as an HTTP status or an ERROR event), else `KubeError`,
        also when the watch is still open `watch_deadline(timeout_seconds)` after the request
        (a half-open connection: `agent.kube.watchstream`).
        """
        query = [
            ("allowWatchBookmarks", "true"),
            ("fieldSelector", _node_selector(node)),
            ("labelSelector", selector or None),
            ("resourceVersion", resource_version or None),
            ("timeoutSeconds", str(timeout_seconds)),
            ("watch", "true"),
        ]
        limit = watch_deadline(timeout_seconds)
        deadline = time.monotonic() + limit
        # The answer's headers, like every later read, must come before the deadline.
        response = self._send("GET", _pods_path(namespace), query=query,
                              timeout=(self.connect_timeout, limit))
        return _released(response, watch_events(response, deadline, timeout_seconds))

    def get_pod(self, namespace: str, name: str, *, timeout: float | None = None) -> dict[str, Any]:
        path = f"/api/v1/namespaces/{quote_segment(namespace)}/pods/{quote_segment(name)}"
        return self._get_json(path, [], timeout)

    # --- any object by path: discovery, Events, policy reports ------------------------

    def get_json(self, path: str, *, query: Sequence[tuple[str, str]] = (),
                 timeout: float | None = None) -> dict[str, Any]:
        return self._get_json(path, list(query), timeout)

    def get_object(self, path: str, *, timeout: float | None = None) -> dict[str, Any] | None:
        """The object at `path`, or None when it does not exist."""
        try:
            return self._get_json(path, [], timeout)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def create_object(self, path: str, body: dict[str, Any], *, timeout: float | None = None
                      ) -> dict[str, Any]:
        """POST to the collection at `path`."""
        return self._write("POST", path, body, "application/json", timeout)

    def patch_object(self, path: str, patch: dict[str, Any], *, timeout: float | None = None
                     ) -> dict[str, Any]:
        """JSON merge patch (RFC 7386) of the object at `path`."""
        return self._write("PATCH", path, patch, _MERGE_PATCH, timeout)

    def replace_object(self, path: str, body: dict[str, Any], *, timeout: float | None = None
                       ) -> dict[str, Any]:
        """PUT (update): `body` carries the resourceVersion it replaces, else 409."""
        return self._write("PUT", path, body, "application/json", timeout)

    def delete_object(self, path: str, *, timeout: float | None = None) -> None:
        """DELETE; an object already gone is no error."""
        try:
            _json_body(self._send("DELETE", path, timeout=self._timeout(timeout)))
        except KubeError as exc:
            if exc.status != 404:
                raise

    # --- plumbing ---------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> tuple[float, float]:
        if timeout is None:
            return (self.connect_timeout, self.read_timeout)
        return (min(self.connect_timeout, timeout), min(self.read_timeout, timeout))

    def _get_json(
        self, path: str, query: list[tuple[str, str | None]], timeout: float | None
    ) -> dict[str, Any]:
        return _json_body(self._send("GET", path, query=query, timeout=self._timeout(timeout)))

    def _write(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        content_type: str,
        timeout: float | None,
    ) -> dict[str, Any]:
        response = self._send(method, path, body=body, content_type=content_type,
                              timeout=self._timeout(timeout))
        return _json_body(response)

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str | None]] | None = None,
        body: dict[str, Any] | None = None,
        content_type: str | None = None,
        timeout: tuple[float, float],
    ) -> Any:
        """One request through the ApiClient (auth, TLS, proxy as configured); the urllib3
        response, its body unread. Not the generated `CoreV1Api`/`EventsV1Api`: importing
        them imports some 250 pydantic model modules (about 20 MiB of a 64 MiB budget),
        and we only want the JSON."""
        self.limiter.acquire()
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        request = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=[(key, value) for key, value in query or [] if value is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = guarded(lambda: self.api_client.call_api(*request, _request_timeout=timeout))
        if not 200 <= response.status <= 299:
            response.read()
            raise error_from(response.status, response.reason, response.data,
                              response.getheaders())
        return response.response


def _pods_path(namespace: str | None) -> str:
    if namespace:
        return f"/api/v1/namespaces/{quote_segment(namespace)}/pods"
    return "/api/v1/pods"


def _node_selector(node: str | None) -> str | None:
    return f"spec.nodeName={node}" if node else None



def quote_segment(segment: str) -> str:
    """One path segment: a `/` in a name must not reach another resource."""
    from urllib.parse import quote

    return quote(segment, safe="")


def _json_body(response: Any) -> dict[str, Any]:
    try:
        answer = json.loads(response.data)
    except ValueError as exc:
        raise KubeError(response.status, "BadResponse", f"answer is not JSON: {exc}") from None
    finally:
        response.release_conn()
    if not isinstance(answer, dict):
        raise KubeError(response.status, "BadResponse", "answer is not a JSON object")
    return answer


def _released(response: Any, events: Iterator[tuple[str, dict[str, Any]]]
              ) -> Iterator[tuple[str, dict[str, Any]]]:
    """`events`, then the connection back to the pool; closed instead when the stream did
    not end (an error, the deadline, or the caller stopped): its unread rest must never
    reach the next request on that connection."""
    ended = False
    try:
        yield from events
        ended = True
    finally:
        if not ended:
            response.close()
        response.release_conn()
