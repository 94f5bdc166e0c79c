"""Policy report results keep their identity: a restarted container (new pid, new container
ID) is the same result to Policy Reporter (same `properties.resultID`, same message) and
costs no write; results cut by --report-max-results are counted; at start an agent deletes
its node's reports of pods it no longer selects. Real processes in kubepods cgroups, the
API test server serving the openreports CRD, the agent's own loop and sinks."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from agent_run import OPAUDIT, assert_json_lines, run_once
from cgroup_staging import KubepodsCgroups, systemd_scope
from kube.apiserver import ApiServer
from pod_staging import NAMESPACE, NODE, SELECTOR, StagedPod, stage_pod
from staging import Sock, Stage

from agent.daemon import NodeAgent, RunOptions, make_sink
from agent.kube.client import load_api
from agent.model import AuditResult
from agent.output.metrics import AgentMetrics
from agent.output.policyreports.body import pod_reports, result_id, stable_text

OPENREPORTS = "openreports.io/v1alpha1"
REPORT_PATHS = r"/apis/openreports\.io/"
CONTAINER = "spark-operator-controller"


@pytest.fixture
def openreports() -> Iterator[ApiServer]:
    with ApiServer(report_apis=(OPENREPORTS,)) as running:
        yield running


def reports_by_uid(server: ApiServer) -> dict[str, dict[str, Any]]:
    return {r["scope"]["uid"]: r for r in server.custom_objects(OPENREPORTS)}


def restarted(stage: Stage, cgroups: KubepodsCgroups, pod: StagedPod) -> StagedPod:
    """The pod after its container restarted, as the kubelet shows it: the old process is
    gone, a new one (new pid) runs in a new container (new ID) of the same pod, in the same
    network namespace, and restartCount is 1."""
    (old,) = [p for p in stage.processes if p.pid == pod.pid]
    stage.kill(old)
    new = stage.spawn([Sock("tcp", 4, "0.0.0.0", 8080)], netns=old.netns, uid=1000,
                      bounding=["NET_BIND_SERVICE"], comm="spark-operator")
    container_id = os.urandom(32).hex()
    cgroups.place_v2(new.pid, systemd_scope(pod.uid, container_id))
    manifest = copy.deepcopy(pod.manifest)
    status = manifest["status"]["containerStatuses"][0]
    status["containerID"] = f"containerd://{container_id}"
    status["restartCount"] = 1
    return StagedPod(manifest, new.pid)


class Agent:
    """The agent's loop and sinks, driven one cycle at a time."""

    def __init__(self, server: ApiServer, max_results: int = 100) -> None:
        self.api = load_api(configuration=server.configuration())
        self.metrics = AgentMetrics()
        options = RunOptions(node=NODE, selector=SELECTOR, sinks=("reports",),
                             report_max_results=max_results)
        self.sink = make_sink(("reports",), self.api, NODE, self.metrics,
                              report_max_results=max_results)
        self.loop = NodeAgent(self.api, NODE, options, self.sink, self.metrics,
                              threading.Event())

    def cycle(self) -> AuditResult:
        self.loop.watcher.relist()
        report = self.loop.cycle("interval")
        assert report is not None
        assert self.sink.flush(10)
        return report


def identities(report: AuditResult) -> list[tuple[str, str, str]]:
    (pod,) = pod_reports(report)
    return [(r["properties"]["resultID"], r["result"], r["message"]) for r in pod.results]


def pids(report: AuditResult) -> set[str]:
    (pod,) = pod_reports(report)
    return {r["properties"]["pid"] for r in pod.results if "pid" in r["properties"]}


def test_a_restarted_container_keeps_each_result_id_and_message_and_costs_no_write(
    stage: Stage, cgroups: KubepodsCgroups, openreports: ApiServer, tmp_path: Path
) -> None:
    pod = stage_pod(stage, cgroups, "so-a")
    openreports.add_pod(pod.manifest)
    agent = Agent(openreports)
    first = agent.cycle()
    assert [w.method for w in openreports.writes(REPORT_PATHS)] == ["POST"]
    written = reports_by_uid(openreports)[pod.uid]
    assert pids(first) == {str(pod.pid)}

    again = restarted(stage, cgroups, pod)
    openreports.update_pod(again.manifest)
    second = agent.cycle()
    assert pids(second) == {str(again.pid)} and again.pid != pod.pid  # really restarted
    assert identities(second) == identities(first)
    assert all(str(p) not in message for p in (pod.pid, again.pid)
               for _, _, message in identities(second))
    assert [w.method for w in openreports.writes(REPORT_PATHS)] == ["POST"]  # no write
    assert reports_by_uid(openreports)[pod.uid] == written

    # A restarted agent reads the report back and finds nothing to write either.
    kubeconfig = Path(openreports.write_kubeconfig(tmp_path / "kubeconfig"))
    assert run_once(kubeconfig, "--sink", "reports").returncode == 0
    assert [w.method for w in openreports.writes(REPORT_PATHS)] == ["POST"]

    # What the id is: pod uid, container, rule and subject, hashed; every result has one
    # of its own, a category, and the report says which tool wrote it (lowercase).
    results = written["results"]
    assert len({r["properties"]["resultID"] for r in results}) == len(results)
    for entry in results:
        subject = entry["properties"].get("subject", "")
        assert entry["properties"]["resultID"] == result_id(pod.uid, CONTAINER, entry["rule"],
                                                            subject)
        assert entry["category"] in ("identity", "privileges", "filesystem", "network",
                                     "inspection")
    assert written["source"] == "opaudit"


