"""A watch response as (type, object) events, ended by its deadline if the server goes quiet.

A watch asks the server to end it after `timeoutSeconds`. A connection that died without a
FIN or RST (a node's NAT entry expired, an API server host lost power) never ends, and a
per-read socket timeout restarts with every byte, so it would be noticed only after a quiet
spell as long as that timeout. Here every read gets the time left until one deadline for the
whole watch, `watch_deadline(timeout)` after the request: a half-open watch is abandoned
within twice its timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from agent.kube.errors import KubeError, WatchExpired, connection_message

# Slack past the server's own end of the watch (its timer starts when the request arrives);
# at most the timeout itself, so a watch is given up within twice its timeout.
WATCH_SLACK_SECONDS = 30.0


def watch_deadline(timeout_seconds: float) -> float:
    """Seconds after the request by which the server must have ended the watch."""
    return timeout_seconds + min(float(timeout_seconds), WATCH_SLACK_SECONDS)


def watch_events(
    response: Any, deadline: float, timeout_seconds: float
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(type, object) per line of the urllib3 `response` until the server ends the watch.

    `deadline` is a `time.monotonic()` instant. Raises `KubeError` (None, "Unreachable")
    when the deadline passes first or the connection breaks, `WatchExpired` on an ERROR
    event carrying 410, `KubeError` on another ERROR event or an unreadable line.
    """
    import urllib3

    sock = getattr(response.connection, "sock", None)
    chunks = response.stream(64 * 1024, decode_content=True)
    buffer = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KubeError(None, "Unreachable", _overdue(timeout_seconds))
            if sock is not None:
                sock.settimeout(left)  # this read waits at most until the deadline
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield _watch_event(line)
    except urllib3.exceptions.ReadTimeoutError:
        raise KubeError(None, "Unreachable", _overdue(timeout_seconds)) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeError(None, "Unreachable", connection_message(exc)) from None
    if buffer.strip():
        yield _watch_event(buffer)


def _overdue(timeout_seconds: float) -> str:
    return (f"the watch did not end within {watch_deadline(timeout_seconds):g} s of its "
            f"request (timeoutSeconds={timeout_seconds:g}): a half-open connection?")


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
