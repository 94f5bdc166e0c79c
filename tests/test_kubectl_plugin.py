"""`kubectl opaudit diagnose`: pod -> node -> agent resolved by the real kubectl against the
API test server, the exec request it makes, and one line and exit 2 for each error. Also
`opaudit diagnose --pod-spec` alone (what the plugin's `kubectl debug node` path runs)."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml
from agent_run import OPAUDIT, REPO
from cgroup_staging import KubepodsCgroups
from kube.apiserver import ApiServer
from manifests import agent_pod, need
from pod_staging import NAMESPACE, NODE, expected_rules, stage_pod
from staging import Stage

PLUGIN = REPO / ".venv" / "bin" / "kubectl-opaudit"
TARGET = "so-controller-0"


@pytest.fixture
def cluster(server: ApiServer, tmp_path: Path) -> Iterator[tuple[ApiServer, dict[str, str]]]:
    """The API test server and an environment whose kubectl (and so the plugin) uses it."""
    need("kubectl")
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    env = {**os.environ, "KUBECONFIG": kubeconfig, "PATH": f"{PLUGIN.parent}:{os.environ['PATH']}"}
    yield server, env


def target_pod(node: str | None = NODE) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{
        "name": "spark-operator-controller",
        "image": "ghcr.io/kubeflow/spark-operator/controller:2.1.0"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": TARGET, "namespace": NAMESPACE,
                         "uid": "11111111-1111-4111-8111-111111111111"},
            "spec": spec, "status": {"phase": "Running" if node else "Pending"}}


def plugin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # As a user types it: kubectl finds kubectl-opaudit on PATH.
    return subprocess.run(["kubectl", "opaudit", "diagnose", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    (line,) = result.stderr.splitlines()
    assert line.startswith("kubectl-opaudit: ") and "Traceback" not in result.stderr
    return line


def exec_requests(server: ApiServer) -> list[tuple[str, dict[str, list[str]]]]:
    return [(r.path, parse_qs(r.query)) for r in server.request_log if r.path.endswith("/exec")]


def test_no_such_pod(cluster: tuple[ApiServer, dict[str, str]]) -> None:
    _, env = cluster
    line = one_error_line(plugin(env, "nope", "-n", NAMESPACE))
    assert line == f"kubectl-opaudit: no such pod: {NAMESPACE}/nope"


def test_a_pod_not_scheduled_yet(cluster: tuple[ApiServer, dict[str, str]]) -> None:
    server, env = cluster
    server.add_pod(target_pod(node=None))
    line = one_error_line(plugin(env, TARGET, "-n", NAMESPACE))
    assert f"pod {NAMESPACE}/{TARGET} is not scheduled on a node yet" in line


def test_no_agent_on_the_pods_node_offers_the_debug_node_path(
    cluster: tuple[ApiServer, dict[str, str]],
) -> None:
    server, env = cluster
    server.add_pod(target_pod())
    server.add_pod(agent_pod("worker-2"))  # an agent elsewhere does not count
    server.add_pod(agent_pod(NODE, phase="Pending"))  # nor one that is not running
    line = one_error_line(plugin(env, TARGET, "-n", NAMESPACE))
    assert f"no opaudit agent runs on node {NODE}" in line
    assert "--debug-node --image" in line
    assert exec_requests(server) == []
    line = one_error_line(plugin(env, TARGET, "-n", NAMESPACE, "--debug-node"))
    assert "--debug-node needs --image" in line


def test_resolves_pod_node_agent_and_execs_diagnose_in_that_agent(
    cluster: tuple[ApiServer, dict[str, str]],
) -> None:
    server, env = cluster
    server.add_pod(target_pod())
    server.add_pod(agent_pod("worker-2"))
    here = server.add_pod(agent_pod(NODE))
    result = plugin(env, TARGET, "-n", NAMESPACE, "-o", "json", "--fail-on", "medium")
    # The test server serves no exec stream (no SPDY/WebSocket upgrade): kubectl's error is
    # the plugin's one line. What matters here is the request kubectl made.
    line = one_error_line(result)
    assert f"cannot exec into the agent pod opaudit/{here['metadata']['name']}" in line
    (path, query), *_ = exec_requests(server)
    assert path == f"/api/v1/namespaces/opaudit/pods/{here['metadata']['name']}/exec"
    assert query["container"] == ["opaudit"]
    assert query["command"] == ["opaudit", "diagnose", "-o", "json", "--fail-on", "medium",
                                "--pod", f"{NAMESPACE}/{TARGET}"]


def test_rbac_forbidding_exec_is_one_line(cluster: tuple[ApiServer, dict[str, str]]) -> None:
    server, env = cluster
    server.add_pod(target_pod())
    here = server.add_pod(agent_pod(NODE))
    server.inject("*", r"/exec$", status=403, count=10)
    line = one_error_line(plugin(env, TARGET, "-n", NAMESPACE))
    assert f"RBAC forbids exec into the agent pod opaudit/{here['metadata']['name']}" in line
    assert "pods/exec" in line


def test_rbac_forbidding_the_pod_read_is_one_line(
    cluster: tuple[ApiServer, dict[str, str]],
) -> None:
    server, env = cluster
    server.add_pod(target_pod())
    server.inject("GET", rf"/namespaces/{NAMESPACE}/pods/{TARGET}$", status=403, count=10)
    line = one_error_line(plugin(env, TARGET, "-n", NAMESPACE))
    assert "(Forbidden)" in line


def test_diagnose_pod_spec_alone_audits_that_pods_containers_on_this_node(
    stage: Stage, cgroups: KubepodsCgroups, tmp_path: Path,
) -> None:
    pod = stage_pod(stage, cgroups, "so-controller-debug-node")
    spec = tmp_path / "pod.json"
    spec.write_text(json.dumps(pod.manifest))
    result = subprocess.run([str(OPAUDIT), "diagnose", "--pod-spec", str(spec), "-o", "json",
                             "--fail-on", "critical"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [t["pid"] for t in report["targets"]] == [pod.pid]
    assert {f["rule"] for f in report["findings"]} == expected_rules(pod)
    # A pod none of whose containers runs here: exit 2 and one error line.
    gone = copy.deepcopy(pod.manifest)
    gone["status"]["containerStatuses"][0]["containerID"] = "containerd://" + "0" * 64
    spec.write_text(yaml.safe_dump(gone))
    result = subprocess.run([str(OPAUDIT), "diagnose", "--pod-spec", str(spec)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("opaudit: ")]
    assert len(errors) == 1 and "this host's /proc" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def free_loopback_port() -> int:
    """A loopback port nothing listens on: bound, then closed, so a connect is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_api_server_is_kubectls_own_sentence(tmp_path: Path) -> None:
    need("kubectl")
    port = free_loopback_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
        "users": [{"name": "gone", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}]}))
    env = {**os.environ, "KUBECONFIG": str(kubeconfig),
           "PATH": f"{PLUGIN.parent}:{os.environ['PATH']}"}
    # The oracle: kubectl itself, whose stderr leads with klog lines, then its sentence.
    direct = subprocess.run(["kubectl", "get", "pod", TARGET, "-o", "json"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert "memcache.go" in direct.stderr.splitlines()[0]
    sentence = direct.stderr.strip().splitlines()[-1]
    assert sentence.startswith(f"The connection to the server 127.0.0.1:{port} was refused")
    line = one_error_line(plugin(env, TARGET, "-n", NAMESPACE))
    assert line == f"kubectl-opaudit: {sentence}"


def test_no_kubeconfig_says_so(tmp_path: Path) -> None:
    need("kubectl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    env.update(HOME=str(tmp_path), KUBECONFIG=str(tmp_path / "absent" / "config"),
               PATH=f"{PLUGIN.parent}:{os.environ['PATH']}")
    line = one_error_line(plugin(env, TARGET, "-n", NAMESPACE))
    assert line.startswith(f"kubectl-opaudit: no kubeconfig: KUBECONFIG={env['KUBECONFIG']} "
                           "does not exist; give --kubeconfig FILE or set KUBECONFIG")
    assert "memcache.go" not in line
    # A kubeconfig file with no cluster in it, and no KUBECONFIG: ~/.kube/config is read.
    del env["KUBECONFIG"]
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n")
    line = one_error_line(plugin(env, TARGET, "-n", NAMESPACE))
    assert line.startswith("kubectl-opaudit: no kubeconfig: ~/.kube/config names no cluster;")


def test_debug_node_without_image_is_refused_before_any_api_call(
    cluster: tuple[ApiServer, dict[str, str]],
) -> None:
    server, env = cluster
    server.add_pod(target_pod())
    line = one_error_line(plugin(env, TARGET, "-n", NAMESPACE, "--debug-node"))
    assert "--debug-node needs --image" in line
    assert server.request_log == []


def test_no_such_pod_names_the_namespace_searched(
    cluster: tuple[ApiServer, dict[str, str]],
) -> None:
    server, env = cluster
    server.add_pod(target_pod())  # in NAMESPACE, not in the context's
    line = one_error_line(plugin(env, TARGET))
    assert line == (f"kubectl-opaudit: no such pod: default/{TARGET} (the context's "
                    "namespace; give -n NAMESPACE for another)")
    subprocess.run(["kubectl", "config", "set-context", "--current", "--namespace=elsewhere"],
                   check=True, capture_output=True, timeout=60, env=env)
    line = one_error_line(plugin(env, TARGET))
    assert line.startswith(f"kubectl-opaudit: no such pod: elsewhere/{TARGET} ")


def test_help_documents_pod_output_fail_on_and_exit_status() -> None:
    result = subprocess.run([str(PLUGIN), "diagnose", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "POD the name of the pod to audit" in text
    assert "-o {table,json,yaml}, --output {table,json,yaml} report format" in text
    assert "exit 1 when a finding is at or above this severity" in text
    assert "exit status: 0 the audit ran and no finding is at or above --fail-on" in text
    assert "1 a finding is at or above --fail-on" in text
    assert "2 usage error, or the audit could not run" in text
