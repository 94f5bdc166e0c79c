"""The HTTP side of the test API server: routing, Status answers, faults, watch streams.

Answers as kube-apiserver does: errors are `Status` objects, a 403 names the verb,
resource, group and namespace, a watch is chunked with one JSON event per line, and an
expired watch is a 200 followed by an ERROR event carrying a 410 Status.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from kube import apischema
from kube.apicrd import CrdError

if TYPE_CHECKING:
    from kube.apiserver import ApiServer

SERVICE_ACCOUNT = "system:serviceaccount:opaudit:opaudit"
_EVENTS = re.compile(
    r"^/(?P<prefix>apis/events\.k8s\.io/v1|api/v1)/namespaces/(?P<ns>[^/]+)/events(?:/(?P<name>[^/]+))?$"
)
_ALL_EVENTS = re.compile(r"^/(?P<prefix>apis/events\.k8s\.io/v1|api/v1)/events$")
_PODS = re.compile(r"^/api/v1(?:/namespaces/(?P<ns>[^/]+))?/pods(?:/(?P<name>[^/]+))?$")
_CUSTOM = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)"
                     r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$")
_EXEC = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)/exec$")

@dataclass
class Fault:
    method: str  # "GET", "POST", ... or "*"
    path_regex: re.Pattern[str]
    status: int | None
    count: int
    retry_after: float | None
    drop_connection: bool
    hang_seconds: float
    reset_connection: bool = False
    silent_seconds: float = 0.0


@dataclass
class RequestRecord:
    """One request, logged on arrival; `status` stays None until (unless) it is answered."""

    method: str
    path: str
    query: str
    status: int | None = None  # None: no response (dropped, hung, or still running)
    at: float = field(default_factory=time.monotonic)  # arrival

    @property
    def params(self) -> dict[str, str]:
        """The query's parameters (the last value of a repeated one)."""
        return {k: v[-1] for k, v in parse_qs(self.query, keep_blank_values=True).items()}

    @property
    def is_watch(self) -> bool:
        return self.method == "GET" and self.params.get("watch") in ("true", "1")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}


def status_object(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }  # fmt: skip
    if details:
        body["details"] = details
    return body


def expired_status(since: str, oldest: int) -> dict[str, Any]:
    return status_object(410, "Expired", f"too old resource version: {since} ({oldest})")


def forbidden_message(method: str, path: str, query: dict[str, str]) -> str:
    """kube-apiserver's RBAC denial text for this request."""
    parts = path.strip("/").split("/")
    group = "" if parts[0] == "api" or len(parts) < 2 else parts[1]  # /apis: discovery
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    namespace = None
    if len(rest) >= 2 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] if rest else "namespaces"
    name = rest[1] if len(rest) > 1 else None
    verbs = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}
    verb = verbs.get(method) or ("get" if name else "watch" if query.get("watch") else "list")
    if len(rest) > 2:  # a subresource: exec is authorized as "create" on pods/exec
        verb = "create" if rest[2] in ("exec", "attach", "portforward") else verb
        resource = f"{resource}/{rest[2]}"
    kind = resource.split("/")[0]
    subject = f"{kind}.{group}" if group else kind
    if name:
        subject += f' "{name}"'
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return (f'{subject} is forbidden: User "{SERVICE_ACCOUNT}" cannot {verb} resource '
            f'"{resource}" in API group "{group}" {scope}')


