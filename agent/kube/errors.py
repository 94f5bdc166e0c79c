"""How a failed Kubernetes API call reads: one `KubeError` whose `str()` is one line fit
for a user, with the HTTP status (None when no answer came back), the Status object's reason
and message, and Retry-After. `kubernetes` and `urllib3` are imported inside functions only.
"""

from __future__ import annotations

import json
from typing import Any

from agent.api_error import ApiError


class KubeError(ApiError):
    """An API call failed; `status` is the HTTP status, None when no answer came back."""


class KubeConfigError(KubeError):
    """No usable API configuration: the user's kubeconfig or the pod's ServiceAccount.
    `str()` is only the message, which names the file."""

    def __init__(self, message: str) -> None:
        super().__init__(None, "Config", message)

    def __str__(self) -> str:
        return self.message


class WatchExpired(KubeError):
    """The watch's resourceVersion is too old (410 Gone): list again, then watch from there."""


def guarded(call: Any) -> Any:
    """Run one client call, turning every client, HTTP and socket failure into `KubeError`."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        return call()
    except ApiException as exc:
        if not exc.status:  # the client's own wrapper for SSL and request-building errors
            raise KubeError(None, "ClientError", str(exc.reason or exc)) from None
        raise error_from(exc.status, exc.reason, exc.body, exc.headers) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeError(None, "Unreachable", connection_message(exc)) from None


def connection_message(exc: BaseException) -> str:
    """A connection failure (no HTTP answer) as one line."""
    import urllib3

    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return "no answer before the read timeout (server hung?)"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError | ConnectionRefusedError):
        return f"cannot connect: {exc}"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return f"connection dropped without an answer: {exc}"
    return f"{type(exc).__name__}: {exc}"


def error_from(status: int, reason: str | None, body: Any, headers: Any) -> KubeError:
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
