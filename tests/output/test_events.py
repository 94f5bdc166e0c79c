"""The Event sink against the in-process API server, through the official client over HTTP."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
from kube import apischema
from kube.apiserver import ApiServer

from agent.kube.client import Api, load_api
from agent.kube.events import EventClient
from agent.model import (
    GENERIC_PROFILE,
    AuditResult,
    DeclaredContainer,
    Finding,
    Identity,
    ObservedProcess,
    PodRef,
    Severity,
    TargetResult,
)
from agent.output.events.body import NOTE_LIMIT_BYTES, event_name, fit_note, micro_time
from agent.output.events.sink import (
    BUCKET_BURST,
    BUCKET_REFILL_SECONDS,
    SERIES_REFRESH_SECONDS,
    EventSink,
)

POD = PodRef("spark-operator", "so-controller-abc", "0b7b1c5e-1111-4222-8333-944455556666")
NODE = "worker-1"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class RecordingMetrics:
    def __init__(self) -> None:
        self.written = 0
        self.dropped: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def event_written(self) -> None:
        self.written += 1

    def event_dropped(self, reason: str) -> None:
        self.dropped[reason] += 1

    def api_error(self, code: str) -> None:
        self.errors[code] += 1


def finding(rule: str = "RunsAsRoot", severity: Severity = Severity.HIGH,
            message: str = "effective uid 0", remediation: str = "runAsUser: 185") -> Finding:
    return Finding(rule=rule, severity=severity, message=message, remediation=remediation)


def report(findings: list[Finding], pod: PodRef = POD,
           container: str = "controller") -> AuditResult:
    observed = ObservedProcess(
        pid=4242, start_time=1, comm="spark-operator", cmdline=(),
        identity=Identity(None, None, None, None, None, None), capabilities=None,
        no_new_privs=None, seccomp=None, filesystem=None, network=None,
    )
    declared = DeclaredContainer(
        pod=pod, container_name=container, container_id=None, labels=(), run_as_user=None,
        run_as_group=None, run_as_non_root=None, privileged=None,
        allow_privilege_escalation=None, capabilities_add=(), capabilities_drop=(),
        seccomp_profile=None, read_only_root_filesystem=None, ports=(), probes=(),
        volume_mounts=(), pod_ips=(),
    )
    return AuditResult(NODE, (TargetResult(observed, declared, GENERIC_PROFILE, tuple(findings)),))


def writes(server: ApiServer) -> list[tuple[str, int | None]]:
    return [(r.method, r.status) for r in server.request_log if r.method in ("POST", "PATCH")]


def test_events_are_valid_and_describe_the_pod(server: ApiServer, api: Api) -> None:
    sink = EventSink(EventClient(api), NODE)
    sink.publish(report([finding(), finding("EmptyDirWithoutSizeLimit", Severity.LOW),
                         finding("InspectionIncomplete", Severity.INFO)]))
    assert sink.flush(5)
    events = {e["reason"]: e for e in server.events()}
    assert set(events) == {"RunsAsRoot", "EmptyDirWithoutSizeLimit", "InspectionIncomplete"}
    assert {r: e["type"] for r, e in events.items()} == {
        "RunsAsRoot": "Warning", "EmptyDirWithoutSizeLimit": "Warning",
        "InspectionIncomplete": "Normal",
    }
    for event in events.values():
        assert apischema.event_errors(event, POD.namespace) == []
        assert event["regarding"] == {"apiVersion": "v1", "kind": "Pod", "namespace": POD.namespace,
                                      "name": POD.name, "uid": POD.uid}
        assert event["reportingController"] == "opaudit"
        assert event["reportingInstance"] == NODE and event["action"] == "Audit"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", event["eventTime"])
        assert event["metadata"]["name"] == event_name(POD, "controller", event["reason"])
    assert "runAsUser: 185" in events["RunsAsRoot"]["note"]
    assert sink.written == 3 and sink.dropped == 0 and sink.api_errors == 0


def test_note_fits_1024_bytes_and_has_no_control_characters(server: ApiServer, api: Api) -> None:
    hostile = "\x1b[31mproc\x00name\r\n\u202eevil\udcff " + "üñí漢字🙂 " * 400  # ~5 kB
    assert len(hostile.encode("utf-8", "surrogatepass")) > 5000
    sink = EventSink(EventClient(api), NODE)
    sink.publish(report([finding(message=hostile, remediation="Fix it: " + "é" * 3000)]))
    assert sink.flush(5)
    (event,) = server.events()
    note = event["note"]
    assert len(note.encode()) <= NOTE_LIMIT_BYTES
    assert not re.search(r"[\x00-\x1f\x7f\u202e\udcff]", note)
    assert note.startswith("container controller: [31mproc name evil")
    assert "Fix: Fix it: éé" in note  # the remediation keeps its share of the budget


@pytest.mark.parametrize("limit", [20, 100, 1024])
def test_fit_note_never_splits_a_character(limit: int) -> None:
    note = fit_note("漢" * 600, "🙂" * 600, limit=limit)
    assert len(note.encode()) <= limit
    assert "\ufffd" not in note


def test_restarted_agent_updates_series_instead_of_creating(server: ApiServer, api: Api) -> None:
    findings = [finding(), finding("SeccompUnconfined")]
    first = EventSink(EventClient(api), NODE)
    first.publish(report(findings))
    assert first.flush(5)
    names = sorted(e["metadata"]["name"] for e in server.events())

    restarted = EventSink(EventClient(api), NODE)  # same node, fresh memory
    restarted.publish(report(findings))
    assert restarted.flush(5)
    events = server.events()
    assert sorted(e["metadata"]["name"] for e in events) == names
    assert all(e["series"]["count"] == 2 for e in events)
    posts = [s for m, s in writes(server) if m == "POST"]
    assert posts == [201, 201, 409, 409]

    again = EventSink(EventClient(api), NODE)
    again.publish(report(findings))
    assert again.flush(5)
    assert [e["series"]["count"] for e in server.events()] == [3, 3]


def test_steady_state_makes_no_objects_and_few_writes(server: ApiServer, api: Api) -> None:
    clock = FakeClock()
    sink = EventSink(EventClient(api), NODE, clock=clock, sleep=clock.sleep)
    cycle = report([finding(), finding("SeccompUnconfined")])
    for _ in range(10):  # ten 60 s cycles
        sink.publish(cycle)
        assert sink.flush(5)
        clock.now += 60
    assert len(server.events()) == 2
    # Created once, then the series starts at once (count 2); later repeats wait for refresh.
    assert Counter(writes(server)) == {("POST", 201): 2, ("PATCH", 200): 2}
    clock.now += SERIES_REFRESH_SECONDS
    sink.publish(cycle)
    assert sink.flush(5)
    assert Counter(writes(server))[("PATCH", 200)] == 4
    assert [e["series"]["count"] for e in server.events()] == [11, 11]


def test_cleared_finding_posts_one_normal_event(server: ApiServer, api: Api) -> None:
    sink = EventSink(EventClient(api), NODE)
    sink.publish(report([finding(), finding("SeccompUnconfined")]))
    assert sink.flush(5)
    for _ in range(2):
        sink.publish(report([finding()]))
        assert sink.flush(5)
    cleared = [e for e in server.events() if e["type"] == "Normal"]
    assert len(cleared) == 1
    assert cleared[0]["reason"] == "SeccompUnconfined"
    assert cleared[0]["note"].startswith("Cleared: SeccompUnconfined")
    assert cleared[0]["metadata"]["name"] != event_name(POD, "controller", "SeccompUnconfined")


def test_429_with_retry_after_lands_within_one_flush(server: ApiServer, api: Api) -> None:
    server.inject("POST", r"/events$", status=429, retry_after=1)
    metrics = RecordingMetrics()
    sink = EventSink(EventClient(api), NODE, metrics=metrics)
    sink.publish(report([finding()]))
    started = time.monotonic()
    assert sink.flush(5)
    assert time.monotonic() - started >= 0.9  # it waited for Retry-After, not less
    assert writes(server) == [("POST", 429), ("POST", 201)]
    assert len(server.events()) == 1
    assert metrics.errors == {"429": 1} and metrics.written == 1


def test_server_errors_then_recovery_deliver_everything(server: ApiServer, api: Api) -> None:
    server.inject("POST", r"/events$", status=500, count=3)
    sink = EventSink(EventClient(api), NODE)
    rules = [f"Rule{i}" for i in range(5)]
    sink.publish(report([finding(r) for r in rules]))
    assert sink.flush(10)
    assert sorted(e["reason"] for e in server.events()) == rules
    assert sink.api_errors == 3 and sink.written == 5


def test_dropped_and_hung_connections_are_retried(server: ApiServer) -> None:
    api = load_api(configuration=server.configuration(), read_timeout=0.5)
    server.inject("POST", r"/events$", status=None, drop_connection=True)
    server.inject("POST", r"/events$", reset_connection=True)
    server.inject("POST", r"/events$", hang_seconds=30)
    sink = EventSink(EventClient(api), NODE)
    sink.publish(report([finding()]))
    assert sink.flush(10)
    # dropped, reset, hung (the client gave up after its read timeout), then written
    assert writes(server) == [("POST", None)] * 3 + [("POST", 201)]
    assert sink.api_errors == 3 and sink.last_error is None
    api.close()


def test_api_down_counts_drops_and_delivers_the_queue_on_recovery(server: ApiServer,
                                                                    api: Api) -> None:
    metrics = RecordingMetrics()
    sink = EventSink(EventClient(api), NODE, queue_size=5, metrics=metrics)
    server.stop()
    rules = [f"Rule{i}" for i in range(8)]
    sink.publish(report([finding(r) for r in rules]))
    sink.pump(time.monotonic() + 0.5)  # must not raise
    sink.publish(report([finding(r) for r in rules]))  # the next cycle, still down
    assert sink.pending == 5
    assert metrics.dropped == {"queue_full": 6} and sink.dropped == 6
    assert metrics.errors["connection"] >= 1

    server.start()
    assert sink.flush(10)
    assert sorted(e["reason"] for e in server.events()) == rules[:5]  # nothing queued was lost
    sink.publish(report([finding(r) for r in rules]))
    assert sink.flush(5)
    assert sorted(e["reason"] for e in server.events()) == rules


def test_forbidden_names_the_missing_verb_and_resource(server: ApiServer, api: Api) -> None:
    server.inject("POST", r"/events$", status=403, count=100)
    metrics = RecordingMetrics()
    sink = EventSink(EventClient(api), NODE, metrics=metrics)
    sink.publish(report([finding()]))
    assert not sink.flush(1)
    assert sink.last_error is not None and sink.last_error.status == 403
    assert ('cannot create resource "events" in API group "events.k8s.io" in the namespace '
            f'"{POD.namespace}"') in str(sink.last_error)
    assert "\n" not in str(sink.last_error)
    assert metrics.errors["403"] >= 1
    server.clear_faults()
    assert sink.flush(10)  # RBAC fixed: the owed Event arrives
    assert len(server.events()) == 1


def test_token_bucket_limits_one_pod(server: ApiServer, api: Api) -> None:
    clock = FakeClock()
    metrics = RecordingMetrics()
    sink = EventSink(EventClient(api), NODE, clock=clock, sleep=clock.sleep, metrics=metrics)
    many = [finding(f"Rule{i}") for i in range(40)]
    sink.publish(report(many))
    assert sink.flush(5)
    assert len(server.events()) == BUCKET_BURST == 25
    assert metrics.dropped == {"rate_limited": 15}

    other = PodRef("spark-operator", "so-webhook-xyz", "9a9a9a9a-1111-4222-8333-944455556666")
    sink.publish(report([finding()], pod=other))  # another pod has its own bucket
    assert sink.flush(5)
    assert len(server.events()) == 26

    before = len(writes(server))
    clock.now += BUCKET_REFILL_SECONDS  # one token back for the first pod: one more write
    sink.publish(report(many))
    assert sink.flush(5)
    assert len(writes(server)) == before + 1
    assert metrics.dropped == {"rate_limited": 15 + 39}


def test_sink_never_raises_when_the_client_breaks(server: ApiServer, api: Api) -> None:
    class Broken(EventClient):
        def create_event(self, *args: object, **kwargs: object) -> dict[str, object]:
            raise RuntimeError("client bug")

    sink = EventSink(Broken(api), NODE)
    sink.publish(report([finding()]))
    assert sink.flush(1) is False  # the write stays owed; nothing escaped


def test_event_name_is_a_bounded_dns_subdomain() -> None:
    long_pod = PodRef("ns", "a" * 240 + "-b" * 6, "uid-1")
    name = event_name(long_pod, "c", "RunsAsRoot")
    assert len(name) <= 253
    assert apischema.DNS_SUBDOMAIN.match(name)
    assert name == event_name(long_pod, "c", "RunsAsRoot")
    assert name != event_name(long_pod, "c", "RunsAsRoot", cleared=True)
    assert name != event_name(PodRef("ns", long_pod.name, "uid-2"), "c", "RunsAsRoot")


def test_micro_time_keeps_six_digits_at_whole_seconds() -> None:
    from datetime import UTC, datetime

    assert micro_time(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000Z"


def test_note_gives_the_fix_as_dotted_paths_not_flattened_yaml() -> None:
    from agent.output.events.body import compact_fix

    remediation = ("# Make the socket accept IPv4: bind 0.0.0.0:9443\n"
                   "# Pod spec: spec.containers[].securityContext\n"
                   "securityContext:\n  capabilities:\n    drop: [ALL]\n"
                   "# Helm values (spark-operator chart): webhook.securityContext\n"
                   "webhook:\n  securityContext:\n    capabilities:\n      drop: [ALL]\n")
    assert compact_fix(remediation) == (
        "Make the socket accept IPv4: bind 0.0.0.0:9443; "
        'spec.containers[].securityContext.capabilities.drop=["ALL"]; '
        'Helm values: webhook.securityContext.capabilities.drop=["ALL"]')


def test_a_new_pods_first_event_goes_before_older_series_updates(server: ApiServer,
                                                                 api: Api) -> None:
    """A full cycle repeats every finding (series updates owed for each); a pod the watch
    just named must not wait behind them."""
    sink = EventSink(EventClient(api), NODE)
    old = [finding(), finding("SeccompUnconfined")]
    sink.publish(report(old))
    assert sink.flush(5)
    sink.publish(report(old))  # the repeat: two PATCHes owed
    new_pod = PodRef("spark-operator", "so-webhook-xyz", "9b7b1c5e-1111-4222-8333-944455556666")
    sink.publish(report([finding()], pod=new_pod))  # queued after them
    server.request_log.clear()
    assert sink.flush(5)
    assert writes(server) == [("POST", 201), ("PATCH", 200), ("PATCH", 200)]
    assert len(server.events()) == 3
