"""`opaudit run` end to end: real processes in real kubepods cgroups, the test API server,
the console script as a subprocess (as the DaemonSet runs it), Events, metrics, signals."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from agent_run import (
    OPAUDIT,
    REPO,
    AgentProcess,
    assert_json_lines,
    free_port,
    http_get,
    loop_argv,
    loop_thread,
    run_once,
    wait_for,
)
from cgroup_staging import KubepodsCgroups, systemd_scope
from kube.apiserver import ApiServer
from pod_staging import (
    NAMESPACE,
    NODE,
    SELECTOR,
    SPARK_LABELS,
    StagedPod,
    events_on,
    expected_rules,
    pod_manifest,
    stage_pod,
)
from sinks import RecordingSink
from staging import Sock, Stage

from agent.daemon import NodeAgent, RunOptions
from agent.kube.client import load_api
from agent.output.metrics import AgentMetrics
from agent.output.metrics_sink import MetricsSink
from agent.output.sink import FanOut

# --- --once ------------------------------------------------------------------------------


def test_run_once_posts_events_on_exactly_the_selected_pods(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: Path
) -> None:
    selected_v2 = stage_pod(stage, cgroups, "so-controller-v2")
    selected_v1 = stage_pod(stage, cgroups, "so-controller-v1", v1=True)
    other_app = stage_pod(stage, cgroups, "not-selected", labels={"app.kubernetes.io/name": "x"})
    other_node = stage_pod(stage, cgroups, "elsewhere", node="worker-2")
    for pod in (selected_v2, selected_v1, other_app, other_node):
        server.add_pod(pod.manifest)

    result = run_once(kubeconfig)
    assert result.returncode == 0, result.stderr
    assert_json_lines(result.stderr)
    assert_json_lines(result.stdout)

    events = server.events()  # every one was schema-validated by the server on create
    assert {e["regarding"]["uid"] for e in events} == {selected_v2.uid, selected_v1.uid}
    for pod in (selected_v2, selected_v1):
        mine = events_on(server, pod.uid)
        for event in mine:
            assert event["regarding"] == {"apiVersion": "v1", "kind": "Pod",
                                          "namespace": NAMESPACE, "name": pod.name,
                                          "uid": pod.uid}
            assert event["reportingController"] == "opaudit"
            assert event["reportingInstance"] == NODE
            assert len(event["note"].encode()) <= 1024
        reasons = {e["reason"] for e in mine}
        assert reasons == expected_rules(pod)
        assert "PrivilegeEscalationAllowed" in reasons  # declared false, no_new_privs is 0


def test_a_second_run_once_creates_no_new_event_objects(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: Path
) -> None:
    pod = stage_pod(stage, cgroups, "so-controller")
    server.add_pod(pod.manifest)
    assert run_once(kubeconfig).returncode == 0
    first = {e["metadata"]["name"]: e for e in server.events()}
    assert first

    second_run = run_once(kubeconfig)  # a restarted agent: nothing in memory
    assert second_run.returncode == 0, second_run.stderr
    second = {e["metadata"]["name"]: e for e in server.events()}
    assert second.keys() == first.keys()
    creates = [r for r in server.request_log if r.method == "POST" and r.status == 201]
    assert len(creates) == len(first)  # the second run's creates all got 409
    assert all((e.get("series") or {}).get("count", 0) >= 2 for e in second.values())


def test_a_429_with_retry_after_still_lands_within_the_same_once(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: Path
) -> None:
    pod = stage_pod(stage, cgroups, "so-controller")
    server.add_pod(pod.manifest)
    server.inject("POST", r"/events$", status=429, retry_after=1)
    started = time.monotonic()
    result = run_once(kubeconfig)
    assert result.returncode == 0, result.stderr
    assert any(r.status == 429 for r in server.request_log)
    assert {e["reason"] for e in events_on(server, pod.uid)} == expected_rules(pod)
    assert time.monotonic() - started < 30


def test_run_without_a_node_name_is_a_usage_error(kubeconfig: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NODE_NAME"}
    result = subprocess.run([str(OPAUDIT), "run", "--once", "--kubeconfig", str(kubeconfig)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    (line,) = assert_json_lines(result.stderr)
    assert "NODE_NAME" in str(line["msg"])


def exit_statuses(help_text: str) -> dict[int, str]:
    """`run --help`'s exit-status section: each status and its text (joined lines)."""
    section = help_text.split("exit status:", 1)[1]
    statuses: dict[int, str] = {}
    current = None
    for line in section.splitlines():
        words = line.split()
        if len(words) > 1 and words[0].isdigit() and line.startswith("  "):
            current = int(words[0])
            statuses[current] = " ".join(words[1:])
        elif current is not None and line.startswith("     "):
            statuses[current] += " " + " ".join(words)
        else:
            current = None
    return statuses


