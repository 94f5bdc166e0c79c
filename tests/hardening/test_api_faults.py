"""The node loop against a failing Kubernetes API (README: Deployment): it keeps auditing, says
what is wrong, and delivers every Event it still owes once the API recovers.

Real staged pods (listeners in kubepods cgroups, drifting from their manifests), the test
API server with injected faults, and the agent in a thread (tests/agent_run.py). This is the
agent's level of "API down -> drops -> recovery"; the Event sink's own is in
tests/output/test_events.py, `run --once`'s exit status in tests/test_node.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from agent_run import AgentThread, loop_thread, run_agent_thread, sample, wait_for
from cgroup_staging import KubepodsCgroups
from kube.apiserver import ApiServer
from pod_staging import NODE, SELECTOR, StagedPod, expected_rules, stage_pod
from staging import Stage

from agent.daemon import NodeAgent, RunContext, RunOptions, make_sink
from agent.kube.client import load_api
from agent.output.metrics import AgentMetrics

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


def owed_events(pods: list[StagedPod]) -> set[tuple[str, str]]:
    """(pod uid, rule) of every Event the findings call for, computed in-process."""
    return {(pod.uid, rule) for pod in pods for rule in expected_rules(pod)}


def delivered(server: ApiServer) -> set[tuple[str, str]]:
    return {(e["regarding"]["uid"], e["reason"]) for e in server.events()}


@dataclass
class RunningAgent:
    agent: NodeAgent
    metrics: AgentMetrics
    loop: AgentThread

    def value(self, name: str, **labels: str) -> float:
        return sample(self.metrics, name, **labels)

    @property
    def cycles(self) -> float:
        return sum(self.value("opaudit_cycles_total", trigger=t)
                   for t in ("interval", "watch"))


def agent_loop(server: ApiServer, queue_size: int = 1000,
               watch_seconds: int | None = None) -> RunningAgent:
    """The loop with the Events sink as `opaudit run` builds them; `with running.loop` runs it."""
    options = RunOptions(node=NODE, selector=SELECTOR, interval=0.3)
    metrics = AgentMetrics()
    api = load_api(configuration=server.configuration())
    sink = make_sink("events", api, NODE, metrics, queue_size)
    agent = NodeAgent(api, NODE, options, sink, metrics, threading.Event())
    if watch_seconds is not None:
        agent.watcher._watch_seconds = watch_seconds  # short watches: many re-list/re-watch
        agent.watcher._api = ExpireNextWatch(agent.watcher._api, server)
    return RunningAgent(agent, metrics, loop_thread(agent))


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
            server.add_pod(pod.manifest)
            assert wait_for(lambda: delivered(server) >= owed, 30), (
                f"{name}: still owed {owed - delivered(server)}; log: {records.lines[-6:]}")
            if running is not None:
                assert running.cycles > cycles, f"{name}: no audit cycle ran"

        running: RunningAgent | None = None
        # RBAC missing for the pod list at first.
        server.inject("GET", PODS_PATH, status=403, count=2)
        first = stage_pod(stage, cgroups, "first")
        server.add_pod(first.manifest)
        running = agent_loop(server, watch_seconds=1)
        with running.loop:
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
        assert running.loop.stopped_cleanly
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


def test_with_the_api_down_the_loop_keeps_auditing_within_a_bounded_queue_and_counts_drops(
    stage: Stage, cgroups: KubepodsCgroups, embedded_logging: None
) -> None:
    """Every Event write fails, then nothing answers at all (the pod watch included): the
    agent keeps auditing, its Event queue (`RunContext.event_queue_size`) stays bounded and
    each drop is counted, and once the API is back every Event the findings call for is
    delivered. (How many the queue holds: tests/output/test_events.py.)"""
    queue_size = 2
    with ApiServer() as server:
        pods = [stage_pod(stage, cgroups, f"faults-{i}") for i in range(2)]
        for pod in pods:
            server.add_pod(pod.manifest)
        owed = owed_events(pods)
        assert len(owed) > queue_size
        server.inject("*", EVENTS, status=503, count=100_000)
        metrics = AgentMetrics()
        options = RunOptions(node=NODE, selector=SELECTOR, interval=0.3)
        context = RunContext(configuration=server.configuration(), event_queue_size=queue_size,
                             restrict_privileges=False)  # in-process: keep pytest's own caps

        def value(name: str, **labels: str) -> float:
            return sample(metrics, name, **labels)

        def cycles() -> float:
            return value("opaudit_cycles_total", trigger="interval")

        with run_agent_thread(options, context, metrics) as running:
            assert wait_for(lambda: value("opaudit_events_dropped_total",
                                          reason="queue_full") >= len(owed) - queue_size, 30)
            assert wait_for(lambda: value("opaudit_api_errors_total", code="503") >= 2, 30)
            before = cycles()
            assert wait_for(lambda: cycles() >= before + 2, 10)  # auditing goes on
            assert delivered(server) == set()
            assert value("opaudit_events_written_total") == 0
            assert metrics.alive

            server.stop()  # now nothing answers at all, the pod watch included
            errors = value("opaudit_api_errors_total", code="connection")
            assert wait_for(lambda: value("opaudit_api_errors_total", code="connection")
                            > errors, 30)
            before = cycles()
            assert wait_for(lambda: cycles() > before, 10)  # auditing still goes on

            server.clear_faults()
            server.start()  # recovered: what is owed is delivered
            assert wait_for(lambda: delivered(server) >= owed, 60), owed - delivered(server)
            assert value("opaudit_events_written_total") >= len(owed)
    assert running.stopped_cleanly
