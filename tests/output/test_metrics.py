"""Prometheus metrics and the health endpoints of the `run` loop, over real HTTP."""

from __future__ import annotations

import dataclasses
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from agent.model import (
    GENERIC_PROFILE,
    AuditCycle,
    AuditResult,
    DeclaredContainer,
    Finding,
    Identity,
    NetnsFacts,
    ObservedProcess,
    OwnerReader,
    PodRef,
    Severity,
    Sysctls,
    TargetResult,
)
from agent.output.metrics import AgentMetrics
from agent.output.metrics_sink import MetricsSink
from agent.output.probe_server import MetricsServer, serve_metrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def report_with(*rules: tuple[str, Severity], seconds: float = 0.01) -> AuditResult:
    observed = ObservedProcess(
        pid=42, start_time=1, comm="x", cmdline=(),
        identity=Identity(None, None, None, None, None, None),
        capabilities=None, no_new_privs=None, seccomp=None, filesystem=None, network=None,
    )
    findings = tuple(Finding(rule=r, severity=s, message="m", remediation="r") for r, s in rules)
    target = TargetResult(observed=observed, declared=None, profile=GENERIC_PROFILE,
                          findings=findings)
    return AuditResult(node="n", targets=(target,),
                  cycle=AuditCycle("interval", seconds, (), partial=False))


