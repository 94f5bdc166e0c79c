"""`diagnose` as a user runs it against a cluster (the API test server) and real processes in
real kubepods cgroups: user mistakes are one line in their terms, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cli_run
import pytest
from cgroup_staging import KubepodsCgroups
from kube.apiserver import ApiServer
from pod_staging import NAMESPACE, NODE, SELECTOR, pod_manifest, stage_pod
from staging import Sock, Stage

ROOT = Path(__file__).resolve().parents[1]


def opaudit(*args: str, node_name: str | None = None) -> subprocess.CompletedProcess[str]:
    """No NODE_NAME and no KUBECONFIG but what the test gives."""
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_NAME", "KUBECONFIG")}
    if node_name is not None:
        env["NODE_NAME"] = node_name
    return cli_run.opaudit(*args, env=env, timeout=120)


def one_line_exit_2(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "internal error" not in line and "Traceback" not in line
    return line


@pytest.fixture
def kubeconfig(server: ApiServer, tmp_path: Path) -> str:
    return server.write_kubeconfig(tmp_path / "kubeconfig")


def targets(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    report: dict[str, Any] = json.loads(result.stdout)
    found: list[dict[str, Any]] = report["targets"]
    return found


# --- user mistakes against the API ---------------------------------------------------------


def test_a_pod_that_does_not_exist(kubeconfig: str) -> None:
    line = one_line_exit_2(opaudit("diagnose", "--pod", f"{NAMESPACE}/nosuch",
                                   "--kubeconfig", kubeconfig))
    assert line == f"opaudit: pod {NAMESPACE}/nosuch not found"


def test_a_selector_the_api_server_cannot_parse(kubeconfig: str) -> None:
    line = one_line_exit_2(opaudit("diagnose", "-l", "bad!!", "--kubeconfig", kubeconfig))
    assert line.startswith("opaudit: -l 'bad!!': not a label selector: ")


@pytest.mark.parametrize("ref", ["nsonly", "a/b/c", "/name", "ns/", "NS/name", "ns/na me"])
def test_pod_format_is_checked_before_the_kubeconfig(ref: str, tmp_path: Path) -> None:
    line = one_line_exit_2(opaudit("diagnose", "--pod", ref,
                                   "--kubeconfig", str(tmp_path / "absent")))
    assert f"--pod: takes NAMESPACE/NAME, not {ref!r}" in line


def test_a_kubeconfig_that_does_not_exist(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    line = one_line_exit_2(opaudit("diagnose", "-l", "a=b", "--kubeconfig", str(absent)))
    assert line == f"opaudit: kubeconfig {absent}: No such file or directory"


def test_no_api_configuration_at_all(tmp_path: Path) -> None:
    env_home = {"HOME": str(tmp_path)}  # no ~/.kube/config
    result = subprocess.run([sys.executable, "-m", "agent.cli", "diagnose", "-l", "a=b"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={"PATH": os.environ["PATH"], **env_home})
    line = one_line_exit_2(result)
    assert "no Kubernetes API configuration" in line and "~/.kube/config does not exist" in line


# --- diagnose -l ---------------------------------------------------------------------------


def test_no_pod_matching_says_so(kubeconfig: str) -> None:
    line = one_line_exit_2(opaudit("diagnose", "-l", "app=none", "-n", NAMESPACE,
                                   "--kubeconfig", kubeconfig, node_name=NODE))
    assert line == (f"opaudit: no pod matches -l 'app=none' in namespace {NAMESPACE} "
                    f"on node {NODE}")


def test_without_a_node_name_the_local_pods_are_audited_and_named(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: str
) -> None:
    here = stage_pod(stage, cgroups, "so-here")
    # Matches the selector, runs on another node: no process of it on this host.
    elsewhere = pod_manifest("so-elsewhere", "7d1e1e0c-0000-4000-8000-000000000002",
                             "containerd://" + "ab" * 32, here.manifest["metadata"]["labels"],
                             node="worker-2")
    server.add_pod(here.manifest)
    server.add_pod(elsewhere)
    result = opaudit("diagnose", "-l", SELECTOR, "--kubeconfig", kubeconfig, "-o", "json",
                     "--fail-on", "critical")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the other node's pod is not this host's business
    report = json.loads(result.stdout)
    assert report["node"] == NODE
    assert [(t["pid"], t["pod"]["name"]) for t in report["targets"]] == [(here.pid, "so-here")]


def test_a_named_pod_on_another_node_is_one_line(server: ApiServer, kubeconfig: str) -> None:
    server.add_pod(pod_manifest("so-elsewhere", "7d1e1e0c-0000-4000-8000-000000000003",
                                "containerd://" + "cd" * 32, {"app": "x"}, node="worker-2"))
    line = one_line_exit_2(opaudit("diagnose", "--pod", f"{NAMESPACE}/so-elsewhere",
                                   "--kubeconfig", kubeconfig))
    assert "so-elsewhere has no process in this host's /proc: it runs on node worker-2" in line


def test_warnings_name_the_pod(stage: Stage, cgroups: KubepodsCgroups, server: ApiServer,
                               kubeconfig: str) -> None:
    here = stage_pod(stage, cgroups, "so-here")
    gone = pod_manifest("so-gone", "7d1e1e0c-0000-4000-8000-000000000004",
                        "containerd://" + "ef" * 32, here.manifest["metadata"]["labels"])
    server.add_pod(here.manifest)
    server.add_pod(gone)  # on this node by the API, but none of its processes is here
    result = opaudit("diagnose", "-l", SELECTOR, "--kubeconfig", kubeconfig, "-o", "json",
                     "--fail-on", "critical", node_name=NODE)
    assert result.returncode == 0, result.stderr
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("opaudit: warning: no process of this container found")
    assert f"pod={NAMESPACE}/so-gone" in warning
    assert "container=spark-operator-controller" in warning
    # The container the status says is running is a target still, its facts unknown and why.
    # In the API's list order (by name, as the API server's cache lists).
    assert sorted(t["pod"]["name"] for t in targets(result)) == ["so-gone", "so-here"]
    (gone_target,) = [t for t in targets(result) if t["pod"]["name"] == "so-gone"]
    assert gone_target["pid"] is None
    assert gone_target["passed"] == ["EmptyDirWithoutSizeLimit"]  # the spec's alone
    (gap,) = gone_target["incomplete"]
    assert gap["fact"] == "process" and "no process in this host's /proc" in gap["reason"]


def test_container_picks_one_container_of_the_pods(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: str
) -> None:
    here = stage_pod(stage, cgroups, "so-here")
    server.add_pod(here.manifest)
    ok = opaudit("diagnose", "--pod", f"{NAMESPACE}/so-here", "--container",
                 "spark-operator-controller", "--kubeconfig", kubeconfig, "-o", "json",
                 "--fail-on", "critical")
    assert [t["pid"] for t in targets(ok)] == [here.pid], ok.stderr
    line = one_line_exit_2(opaudit("diagnose", "--pod", f"{NAMESPACE}/so-here", "--container",
                                   "sidecar", "--kubeconfig", kubeconfig))
    assert line == "opaudit: no running container named 'sidecar' in the 1 selected pod"


# --- diagnose --pid ------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "words"), [
    (["-n", "default"], "-n NAMESPACE limits -l"),
    (["--container", "app"], "--container picks a container of --pod-spec, --pod or -l"),
])
def test_options_that_would_be_ignored_with_pid(extra: list[str], words: str) -> None:
    line = one_line_exit_2(opaudit("diagnose", "--pid", str(os.getpid()), *extra))
    assert words in line


def test_a_repeated_pid_is_audited_once(stage: Stage) -> None:
    proc = stage.spawn([Sock("tcp", 4, "127.0.0.1", 8080)], netns=stage.netns())
    result = opaudit("diagnose", "--pid", str(proc.pid), "--pid", str(proc.pid), "-o", "json",
                     "--fail-on", "critical")
    assert result.returncode == 0, result.stderr
    assert [t["pid"] for t in targets(result)] == [proc.pid]


def test_a_bad_pid_among_several_is_named_and_the_others_reported(stage: Stage) -> None:
    netns = stage.netns()
    first = stage.spawn([Sock("tcp", 4, "127.0.0.1", 8080)], netns=netns)
    second = stage.spawn([Sock("tcp", 4, "127.0.0.1", 8081)], netns=netns)
    absent = 4_000_000_000  # above pid_max (at most 2**22): never a process
    result = opaudit("diagnose", "--pid", str(first.pid), "--pid", str(absent), "--pid",
                     str(second.pid), "-o", "json", "--fail-on", "critical")
    assert result.returncode == 2
    assert [t["pid"] for t in targets(result)] == [first.pid, second.pid]
    (line,) = result.stderr.splitlines()
    assert line == f"opaudit: process {absent} does not exist (or exited): not audited"


def test_no_process_here_is_one_line_without_warnings(server: ApiServer, kubeconfig: str) -> None:
    for n in range(2):
        server.add_pod(pod_manifest(f"so-{n}", f"7d1e1e0c-0000-4000-8000-00000000001{n}",
                                    "containerd://" + f"{n}e" * 32, {"app": "x"}, node="worker-2"))
    line = one_line_exit_2(opaudit("diagnose", "-l", "app=x", "--kubeconfig", kubeconfig))
    assert line == ("opaudit: no process of the 2 running containers of the selected pods is in "
                    "this host's /proc (pods on node worker-2): on their node, opaudit needs "
                    "the host's PID namespace (hostPID) to see them")
