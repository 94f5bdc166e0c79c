"""Real pod shapes on containerd: a sidecar listed first, a prefork server (a parent and three
workers), and a root parent below 1024 with a child listener above 1024. `diagnose
--pod-spec`, `diagnose --pid --pod-spec` and `run --once` each judge the right container,
once per container: one finding per rule, container and subject, naming every pid. Each
shape runs under containerd 1.x's defaults and 2.x's enable_unprivileged_ports, and `opaudit
lint`'s prediction for each container must hold for every one of its processes
(e2e/prediction.py).

The oracle: each process's container from its own `/proc/PID/cgroup` (the containerd ID the
CRI returned), and each listener's owners from `ss -tlneH` in the pod's netns (socket
inodes) matched with the inodes of each process's fds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from e2e.agreement import NODE, OPAUDIT, SELECTOR, load_fixture, variant, write_manifest
from e2e.containerd import RUNTIME_MODES, Containerd
from e2e.cri_pods import KubePod, run_pod
from e2e.prediction import assert_pod_agrees
from kube.apiserver import ApiServer

SIDECAR = "istio-proxy"
HARDENED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True, "runAsNonRoot": True, "runAsUser": 1337,
            "runAsGroup": 1337, "seccompProfile": {"type": "RuntimeDefault"}}


def sidecar_first(pod: dict[str, Any]) -> None:
    """The usual injected-sidecar order: the proxy first, the app second."""
    pod["metadata"]["name"] = "spark-operator-webhook-sidecar"
    pod["spec"]["containers"].insert(0, {
        "name": SIDECAR, "image": "docker.io/istio/proxyv2:1.24.0",
        "args": ["proxy", "--health-probe-bind-address=:15021"],
        "ports": [{"containerPort": 15021, "name": "health", "protocol": "TCP"}],
        "securityContext": HARDENED})


def prefork(pod: dict[str, Any]) -> None:
    pod["metadata"]["name"] = "spark-operator-controller-prefork"
    pod["spec"]["containers"][0]["env"] = [{"name": "OPLISTEN_WORKERS", "value": "3"}]


def root_parent_with_child(pod: dict[str, Any]) -> None:
    """httpd-like: root binds 80 (NET_BIND_SERVICE added and used), its child listens on 5000."""
    pod["metadata"]["name"] = "spark-operator-controller-httpd"
    [container] = pod["spec"]["containers"]
    container["args"] = ["--health-probe-bind-address=:80"]
    container["env"] = [{"name": "OPLISTEN_CHILD_PORT", "value": "5000"}]
    container["ports"] = [{"containerPort": 80, "name": "http", "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        container[probe]["httpGet"]["port"] = 80
    container["securityContext"] = {
        "allowPrivilegeEscalation": False, "runAsUser": 0, "runAsNonRoot": False,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"}}


SHAPES = {
    "sidecar-first": ("spark-operator-webhook.yaml", sidecar_first),
    "prefork": ("spark-operator-controller.yaml", prefork),
    "root-parent-child-listener": ("spark-operator-controller.yaml", root_parent_with_child),
}


def container_processes(pod: KubePod) -> dict[str, set[int]]:
    """The oracle: every process whose own cgroup names the container's containerd ID."""
    found: dict[str, set[int]] = {name: set() for name in pod.containers}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
        except OSError:
            continue
        for name, container in pod.containers.items():
            if f"/{container.id}\n" in cgroup:
                found[name].add(int(entry.name))
    return found