def test_results_cut_by_report_max_results_are_counted(
    stage: Stage, cgroups: KubepodsCgroups, openreports: ApiServer
) -> None:
    pod = stage_pod(stage, cgroups, "so-a")
    openreports.add_pod(pod.manifest)
    agent = Agent(openreports, max_results=3)
    report = agent.cycle()
    (everything,) = pod_reports(report, max_results=10_000)
    assert len(everything.results) > 3
    assert len(reports_by_uid(openreports)[pod.uid]["results"]) == 3
    cut = agent.metrics.registry.get_sample_value("opaudit_report_results_cut_total")
    assert cut == len(everything.results) - 3
    agent.cycle()  # nothing changed: no write, nothing cut again
    assert agent.metrics.registry.get_sample_value("opaudit_report_results_cut_total") == cut


def test_at_start_the_agent_deletes_its_nodes_reports_of_pods_no_longer_selected(
    stage: Stage, cgroups: KubepodsCgroups, openreports: ApiServer, tmp_path: Path
) -> None:
    kubeconfig = Path(openreports.write_kubeconfig(tmp_path / "kubeconfig"))
    kept = stage_pod(stage, cgroups, "so-kept")
    dropped = stage_pod(stage, cgroups, "so-dropped")
    elsewhere = stage_pod(stage, cgroups, "so-elsewhere", node="worker-2")
    for pod in (kept, dropped, elsewhere):
        openreports.add_pod(pod.manifest)
    assert run_once(kubeconfig, "--sink", "reports").returncode == 0
    other_node = subprocess.run(
        [str(OPAUDIT), "run", "--once", "--node", "worker-2", "-l", SELECTOR, "--sink",
         "reports", "--kubeconfig", str(kubeconfig)], capture_output=True, text=True,
        timeout=120)
    assert other_node.returncode == 0, other_node.stderr
    assert reports_by_uid(openreports).keys() == {kept.uid, dropped.uid, elsewhere.uid}
    labels = {uid: r["metadata"]["labels"] for uid, r in reports_by_uid(openreports).items()}
    assert labels[kept.uid]["opaudit.dev/node"] == NODE
    assert labels[elsewhere.uid]["opaudit.dev/node"] == "worker-2"

    # While no agent runs, two pods leave the selection: one on this node, one elsewhere.
    for pod in (dropped, elsewhere):
        pod.manifest["metadata"]["labels"] = {"app.kubernetes.io/name": "something-else"}
        openreports.update_pod(pod.manifest)
    result = run_once(kubeconfig, "--sink", "reports")
    assert result.returncode == 0, result.stderr
    # This node's agent deleted its own stale report, and left worker-2's to worker-2.
    assert reports_by_uid(openreports).keys() == {kept.uid, elsewhere.uid}
    deletes = [w.path for w in openreports.writes(REPORT_PATHS) if w.method == "DELETE"]
    assert deletes == [f"/apis/openreports.io/v1alpha1/namespaces/{NAMESPACE}/reports/"
                       f"opaudit-{dropped.uid}"]
    lists = [r for r in openreports.request_log
             if r.method == "GET" and r.path == "/apis/openreports.io/v1alpha1/reports"]
    # One list per agent start (three runs), each of its own node's reports only.
    assert [parse_qs(r.query)["labelSelector"] for r in lists] == [
        [f"app.kubernetes.io/managed-by=opaudit,opaudit.dev/node={node}"]
        for node in (NODE, "worker-2", NODE)]


@pytest.mark.parametrize(("status", "listed"), [(403, 1), (500, 2)])
def test_a_refused_list_of_old_reports_is_given_up_a_failed_one_retried_writes_go_on(
    stage: Stage, cgroups: KubepodsCgroups, openreports: ApiServer, tmp_path: Path,
    status: int, listed: int,
) -> None:
    """RBAC without `list` (403) costs the start-up cleanup only, with one line; a server
    error (500) is retried. Either way the reports are written."""
    pod = stage_pod(stage, cgroups, "so-a")
    openreports.add_pod(pod.manifest)
    openreports.inject("GET", r"^/apis/openreports\.io/v1alpha1/reports$", status=status)
    result = run_once(Path(openreports.write_kubeconfig(tmp_path / "kubeconfig")),
                      "--sink", "reports")
    assert result.returncode == 0, result.stderr
    assert reports_by_uid(openreports).keys() == {pod.uid}
    lists = [r.status for r in openreports.request_log
             if r.method == "GET" and r.path == "/apis/openreports.io/v1alpha1/reports"]
    assert lists == [status, 200][:listed]
    given_up = [line for line in assert_json_lines(result.stderr)
                if line["msg"].startswith("report sink: cannot list this node's reports")]
    assert len(given_up) == (1 if status == 403 else 0)


def test_no_golden_finding_message_keeps_a_pid_in_its_report_result() -> None:
    """Every message the golden scenarios print (their pids fixed at 4242, 4243, ...) loses
    its pids, and only them, on the way into a result."""
    golden = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
    messages = 0
    for path in sorted(golden.glob("*.json")):
        for finding in json.loads(path.read_text())["findings"]:
            pids = finding.get("pids") or [finding["pid"]]
            message = stable_text(finding["message"])
            messages += 1
            assert not [p for p in pids if re.search(rf"\b{p}\b", message)], message
            # The rest is kept: every other word of the printed message is still there.
            kept = set(re.findall(r"[A-Za-z_]{4,}", finding["message"])) - {"pid", "pids"}
            assert kept <= set(re.findall(r"[A-Za-z_]{4,}", message)), message
    assert messages >= 10
