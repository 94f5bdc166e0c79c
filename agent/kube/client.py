"""Kubernetes API access on the official `kubernetes` client, answering plain JSON dicts.

`kubernetes` is imported inside functions only: `diagnose --pid` never pays for it.
Every call returns the server's JSON as dicts (`_preload_content=False`): the typed models
refuse real objects, e.g. a kubelet-written events.k8s.io/v1 Event has no `eventTime`.
Every failure becomes a `KubeError` whose `str()` is one line fit for a user.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

# Seconds to wait for a TCP connect and for each read; a hung server must not block forever.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
_MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """An API call failed. `status` is the HTTP status, None when no answer came back."""

    def __init__(
        self,
        status: int | None,
        reason: str,
        message: str,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = " ".join(message.split())
        self.retry_after = retry_after
        code = f"{status} {reason}" if status is not None else reason
        super().__init__(f"Kubernetes API: {code}: {self.message}")

    @property
    def code(self) -> str:
        """Metric label: the HTTP status, `connection` when nothing answered, else the reason."""
        if self.status is not None:
            return str(self.status)
        return "connection" if self.reason == "Unreachable" else self.reason.lower()

    @property
    def retryable(self) -> bool:
        """Worth retrying: no answer, throttled, server trouble, token or RBAC not yet fixed."""
        return self.status is None or self.status in (401, 403, 408, 429) or self.status >= 500


class WatchExpired(KubeError):
    """The watch's resourceVersion is too old (410 Gone): list again, then watch from there."""


