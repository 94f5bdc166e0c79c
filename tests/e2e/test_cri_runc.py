"""The one layout containerd cannot give on this machine: the kubelet's systemd cgroup driver.

containerd with `SystemdCgroup = true` asks systemd (over D-Bus) to create each container's
`cri-containerd-<id>.scope`, and this machine runs no systemd. So this case stays on runc with
an OCI spec built as containerd's CRI builds it (e2e/cri.py), in the systemd driver's
`kubepods.slice/.../cri-containerd-<id>.scope` layout, made by runc's cgroupfs manager. Every
other CRI case runs on containerd itself (test_cri_containerd.py).
"""

from __future__ import annotations

from pathlib import Path

from e2e.agreement import HOME_INFO, assert_verdicts, audit_and_check, load_fixture, write_manifest
from e2e.cri import SYSTEMD
from e2e.image import CERT_DIR
from e2e.lane import Lane
from e2e.pods import CriPod, start_pod


def test_default_webhook_in_the_systemd_drivers_layout(
    lane: Lane, pods: list[CriPod], tmp_path: Path
) -> None:
    pod = start_pod(lane, load_fixture("spark-operator-webhook.yaml"), SYSTEMD)
    pods.append(pod)
    assert pod.app.pid is not None, pod.app.exit_output
    # Also linted: the prediction (containerd 1.x model) must equal what the process shows.
    audited = audit_and_check(pod.app.pid, write_manifest(pod.manifest, tmp_path, pod.uid),
                              runtime="containerd", image=lane.image)
    assert {(x.address, x.port, x.v6only) for x in audited.listeners} == {
        ("::", 9443, False), ("::", 8080, False), ("::", 8081, False)}  # as Go listens
    assert_verdicts(audited.verdicts, {CERT_DIR: True, "/nonexistent": False})
    assert audited.findings == [HOME_INFO]
