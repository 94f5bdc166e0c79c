"""The harness's kubelet part (e2e/kubelet.py), checked on what containerd made of it: the
cgroup parent by QoS class, the pod's DNS, hostname and labels, hostNetwork, and the
emptyDir as the kubelet makes it. Read from the kernel and the container's own files, not
from the requests we sent."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from e2e.agreement import load_fixture, variant
from e2e.containerd import Containerd
from e2e.cri_pods import KubePod, run_pod
from e2e.prediction import assert_pod_agrees


def cgroup_of(pid: int, controller: str = "pids") -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return next(ln.split(":", 2)[2] for ln in f.read().splitlines()
                    if ln.split(":")[1] == controller)


def resources(requests: dict[str, str], limits: dict[str, str]) -> Any:
    def change(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][0]["resources"] = {"requests": requests, "limits": limits}

    return change


def test_the_cgroup_parent_follows_the_qos_class(
    containerd: Containerd, kube_pods: list[KubePod], tmp_path: Path
) -> None:
    cases = {"BestEffort": resources({}, {}),
             "Burstable": resources({"cpu": "100m"}, {}),
             "Guaranteed": resources({"cpu": "1", "memory": "64Mi"},
                                     {"cpu": "1", "memory": "64Mi"})}
    for qos_class, change in cases.items():
        pod = run_pod(containerd, variant(load_fixture("spark-operator-controller.yaml"),
                                          change))
        kube_pods.append(pod)
        assert pod.app.pid is not None
        # Guaranteed pods sit right under kubepods (cm/qos_container_manager_linux.go)
        qos = "" if qos_class == "Guaranteed" else f"/{qos_class.lower()}"
        parent = f"/{containerd.cgroup_top}/kubepods{qos}/pod{pod.uid}"
        assert cgroup_of(pod.app.pid) == f"{parent}/{pod.app.id}"
        assert cgroup_of(pod.sandbox_pid) == f"{parent}/{pod.sandbox_id}"
        assert pod.manifest["status"]["qosClass"] == qos_class
        assert_pod_agrees(pod, tmp_path)  # resources change nothing lint predicts


def test_dns_hostname_labels_and_the_emptydir_as_the_kubelet_sets_them(
    containerd: Containerd, kube_pods: list[KubePod], tmp_path: Path
) -> None:
    pod = run_pod(containerd, load_fixture("spark-operator-controller.yaml"))
    kube_pods.append(pod)
    assert pod.app.pid is not None
    root = f"/proc/{pod.app.pid}/root"
    with open(f"{root}/etc/resolv.conf") as f:
        resolv = f.read().split("\n")
    assert "nameserver 192.0.2.53" in resolv
    assert ("search spark-operator.svc.cluster.local svc.cluster.local cluster.local"
            in resolv)
    with open(f"{root}/etc/hostname") as f:
        assert f.read().strip() == pod.manifest["metadata"]["name"]
    assert containerd.cri is not None
    labels = containerd.cri.call("PodSandboxStatus", pod_sandbox_id=pod.sandbox_id).status.labels
    assert labels["io.kubernetes.pod.uid"] == pod.uid
    assert labels["app.kubernetes.io/component"] == "controller"
    # The emptyDir at /tmp: 0777 plus setgid, group fsGroup 185 (SetVolumeOwnership).
    tmp = os.stat(f"{root}/tmp")
    assert stat.S_IMODE(tmp.st_mode) == 0o2777 and tmp.st_gid == 185
    assert_pod_agrees(pod, tmp_path)


def test_a_host_network_pod_shares_the_nodes_netns(
    containerd: Containerd, kube_pods: list[KubePod], tmp_path: Path
) -> None:
    def host_network(pod: dict[str, Any]) -> None:
        pod["spec"]["hostNetwork"] = True
        # An ephemeral port: on the node's netns, a fixed one could be another test's.
        pod["spec"]["containers"][0]["args"] = ["--health-probe-bind-address=:0"]

    pod = run_pod(containerd, variant(load_fixture("spark-operator-controller.yaml"),
                                      host_network))
    kube_pods.append(pod)
    assert pod.app.pid is not None
    node_netns = os.stat("/proc/self/ns/net").st_ino  # the test runs in the node's
    assert os.stat(f"/proc/{pod.app.pid}/ns/net").st_ino == node_netns
    # lint leaves the node's ip_unprivileged_port_start unknown; the rest must hold.
    assert_pod_agrees(pod, tmp_path)
