"""The delivery engine the Events and policy-report sinks share (agent/output/delivery.py):
the same queue bound, the same count at exit, and a client bug retried, never raised, for
both, against the in-process API server. The results are a real audit of this process
against the hardened Spark Operator pod (tests/fixtures)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest
from agent_run import sample
from fixture_data import pod_fixture
from kube.apiserver import ApiServer

from agent.audit import AuditRequest, audit
from agent.kube.client import Api, load_api
from agent.kube.events import EventClient
from agent.kube.podspec import declared_from_pod, load_pod_manifest
from agent.kube.policyreports import ReportClient
from agent.model import AuditResult, PodRef
from agent.output.delivery import Delivery
from agent.output.events.sink import EventSink
from agent.output.metrics import AgentMetrics
from agent.output.policyreports.discovery import OPENREPORTS
from agent.output.policyreports.sink import PolicyReportSink

NODE = "worker-1"
HARDENED = "spark-operator-controller-hardened.yaml"
KINDS = ("events", "reports")
DROPPED = {"events": "opaudit_events_dropped_total", "reports": "opaudit_reports_dropped_total"}
WRITES = {"events": r"/events", "reports": r"/apis/openreports\.io/"}


@pytest.fixture
def served() -> Iterator[tuple[ApiServer, Api]]:
    """The API server, serving Events and openreports.io, and a client of it."""
    with ApiServer(report_apis=(OPENREPORTS.api_version,)) as server:
        api = load_api(configuration=server.configuration(), read_timeout=2.0)
        try:
            yield server, api
        finally:
            api.close()


def make_sink(kind: str, writer: Any, metrics: AgentMetrics, queue_size: int = 1000
              ) -> Delivery[Any, Any]:
    if kind == "events":
        return EventSink(writer, NODE, queue_size=queue_size, metrics=metrics)
    return PolicyReportSink(writer, OPENREPORTS, queue_size=queue_size, metrics=metrics,
                            node=NODE)


def writer_for(kind: str, api: Api) -> Any:
    if kind == "events":
        return EventClient(api)
    return ReportClient(api, OPENREPORTS.group, OPENREPORTS.version, OPENREPORTS.plural)


def audited(pods: int) -> AuditResult:
    """This process audited as the container of `pods` pods (uids differ, names too)."""
    declared = declared_from_pod(load_pod_manifest(str(pod_fixture(HARDENED))))
    (target,) = audit([AuditRequest(os.getpid(), declared)], node=NODE).targets
    assert target.findings  # pytest runs as root; the pod declares runAsNonRoot
    targets = []
    for i in range(pods):
        pod = PodRef(declared.pod.namespace, f"{declared.pod.name}-{i}", f"uid-{i}")
        targets.append(dataclasses.replace(
            target, declared=dataclasses.replace(declared, pod=pod)))
    return AuditResult(NODE, tuple(targets))


def owed_writes(kind: str, result: AuditResult) -> int:
    """Events: one per pod, container and rule; reports: one per pod."""
    if kind == "reports":
        return len(result.targets)
    return sum(len({f.rule for f in t.findings}) for t in result.targets)


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_queue_and_the_exit_are_counted_alike(
        kind: str, served: tuple[ApiServer, Api]) -> None:
    openreports, client = served
    metrics = AgentMetrics()
    result = audited(3)
    sink = make_sink(kind, writer_for(kind, client), metrics, queue_size=2)
    sink.publish(result)  # queues only: no request before a pump
    assert openreports.writes(WRITES[kind]) == []
    assert sink.pending == 2
    beyond = owed_writes(kind, result) - 2
    assert sample(metrics, DROPPED[kind], reason="queue_full") == beyond == sink.dropped
    assert sink.abandon() == 2 and sink.pending == 0
    assert sample(metrics, DROPPED[kind], reason="shutdown") == 2
    assert sink.flush(1)  # nothing owed: nothing written
    assert openreports.writes(WRITES[kind]) == []


class FirstCallBreaks:
    """A writer whose first call fails as a client bug would (not an ApiError)."""

    def __init__(self, writer: Any) -> None:
        self.writer, self.broke = writer, False

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.writer, name)

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not self.broke:
                self.broke = True
                raise RuntimeError("client bug")
            return call(*args, **kwargs)
        return guarded


@pytest.mark.parametrize("kind", KINDS)
def test_a_client_bug_is_retried_never_raised_and_nothing_is_lost(
        kind: str, served: tuple[ApiServer, Api]) -> None:
    openreports, client = served
    result, metrics = audited(1), AgentMetrics()
    sink = make_sink(kind, FirstCallBreaks(writer_for(kind, client)), metrics)
    sink.publish(result)
    assert sink.flush(10)  # the bug backed off like a lost connection, then the write went
    assert sink.api_errors == 1 and sink.dropped == 0
    assert sample(metrics, "opaudit_api_errors_total", code="clienterror") == 1
    stored = (openreports.events() if kind == "events"
              else openreports.custom_objects(OPENREPORTS.api_version))
    assert len(stored) == owed_writes(kind, result)
