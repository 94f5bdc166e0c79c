"""`opaudit run --once` against the API test server, on containers runc started with
CRI-like specs in both kubepods cgroup layouts, each pod with its pause container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from e2e.agreement import NODE, load_fixture, run_once, variant
from e2e.cri import CGROUPFS, SYSTEMD
from e2e.lane import Lane
from e2e.pods import CriPod, start_pod
from kube.apiserver import ApiServer


def cgroup_lines(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cgroup") as f:
        return f.read().splitlines()


def other_app(pod: dict[str, Any]) -> None:
    pod["metadata"]["name"] = "another-app-5d8f7c9b6-k2x4q"
    pod["metadata"]["labels"]["app.kubernetes.io/name"] = "another-app"


def test_run_once_maps_both_layouts_and_posts_events_for_exactly_those_containers(
    lane: Lane, pods: list[CriPod], server: ApiServer, tmp_path: Path
) -> None:
    controller = start_pod(lane, load_fixture("spark-operator-controller.yaml"), CGROUPFS,
                           node=NODE)
    netbind = start_pod(lane, load_fixture("spark-operator-controller-netbind.yaml"), SYSTEMD,
                        node=NODE)
    unselected = start_pod(lane, variant(load_fixture("spark-operator-controller.yaml"),
                                         other_app), SYSTEMD, node=NODE)
    pods += [controller, netbind, unselected]
    for pod in pods:
        assert pod.app.pid is not None and pod.sandbox.pid is not None, pod.app.exit_output
        server.add_pod(pod.manifest)
    assert controller.app.pid and netbind.app.pid
    # The layouts as the kubelet names them (below this run's own top directory).
    assert any(line.endswith(f"/kubepods/besteffort/pod{controller.uid}/{controller.app.id}")
               for line in cgroup_lines(controller.app.pid))
    scope = (f"/kubepods-besteffort-pod{netbind.uid.replace('-', '_')}.slice/"
             f"cri-containerd-{netbind.app.id}.scope")
    assert any(line.endswith(scope) for line in cgroup_lines(netbind.app.pid))

    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    run_once(kubeconfig, "events")

    events = server.events()  # each was validated against the events.k8s.io/v1 schema
    by_pod: dict[str, set[tuple[str, str]]] = {}
    for event in events:
        by_pod.setdefault(event["regarding"]["uid"], set()).add((event["reason"], event["type"]))
        assert event["reportingInstance"] == NODE
    # The same sets diagnose gives for these pods (test_cri_runc.py), as Warning Events;
    # nothing for the unselected pod, nothing for a pause container.
    assert by_pod == {
        controller.uid: {("HomeDirectoryUnusable", "Warning")},
        netbind.uid: {("HomeDirectoryUnusable", "Warning"),
                      ("NetBindServiceUnneeded", "Warning"),
                      ("CapabilityAddedButIneffective", "Warning")},
    }
    # The same cycle printed: the targets are the two app processes, no pause, no other pod.
    printed = run_once(kubeconfig, "stdout")
    (report,) = [json.loads(line) for line in printed.splitlines() if line.strip()]
    audited = {(t["pod"]["uid"], t["pid"]) for t in report["targets"]}
    assert audited == {(controller.uid, controller.app.pid), (netbind.uid, netbind.app.pid)}