def load_api(
    kubeconfig: str | None = None,
    *,
    configuration: Any = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
) -> Api:
    """An `Api` from `configuration`, else `--kubeconfig`, else in-cluster, else KUBECONFIG.

    An explicit kubeconfig wins; inside a pod (KUBERNETES_SERVICE_HOST set) the
    ServiceAccount is used; otherwise KUBECONFIG or ~/.kube/config. Raises `KubeError`.
    """
    from kubernetes import client
    from kubernetes import config as loaders

    config: Any = loaders  # its loaders carry no type hints
    if configuration is None:
        configuration = client.Configuration()
        try:
            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=configuration)
            else:
                # Read KUBECONFIG now: the client's own default was fixed when it was imported.
                path = kubeconfig or os.environ.get("KUBECONFIG") or None
                config.load_kube_config(config_file=path, client_configuration=configuration)
        except Exception as exc:  # the loaders raise ConfigException, OSError, TypeError...
            source = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            message = f"cannot load API config from {source}: {exc}"
            raise KubeError(None, "Config", message) from None
    # Retries are ours (the Event sink backs off); urllib3 retrying inside a call hides faults.
    configuration.retries = False
    return Api(
        client.ApiClient(configuration),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


class Api:
    """The few API calls opaudit makes, on one `kubernetes.client.ApiClient`."""

    def __init__(
        self,
        api_client: Any,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.api_client = api_client
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

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
    ) -> tuple[list[dict[str, Any]], str]:
        """Pods on `node` matching the label `selector`, and the list's resourceVersion."""
        answer = self._read(
            lambda core, **kw: _list_pods_call(core, namespace, **kw),
            field_selector=_node_selector(node),
            label_selector=selector or None,
            _request_timeout=self._timeout(timeout),
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
        """(type, pod) for ADDED/MODIFIED/DELETED/BOOKMARK until the server ends the watch.

        Track `pod["metadata"]["resourceVersion"]` to resume. Raises `WatchExpired` when
        the version is too old (410, as an HTTP status or an ERROR event), else `KubeError`.
        """
        core = self._core()
        kwargs: dict[str, Any] = {
            "field_selector": _node_selector(node),
            "label_selector": selector or None,
            "resource_version": resource_version or None,
            "timeout_seconds": timeout_seconds,
            "watch": True,
            "_preload_content": False,
            # The server closes the stream after timeoutSeconds; allow some slack beyond it.
            "_request_timeout": (self.connect_timeout, timeout_seconds + self.read_timeout),
        }
        response = _guarded(lambda: _list_pods_call(core, namespace, **kwargs))
        try:
            yield from _watch_lines(response)
        finally:
            response.release_conn()

    def get_pod(self, namespace: str, name: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._read(
            lambda core, **kw: core.read_namespaced_pod(name, namespace, **kw),
            _request_timeout=self._timeout(timeout),
        )

    # --- events.k8s.io/v1 Events --------------------------------------------------------

    def create_event(
        self, namespace: str, body: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """POST the Event as given; 409 (AlreadyExists) comes back as `KubeError`."""
        # Not the typed create: it re-serialises eventTime without the six fractional
        # digits a MicroTime needs (`...T00:00:00+00:00`), which the API server rejects.
        return self._write("POST", _events_path(namespace), body, "application/json", timeout)

    def get_event(
        self, namespace: str, name: str, *, timeout: float | None = None
    ) -> dict[str, Any] | None:
        """The Event, or None when it does not exist."""
        from kubernetes import client

        def read(_: Any, **kw: Any) -> Any:
            return client.EventsV1Api(self.api_client).read_namespaced_event(name, namespace, **kw)

        try:
            return self._read(read, _request_timeout=self._timeout(timeout))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def patch_event(
        self, namespace: str, name: str, patch: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """JSON merge patch (RFC 7386) of the Event."""
        path = f"{_events_path(namespace)}/{name}"
        return self._write("PATCH", path, patch, _MERGE_PATCH, timeout)

    def list_events(
        self, namespace: str, *, field_selector: str | None = None, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """events.k8s.io/v1 Events, including kubelet-written ones without eventTime."""
        from kubernetes import client

        def read(_: Any, **kw: Any) -> Any:
            return client.EventsV1Api(self.api_client).list_namespaced_event(namespace, **kw)

        answer = self._read(
            read, field_selector=field_selector, _request_timeout=self._timeout(timeout)
        )
        return list(answer.get("items") or [])

    # --- plumbing ---------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> tuple[float, float]:
        if timeout is None:
            return (self.connect_timeout, self.read_timeout)
        return (min(self.connect_timeout, timeout), min(self.read_timeout, timeout))

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    def _read(self, call: Any, **kwargs: Any) -> dict[str, Any]:
        core = self._core()
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        response = _guarded(lambda: call(core, _preload_content=False, **kwargs))
        return _json_body(response)

    def _write(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        content_type: str,
        timeout: float | None,
    ) -> dict[str, Any]:
        request = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = _guarded(
            lambda: self.api_client.call_api(*request, _request_timeout=self._timeout(timeout))
        )
        response.read()
        if not 200 <= response.status <= 299:
            headers = response.getheaders()
            raise _error_from(response.status, response.reason, response.data, headers)
        return _json_body(response.response)


def _list_pods_call(core: Any, namespace: str | None, **kwargs: Any) -> Any:
    if namespace:
        return core.list_namespaced_pod(namespace, **kwargs)
    return core.list_pod_for_all_namespaces(**kwargs)


def _node_selector(node: str | None) -> str | None:
    return f"spec.nodeName={node}" if node else None


def _events_path(namespace: str) -> str:
    from urllib.parse import quote

    return f"/apis/events.k8s.io/v1/namespaces/{quote(namespace, safe='')}/events"


def _guarded(call: Any) -> Any:
    """Run one client call, turning every client, HTTP and socket failure into `KubeError`."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        return call()
    except ApiException as exc:
        if not exc.status:  # the client's own wrapper for SSL and request-building errors
            raise KubeError(None, "ClientError", str(exc.reason or exc)) from None
        raise _error_from(exc.status, exc.reason, exc.body, exc.headers) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeError(None, "Unreachable", _connection_message(exc)) from None


def _connection_message(exc: BaseException) -> str:
    import urllib3

    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return "no answer before the read timeout (server hung?)"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError | ConnectionRefusedError):
        return f"cannot connect: {exc}"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return f"connection dropped without an answer: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _error_from(status: int, reason: str | None, body: Any, headers: Any) -> KubeError:
    """A `KubeError` carrying the Status object's reason and message, and Retry-After."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    reason_text, message = str(reason or "Error"), text.strip()[:500]
    try:
        status_object = json.loads(text)
    except ValueError:
        status_object = None
    if isinstance(status_object, dict):
        reason_text = str(status_object.get("reason") or reason_text)
        message = str(status_object.get("message") or message)
    error_class = WatchExpired if status == 410 else KubeError
    return error_class(status, reason_text, message or "no message", _retry_after(headers))


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date form; the caller falls back to its own backoff


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


def _watch_lines(response: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    import urllib3

    buffer = b""
    try:
        for chunk in response.stream(64 * 1024, decode_content=True):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield _watch_event(line)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeError(None, "Unreachable", _connection_message(exc)) from None
    if buffer.strip():
        yield _watch_event(buffer)


def _watch_event(line: bytes) -> tuple[str, dict[str, Any]]:
    try:
        event = json.loads(line)
        kind, obj = str(event["type"]), event["object"]
    except (ValueError, KeyError, TypeError) as exc:
        raise KubeError(None, "BadResponse", f"unreadable watch event: {exc}") from None
    if kind == "ERROR":
        # The API server ends a watch on a compacted resourceVersion with a 410 Status event.
        code = obj.get("code") if isinstance(obj, dict) else None
        reason = str(obj.get("reason") or "Error") if isinstance(obj, dict) else "Error"
        message = str(obj.get("message") or "") if isinstance(obj, dict) else str(obj)
        error_class = WatchExpired if code == 410 else KubeError
        raise error_class(code if isinstance(code, int) else None, reason, message)
    return kind, obj