def test_run_once_with_the_api_down_exits_with_the_status_its_help_documents(
    server: ApiServer, kubeconfig: Path
) -> None:
    server.stop()  # the kubeconfig names a server that no longer answers
    result = run_once(kubeconfig)
    (line,) = [entry for entry in assert_json_lines(result.stderr) if entry["level"] == "error"]
    assert line["msg"] == "cannot list pods: nothing audited" and line["outcome"] == "api_error"

    help_text = subprocess.run([str(OPAUDIT), "run", "--help"], capture_output=True,
                               text=True, timeout=60, check=True).stdout
    statuses = exit_statuses(help_text)
    assert set(statuses) == {0, 1, 2}
    documented = [code for code, text in statuses.items() if "could not be listed" in text]
    assert documented == [result.returncode] == [2]  # an environment error
    assert "usage or environment error" in statuses[2]
    assert "no node name" in statuses[2]  # the usage error below is the same status


# --- the loop ----------------------------------------------------------------------------


def test_the_loop_audits_a_new_pod_at_once_and_stops_cleanly_on_sigterm(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: Path
) -> None:
    port = free_port()
    with AgentProcess(loop_argv(kubeconfig, port, 300)) as agent:
        assert wait_for(lambda: http_get(port, "/readyz")[0] == 200, 30), "never ready"
        pod = stage_pod(stage, cgroups, "so-controller-late")
        added = time.monotonic()
        server.add_pod(pod.manifest)
        assert wait_for(lambda: bool(events_on(server, pod.uid)), 30)
        latency = time.monotonic() - added
        print(f"\nwatch event -> first Event posted: {latency:.2f} s (target 2 s)")

        assert http_get(port, "/healthz")[0] == 200
        code, text = http_get(port, "/metrics")
        assert code == 200
        assert 'opaudit_findings{rule="PrivilegeEscalationAllowed",severity="high"} 1.0' in text
        assert 'opaudit_cycles_total{trigger="watch"}' in text
        assert "opaudit_events_written_total" in text

        stopped = time.monotonic()
        assert agent.terminate(timeout=10) == 0
        assert time.monotonic() - stopped < 5
    assert_json_lines(agent.out)
    logs = assert_json_lines(agent.err)
    assert any(line["msg"] == "stopped" for line in logs)


def test_a_watch_trigger_audits_only_the_new_pod_and_metrics_still_count_the_node(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer
) -> None:
    first = [stage_pod(stage, cgroups, f"so-controller-{i}") for i in range(2)]
    for pod in first:
        server.add_pod(pod.manifest)
    options = RunOptions(node=NODE, selector=SELECTOR, interval=300)
    sink, metrics = RecordingSink(), AgentMetrics()
    agent = NodeAgent(load_api(configuration=server.configuration()), NODE, options,
                      FanOut([MetricsSink(metrics), sink]), metrics, threading.Event())
    with loop_thread(agent) as running:
        assert wait_for(lambda: len(sink.reports) == 1, 30)
        assert {t.observed.pid for t in sink.reports[0].targets} == {p.pid for p in first}

        late = stage_pod(stage, cgroups, "so-controller-late")
        server.add_pod(late.manifest)
        assert wait_for(lambda: len(sink.reports) == 2, 30)
        # interval 300: only the watch explains this cycle, and it audited the new pod only
        assert [t.observed.pid for t in sink.reports[1].targets] == [late.pid]
        rule = "PrivilegeEscalationAllowed"  # each staged pod has it once (expected_rules)
        assert rule in expected_rules(late)
        assert metrics.registry.get_sample_value(
            "opaudit_findings", {"rule": rule, "severity": "high"}) == 3
        assert metrics.registry.get_sample_value("opaudit_targets") == 3
        assert metrics.registry.get_sample_value(
            "opaudit_cycles_total", {"trigger": "watch"}) == 2  # the first list, the new pod
    assert running.stopped_cleanly


class SlowSink(RecordingSink):
    """Each pump writes one owed Event per 10 ms until its deadline or until none is owed."""

    def __init__(self, owed: int) -> None:
        super().__init__()
        self.owed, self.pumps = owed, 0

    def pump(self, deadline: float) -> None:
        self.pumps += 1
        while self.owed and time.monotonic() < deadline:
            time.sleep(0.01)
            self.owed -= 1


