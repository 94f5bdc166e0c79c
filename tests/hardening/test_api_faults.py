"""The node loop against a failing Kubernetes API (README: Deployment): it keeps auditing, says
what is wrong, and delivers every Event it still owes once the API recovers.

Real staged pods (listeners in kubepods cgroups, drifting from their manifests), the test
API server with injected faults, and the loop (`NodeAgent.run_forever`) in a thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cgroup_staging import KubepodsCgroups, systemd_scope
from kube.apiserver import ApiServer
from staging import Sock, Stage

from agent.audit import AuditRequest, audit
from agent.daemon import NodeAgent, RunOptions, make_sink
from agent.kube.client import load_api
from agent.kube.podspec import declared_from_pod
from agent.output.metrics import AgentMetrics

NODE = "faulty-node"
SELECTOR = "app=faults"
EVENTS = r"/apis/events\.k8s\.io/v1/namespaces/[^/]+/events"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        extra = " ".join(str(v) for k, v in vars(record).items() if k in ("error", "status"))
        self.lines.append(f"{record.levelname} {record.getMessage()} {extra}")


@pytest.fixture
def records() -> Iterator[Records]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    handler = Records()
    agent_logger = logging.getLogger("agent")
    level = agent_logger.level
    agent_logger.addHandler(handler)
    agent_logger.setLevel(logging.INFO)  # run_agent would set this up; NodeAgent does not
    try:
        yield handler
    finally:
        agent_logger.removeHandler(handler)
        agent_logger.setLevel(level)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def stage_pod(stage: Stage, cgroups: KubepodsCgroups, name: str) -> tuple[dict[str, Any], int]:
    """A listener as uid 1000 without no_new_privs or seccomp, in its own kubepods cgroup,
    declared hardened: several findings to post."""
    proc = stage.spawn([Sock("tcp", 4, "0.0.0.0", 8080)], netns=stage.netns(), uid=1000,
                       bounding=["NET_BIND_SERVICE"], comm="faulty-app")
    uid, container_id = str(uuid.uuid4()), os.urandom(32).hex()
    cgroups.place_v2(proc.pid, systemd_scope(uid, container_id))
    manifest = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uid,
                     "labels": {"app": "faults"}},
        "spec": {"nodeName": NODE, "containers": [{
            "name": "app", "image": "busybox",
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}}}]},
        "status": {"phase": "Running", "podIPs": [{"ip": "192.0.2.10"}],
                   "containerStatuses": [{
                       "name": "app", "ready": True, "restartCount": 0, "image": "busybox",
                       "imageID": "", "containerID": f"containerd://{container_id}",
                       "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]},
    }
    return manifest, proc.pid


def owed_events(pods: list[tuple[dict[str, Any], int]]) -> set[tuple[str, str]]:
    """(pod uid, rule) of every Event the findings call for, computed in-process."""
    owed = set()
    for manifest, pid in pods:
        report = audit([AuditRequest(pid, declared_from_pod(manifest))], node=NODE)
        owed |= {(manifest["metadata"]["uid"], f.rule) for f in report.findings}
    return owed


def delivered(server: ApiServer) -> set[tuple[str, str]]:
    return {(e["regarding"]["uid"], e["reason"]) for e in server.events()}


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@dataclass
class RunningAgent:
    agent: NodeAgent
    metrics: AgentMetrics
    thread: threading.Thread
    outcome: list[int]

    def value(self, name: str, **labels: str) -> float:
        return float(self.metrics.registry.get_sample_value(name, labels) or 0)

    @property
    def cycles(self) -> float:
        return sum(self.value("opaudit_cycles_total", trigger=t)
                   for t in ("interval", "watch"))

    def stop(self) -> None:
        self.agent.request_stop()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


def start_agent(server: ApiServer, queue_size: int = 1000,
                watch_seconds: int | None = None) -> RunningAgent:
    options = RunOptions(node=NODE, selector=SELECTOR, interval=0.3)
    metrics = AgentMetrics()
    api = load_api(configuration=server.configuration())
    sink = make_sink("events", api, NODE, metrics, queue_size)
    agent = NodeAgent(api, NODE, options, sink, metrics, threading.Event())
    if watch_seconds is not None:
        agent.watcher._watch_seconds = watch_seconds  # short watches: many re-list/re-watch
        agent.watcher._api = ExpireNextWatch(agent.watcher._api, server)
    outcome: list[int] = []
    thread = threading.Thread(target=lambda: outcome.append(agent.run_forever()), daemon=True)
    thread.start()
    return RunningAgent(agent, metrics, thread, outcome)


PODS_PATH = r"^/api/v1/pods$"


class ExpireNextWatch:
    """Wraps the watcher's API: arms a 410 fault on the server just before the next watch
    request, so the real HTTP 410-on-watch path is taken (a list would take it otherwise)."""

    def __init__(self, api: Any, server: ApiServer) -> None:
        self.api, self.server = api, server
        self.armed = threading.Event()
        self.fired = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)

    def watch_pods(self, *args: Any, **kwargs: Any) -> Any:
        if self.armed.is_set():
            self.armed.clear()
            self.server.inject("GET", PODS_PATH, status=410)
            self.fired.set()
        return self.api.watch_pods(*args, **kwargs)


def test_every_fault_in_turn_the_loop_keeps_auditing_and_delivers(
    stage: Stage, cgroups: KubepodsCgroups, records: Records
) -> None:
    with ApiServer() as server:
        def phase(name: str) -> None:
            """A new pod appears: its Events must arrive despite the faults just injected."""
            pod = stage_pod(stage, cgroups, name)
            owed = owed_events([pod])
            assert owed, name
            cycles = running.cycles if running is not None else 0.0
            server.add_pod(pod[0])
            assert wait_for(lambda: delivered(server) >= owed, 30), (
                f"{name}: still owed {owed - delivered(server)}; log: {records.lines[-6:]}")
            if running is not None:
                assert running.cycles > cycles, f"{name}: no audit cycle ran"

        running: RunningAgent | None = None
        # RBAC missing for the pod list at first.
        server.inject("GET", PODS_PATH, status=403, count=2)
        first = stage_pod(stage, cgroups, "first")
        server.add_pod(first[0])
        running = start_agent(server, watch_seconds=1)
        try:
            owed = owed_events([first])
            assert wait_for(lambda: delivered(server) >= owed, 30), records.lines[-6:]
            # 410 Gone on the watch: re-list, keep going.
            expirer = running.agent.watcher._api
            assert isinstance(expirer, ExpireNextWatch)
            expirer.armed.set()
            assert expirer.fired.wait(10)
            phase("after-410")
            # Server errors, then throttling with Retry-After.
            server.inject("POST", EVENTS, status=500, count=2)
            server.inject("POST", EVENTS, status=429, retry_after=1, count=1)
            phase("after-500-429")
            # Connection reset, dropped without an answer, hung until the client gives up.
            server.inject("POST", EVENTS, reset_connection=True, count=1)
            server.inject("POST", EVENTS, drop_connection=True, count=1)
            server.inject("POST", EVENTS, hang_seconds=2, count=1)
            phase("after-connection-faults")
            # RBAC missing for Event creation.
            server.inject("POST", EVENTS, status=403, count=2)
            phase("after-403")
        finally:
            running.stop()
        assert running.outcome == [0]
        statuses = {r.status for r in server.request_log}

    assert {403, 500, 429} <= statuses  # a 410 on a watch is a 200 with an ERROR event
    for code in ("403", "500", "429", "connection"):
        assert running.value("opaudit_api_errors_total", code=code) >= 1, code
    assert running.value("opaudit_events_dropped_total", reason="queue_full") == 0
    # A 403 names the verb and the resource that RBAC is missing.
    forbidden = [line for line in records.lines if "403" in line or "forbidden" in line]
    assert any("cannot list" in line and '"pods"' in line for line in forbidden), records.lines
    assert any("cannot create" in line and '"events"' in line for line in forbidden), (
        records.lines)
    assert any("410" in line for line in records.lines), records.lines
    assert not any("Traceback" in line for line in records.lines)


def test_with_the_api_down_the_queue_is_bounded_and_drops_are_counted(
    stage: Stage, cgroups: KubepodsCgroups, records: Records
) -> None:
    queue_size = 2
    with ApiServer() as server:
        pods = [stage_pod(stage, cgroups, f"faults-{i}") for i in range(2)]
        for manifest, _ in pods:
            server.add_pod(manifest)
        owed = owed_events(pods)
        assert len(owed) > queue_size
        server.inject("*", EVENTS, status=503, count=100_000)
        running = start_agent(server, queue_size)
        try:
            assert wait_for(lambda: running.value("opaudit_events_dropped_total",
                                                  reason="queue_full") >= 1, 30)
            assert wait_for(lambda: running.value("opaudit_api_errors_total", code="503") >= 2,
                            30)
            events = running.agent.sink.sinks[-1]  # type: ignore[attr-defined] # after metrics
            assert events.pending <= queue_size
            cycles = running.cycles
            assert wait_for(lambda: running.cycles >= cycles + 2, 10)  # auditing goes on
            assert delivered(server) == set()

            server.clear_faults()  # recovered
            assert wait_for(lambda: delivered(server) >= owed, 60), owed - delivered(server)
        finally:
            running.stop()
    assert running.outcome == [0]
    dropped = running.value("opaudit_events_dropped_total", reason="queue_full")
    assert dropped >= len(owed) - queue_size
