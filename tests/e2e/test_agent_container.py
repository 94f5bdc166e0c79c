"""The agent in a real container built by scripts/image, with the DaemonSet's own pod
settings (rendered by `kubectl kustomize daemonset/`): its capabilities and no_new_privs as
the kernel shows them, `diagnose` of a played Spark Operator pod from inside equal to the
same diagnose from the host, and `run --once` posting Events to the API test server."""

from __future__ import annotations

import copy
import ctypes
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from agent_run import OPAUDIT
from cgroup_staging import KubepodsCgroups
from e2e.podman import cgroups_naming, remove_pod_cgroups
from e2e.podman_pod import (
    PODMAN_ENV,
    REPO,
    build_image,
    main_pid,
    podman,
    run_args,
    unique_name,
)
from fixture_data import pod_fixture
from kube.apiserver import ApiServer
from manifests import agent_pod, by_kind, kustomize
from pod_staging import NODE, SELECTOR, events_on, expected_rules, stage_pod
from staging import Sock, Stage

from agent.collect.sockets import scan_socket_owners

PLUGIN = REPO / ".venv" / "bin" / "kubectl-opaudit"
AGENT_CAPS = {"cap_sys_ptrace", "cap_dac_read_search", "cap_sys_admin"}
CLONE_NEWNET = 0x40000000
SPARK_FIXTURE = "spark-operator-controller.yaml"
# The played target: the fixture's securityContext on a stand-in process that listens where
# the Spark Operator controller does (8080 metrics, 8081 probes), as uid 185 (the image's).
LISTENER = ("import socket, time\n"
            "for port in (8080, 8081):\n"
            "    s = socket.socket(socket.AF_INET6); s.bind(('::', port)); s.listen()\n"
            "    globals()[f's{port}'] = s\n"
            "time.sleep(3600)\n")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("podman") is None,
    reason="runs podman containers: needs root and podman (CI runs as root; "
           "scripts/image installs podman)")


@pytest.fixture(scope="module")
def image() -> str:
    return build_image()


@pytest.fixture(scope="module")
def agent_netns() -> Iterator[str]:
    """The agent pod's own network namespace (hostNetwork: false), loopback up."""
    stage = Stage()
    try:
        yield stage.netns()
    finally:
        stage.close()


@pytest.fixture(scope="module")
def agent(image: str, agent_netns: str) -> Iterator[str]:
    """The DaemonSet's container, running `sleep` as its main process: its kernel state is
    then what the runtime gave the container, not what opaudit narrows itself to."""
    template = by_kind(kustomize(), "DaemonSet")["spec"]["template"]
    name = unique_name()
    podman(*run_args(copy.deepcopy(template["spec"]), name=name, image=image, node=NODE,
                     netns=agent_netns, entrypoint=["sleep", "3600"]))
    try:
        yield name
    finally:
        podman("rm", "--force", "--time=0", name, check=False)


def decoded(hex_mask: str) -> set[str]:
    out = subprocess.run(["capsh", f"--decode={hex_mask}"], capture_output=True, text=True,
                         check=True).stdout.strip()
    names = out.split("=", 1)[1]
    return set(names.split(",")) if names else set()


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def in_container(container: str, *argv: str, stdin: str | None = None,
                 ) -> subprocess.CompletedProcess[str]:
    return podman("exec", *(["-i"] if stdin is not None else []), container, *argv,
                  input_text=stdin, check=False, timeout=180)


def test_the_container_runs_with_exactly_the_daemonsets_privileges(agent: str) -> None:
    pid = main_pid(agent)
    status = proc_status(pid)
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert decoded(status[field]) == AGENT_CAPS, field
    assert decoded(status["CapInh"]) == set() and decoded(status["CapAmb"]) == set()
    assert status["NoNewPrivs"] == "1" and status["Seccomp"].strip() == "2"
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid")  # hostPID
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")  # no hostNetwork
    root = next(line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                if line.split()[4] == "/")
    assert "ro" in root[5].split(",")
    # The real oracle of read-only: a write as the container's root fails, /tmp works.
    assert in_container(agent, "touch", "/probe").returncode != 0
    assert in_container(agent, "touch", "/tmp/probe").returncode == 0


def test_diagnose_self_inside_shows_the_three_capabilities_and_no_new_privs(agent: str) -> None:
    result = in_container(agent, "opaudit", "diagnose", "--self", "-o", "json",
                          "--fail-on", "critical")
    assert result.returncode == 0, result.stderr
    (target,) = json.loads(result.stdout)["targets"]
    expected = sorted(name.removeprefix("cap_").upper() for name in AGENT_CAPS)
    assert target["capabilities"]["effective"] == expected
    assert target["capabilities"]["bounding"] == expected
    assert target["capabilities"]["ambient"] == [] and target["capabilities"]["inheritable"] == []
    assert target["no_new_privs"] is True
    assert target["seccomp"] == "filter"
    assert target["identity"]["uid"]["effective"] == 0
    assert target["filesystem"]["root_readonly"] is True


