"""A pod as the API shows it, with a real process in a real kubepods cgroup: for the tests
that run `opaudit run` or `diagnose --pod/-l` against the API test server."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

from cgroup_staging import KubepodsCgroups, cgroupfs_dir, systemd_scope
from kube.apiserver import ApiServer
from staging import Sock, Stage

from agent.audit import AuditRequest, audit
from agent.kube.podspec import declared_from_pod

NODE = "worker-1"
NAMESPACE = "spark-operator"
SELECTOR = "app.kubernetes.io/name=spark-operator"
SPARK_LABELS = {"app.kubernetes.io/name": "spark-operator",
                "app.kubernetes.io/component": "controller"}


@dataclass
class ApiPod:
    manifest: dict[str, Any]  # as the API test server holds it

    @property
    def uid(self) -> str:
        return str(self.manifest["metadata"]["uid"])

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


@dataclass
class StagedPod(ApiPod):
    pid: int


def running_pod(name: str, uid: str, labels: dict[str, str],
                containers: list[tuple[dict[str, Any], str]], node: str = NODE
                ) -> dict[str, Any]:
    """A running pod as the API shows it: each container's spec entry (its name and image
    at least) with the containerID its runtime gave it (`containerd://...`)."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid, "labels": labels},
        "spec": {"nodeName": node, "containers": [spec for spec, _ in containers]},
        "status": {
            "phase": "Running", "podIP": "192.0.2.10", "podIPs": [{"ip": "192.0.2.10"}],
            "containerStatuses": [{
                "name": spec["name"], "ready": True, "restartCount": 0,
                "image": spec["image"], "imageID": "", "containerID": container_id,
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
                for spec, container_id in containers]},
    }


def pod_manifest(name: str, uid: str, container_id: str, labels: dict[str, str],
                 node: str = NODE, port: int = 8080) -> dict[str, Any]:
    container = {
        "name": "spark-operator-controller",
        "image": "ghcr.io/kubeflow/spark-operator/controller:2.1.0",
        "ports": [{"name": "metrics", "containerPort": port, "protocol": "TCP"}],
        "securityContext": {
            "runAsUser": 1000, "runAsNonRoot": True, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}}
    return running_pod(name, uid, labels, [(container, container_id)], node)


def stage_pod(stage: Stage, cgroups: KubepodsCgroups, name: str, *,
              labels: dict[str, str] = SPARK_LABELS, v1: bool = False,
              node: str = NODE) -> StagedPod:
    """A real listener (uid 1000, NET_BIND_SERVICE kept, no no_new_privs, no seccomp: drift
    from the manifest's securityContext) in its own netns and a kubepods cgroup:
    v2 systemd driver + containerd, or (v1=True) v1 cgroupfs driver + docker."""
    netns = stage.netns()
    staged = stage.spawn([Sock("tcp", 4, "0.0.0.0", 8080)], netns=netns, uid=1000,
                         bounding=["NET_BIND_SERVICE"], comm="spark-operator")
    uid, container_id = str(uuid.uuid4()), os.urandom(32).hex()
    if v1:
        cgroups.place_v1(staged.pid, cgroupfs_dir(uid, container_id, qos="burstable"))
        status_id = f"docker://{container_id}"
    else:
        cgroups.place_v2(staged.pid, systemd_scope(uid, container_id, qos="besteffort"))
        status_id = f"containerd://{container_id}"
    return StagedPod(pod_manifest(name, uid, status_id, labels, node=node), staged.pid)


def expected_rules(pod: StagedPod) -> set[str]:
    """What opaudit's engine finds for this pod, computed in-process for comparison."""
    report = audit([AuditRequest(pod.pid, declared_from_pod(pod.manifest))], node=NODE)
    return {f.rule for f in report.findings}


def events_on(server: ApiServer, uid: str) -> list[dict[str, Any]]:
    """The Events the API test server holds about the pod with this uid."""
    return [e for e in server.events() if e["regarding"].get("uid") == uid]