class _Handler(BaseHTTPRequestHandler):
    api: ApiServer
    _record: RequestRecord
    timeout = 10  # a client that connects and sends nothing cannot pin a thread

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        record = self._record = RequestRecord(method, url.path, url.query)
        self.api.request_log.append(record)
        body = self._read_body()
        fault = self.api.take_fault(method, url.path, record.is_watch)
        status: int | None
        try:
            if fault is not None:
                status = self._fault(fault, method, url.path, query)
            elif method == "GET" and query.get("watch") in ("true", "1"):
                status = self._watch(url.path, query)
            elif (m := _EXEC.match(url.path)) and self.api.exec_handler is not None \
                    and (self.headers.get("Upgrade") or "").lower() == "websocket":
                status = self._exec(m["ns"], m["name"], url.query)
            else:
                answer, status = self._route(method, url.path, query, body)
                self._send_json(status, answer)
        except ApiError as exc:
            status = exc.code
            self._send_json(exc.code, status_object(exc.code, exc.reason, exc.message, exc.details))
        except (BrokenPipeError, ConnectionResetError):
            status = None  # the client went away (its timeout); nothing to answer
        record.status = status  # already set when answered; None when dropped

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> tuple[Any, int]:
        api = self.api
        if method == "GET" and path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"]}, 200
        if method == "GET" and path == "/apis":
            groups = [_group("events.k8s.io", "v1")]
            groups += [_group(r.group, r.version) for r in api.custom.resources.values()]
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}, 200
        if method == "GET" and path in _RESOURCE_LISTS:
            return _RESOURCE_LISTS[path], 200
        if (m := _CUSTOM.match(path)) and f"{m['group']}/{m['version']}" in api.custom.resources:
            return self._custom(method, m, raw)
        if method == "GET" and (resource := api.custom.resources.get(path[len("/apis/"):])):
            return resource.discovery(), 200
        if method == "GET" and path == "/version":
            major, minor = apischema.K8S_VERSION.split(".")[:2]
            return {"major": major, "minor": minor, "gitVersion": f"v{apischema.K8S_VERSION}"}, 200
        if (m := _PODS.match(path)) and method == "GET":
            if m["name"]:
                return api.get_pod(m["ns"], m["name"]), 200
            return api.list_pods(m["ns"], query), 200
        if m := _ALL_EVENTS.match(path):
            if method == "GET":
                return api.list_events(m["prefix"] == "api/v1", None), 200
        elif m := _EVENTS.match(path):
            core, ns, name = m["prefix"] == "api/v1", m["ns"], m["name"]
            if method == "POST" and not name:
                return api.create_event(core, ns, _json(raw)), 201
            if method == "GET":
                return (api.get_event(core, ns, name) if name else api.list_events(core, ns)), 200
            if method == "PATCH" and name:
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                return api.patch_event(core, ns, name, content_type, _json(raw)), 200
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method: {method}")

    def _custom(self, method: str, m: re.Match[str], raw: bytes) -> tuple[Any, int]:
        store = self.api.custom
        try:
            res = store.resource(m["group"], m["version"], m["plural"])
            ns, name = m["ns"], m["name"]
            if method == "GET" and not name:
                table = "as=Table" in (self.headers.get("Accept") or "")
                return store.list(res, ns, table), 200
            if ns is None:
                raise CrdError(405, "MethodNotAllowed", f"{method} needs a namespace")
            if method == "POST" and not name:
                return store.create(res, ns, _json(raw)), 201
            if method == "GET":
                return store.get(res, ns, name), 200
            if method == "PUT" and name:
                return store.replace(res, ns, name, _json(raw)), 200
            if method == "DELETE" and name:
                return store.delete(res, ns, name), 200
        except CrdError as exc:
            raise ApiError(exc.code, exc.reason, exc.message) from None
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method: {method}")

    def _exec(self, namespace: str, name: str, raw_query: str) -> int:
        from kube.apiexec import serve_exec

        assert self.api.exec_handler is not None
        self.api.get_pod(namespace, name)  # 404 for a pod the server does not hold
        self._record.status = 101
        self.close_connection = True
        return serve_exec(self.wfile, self.headers, self.api.exec_handler, namespace, name,
                          parse_qs(raw_query))

    def _watch(self, path: str, query: dict[str, str]) -> int:
        m = _PODS.match(path)
        if m is None or m["name"]:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        events = self.api.watch_pods(m["ns"], query)
        self._start_stream()
        for event in events:
            self._stream_line(event)
        self._end_stream()
        return 200

    def _fault(self, fault: Fault, method: str, path: str, query: dict[str, str]) -> int | None:
        if fault.silent_seconds:
            self._start_stream()
            self.wfile.flush()
            self.api.stopping.wait(fault.silent_seconds)
            self._end_stream()
            return 200
        if fault.hang_seconds:
            self.api.stopping.wait(fault.hang_seconds)
        if fault.reset_connection:
            self._reset()
            return None
        if fault.drop_connection or fault.hang_seconds or fault.status is None:
            self._drop()
            return None
        if fault.status == 410 and query.get("watch") in ("true", "1"):
            self._start_stream()  # as kube-apiserver: 200, then an ERROR event, then EOF
            since = query.get("resourceVersion", "0")
            expired = expired_status(since, self.api.resource_version)
            self._stream_line({"type": "ERROR", "object": expired})
            self._end_stream()
            return 200
        headers = {}
        if fault.retry_after is not None:
            seconds = fault.retry_after
            headers["Retry-After"] = str(int(seconds) if float(seconds).is_integer() else seconds)
        reason, message = {
            403: ("Forbidden", forbidden_message(method, path, query)),
            410: ("Expired", "too old resource version"),
            429: ("TooManyRequests", "Too many requests, please try again later."),
            500: ("InternalError", "Internal error occurred: injected fault"),
            503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
        }.get(fault.status, ("InternalError", f"injected fault {fault.status}"))
        self._send_json(fault.status, status_object(fault.status, reason, message), headers)
        return fault.status

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST: "connection reset by peer".
        self.close_connection = True
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.request.close()

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may already be gone
            self.request.shutdown(socket.SHUT_RDWR)

    def _send_json(self, status: int, answer: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(answer).encode()
        self._record.status = status  # before the client can see the answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self._record.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        # As kube-apiserver: a watch is chunked, one event per chunk, so a client sees each
        # event as it is written (a client reading fixed-size blocks would wait otherwise).
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _stream_line(self, event: dict[str, Any]) -> None:
        line = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"the request body is not JSON: {exc}") from None


def handler_for(api: ApiServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `api`."""
    return type("Handler", (_Handler,), {"api": api})


def _group(name: str, version: str) -> dict[str, Any]:
    entry = {"groupVersion": f"{name}/{version}", "version": version}
    return {"name": name, "versions": [entry], "preferredVersion": entry}


def _resource(name: str, kind: str, verbs: list[str], short: list[str] | None = None
              ) -> dict[str, Any]:
    return {"name": name, "singularName": kind.lower(), "namespaced": True, "kind": kind,
            "verbs": verbs, **({"shortNames": short} if short else {})}


# Discovery, so that kubectl (`kubectl events`, `kubectl get`) can talk to the server too.
_RESOURCE_LISTS: dict[str, dict[str, Any]] = {
    "/api/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
                "resources": [_resource("pods", "Pod", ["get", "list", "watch"], ["po"]),
                              _resource("events", "Event", ["create", "get", "list", "patch"],
                                        ["ev"])]},
    "/apis/events.k8s.io/v1": {"kind": "APIResourceList", "apiVersion": "v1",
                               "groupVersion": "events.k8s.io/v1",
                               "resources": [_resource("events", "Event",
                                                       ["create", "get", "list", "patch"],
                                                       ["ev"])]},
}