def test_event_writes_yield_to_a_pod_the_watch_names(server: ApiServer) -> None:
    """After a full cycle hundreds of series updates are owed; a new pod's audit must not
    wait for them, and an idle sink must not be polled in a loop."""
    sink = SlowSink(owed=10_000)
    agent = NodeAgent(load_api(configuration=server.configuration()), NODE,
                      RunOptions(node=NODE, selector=SELECTOR, interval=300), sink,
                      AgentMetrics(), threading.Event())
    started = time.monotonic()
    threading.Timer(0.2, agent.triggers.put, args=("pod-uid",)).start()
    agent._pump(5.0)
    assert time.monotonic() - started < 2.0  # back within a slice of the trigger, not 5 s
    assert sink.pumps >= 2 and sink.owed > 0  # sliced, and the rest is still owed

    pumps = sink.pumps
    agent._pump(5.0)  # the trigger is still waiting for the loop: no write at all
    assert sink.pumps == pumps
    agent.triggers.get_nowait()

    sink.owed = 3
    agent._pump(5.0)
    assert sink.owed == 0 and sink.pumps == pumps + 1  # returned early: nothing more owed


# --- the agent's own privileges ----------------------------------------------------------

SELF_AUDIT = """
import json
from agent.privilege import restrict_self
restrict_self()
from agent.audit import AuditRequest, audit
from agent.output.document import document_dict
import os
print(json.dumps(document_dict(audit([AuditRequest(os.getpid())]))))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="drops capabilities a root process holds")
def test_the_agent_keeps_only_its_three_capabilities_and_sets_no_new_privs() -> None:
    result = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", SELF_AUDIT],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (target,) = json.loads(result.stdout)["targets"]
    expected = ["DAC_READ_SEARCH", "SYS_ADMIN", "SYS_PTRACE"]
    caps = target["capabilities"]
    assert caps["bounding"] == caps["permitted"] == caps["effective"] == expected
    assert caps["inheritable"] == caps["ambient"] == []
    assert target["no_new_privs"] is True


@pytest.mark.skipif(os.geteuid() != 0, reason="drops capabilities a root process holds")
def test_run_restricts_itself_once_and_logs_what_it_kept(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: Path
) -> None:
    server.add_pod(stage_pod(stage, cgroups, "so-controller").manifest)
    result = run_once(kubeconfig, "--sink", "stdout")
    assert result.returncode == 0, result.stderr
    logged = [line for line in assert_json_lines(result.stderr) if line["msg"] == "own privileges"]
    assert len(logged) == 1  # main() restricted; run_agent only reports it
    (state,) = logged
    assert sorted(state["kept"]) == sorted(state["bounding"]) == [
        "DAC_READ_SEARCH", "SYS_ADMIN", "SYS_PTRACE"]
    assert state["not_dropped"] == [] and state["problems"] == []
    assert state["no_new_privs"] is True


def test_stdout_sink_prints_one_json_report_per_cycle(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: Path
) -> None:
    pod = stage_pod(stage, cgroups, "so-controller")
    server.add_pod(pod.manifest)
    result = run_once(kubeconfig, "--sink", "stdout")
    assert result.returncode == 0, result.stderr
    (report,) = assert_json_lines(result.stdout)
    assert report["schema"] == "opaudit.report/v1" and report["node"] == NODE
    assert [t["pid"] for t in report["targets"]] == [pod.pid]
    assert report["targets"][0]["pod"]["uid"] == pod.uid
    assert {f["rule"] for f in report["findings"]} == expected_rules(pod)
    assert server.events() == []  # the stdout sink writes no Events


def test_a_host_network_pod_is_not_blamed_for_other_processes_listeners(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: Path
) -> None:
    # The staged netns plays the node's: a node daemon (like node-exporter) listens in it
    # on a non-loopback address, next to the hostNetwork pod's own process.
    netns = stage.netns()
    stage.spawn([Sock("tcp", 4, "192.0.2.10", 9100)], netns=netns, comm="node-exporter")
    own = stage.spawn([Sock("tcp", 4, "0.0.0.0", 8080)], netns=netns, uid=1000,
                      bounding=[], no_new_privs=True, seccomp=True, comm="spark-operator")
    uid, container_id = str(uuid.uuid4()), os.urandom(32).hex()
    cgroups.place_v2(own.pid, systemd_scope(uid, container_id))
    manifest = pod_manifest("so-hostnet", uid, f"containerd://{container_id}", SPARK_LABELS)
    manifest["spec"]["hostNetwork"] = True
    server.add_pod(manifest)

    assert run_once(kubeconfig).returncode == 0
    events = events_on(server, uid)
    assert {e["reason"] for e in events} == expected_rules(StagedPod(manifest, own.pid))
    assert all("9100" not in e["note"] for e in events)
    assert "UndeclaredListener" not in {e["reason"] for e in events}
