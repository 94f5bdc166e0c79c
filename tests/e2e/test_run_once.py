"""`opaudit run --once` against the API test server, on pods containerd's CRI started (each
with its pause sandbox), and on one pod in the systemd driver's layout, which only runc with
a hand-built spec can give here (see test_cri_runc.py for why)."""

from __future__ import annotations

import json
from pathlib import Path

from e2e.agreement import NODE, load_fixture, other_app, run_once, variant
from e2e.containerd import Containerd
from e2e.cri import SYSTEMD
from e2e.cri_pods import KubePod, run_pod
from e2e.lane import Lane
from e2e.pods import CriPod, start_pod
from e2e.prediction import assert_pod_agrees
from kube.apiserver import ApiServer


def cgroup_lines(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cgroup") as f:
        return f.read().splitlines()


def events_by_pod(server: ApiServer) -> dict[str, set[tuple[str, str]]]:
    by_pod: dict[str, set[tuple[str, str]]] = {}
    for event in server.events():  # each was validated against the events.k8s.io/v1 schema
        by_pod.setdefault(event["regarding"]["uid"], set()).add((event["reason"], event["type"]))
        assert event["reportingInstance"] == NODE
    return by_pod


def test_run_once_maps_containerd_pods_and_posts_events_for_exactly_those_containers(
    containerd: Containerd, kube_pods: list[KubePod], server: ApiServer, tmp_path: Path
) -> None:
    controller = run_pod(containerd, load_fixture("spark-operator-controller.yaml"), node=NODE)
    netbind = run_pod(containerd, load_fixture("spark-operator-controller-netbind.yaml"),
                      node=NODE)
    unselected = run_pod(containerd, variant(load_fixture("spark-operator-controller.yaml"),
                                             other_app), node=NODE)
    kube_pods += [controller, netbind, unselected]
    for pod in kube_pods:
        assert pod.app.pid is not None, pod.app.exit_output
        assert_pod_agrees(pod, tmp_path)  # lint's prediction, as everywhere in the lane
        server.add_pod(pod.manifest)
        # containerd's own cgroups, as the kubelet's cgroupfs driver names them (below this
        # run's --cgroup-root): the app and the pause process each in its own, by real ID.
        parent = f"/{containerd.cgroup_top}/kubepods/besteffort/pod{pod.uid}"
        assert f"pids:{parent}/{pod.app.id}" in [ln.split(":", 1)[1] for ln in
                                                 cgroup_lines(pod.app.pid)]
        assert f"pids:{parent}/{pod.sandbox_id}" in [ln.split(":", 1)[1] for ln in
                                                     cgroup_lines(pod.sandbox_pid)]
    assert controller.app.pid and netbind.app.pid

    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    run_once(kubeconfig, "events")
    # The same sets diagnose gives for these pods (test_cri_containerd.py), as Warning
    # Events; nothing for the unselected pod, nothing for a pause container.
    assert events_by_pod(server) == {
        controller.uid: {("HomeDirectoryUnusable", "Warning")},
        netbind.uid: {("HomeDirectoryUnusable", "Warning"),
                      ("NetBindServiceUnneeded", "Warning"),
                      ("CapabilityAddedButIneffective", "Warning")},
    }
    # The same cycle printed: the targets are the two app processes, no pause, no other pod.
    printed = run_once(kubeconfig, "stdout")
    (report,) = [json.loads(line) for line in printed.splitlines() if line.strip()]
    audited = {(t["pod"]["uid"], t["pid"], t["container"]["id"]) for t in report["targets"]}
    assert audited == {
        (controller.uid, controller.app.pid, f"containerd://{controller.app.id}"),
        (netbind.uid, netbind.app.pid, f"containerd://{netbind.app.id}")}


def test_run_once_maps_the_systemd_drivers_layout(
    lane: Lane, pods: list[CriPod], server: ApiServer, tmp_path: Path
) -> None:
    netbind = start_pod(lane, load_fixture("spark-operator-controller-netbind.yaml"), SYSTEMD,
                        node=NODE)
    pods.append(netbind)
    assert netbind.app.pid is not None and netbind.sandbox.pid is not None
    server.add_pod(netbind.manifest)
    scope = (f"/kubepods-besteffort-pod{netbind.uid.replace('-', '_')}.slice/"
             f"cri-containerd-{netbind.app.id}.scope")
    assert any(line.endswith(scope) for line in cgroup_lines(netbind.app.pid))

    run_once(server.write_kubeconfig(tmp_path / "kubeconfig"), "events")
    assert events_by_pod(server) == {
        netbind.uid: {("HomeDirectoryUnusable", "Warning"),
                      ("NetBindServiceUnneeded", "Warning"),
                      ("CapabilityAddedButIneffective", "Warning")}}
