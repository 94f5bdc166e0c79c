"""The agent's HTTP port: /metrics (Prometheus text), /healthz and /readyz for the kubelet.

It listens dual-stack (`::` with IPV6_V6ONLY 0), so the kubelet's probes reach it from the
pod's IP of either family: an IPv4-only socket is refused on a single-stack IPv6 cluster.
Only where IPv6 is off in the pod's netns (no AF_INET6, or disable_ipv6=1: a `::` socket
would then serve IPv4 through mapped addresses alone) does it bind 0.0.0.0.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from agent.output.metrics import AgentMetrics

log = logging.getLogger(__name__)

# Per network namespace: /proc/sys/net is the reading task's netns (proc(5)).
DISABLE_IPV6 = "/proc/sys/net/ipv6/conf/all/disable_ipv6"


class DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        # The default is net.ipv6.bindv6only (0 on Linux, but an admin may set 1).
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class MetricsServer:
    """A running HTTP server; `port` is the bound port (useful with port 0)."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def address(self) -> str:
        return str(self._httpd.server_address[0])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def ipv6_usable() -> bool:
    """This netns has IPv6: the kernel offers AF_INET6 and disable_ipv6 is 0."""
    if not socket.has_ipv6:
        return False
    try:
        with open(DISABLE_IPV6, "rb") as flag:
            return flag.read().strip() == b"0"
    except OSError:  # no such file: booted with ipv6.disable=1
        return False


def serve_metrics(metrics: AgentMetrics, port: int, host: str | None = None) -> MetricsServer:
    """Serve /metrics, /healthz and /readyz on `host` (default: every address of both
    families, see the module doc) and `port`, from a daemon thread."""
    handler = _handler_for(metrics)
    httpd: ThreadingHTTPServer
    if host is None and ipv6_usable():
        httpd = DualStackServer(("::", port), handler)
    else:
        httpd = ThreadingHTTPServer((host or "0.0.0.0", port), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="opaudit-metrics", daemon=True)
    thread.start()
    bound = httpd.server_address
    log.info("metrics server listening", extra={"address": bound[0], "port": bound[1],
                                                "dual_stack": isinstance(httpd, DualStackServer)})
    return MetricsServer(httpd, thread)


def _handler_for(metrics: AgentMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = metrics.alive
                self._answer(200 if ok else 503, b"ok\n" if ok else b"loop stalled\n")
            elif path == "/readyz":
                why_not = metrics.not_ready_reason()
                self._answer(503 if why_not else 200, f"{why_not or 'ok'}\n".encode())
            else:
                self._answer(404, b"not found\n")

        def _answer(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            # Probes hit this every few seconds; the stdlib would print a non-JSON line each.
            pass

    return Handler