def listener_owners(pod: KubePod, pids: set[int]) -> dict[int, set[int]]:
    """port -> the pids holding a listening TCP socket on it (ss inodes, /proc fds)."""
    out = subprocess.run(["nsenter", f"--net={pod.netns}", "ss", "-tlneH"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    by_inode = {}
    for line in out.splitlines():
        port = int(line.split()[3].rsplit(":", 1)[1])
        by_inode[int(re.search(r"ino:(\d+)", line)[1])] = port  # type: ignore[index]
    owners: dict[int, set[int]] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in by_inode:
                    owners.setdefault(by_inode[inode], set()).add(pid)
    return owners


def opaudit_json(*args: str) -> dict[str, Any]:
    result = subprocess.run([str(OPAUDIT), *args, "-o", "json", "--fail-on", "critical"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def assert_judged_per_container(report: Mapping[str, Any], processes: dict[str, set[int]],
                                only: str | None = None) -> None:
    """Each target is in the container its cgroup names; each finding is one per rule,
    container and subject, and names pids of that container only."""
    expected = {n: p for n, p in processes.items() if only in (None, n)}
    targets: dict[str, set[int]] = {}
    for target in report["targets"]:
        targets.setdefault(target["container"]["name"], set()).add(target["pid"])
    assert targets == expected
    keys = Counter((f["rule"], f["container"], f.get("subject", "")) for f in report["findings"])
    assert [k for k, n in keys.items() if n > 1] == []
    for finding in report["findings"]:
        assert set(finding["pids"]) <= expected[finding["container"]]


@pytest.fixture(params=[(s, m) for s in SHAPES for m in RUNTIME_MODES],
                ids=lambda p: "-".join(p))
def shape(request: pytest.FixtureRequest, kube_pods: list[KubePod]) -> KubePod:
    name, mode = request.param
    runtime: Containerd = request.getfixturevalue(RUNTIME_MODES[mode])
    fixture, change = SHAPES[name]
    pod = run_pod(runtime, variant(load_fixture(fixture), change), node=NODE)
    kube_pods.append(pod)
    assert all(c.pid is not None for c in pod.containers.values()), pod.containers
    return pod


def test_diagnose_and_run_once_judge_each_container_once(
    shape: KubePod, server: ApiServer, tmp_path: Path
) -> None:
    processes = container_processes(shape)
    spec = write_manifest(shape.manifest, tmp_path, shape.uid)
    # The shapes are what they claim: counted by the oracle, not by opaudit.
    sizes = {name: len(pids) for name, pids in processes.items()}
    assert sizes in ({SIDECAR: 1, "spark-operator-webhook": 1}, {"spark-operator-controller": 4},
                     {"spark-operator-controller": 2})

    # lint's prediction of each container, against every one of its processes.
    assert_pod_agrees(shape, tmp_path)

    whole = opaudit_json("diagnose", "--pod-spec", str(spec))
    assert_judged_per_container(whole, processes)
    for name, pids in processes.items():
        for pid in pids:
            alone = opaudit_json("diagnose", "--pid", str(pid), "--pod-spec", str(spec))
            # --pid P: P's container, the one its cgroup names, never the first listed.
            assert {t["container"]["name"] for t in alone["targets"]} == {name}
            assert_judged_per_container(alone, processes, only=name)

    server.add_pod(shape.manifest)
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    once = subprocess.run([str(OPAUDIT), "run", "--once", "--node", NODE, "-l", SELECTOR,
                           "--kubeconfig", kubeconfig, "--sink", "stdout"],
                          capture_output=True, text=True, timeout=120)
    assert once.returncode == 0, once.stderr
    (report,) = [json.loads(line) for line in once.stdout.splitlines() if line.strip()]
    assert_judged_per_container(report, processes)
    subprocess.run([str(OPAUDIT), "run", "--once", "--node", NODE, "-l", SELECTOR,
                    "--kubeconfig", kubeconfig, "--sink", "events"], check=True,
                   capture_output=True, timeout=120)
    posted = Counter((e["reason"], e["note"].split(":", 1)[0]) for e in server.events())
    assert [k for k, n in posted.items() if n > 1] == []  # one Event per rule and container
    assert set(posted) == {(f["rule"], f"container {f['container']}")
                           for f in report["findings"]}


def test_the_root_parents_capability_is_needed_and_the_childs_listener_judged(
    containerd: Containerd, kube_pods: list[KubePod], tmp_path: Path
) -> None:
    pod = run_pod(containerd, variant(load_fixture("spark-operator-controller.yaml"),
                                      root_parent_with_child))
    kube_pods.append(pod)
    [pids] = container_processes(pod).values()
    owners = listener_owners(pod, pids)
    parent = pod.app.pid
    [child] = pids - {parent}
    assert owners == {80: {parent}, 5000: {child}}  # the oracle: who listens where
    assert_pod_agrees(pod, tmp_path)  # both processes: root, NET_BIND_SERVICE, as predicted
    report = opaudit_json("diagnose", "--pod-spec",
                         str(write_manifest(pod.manifest, tmp_path, pod.uid)))
    rules = {(f["rule"], f.get("subject", "")): f for f in report["findings"]}
    # Port 80 needs NET_BIND_SERVICE: dropping it (the per-process advice) breaks the container.
    assert not any(rule == "NetBindServiceUnneeded" for rule, _ in rules)
    # The child's 5000 is judged (undeclared), never silently passed.
    assert rules[("UndeclaredListener", "tcp/5000")]["pids"] == [child]  # its holder
    # Root is one finding for the container, naming both processes.
    assert set(next(f for (r, _), f in rules.items() if r == "RunsAsRoot")["pids"]) == pids
