"""`opaudit run` never dies because of one target: faults injected into a running agent.

The agent is the console script as the DaemonSet runs it, against the API test server
(tests/kube/), auditing real processes in real kubepods cgroups. The faults come from
tests/fault_hooks/sitecustomize.py, on the agent's PYTHONPATH only (production code has
no hook): an OSError from the fd reader, a malformed /proc file (refused by the parser),
a parser that fails on a malformed /proc file, a pid that vanishes mid-audit, a report sink
that raises every cycle, and a fault outside any target that ends one cycle.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

from agent_run import AgentProcess, assert_json_lines, free_port, http_get, loop_argv, wait_for
from cgroup_staging import KubepodsCgroups
from kube.apiserver import ApiServer
from pod_staging import StagedPod, events_on, expected_rules, stage_pod
from staging import Stage, Staged

HOOKS = Path(__file__).resolve().parent / "fault_hooks"


def metric(text: str, sample: str) -> float:
    """The value of one sample line (`name{labels}`) of a /metrics scrape, 0 when absent."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def kill_when_asked(victim: Staged, request: Path) -> None:
    """Kill and reap `victim` once the agent's hook asks (it is then auditing it)."""
    wait_for(request.exists, 120)
    if request.exists():
        os.killpg(victim.pid, signal.SIGKILL)
        victim.popen.wait()


def incomplete_note(server: ApiServer, pod: StagedPod) -> str:
    notes = [e["note"] for e in events_on(server, pod.uid) if e["reason"] == "InspectionIncomplete"]
    return notes[0] if notes else ""


def test_a_running_agent_survives_every_injected_fault_and_keeps_posting_events(
    stage: Stage, cgroups: KubepodsCgroups, tmp_path: Path
) -> None:
    with ApiServer(report_apis=("openreports.io/v1alpha1",)) as server:
        pods = {name: stage_pod(stage, cgroups, f"so-{name}")
                for name in ("healthy", "fd-reader", "mountinfo", "parser-bug", "vanish")}
        for pod in pods.values():
            server.add_pod(pod.manifest)
        victim = next(p for p in stage.processes if p.pid == pods["vanish"].pid)
        vanish_request = tmp_path / "vanish"
        killer = threading.Thread(target=kill_when_asked, args=(victim, vanish_request),
                                  daemon=True)
        killer.start()
        faults = {"fd_reader": pods["fd-reader"].pid, "mountinfo": pods["mountinfo"].pid,
                  "parser_bug": pods["parser-bug"].pid, "vanish": pods["vanish"].pid,
                  "vanish_request": str(vanish_request), "sink": True, "cycle": 1}
        env = {**os.environ, "PYTHONPATH": str(HOOKS), "OPAUDIT_FD_READER": "bpf",
               "OPAUDIT_TEST_FAULTS": json.dumps(faults)}
        port = free_port()
        # The reports sink first: on its failure, the Events sink after it must still work.
        argv = loop_argv(server.write_kubeconfig(tmp_path / "kubeconfig"), port, 1,
                         "--sink", "reports", "--sink", "events")
        with AgentProcess(argv, env=env) as agent:
            def scrape() -> str:
                return http_get(port, "/metrics")[1]

            def cycles(outcome: str) -> float:
                return metric(scrape(), f'opaudit_cycle_outcomes_total{{outcome="{outcome}"}}')

            assert wait_for(lambda: cycles("ok") >= 4, 120), "no healthy cycles"
            assert agent.popen.poll() is None
            assert http_get(port, "/healthz")[0] == 200
            # The healthy pod's Events are all there, as the engine finds them in-process.
            healthy = pods["healthy"]
            assert {e["reason"] for e in events_on(server, healthy.uid)} == \
                expected_rules(healthy)
            assert wait_for(lambda: all(incomplete_note(server, pods[name]) for name in
                                        ("fd-reader", "mountinfo", "parser-bug", "vanish")), 60)
            text = scrape()
            ok_before = cycles("ok")
            assert wait_for(lambda: cycles("ok") > ok_before, 30)  # still cycling
            assert http_get(port, "/healthz")[0] == 200
            assert agent.terminate(timeout=30) == 0
        notes = {name: incomplete_note(server, pods[name]) for name in pods}
        reasons = {name: {e["reason"] for e in events_on(server, p.uid)}
                   for name, p in pods.items()}
    logs = assert_json_lines(agent.err)
    messages = [line["msg"] for line in logs]

    # fd reader: an unwrapped OSError costs that netns's socket owners, no more.
    assert "cannot scan socket owners; scanning each network namespace alone" in messages
    assert metric(text, 'opaudit_audit_faults_total{stage="socket_owners"}') >= 1
    assert "socket owners: BlockingIOError: [Errno 11] injected" in notes["fd-reader"]
    assert "no owner found for tcp 0.0.0.0:8080" in notes["fd-reader"]
    assert "PrivilegeEscalationAllowed" in reasons["fd-reader"]  # its other facts were read
    # A malformed /proc file: the parser refuses it; those facts are unknown.
    assert "cannot parse mountinfo" in notes["mountinfo"]
    assert "PrivilegeEscalationAllowed" in reasons["mountinfo"]
    # A parser that fails on a malformed file: that target is InspectionIncomplete.
    assert "the audit failed: IndexError" in notes["parser-bug"]
    assert "cannot audit a target; reported as InspectionIncomplete" in messages
    assert metric(text, 'opaudit_audit_faults_total{stage="target"}') >= 1
    # A pid that vanished mid-audit: what could not be read is named.
    assert "does not exist (or exited)" in notes["vanish"]
    assert victim.popen.returncode == -signal.SIGKILL
    # The reports sink raises every cycle; the Events sink after it still gets each report.
    assert metric(text, 'opaudit_sink_errors_total{sink="ReportsSink"}') >= 4
    assert "a sink failed; the other sinks carry on" in messages
    assert metric(text, 'opaudit_sink_errors_total{sink="EventSink"}') == 0
    # A fault outside any target ended the first cycle only.
    assert metric(text, 'opaudit_cycle_outcomes_total{outcome="error"}') == 1
    failed = [line for line in logs if line["msg"].startswith("audit cycle failed")]
    assert len(failed) == 1 and "injected: a fault outside any target" in failed[0]["error"]
    assert logs[-1]["msg"] == "stopped"
    assert agent.out == ""
