"""`pods/exec` for the test API server, over WebSocket as kube-apiserver serves kubectl (the
`v5.channel.k8s.io` subprotocol, RFC 6455 framing): channel 1 stdout, 2 stderr, 3 the
command's end as a metav1.Status (`NonZeroExitCode` with the code in details.causes).

The server runs nothing itself: a test gives `ApiServer.exec_handler`, which runs the
command where the pod really is (a podman container) and returns its output and exit code,
standing in for the kubelet and the container runtime. Without a handler, exec is 404.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

# (namespace, pod, container, command) -> (stdout, stderr, exit code)
ExecHandler = Callable[[str, str, str, list[str]], tuple[bytes, bytes, int]]
SUBPROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
STDOUT, STDERR, ERROR = 1, 2, 3


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()


def frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One unmasked final frame (a server never masks, RFC 6455 section 5.1)."""
    head = bytes([0x80 | opcode])
    if len(payload) < 126:
        head += bytes([len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([127]) + struct.pack("!Q", len(payload))
    return head + payload


def end_status(code: int, command: list[str]) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"{command}, exit code {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def chosen_subprotocol(offered: str) -> str | None:
    names = [p.strip() for p in offered.split(",")]
    return next((p for p in SUBPROTOCOLS if p in names), None)


def serve_exec(wfile: BinaryIO, headers: Any, handler: ExecHandler, namespace: str, pod: str,
               query: dict[str, list[str]]) -> int:
    """Upgrade, run the command through `handler`, stream its result, close. Returns 101."""
    protocol = chosen_subprotocol(headers.get("Sec-WebSocket-Protocol") or "")
    key = headers.get("Sec-WebSocket-Key") or ""
    response = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n"
                f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n")
    wfile.write(response.encode())
    command = query.get("command", [])
    stdout, stderr, code = handler(namespace, pod, (query.get("container") or [""])[0], command)
    for channel, data in ((STDOUT, stdout), (STDERR, stderr)):
        if data:
            wfile.write(frame(bytes([channel]) + data))
    wfile.write(frame(bytes([ERROR]) + json.dumps(end_status(code, command)).encode()))
    wfile.write(frame(struct.pack("!H", 1000), opcode=0x8))  # close: normal closure
    wfile.flush()
    return 101