@pytest.fixture
def spark_pod(image: str) -> Iterator[tuple[int, str]]:
    """The Spark Operator controller fixture, played with podman: its pid and manifest."""
    fixture = yaml.safe_load(pod_fixture(SPARK_FIXTURE).read_text())
    declared = fixture["spec"]["containers"][0]
    security = {**declared["securityContext"], "runAsUser": 185, "runAsGroup": 185}
    name = unique_name()
    played = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": fixture["metadata"]["labels"]},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": fixture["spec"]["securityContext"],
            "containers": [{
                "name": declared["name"], "image": image, "imagePullPolicy": "Never",
                "command": ["python3", "-c", LISTENER], "securityContext": security,
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        },
    }
    podman("kube", "play", "--network=none", "-", input_text=yaml.safe_dump(played))
    pod_id = podman("pod", "inspect", "--format", "{{.Id}}", name).stdout.strip()
    try:
        container = f"{name}-{declared['name']}"
        pid = main_pid(container)
        assert pid > 0
        yield pid, yaml.safe_dump(fixture)
    finally:
        podman("kube", "down", "-", input_text=yaml.safe_dump(played), check=False)
        remove_pod_cgroups(pod_id)  # podman 4.3 leaves the pod's empty cgroup behind
        assert cgroups_naming([pod_id]) == [], "the played pod's cgroup is left behind"


# Inside the container: the owners of the given sockets read by the BPF iterator, as JSON.
OWNERS_BY_BPF = (
    "import json, sys; from agent.collect.sockets import scan_socket_owners as scan; "
    "r = scan(json.loads(sys.argv[1]), int(sys.argv[2]), reader='bpf'); "
    "print(json.dumps([r.fd_reader, r.iterator_error, "
    "sorted([i, o.pid, o.fd] for i, h in r.owners.items() for o in h)]))")


def test_the_fd_iterator_loads_with_only_the_daemonsets_privileges(agent: str,
                                                                   stage: Stage) -> None:
    """bpf(2) under the runtime's default seccomp profile, with SYS_ADMIN as the only
    capability that allows it: the BPF iterator runs, and finds what /proc finds."""
    netns = stage.netns()
    listener = stage.spawn([Sock("tcp", 6, "::", 7401), Sock("udp", 4, "0.0.0.0", 7402)],
                           netns=netns, uid=1000, bounding=[])
    inodes = sorted(os.stat(f"/proc/{listener.pid}/fd/{fd}").st_ino for fd in listener.fds)
    ns_ino = os.stat(f"/proc/{listener.pid}/ns/net").st_ino
    inside = in_container(agent, "python3", "-c", OWNERS_BY_BPF, json.dumps(inodes), str(ns_ino))
    assert inside.returncode == 0, inside.stderr
    reader, error, owners = json.loads(inside.stdout)
    assert (reader, error) == ("bpf", None)
    host = scan_socket_owners(inodes, ns_ino, reader="proc")
    assert sorted([i, o.pid, o.fd] for i, h in host.owners.items() for o in h) == owners
    assert {o[1] for o in owners} == {listener.pid}


def test_diagnose_of_a_played_spark_pod_from_inside_equals_the_host_view(
    agent: str, spark_pod: tuple[int, str], tmp_path: Path,
) -> None:
    pid, manifest = spark_pod
    spec_file = tmp_path / "pod.yaml"
    spec_file.write_text(manifest)
    host = subprocess.run([str(OPAUDIT), "diagnose", "--pid", str(pid), "--pod-spec",
                           str(spec_file), "-o", "json", "--fail-on", "critical"],
                          capture_output=True, text=True, timeout=120)
    assert host.returncode == 0, host.stderr
    assert in_container(agent, "sh", "-c", "cat > /tmp/pod.yaml", stdin=manifest).returncode == 0
    inside = in_container(agent, "opaudit", "diagnose", "--pid", str(pid), "--pod-spec",
                          "/tmp/pod.yaml", "-o", "json", "--fail-on", "critical")
    assert inside.returncode == 0, inside.stderr
    host_report, inside_report = json.loads(host.stdout), json.loads(inside.stdout)
    assert inside_report["findings"] == host_report["findings"]
    assert inside_report["targets"] == host_report["targets"]
    (target,) = inside_report["targets"]
    assert target["incomplete"] == []  # the three capabilities were enough to read it all
    assert target["identity"]["uid"]["effective"] == 185
    assert {(sock["port"], sock["v6only"]) for sock in target["network"]["listeners"]} == {
        (8080, False), (8081, False)}
    assert inside_report["findings"], "the fixture's controller has known findings"


