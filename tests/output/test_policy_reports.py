"""`opaudit run --sink reports` end to end: staged pods in kubepods cgroups, the console
script, and the test API server serving the policy-report CRDs opaudit ships (every report
it receives is validated against the CRD's openAPIV3Schema)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_run import OPAUDIT, assert_json_lines, run_agent_thread, run_once, sample, wait_for
from cgroup_staging import KubepodsCgroups
from kube.apiserver import ApiServer
from pod_staging import NAMESPACE, NODE, SELECTOR, StagedPod, stage_pod
from staging import Stage

from agent.daemon import RunContext, RunOptions
from agent.output.metrics import AgentMetrics
from agent.output.policyreports.body import stable_text
from agent.rules.catalogue import CATALOGUE

OPENREPORTS = "openreports.io/v1alpha1"
WGPOLICY = "wgpolicyk8s.io/v1alpha2"
REPORT_PATHS = r"/apis/(openreports\.io|wgpolicyk8s\.io)/"


def serving(*apis: str) -> Iterator[ApiServer]:
    with ApiServer(report_apis=apis) as running:
        yield running


@pytest.fixture
def openreports() -> Iterator[ApiServer]:
    yield from serving(OPENREPORTS)


@pytest.fixture
def kubeconfig_for(tmp_path: Path) -> Any:
    return lambda server: Path(server.write_kubeconfig(tmp_path / "kubeconfig"))


def diagnosed(kubeconfig: Path, pod: StagedPod) -> list[dict[str, Any]]:
    """The findings `opaudit diagnose --pod` prints for the pod."""
    result = subprocess.run(
        [str(OPAUDIT), "diagnose", "--pod", f"{NAMESPACE}/{pod.name}", "--node", NODE,
         "--kubeconfig", str(kubeconfig), "-o", "json", "--fail-on", "critical"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    findings: list[dict[str, Any]] = json.loads(result.stdout)["findings"]
    return findings


def with_bad_port(pod: StagedPod, port: int = 9999) -> StagedPod:
    """The pod declaring a containerPort nothing listens on (DeclaredPortNotListening)."""
    container = pod.manifest["spec"]["containers"][0]
    container["ports"].append({"name": "stale", "containerPort": port, "protocol": "TCP"})
    return pod


def report_of(server: ApiServer, api: str, pod: StagedPod) -> dict[str, Any]:
    name = f"opaudit-{pod.uid}"
    (report,) = [r for r in server.custom_objects(api) if r["metadata"]["name"] == name]
    return report


def test_one_valid_report_per_pod_with_the_findings_diagnose_prints(
    stage: Stage, cgroups: KubepodsCgroups, openreports: ApiServer, kubeconfig_for: Any
) -> None:
    kubeconfig = kubeconfig_for(openreports)
    pods = [with_bad_port(stage_pod(stage, cgroups, "so-a")), stage_pod(stage, cgroups, "so-b")]
    other = stage_pod(stage, cgroups, "other", labels={"app.kubernetes.io/name": "x"})
    for pod in (*pods, other):
        openreports.add_pod(pod.manifest)

    result = run_once(kubeconfig, "--sink", "reports")
    assert result.returncode == 0, result.stderr
    reports = openreports.custom_objects(OPENREPORTS)
    assert sorted(r["metadata"]["name"] for r in reports) == sorted(
        f"opaudit-{p.uid}" for p in pods)  # the unselected pod has none
    resource = openreports.custom.resources[OPENREPORTS]
    for pod in pods:
        report = report_of(openreports, OPENREPORTS, pod)
        assert resource.errors(report, NAMESPACE) == []
        pod_ref = {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid}
        # The Pod owns it, so the garbage collector deletes the report with the Pod.
        assert report["metadata"]["ownerReferences"] == [pod_ref]
        assert report["scope"] == {**pod_ref, "namespace": NAMESPACE}
        assert report["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "opaudit",
                                                "opaudit.dev/node": NODE}
        assert report["source"] == "opaudit"
        results = report["results"]
        findings = diagnosed(kubeconfig, pod)
        failing = [r for r in results if r["result"] in ("fail", "warn")]
        # The findings diagnose prints, without their pids (those are in properties).
        assert sorted((r["rule"], r["message"]) for r in failing) == sorted(
            (f["rule"], stable_text(f["message"])) for f in findings)
        assert all(str(pod.pid) not in r["message"] for r in results)
        assert all(r["category"] for r in results)
        ids = [r["properties"]["resultID"] for r in results]
        assert len(set(ids)) == len(ids)
        for result_entry in failing:
            finding = next(f for f in findings
                           if stable_text(f["message"]) == result_entry["message"])
            assert result_entry["severity"] == finding["severity"]
            assert result_entry["result"] == ("warn" if finding["severity"] == "info" else "fail")
            props = result_entry["properties"]
            assert props["container"] == "spark-operator-controller"
            assert props["pid"] == str(pod.pid) and "\n" not in props["fix"]
            assert all(isinstance(v, str) for v in props.values())
            ts = result_entry["timestamp"]
            assert isinstance(ts["seconds"], int) and 0 <= ts["nanos"] < 10**9
        # every other rule: checked and fine, or not checked (error), never silent
        others = {r["rule"] for r in results if r["result"] in ("pass", "error")}
        assert others | {f["rule"] for f in findings} == {rule.id for rule in CATALOGUE}
        assert report["summary"] == {k: sum(r["result"] == k for r in results)
                                     for k in ("pass", "fail", "warn", "error", "skip")}
    bad = report_of(openreports, OPENREPORTS, pods[0])
    assert "DeclaredPortNotListening" in {r["rule"] for r in bad["results"]
                                          if r["result"] == "fail"}


def test_steady_state_writes_nothing_and_a_restart_corrects_a_stale_report(
    stage: Stage, cgroups: KubepodsCgroups, openreports: ApiServer, kubeconfig_for: Any
) -> None:
    kubeconfig = kubeconfig_for(openreports)
    pod = with_bad_port(stage_pod(stage, cgroups, "so-a"))
    openreports.add_pod(pod.manifest)
    assert run_once(kubeconfig, "--sink", "reports").returncode == 0
    assert len(openreports.writes(REPORT_PATHS)) == 1  # the create
    first = report_of(openreports, OPENREPORTS, pod)

    # A new agent (a restart) with nothing changed reads the report and writes nothing.
    assert run_once(kubeconfig, "--sink", "reports").returncode == 0
    assert len(openreports.writes(REPORT_PATHS)) == 1
    assert report_of(openreports, OPENREPORTS, pod) == first

    # The stale port is fixed while no agent runs: the next agent's first cycle replaces
    # the report once, without the finding, and keeps the other results' timestamps.
    pod.manifest["spec"]["containers"][0]["ports"].pop()
    openreports.update_pod(pod.manifest)
    assert run_once(kubeconfig, "--sink", "reports").returncode == 0
    writes = openreports.writes(REPORT_PATHS)
    assert [w.method for w in writes] == ["POST", "PUT"]
    fixed = report_of(openreports, OPENREPORTS, pod)
    rules = {r["rule"]: r for r in fixed["results"]}
    assert rules["DeclaredPortNotListening"]["result"] == "pass"
    kept = [r for r in first["results"] if r["rule"] != "DeclaredPortNotListening"]
    assert all(r in fixed["results"] for r in kept)


@pytest.mark.parametrize(("served", "flags", "expected"), [
    ((OPENREPORTS, WGPOLICY), (), OPENREPORTS),
    ((WGPOLICY,), (), WGPOLICY),
    ((OPENREPORTS, WGPOLICY), ("--report-api", "wgpolicyk8s"), WGPOLICY),
])
def test_discovery_picks_one_api_never_both(
    stage: Stage, cgroups: KubepodsCgroups, kubeconfig_for: Any,
    served: tuple[str, ...], flags: tuple[str, ...], expected: str,
) -> None:
    for server in serving(*served):
        pod = stage_pod(stage, cgroups, "so-a")
        server.add_pod(pod.manifest)
        result = run_once(kubeconfig_for(server), "--sink", "reports", *flags)
        assert result.returncode == 0, result.stderr
        for api in served:
            names = [r["metadata"]["name"] for r in server.custom_objects(api)]
            assert names == ([f"opaudit-{pod.uid}"] if api == expected else []), api
        report = report_of(server, expected, pod)
        assert report["kind"] == ("Report" if expected == OPENREPORTS else "PolicyReport")
        assert all(r["source"] == "opaudit" for r in report["results"])


def test_without_a_report_api_one_line_and_the_events_still_flow(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig_for: Any
) -> None:
    pod = stage_pod(stage, cgroups, "so-a")
    server.add_pod(pod.manifest)
    result = run_once(kubeconfig_for(server), "--sink", "events", "--sink", "reports")
    assert result.returncode == 0, result.stderr
    logged = [line for line in assert_json_lines(result.stderr) if "reports" in line["msg"]]
    assert len(logged) == 1, logged
    assert logged[0]["level"] == "error" and "no policy-report API" in logged[0]["msg"]
    assert {e["regarding"]["uid"] for e in server.events()} == {pod.uid}
    assert not any(w.path.startswith("/apis/openreports") for w in server.request_log)


def test_results_are_capped_most_severe_first(
    stage: Stage, cgroups: KubepodsCgroups, openreports: ApiServer, kubeconfig_for: Any
) -> None:
    pod = with_bad_port(stage_pod(stage, cgroups, "so-a"))
    openreports.add_pod(pod.manifest)
    result = run_once(kubeconfig_for(openreports), "--sink", "reports",
                      "--report-max-results", "3")
    assert result.returncode == 0, result.stderr
    report = report_of(openreports, OPENREPORTS, pod)
    assert len(report["results"]) == 3
    assert report["configuration"] == {"limits": {"maxResults": 3}}
    assert {r["result"] for r in report["results"]} == {"fail"}
    ranks = ["info", "low", "medium", "high", "critical"]
    severities = [ranks.index(r["severity"]) for r in report["results"]]
    assert severities == sorted(severities, reverse=True)


@pytest.mark.parametrize(("api", "resource"), [(OPENREPORTS, "reports"), (WGPOLICY, "polr")])
def test_kubectl_get_shows_one_line_per_pod_with_its_counts(
    stage: Stage, cgroups: KubepodsCgroups, kubeconfig_for: Any, api: str, resource: str
) -> None:
    for server in serving(api):
        kubeconfig = kubeconfig_for(server)
        pods = [stage_pod(stage, cgroups, "so-a"), with_bad_port(stage_pod(stage, cgroups, "so-b"))]
        for pod in pods:
            server.add_pod(pod.manifest)
        assert run_once(kubeconfig, "--sink", "reports").returncode == 0
        shown = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "get", resource,
                                "-A", "-o", "wide"], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        header, *rows = [line.split() for line in shown.stdout.splitlines()]
        assert header == ["NAMESPACE", "NAME", "KIND", "NAME", "PASS", "FAIL", "WARN", "ERROR",
                          "SKIP", "AGE"]
        assert len(rows) == len(pods)
        for pod in pods:
            (row,) = [r for r in rows if r[1] == f"opaudit-{pod.uid}"]
            summary = report_of(server, api, pod)["summary"]
            assert row[:4] == [NAMESPACE, f"opaudit-{pod.uid}", "Pod", pod.name]
            assert [int(x) for x in row[4:9]] == [summary[k] for k in
                                                  ("pass", "fail", "warn", "error", "skip")]
            assert summary["fail"] > 0 and summary["pass"] > 0


def test_a_running_agent_retries_counts_drops_and_removes_a_fixed_finding(
    stage: Stage, cgroups: KubepodsCgroups, openreports: ApiServer, embedded_logging: None
) -> None:
    pod = with_bad_port(stage_pod(stage, cgroups, "so-a"))
    openreports.add_pod(pod.manifest)
    collection = rf"^/apis/openreports\.io/v1alpha1/namespaces/{NAMESPACE}/reports"
    openreports.inject("POST", collection, status=500, count=2)
    openreports.inject("POST", collection, status=429, retry_after=0.2)
    metrics = AgentMetrics()
    options = RunOptions(node=NODE, selector=SELECTOR, interval=0.3, sinks=("reports",))
    context = RunContext(configuration=openreports.configuration(),
                         restrict_privileges=False)  # in-process: keep pytest's own caps

    def value(name: str, **labels: str) -> float:
        return sample(metrics, name, **labels)

    def failing() -> set[str]:
        reports = openreports.custom_objects(OPENREPORTS)
        return {r["rule"] for report in reports for r in report["results"]
                if r["result"] == "fail"}

    with run_agent_thread(options, context, metrics) as running:
        # 500, 500, 429 (Retry-After), then the create: the sink's backoff, as the Events'
        assert wait_for(lambda: value("opaudit_reports_written_total") == 1, 30)
        assert value("opaudit_api_errors_total", code="500") == 2
        assert value("opaudit_api_errors_total", code="429") == 1
        assert "DeclaredPortNotListening" in failing()
        cycles = value("opaudit_cycles_total", trigger="interval")
        assert wait_for(lambda: value("opaudit_cycles_total", trigger="interval") >= cycles + 3,
                        30)
        assert len(openreports.writes(REPORT_PATHS)) == 1  # steady state: no write

        pod.manifest["spec"]["containers"][0]["ports"].pop()
        openreports.update_pod(pod.manifest)  # fixed: the next cycle takes it out
        assert wait_for(lambda: "DeclaredPortNotListening" not in failing(), 30)
        # counted once the answer is in, a moment after the server stored it
        assert wait_for(lambda: value("opaudit_reports_written_total") == 2, 10)

        openreports.inject("PUT", collection, status=422)  # a rejection is dropped, counted
        with_bad_port(pod)
        openreports.update_pod(pod.manifest)
        assert wait_for(lambda: value("opaudit_reports_dropped_total", reason="rejected") == 1,
                        30)
        assert wait_for(lambda: "DeclaredPortNotListening" in failing(), 30)  # next cycle

        # Relabelled out of the selection: the next full cycle deletes its report.
        pod.manifest["metadata"]["labels"] = {"app.kubernetes.io/name": "something-else"}
        openreports.update_pod(pod.manifest)
        assert wait_for(lambda: openreports.custom_objects(OPENREPORTS) == [], 30)
        assert [w.method for w in openreports.writes(REPORT_PATHS)][-1] == "DELETE"
    assert running.stopped_cleanly


def test_an_agent_started_during_an_api_outage_writes_its_reports_once_it_is_back(
    stage: Stage, cgroups: KubepodsCgroups, openreports: ApiServer, embedded_logging: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent.output.policyreports import discovery

    monkeypatch.setattr(discovery, "RETRY_DISCOVERY_SECONDS", 0.2)
    pod = stage_pod(stage, cgroups, "so-a")
    openreports.add_pod(pod.manifest)
    openreports.inject("GET", r"^/apis$", status=503, count=2)  # discovery fails twice
    metrics = AgentMetrics()
    options = RunOptions(node=NODE, selector=SELECTOR, interval=0.3, sinks=("reports",))
    context = RunContext(configuration=openreports.configuration(), restrict_privileges=False)
    with run_agent_thread(options, context, metrics):
        assert wait_for(lambda: len(openreports.custom_objects(OPENREPORTS)) == 1, 30)
    assert metrics.registry.get_sample_value("opaudit_api_errors_total", {"code": "503"}) == 2
