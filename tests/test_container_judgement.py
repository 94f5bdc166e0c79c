"""The container is the unit of judgement, proven on real processes in real kubepods cgroups:
a sidecar listed first, a root httpd-like parent on :80 with a child listening on 5000, a
prefork server (a parent and three workers with their own comms). Who holds which socket is
`ss -tulnpH`'s word, and which container a pid is in is /proc/PID/cgroup's."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cli_run
import pytest
from cgroup_staging import KubepodsCgroups
from container_staging import Container, StagedFamilyPod, cgroup_names, ss_owners, stage_family_pod
from kube.apiserver import ApiServer
from pod_staging import NODE
from staging import Sock, Stage

OPENREPORTS = "openreports.io/v1alpha1"
CONTAINER_SETTINGS = ("RunsAsRoot", "PrivilegeEscalationAllowed", "CapabilitiesNotDropped",
                      "SeccompUnconfined")


def labels() -> dict[str, str]:
    return {"app": f"judge-{os.getpid()}"}


def sidecar_first(stage: Stage, cgroups: KubepodsCgroups) -> StagedFamilyPod:
    """istio-proxy listed first (uid 1337, :15001), the app second: root httpd on [::]:8080
    with IPV6_V6ONLY=1 in an IPv4 pod (a real ListenerFamilyMismatch)."""
    proxy = Container("istio-proxy", "envoy", [Sock("tcp", 4, "0.0.0.0", 15001)], uid=1337,
                      bounding=[], spec={
                          "ports": [{"containerPort": 15001, "protocol": "TCP"}],
                          "securityContext": {"runAsUser": 1337, "runAsGroup": 1337}})
    app = Container("app", "httpd", [Sock("tcp", 6, "::", 8080, v6only=1)], spec={
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}})
    return stage_family_pod(stage, cgroups, "sidecar-first", [proxy, app], labels())


def httpd_with_child(stage: Stage, cgroups: KubepodsCgroups) -> StagedFamilyPod:
    """Root httpd on [::]:80 (it needs NET_BIND_SERVICE, which the spec adds), its child nc
    on 0.0.0.0:5000, which then drops to uid 1000 (NET_BIND_SERVICE left in its bounding
    set only)."""
    web = Container("web", "httpd", [Sock("tcp", 6, "::", 80, v6only=0)],
                    children=[("nc", [Sock("tcp", 4, "0.0.0.0", 5000)], 1000)],
                    spec={"ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                          "securityContext": {
                              "capabilities": {"add": ["NET_BIND_SERVICE"]}}})
    return stage_family_pod(stage, cgroups, "httpd-child", [web], labels())


def prefork(stage: Stage, cgroups: KubepodsCgroups) -> StagedFamilyPod:
    """A root parent on 0.0.0.0:8080 and three workers sharing its socket, each its own comm."""
    server = Container("server", "prefork", [Sock("tcp", 4, "0.0.0.0", 8080)],
                       children=[("worker-a", [], None), ("worker-b", [], None),
                                 ("worker-c", [], None)],
                       spec={"ports": [{"containerPort": 8080, "protocol": "TCP"}],
                             "securityContext": {
                                 "capabilities": {"add": ["NET_BIND_SERVICE"]}}})
    return stage_family_pod(stage, cgroups, "prefork", [server], labels())


def opaudit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_NAME", "KUBECONFIG")}
    return cli_run.opaudit(*args, env=env, timeout=180)


def spec_file(pod: StagedFamilyPod, tmp_path: Path, *, status: bool = True) -> str:
    manifest = dict(pod.manifest)
    if not status:
        manifest.pop("status")
    path = tmp_path / f"{pod.name}.json"
    path.write_text(json.dumps(manifest))
    return str(path)


def report_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode in (0, 1), result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def findings(report: dict[str, Any], rule: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["rule"] == rule]


def assert_one_per_rule_container_subject(report: dict[str, Any]) -> None:
    keys = Counter((f["rule"], f["container"], f["subject"]) for f in report["findings"])
    assert [k for k, n in keys.items() if n > 1] == []


# --- item 1: the pid's container, by its cgroup ---------------------------------------------


def test_pid_with_pod_spec_is_judged_as_the_container_its_cgroup_names(
    stage: Stage, cgroups: KubepodsCgroups, tmp_path: Path
) -> None:
    pod = sidecar_first(stage, cgroups)
    app = pod.container("app")
    assert cgroup_names(app.pids[0], app.container_id)  # the oracle: /proc/PID/cgroup
    assert ss_owners(pod.netns)[("tcp", 8080)] == {app.pids[0]}  # and ss

    report = report_of(opaudit("diagnose", "--pid", str(app.pids[0]), "--pod-spec",
                               spec_file(pod, tmp_path), "-o", "json"))
    assert {t["container"]["name"] for t in report["targets"]} == {"app"}
    rules = {f["rule"] for f in report["findings"]}
    assert "ListenerFamilyMismatch" in rules  # the real HIGH
    assert not rules & {"RunAsUserMismatch", "RunAsGroupMismatch", "DeclaredPortNotListening",
                        "UndeclaredListener"}  # the sidecar's settings and port are not its

    # --container app: the sidecar's socket is still the sidecar's, not a stranger's.
    report = report_of(opaudit("diagnose", "--pod-spec", spec_file(pod, tmp_path),
                               "--container", "app", "-o", "json"))
    (target,) = report["targets"]
    assert "UndeclaredListener" in target["passed"] and target["incomplete"] == []


def test_pid_with_a_spec_naming_no_container_id_and_two_containers_is_one_line(
    stage: Stage, cgroups: KubepodsCgroups, tmp_path: Path
) -> None:
    pod = sidecar_first(stage, cgroups)
    result = opaudit("diagnose", "--pid", str(pod.container("app").pids[0]), "--pod-spec",
                     spec_file(pod, tmp_path, status=False))
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "istio-proxy, app" in line and "--container" in line and "Traceback" not in line


def test_container_naming_another_container_than_the_cgroup_is_one_line(
    stage: Stage, cgroups: KubepodsCgroups, tmp_path: Path
) -> None:
    pod = sidecar_first(stage, cgroups)
    result = opaudit("diagnose", "--pid", str(pod.container("app").pids[0]), "--pod-spec",
                     spec_file(pod, tmp_path), "--container", "istio-proxy")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "'app'" in line and "'istio-proxy'" in line


# --- items 2 and 4: the container's listeners, whichever process holds them ---------------


def test_a_child_listener_is_judged_and_the_parents_port_keeps_net_bind_service(
    stage: Stage, cgroups: KubepodsCgroups, tmp_path: Path
) -> None:
    pod = httpd_with_child(stage, cgroups)
    httpd, nc = pod.container("web").pids
    owners = ss_owners(pod.netns)
    assert owners[("tcp", 5000)] == {nc} and httpd in owners[("tcp", 80)]

    for args in (["--pid", str(httpd)], []):  # the parent's pid, or the spec alone
        report = report_of(opaudit("diagnose", *args, "--pod-spec", spec_file(pod, tmp_path),
                                   "-o", "json"))
        assert {t["pid"] for t in report["targets"]} == {httpd, nc}
        # httpd binds :80 below ip_unprivileged_port_start: dropping the capability breaks it,
        # and the `add` gives it to httpd though nc (uid 1000) holds it only in its bounding set.
        assert findings(report, "NetBindServiceUnneeded") == []
        assert findings(report, "CapabilityAddedButIneffective") == []
        (undeclared,) = findings(report, "UndeclaredListener")
        assert undeclared["subject"] == "tcp/5000"
        assert undeclared["pids"] == [nc] and undeclared["comms"] == ["nc"]  # its holder
        assert f"nc (pid {nc})" in undeclared["message"]
        assert all("UndeclaredListener" not in t["passed"] for t in report["targets"])
        (root,) = findings(report, "RunsAsRoot")
        assert root["pids"] == [httpd] and root["comms"] == ["httpd"]
        (unconfined,) = findings(report, "SeccompUnconfined")
        assert unconfined["pids"] == sorted([httpd, nc]) and unconfined["comms"] == ["httpd", "nc"]
        assert unconfined["message"].startswith(f"Each of httpd, nc (pids {min(httpd, nc)}, ")
        assert_one_per_rule_container_subject(report)


def test_a_listener_held_by_no_container_of_the_pod_is_unevaluated_with_the_reason(
    stage: Stage, cgroups: KubepodsCgroups, tmp_path: Path
) -> None:
    pod = prefork(stage, cgroups)
    stray = stage.spawn([Sock("tcp", 4, "0.0.0.0", 7070)], netns=pod.netns, comm="stray")
    assert ss_owners(pod.netns)[("tcp", 7070)] == {stray.pid}
    report = report_of(opaudit("diagnose", "--pod-spec", spec_file(pod, tmp_path), "-o", "json"))
    assert findings(report, "UndeclaredListener") == []
    for target in report["targets"]:
        assert "UndeclaredListener" not in target["passed"]
        (entry,) = [u for u in target["unevaluated"] if u["rule"] == "UndeclaredListener"]
        reason = " ".join(m["reason"] for m in entry["missing"])
        assert f"tcp 0.0.0.0:7070 held by stray (pid {stray.pid})" in reason


# --- item 3: one finding per rule, container and subject ----------------------------------


def test_a_prefork_server_is_one_finding_per_rule_naming_every_pid_and_comm(
    stage: Stage, cgroups: KubepodsCgroups, tmp_path: Path
) -> None:
    pod = prefork(stage, cgroups)
    server = pod.container("server")
    assert ss_owners(pod.netns)[("tcp", 8080)] == set(server.pids)  # ss: all four hold it
    assert all(cgroup_names(pid, server.container_id) for pid in server.pids)

    report = report_of(opaudit("diagnose", "--pod-spec", spec_file(pod, tmp_path), "-o", "json"))
    assert_one_per_rule_container_subject(report)
    for rule in CONTAINER_SETTINGS:
        (finding,) = findings(report, rule)
        assert finding["pids"] == sorted(server.pids)
        assert finding["comms"] == server.comms
        assert all(comm in finding["message"] for comm in server.comms)

    # Root on 8080 only: the capability the spec adds is unneeded, and says it was added.
    (unneeded,) = findings(report, "NetBindServiceUnneeded")
    assert unneeded["declared"] == "capabilities.add: [NET_BIND_SERVICE]"
    assert unneeded["subject"] == "NET_BIND_SERVICE"

    table = opaudit("diagnose", "--pod-spec", spec_file(pod, tmp_path))
    summary = table.stdout.strip().splitlines()[-1]
    counted = sum(int(word) for word in summary.replace(",", " ").split() if word.isdigit())
    assert counted == len(report["findings"]), summary
    for rule in CONTAINER_SETTINGS:
        assert table.stdout.count(f"  {rule}\n") == 1


# --- Events and policy reports: one per rule and container (and subject) -----------------


@pytest.fixture
def reports_server() -> Iterator[ApiServer]:
    with ApiServer(report_apis=(OPENREPORTS,)) as running:
        yield running


def test_run_once_posts_one_event_per_rule_and_container_and_one_result_per_subject(
    stage: Stage, cgroups: KubepodsCgroups, reports_server: ApiServer, tmp_path: Path
) -> None:
    pods = [sidecar_first(stage, cgroups), httpd_with_child(stage, cgroups),
            prefork(stage, cgroups)]
    for pod in pods:
        reports_server.add_pod(pod.manifest)
    kubeconfig = reports_server.write_kubeconfig(tmp_path / "kubeconfig")
    selector = f"app={labels()['app']}"
    result = opaudit("run", "--once", "--node", NODE, "-l", selector, "--kubeconfig",
                     kubeconfig, "--sink", "events", "--sink", "reports")
    assert result.returncode == 0, result.stderr
    cycle = [json.loads(line) for line in result.stderr.splitlines()
             if '"audit cycle"' in line]

    total = 0
    for pod in pods:
        report = report_of(opaudit("diagnose", "--pod-spec", spec_file(pod, tmp_path), "-o",
                                   "json"))
        expected = report["findings"]
        total += len(expected)
        events = [e for e in reports_server.events() if e["regarding"]["uid"] == pod.uid]
        per_rule = Counter(e["reason"] for e in events)
        containers_per_rule = Counter(rule for rule, _ in {(f["rule"], f["container"])
                                                           for f in expected})
        assert per_rule == containers_per_rule, pod.name
        (document,) = [r for r in reports_server.custom_objects(OPENREPORTS)
                       if r["metadata"]["name"] == f"opaudit-{pod.uid}"]
        failed = [r for r in document["results"] if r["result"] in ("fail", "warn")]
        assert len(failed) == len(expected), pod.name
        assert Counter((r["rule"], r["properties"]["container"]) for r in failed) == Counter(
            (f["rule"], f["container"]) for f in expected)
        for rule in CONTAINER_SETTINGS[1:]:  # no no_new_privs, caps kept, no seccomp
            for container in pod.containers:
                mine = [r for r in failed if r["rule"] == rule
                        and r["properties"]["container"] == container.name]
                notes = [e["note"] for e in events if e["reason"] == rule
                         and e["note"].startswith(f"container {container.name}:")]
                if container.uid is None:  # the root containers: each holds every one
                    (only,) = mine
                    assert all(comm in only["message"] for comm in container.comms)
                    (note,) = notes
                    assert all(comm in note for comm in container.comms)
    assert cycle and cycle[-1]["findings"] == total


# --- item 5: a container with no process, a spec that matches nothing ---------------------


def test_a_running_container_with_no_process_is_a_target_with_its_facts_unknown(
    stage: Stage, cgroups: KubepodsCgroups, tmp_path: Path
) -> None:
    pod = prefork(stage, cgroups)
    ghost = {"name": "ghost", "image": "registry.example/ghost:1"}
    pod.manifest["spec"]["containers"].append(ghost)
    pod.manifest["status"]["containerStatuses"].append({
        "name": "ghost", "ready": True, "restartCount": 0, "image": ghost["image"],
        "imageID": "", "containerID": "containerd://" + "ab" * 32,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}})
    report = report_of(opaudit("diagnose", "--pod-spec", spec_file(pod, tmp_path), "-o", "json"))
    (target,) = [t for t in report["targets"] if t["container"]["name"] == "ghost"]
    assert target["pid"] is None and target["capabilities"] is None
    (gap,) = target["incomplete"]
    assert "no process in this host's /proc is in its cgroup" in gap["reason"]
    assert "RunsAsRoot" in {u["rule"] for u in target["unevaluated"]}


def test_a_spec_for_this_node_that_matches_no_process_says_why(tmp_path: Path) -> None:
    node = os.uname().nodename
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "stale", "namespace": "default", "uid": "0" * 8 + "-0000-4000-"
                        "8000-" + "0" * 12},
           "spec": {"nodeName": node, "containers": [{"name": "app", "image": "x"}]},
           "status": {"phase": "Running", "containerStatuses": [{
               "name": "app", "ready": True, "restartCount": 0, "image": "x", "imageID": "",
               "containerID": "containerd://" + "cd" * 32,
               "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}
    path = tmp_path / "stale.json"
    path.write_text(json.dumps(pod))
    result = opaudit("diagnose", "--pod-spec", str(path))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert f"it runs on this node ({node})" in line and "cdcdcdcdcdcd" in line
    assert "run opaudit there" not in line


# --- item 15: small inconsistencies ------------------------------------------------------


def test_a_kernel_thread_is_not_judged_on_the_hosts_mounts() -> None:
    if Path("/proc/2/comm").read_text().strip() != "kthreadd":
        pytest.skip("pid 2 is not kthreadd in this PID namespace")
    report = report_of(opaudit("diagnose", "--pid", "2", "-o", "json"))
    assert findings(report, "RootFilesystemWritable") == []
    (target,) = report["targets"]
    (entry,) = [u for u in target["unevaluated"] if u["rule"] == "RootFilesystemWritable"]
    assert "kernel thread" in entry["missing"][0]["reason"]


def test_v6only_is_spelled_as_sockets_spells_it(stage: Stage, cgroups: KubepodsCgroups,
                                                tmp_path: Path) -> None:
    pod = sidecar_first(stage, cgroups)  # [::]:8080 with IPV6_V6ONLY=1
    pid = str(pod.container("app").pids[0])
    sockets = opaudit("sockets", "--pid", pid).stdout
    table = opaudit("diagnose", "--pid", pid, "--pod-spec", spec_file(pod, tmp_path)).stdout
    (in_sockets,) = [ln.split() for ln in sockets.splitlines() if "[::]:8080" in ln]
    rows = [ln.split() for ln in table.splitlines()]
    (in_table,) = [row for row in rows if row[:2] == ["tcp", "[::]:8080"]]
    assert "1" in in_sockets and in_table[2] == "1"


def test_metrics_count_findings_per_rule_container_and_subject(
    stage: Stage, cgroups: KubepodsCgroups
) -> None:
    from agent.audit import audit
    from agent.collect.procfs import ProcFS
    from agent.output.metrics import AgentMetrics
    from agent.output.metrics_sink import MetricsSink
    from agent.targets.requests import container_requests, declared_containers

    pod = prefork(stage, cgroups)
    report = audit(container_requests(declared_containers([pod.manifest]), ProcFS()))
    assert len(report.targets) == 4 and len(report.findings) == len(
        {(f.rule, f.container, f.subject) for f in report.findings})
    metrics = AgentMetrics()
    MetricsSink(metrics).publish(report)
    value = metrics.registry.get_sample_value(
        "opaudit_findings", {"rule": "RunsAsRoot", "severity": "high"})
    assert value == 1  # one container, four processes running as root
