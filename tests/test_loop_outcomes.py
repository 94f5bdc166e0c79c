"""`opaudit run`: a cycle that could not list pods is not a healthy cycle with zero findings.

The agent runs in-process against the API test server (tests/kube/), which is stopped to
make the API unreachable: before the first list (nothing can be audited) and after it (the
last list is audited, but the cycle says the list is not current)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from agent_run import run_agent_thread, sample, wait_for
from cgroup_staging import KubepodsCgroups
from kube.apiserver import ApiServer
from pod_staging import NODE, SELECTOR, stage_pod
from staging import Stage

from agent.daemon import RunContext, RunOptions
from agent.output.metrics import AgentMetrics

SKIPPED = "audit cycle skipped: the pods could not be listed"
STALE = "audit cycle on the last pod list: the pods cannot be listed now"


def outcomes(metrics: AgentMetrics, outcome: str) -> float:
    return sample(metrics, "opaudit_cycle_outcomes_total", outcome=outcome)


def healthy_cycles(metrics: AgentMetrics) -> float:
    return sum(sample(metrics, "opaudit_cycles_total", trigger=t)
               for t in ("interval", "watch", "once"))


def log_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_an_api_outage_is_its_own_cycle_outcome_and_log_line_never_zero_findings(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, embedded_logging: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pod = stage_pod(stage, cgroups, "so-controller")
    server.add_pod(pod.manifest)
    server.stop()  # unreachable before the agent's first list
    metrics = AgentMetrics()
    options = RunOptions(node=NODE, selector=SELECTOR, interval=0.5)
    context = RunContext(configuration=server.configuration(),
                         restrict_privileges=False)  # in-process: keep pytest's own caps
    with run_agent_thread(options, context, metrics) as running:
        # 1. Never listed: no cycle is counted as run, none reads "0 findings".
        assert wait_for(lambda: outcomes(metrics, "api_error") >= 2, 30)
        assert healthy_cycles(metrics) == 0 and outcomes(metrics, "ok") == 0
        assert metrics.registry.get_sample_value("opaudit_findings",
                                                 {"rule": "PrivilegeEscalationAllowed",
                                                  "severity": "high"}) is None
        assert metrics.alive and not metrics.ready
        early = log_lines(capsys.readouterr().err)

        # 2. The API answers: healthy cycles, the staged pod's findings.
        server.start()
        assert wait_for(lambda: outcomes(metrics, "ok") >= 1, 60)
        assert sample(metrics, "opaudit_findings", rule="PrivilegeEscalationAllowed",
                      severity="high") == 1

        # 3. Unreachable after a list: the last list is audited, under its own outcome.
        server.stop()
        failed = outcomes(metrics, "api_error")
        assert wait_for(lambda: outcomes(metrics, "api_error") >= failed + 2, 30)
        assert sample(metrics, "opaudit_findings", rule="PrivilegeEscalationAllowed",
                      severity="high") == 1  # still the pod's, not a silent 0
    assert not running.thread.is_alive()
    late = log_lines(capsys.readouterr().err)

    skipped = [line for line in early if line["msg"] == SKIPPED]
    assert len(skipped) >= 2
    assert all(line["level"] == "error" and line["outcome"] == "api_error" for line in skipped)
    assert "API server unreachable" in skipped[-1]["error"]
    assert not [line for line in early if line["msg"] == "audit cycle"]  # no healthy line

    ok = [line for line in late if line["msg"] == "audit cycle"]
    assert ok and all(line["outcome"] == "ok" for line in ok)
    stale = [line for line in late if line["msg"] == STALE]
    assert stale and all(line["outcome"] == "api_error" and line["level"] == "warning"
                         for line in stale)
    assert stale[-1]["pods"] == 1 and stale[-1]["findings"] >= 1