def start_in_netns(server: ApiServer, netns: str) -> None:
    """Bind the API test server inside the agent's netns: a thread enters it (setns is per
    thread) and creates the listening socket there, where it stays."""
    libc = ctypes.CDLL(None, use_errno=True)
    failure: list[str] = []

    def enter_and_start() -> None:
        with open(f"/run/netns/{netns}") as ns:
            if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                failure.append(os.strerror(ctypes.get_errno()))
                return
        server.start()

    thread = threading.Thread(target=enter_and_start)
    thread.start()
    thread.join()
    assert not failure, failure


def test_run_once_inside_the_container_posts_its_events(
    agent: str, agent_netns: str, stage: Stage, cgroups: KubepodsCgroups,
) -> None:
    pod = stage_pod(stage, cgroups, "so-controller-in-container")
    server = ApiServer()
    start_in_netns(server, agent_netns)
    try:
        server.add_pod(pod.manifest)
        kubeconfig = Path(server.write_kubeconfig(Path(f"/tmp/{agent}-kubeconfig")))
        text = kubeconfig.read_text()
        kubeconfig.unlink()
        assert in_container(agent, "sh", "-c", "cat > /tmp/kubeconfig", stdin=text).returncode == 0
        result = in_container(agent, "opaudit", "run", "--once", "-l", SELECTOR,
                              "--kubeconfig", "/tmp/kubeconfig")
        assert result.returncode == 0, result.stderr
        events = events_on(server, pod.uid)
        assert {e["reason"] for e in events} == expected_rules(pod)
        assert all(e["reportingInstance"] == NODE for e in events)  # NODE_NAME, as set
    finally:
        server.stop()


def test_kubectl_opaudit_execs_diagnose_in_the_agent_container_on_the_pods_node(
    agent: str, agent_netns: str, stage: Stage, cgroups: KubepodsCgroups, tmp_path: Path,
) -> None:
    """The whole one-shot path: the real kubectl resolves pod -> node -> agent against the
    API test server and execs over WebSocket; the server runs that command in the agent's
    real container (for the kubelet), where diagnose --pod reads the pod from the same API."""
    pod = stage_pod(stage, cgroups, "so-controller-exec")
    server = ApiServer()
    start_in_netns(server, agent_netns)
    commands: list[tuple[str, str, str, list[str]]] = []

    def exec_in_the_container(namespace: str, name: str, container: str,
                              command: list[str]) -> tuple[bytes, bytes, int]:
        commands.append((namespace, name, container, command))
        # KUBECONFIG stands in for the ServiceAccount token the kubelet would mount.
        ran = subprocess.run(["podman", "exec", "--env=KUBECONFIG=/tmp/kubeconfig", name,
                              *command], capture_output=True, timeout=180, env=PODMAN_ENV)
        return ran.stdout, ran.stderr, ran.returncode

    server.exec_handler = exec_in_the_container
    try:
        server.add_pod(pod.manifest)
        server.add_pod(agent_pod("worker-2"))
        server.add_pod(agent_pod(NODE, name=agent))
        kubeconfig = Path(server.write_kubeconfig(tmp_path / "kubeconfig"))
        assert in_container(agent, "sh", "-c", "cat > /tmp/kubeconfig",
                            stdin=kubeconfig.read_text()).returncode == 0
        # The user's kubectl runs where the server listens: in the agent's netns.
        env = {**os.environ, "KUBECONFIG": str(kubeconfig),
               "PATH": f"{PLUGIN.parent}:{os.environ['PATH']}"}
        results = {}
        for fail_on in ("high", "critical"):
            results[fail_on] = subprocess.run(
                ["ip", "netns", "exec", agent_netns, "kubectl", "opaudit", "diagnose",
                 pod.name, "-n", pod.manifest["metadata"]["namespace"], "-o", "json",
                 "--fail-on", fail_on],
                capture_output=True, text=True, timeout=300, env=env)
    finally:
        server.stop()
    spec = tmp_path / "pod.json"
    spec.write_text(json.dumps(pod.manifest))
    host = subprocess.run([str(OPAUDIT), "diagnose", "--pid", str(pod.pid), "--pod-spec",
                           str(spec), "-o", "json"], capture_output=True, text=True, timeout=120)
    host_report = json.loads(host.stdout)
    assert {f["rule"] for f in host_report["findings"]} == expected_rules(pod)
    for fail_on, result in results.items():
        via_plugin = json.loads(result.stdout)
        assert via_plugin["findings"] == host_report["findings"], result.stderr
        assert [t["pid"] for t in via_plugin["targets"]] == [pod.pid]
        # The exit status passes through: 1 at a finding at or above --fail-on, else 0.
        order = ["info", "low", "medium", "high", "critical"]
        above = [f for f in host_report["findings"]
                 if order.index(f["severity"]) >= order.index(fail_on)]
        assert result.returncode == (1 if above else 0), result.stderr
    assert results["high"].returncode == 1  # the staged pod has high findings
    ((namespace, name, container, command), *_) = commands
    assert (namespace, name, container) == ("opaudit", agent, "opaudit")
    assert command[-2:] == ["--pod", f"{pod.manifest['metadata']['namespace']}/{pod.name}"]