def sample(metrics: AgentMetrics, name: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def get(server: MetricsServer, path: str) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics(clock: FakeClock) -> AgentMetrics:
    return AgentMetrics(liveness_window=30.0, clock=clock)


@pytest.fixture
def server(metrics: AgentMetrics) -> Iterator[MetricsServer]:
    running = serve_metrics(metrics, 0, host="127.0.0.1")
    try:
        yield running
    finally:
        running.close()


def test_findings_gauge_counts_by_rule_and_severity_and_clears(metrics: AgentMetrics) -> None:
    sink = MetricsSink(metrics)
    sink.publish(report_with(("RunsAsRoot", Severity.HIGH), ("RunsAsRoot", Severity.HIGH),
                             ("UndeclaredListener", Severity.LOW), seconds=0.2))
    assert sample(metrics, "opaudit_findings", rule="RunsAsRoot", severity="high") == 2
    assert sample(metrics, "opaudit_findings", rule="UndeclaredListener", severity="low") == 1
    sink.publish(report_with(("UndeclaredListener", Severity.LOW), seconds=0.1))
    # A finding that went away reads 0, not its last value.
    assert sample(metrics, "opaudit_findings", rule="RunsAsRoot", severity="high") == 0
    assert sample(metrics, "opaudit_scan_duration_seconds_count") == 2
    assert sample(metrics, "opaudit_scan_duration_seconds_sum") == pytest.approx(0.3)
    assert sample(metrics, "opaudit_targets") == 1


def pod_report(uid: str, rules: tuple[str, ...], cycle: AuditCycle) -> AuditResult:
    declared = DeclaredContainer(
        pod=PodRef("ns", f"pod-{uid}", uid), container_name="app", container_id=None, labels=(),
        run_as_user=None, run_as_group=None, run_as_non_root=None, privileged=None,
        allow_privilege_escalation=None, capabilities_add=(), capabilities_drop=(),
        seccomp_profile=None, read_only_root_filesystem=None, ports=(), probes=(),
        volume_mounts=(), pod_ips=())
    target = dataclasses.replace(report_with(*((r, Severity.HIGH) for r in rules)).targets[0],
                                 declared=declared)
    return AuditResult(node="n", targets=(target,) if rules else (), cycle=cycle)


def test_a_partial_cycle_replaces_its_pods_counts_and_keeps_the_others(
    metrics: AgentMetrics,
) -> None:
    sink = MetricsSink(metrics)
    whole = AuditCycle("interval", 0.1, ("a", "b"), partial=False)
    sink.publish(dataclasses.replace(
        pod_report("a", ("RunsAsRoot",), whole),
        targets=(*pod_report("a", ("RunsAsRoot",), whole).targets,
                 *pod_report("b", ("RunsAsRoot", "SeccompUnconfined"), whole).targets)))
    assert sample(metrics, "opaudit_findings", rule="RunsAsRoot", severity="high") == 2
    assert sample(metrics, "opaudit_targets") == 2
    # The watch names pod b alone, now without a process: a's counts stay, b's are gone.
    sink.publish(pod_report("b", (), AuditCycle("watch", 0.01, ("b",), partial=True)))
    assert sample(metrics, "opaudit_findings", rule="RunsAsRoot", severity="high") == 1
    assert sample(metrics, "opaudit_findings", rule="SeccompUnconfined", severity="high") == 0
    assert sample(metrics, "opaudit_targets") == 1
    assert sample(metrics, "opaudit_cycles_total", trigger="watch") == 1
    # A whole cycle forgets a pod no longer selected.
    sink.publish(pod_report("b", ("SeccompUnconfined",), AuditCycle("interval", 0.1, ("b",),
                                                                     partial=False)))
    assert sample(metrics, "opaudit_findings", rule="RunsAsRoot", severity="high") == 0
    assert sample(metrics, "opaudit_targets") == 1


def test_event_metrics_protocol_counts(metrics: AgentMetrics) -> None:
    metrics.event_written()
    metrics.event_written()
    metrics.event_dropped("queue_full")
    metrics.api_error(429)
    metrics.api_error(None)
    assert sample(metrics, "opaudit_events_written_total") == 2
    assert sample(metrics, "opaudit_events_dropped_total", reason="queue_full") == 1
    assert sample(metrics, "opaudit_api_errors_total", code="429") == 1
    assert sample(metrics, "opaudit_api_errors_total", code="connection") == 1


def test_readyz_answers_503_until_the_pods_are_listed_and_a_cycle_audited_them(
    metrics: AgentMetrics, server: MetricsServer
) -> None:
    assert get(server, "/readyz")[:3:2] == (503, "pods not listed yet\n")
    metrics.pods_listed()
    assert get(server, "/readyz")[:3:2] == (503, "first cycle pending\n")
    MetricsSink(metrics).publish(report_with())
    assert get(server, "/readyz")[0] == 200


def test_ready_means_the_api_answers_and_accepts_our_writes(
    metrics: AgentMetrics, clock: FakeClock
) -> None:
    metrics.pods_listed()
    MetricsSink(metrics).publish(report_with())
    assert metrics.not_ready_reason() is None

    metrics.api_error("403")  # an Event write refused: RBAC
    assert metrics.not_ready_reason() == "Event writes are refused (403): check the RBAC"
    metrics.pods_listed()  # the pod list working does not make Event writes work
    assert metrics.not_ready_reason() is not None
    metrics.event_written()
    assert metrics.not_ready_reason() is None

    metrics.pods_api_error(None)  # connection refused: a short blip is tolerated
    clock.now += 9
    metrics.api_error("connection")
    assert metrics.not_ready_reason() is None
    clock.now += 2
    assert metrics.not_ready_reason() == "API server unreachable for 11 s"
    metrics.api_answered()
    assert metrics.not_ready_reason() is None

    clock.now += metrics.readiness_window + 1  # nothing answered for too long
    assert "no answer from the API server" in str(metrics.not_ready_reason())


def test_healthz_follows_the_loop_heartbeat(
    metrics: AgentMetrics, server: MetricsServer, clock: FakeClock
) -> None:
    assert get(server, "/healthz")[0] == 200
    clock.now += 31  # the loop stopped beating for longer than the window
    assert get(server, "/healthz")[0] == 503
    metrics.heartbeat()
    assert get(server, "/healthz")[0] == 200


def test_metrics_endpoint_serves_prometheus_text(
    metrics: AgentMetrics, server: MetricsServer
) -> None:
    MetricsSink(metrics).publish(report_with(("SeccompUnconfined", Severity.HIGH)))
    metrics.event_dropped("api_down")
    code, ctype, body = get(server, "/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=")
    assert 'opaudit_findings{rule="SeccompUnconfined",severity="high"} 1.0' in body
    assert 'opaudit_events_dropped_total{reason="api_down"} 1.0' in body
    assert "opaudit_scan_duration_seconds_bucket" in body
    assert get(server, "/nope")[0] == 404


def report_read_by(reader: OwnerReader | None) -> AuditResult:
    target = report_with().targets[0]
    network = NetnsFacts(inode=1, sysctls=Sysctls(0, 0, 1024), addresses=(), listeners=(),
                         owner_reader=reader)
    observed = dataclasses.replace(target.observed, network=network)
    return dataclasses.replace(report_with(), targets=(dataclasses.replace(
        target, observed=observed),))


def test_the_fd_reader_gauge_has_one_series_and_the_first_fallback_is_logged_once(
        metrics: AgentMetrics, caplog: pytest.LogCaptureFixture) -> None:
    sink = MetricsSink(metrics)
    refused = OwnerReader("proc", "BPF iterator unavailable: BPF map: Operation not "
                                  "permitted (CAP_SYS_ADMIN is held: refused by ...)", "refused")
    with caplog.at_level(logging.WARNING, logger="agent.output.metrics"):
        sink.publish(report_read_by(OwnerReader("bpf", "OPAUDIT_FD_READER=bpf")))
        assert sample(metrics, "opaudit_fd_reader", reader="bpf", fallback="") == 1
        for _ in range(3):
            sink.publish(report_read_by(refused))
        sink.publish(report_read_by(None))  # no listener, no scan: the last one stands
    assert sample(metrics, "opaudit_fd_reader", reader="proc", fallback="refused") == 1
    assert sample(metrics, "opaudit_fd_reader", reader="bpf", fallback="") is None
    [logged] = [r for r in caplog.records if "fd iterator" in r.getMessage()]
    assert vars(logged)["fallback"] == "refused"
    assert vars(logged)["reason"] == refused.why
