"""`webhook.port=443` (kubeflow/spark-operator#2331) on containerd's CRI: uid 185 cannot bind
443 unless NET_BIND_SERVICE is effective or the pod's ip_unprivileged_port_start is lowered.
The CRI puts an added capability in the bounding set only, so under containerd 1.x the
webhook crash-loops with the capability too; its pod's sandbox still holds the netns, which
opaudit reads. containerd 2.x lowers the threshold to 0 in every pod (its
`enable_unprivileged_ports` default, containerd PR #9348): the same pod binds 443.

The oracle for each case: the container's own output in its CRI log (Go's `bind: permission
denied`), containerd's exit code, a real bind() of a port below 1024 as uid 185 in the pod's
netns, the netns's sysctl, and the capability sets from /proc. `opaudit lint` predicted it:
each pod, the crash-looping ones too, is compared with its prediction (e2e/prediction.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from e2e.agreement import HOME_INFO, NODE, audit_and_check, run_once, webhook_on_443, write_manifest
from e2e.containerd import Containerd, lint_model
from e2e.cri_pods import KubePod, netns_sysctl, run_pod
from e2e.prediction import assert_pod_agrees
from kube.apiserver import ApiServer

RULE = ("PrivilegedPortNotBindable", "high")
BIND_AS_185 = ("import os, socket, sys\nos.setgroups([185]); os.setgid(185); os.setuid(185)\n"
               "try:\n    socket.socket(socket.AF_INET6).bind(('::', int(sys.argv[1])))\n"
               "except PermissionError:\n    sys.exit(13)\n")


def uid_185_can_bind(netns: str, port: int = 443) -> bool:
    """A real bind() as uid 185, no capabilities, in the pod's netns."""
    result = subprocess.run(["nsenter", f"--net={netns}", "/usr/bin/python3", "-c",
                             BIND_AS_185, str(port)], timeout=10)
    assert result.returncode in (0, 13)
    return result.returncode == 0


@pytest.mark.parametrize("with_capability", [False, True], ids=["no-capability", "capability"])
def test_a_webhook_on_443_crash_loops_and_run_once_says_why(
    containerd: Containerd, kube_pods: list[KubePod], server: ApiServer, tmp_path: Path,
    with_capability: bool
) -> None:
    pod = run_pod(containerd, webhook_on_443(with_capability), node=NODE)
    kube_pods.append(pod)
    # The runtime's own word: the process exited 1 on its bind, as Go reports it; the
    # sandbox lives on, and uid 185 really cannot bind 443 in the pod's netns.
    assert pod.app.pid is None and pod.app.exit_code == 1
    assert "listen tcp :443: bind: permission denied" in pod.app.exit_output
    assert not uid_185_can_bind(pod.netns)
    status = pod.manifest["status"]["containerStatuses"][0]
    assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    # lint predicted it under containerd 1.x: 443 not bindable, the capability or not.
    assert_pod_agrees(pod, tmp_path)
    server.add_pod(pod.manifest)

    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    report = json.loads(run_once(kubeconfig, "stdout"))
    assert sorted((f["rule"], f["severity"]) for f in report["findings"]) == [RULE]
    run_once(kubeconfig, "events")
    assert {(e["regarding"]["uid"], e["reason"], e["type"]) for e in server.events()} == {
        (pod.uid, RULE[0], "Warning")}


def test_a_live_process_that_cannot_bind_443(
    containerd: Containerd, kube_pods: list[KubePod], tmp_path: Path
) -> None:
    pod = run_pod(containerd, webhook_on_443(False), env={"OPLISTEN_KEEP_GOING": "1"})
    kube_pods.append(pod)
    assert pod.app.pid is not None
    audited = audit_and_check(pod.app.pid, write_manifest(pod.manifest, tmp_path, "443"),
                              pod.oci_spec(), runtime=lint_model(containerd),
                              image=containerd.image)
    # 443 failed, the rest serve; uid 185 has no capability and cannot bind 443.
    assert audited.caps["effective"] == [] and audited.ports == {8080, 8081}
    assert not uid_185_can_bind(pod.netns)
    assert audited.findings == sorted([RULE, ("DeclaredPortNotListening", "medium"), HOME_INFO])


def test_containerd_2x_lets_uid_185_bind_443(
    containerd_2x: Containerd, kube_pods: list[KubePod], tmp_path: Path
) -> None:
    pod = run_pod(containerd_2x, webhook_on_443(False))
    kube_pods.append(pod)
    # The runtime, not the pod, lowered the threshold (the manifest asks for no sysctl).
    assert "sysctls" not in (pod.manifest["spec"].get("securityContext") or {})
    assert netns_sysctl(pod.netns, "net.ipv4.ip_unprivileged_port_start") == 0
    assert pod.app.pid is not None, pod.app.exit_output
    audited = audit_and_check(pod.app.pid, write_manifest(pod.manifest, tmp_path, "443"),
                              pod.oci_spec(), runtime=lint_model(containerd_2x),
                              image=containerd_2x.image)
    # 443 is taken by the webhook itself: the oracle binds another port below 1024.
    assert uid_185_can_bind(pod.netns, 442) and audited.ports == {443, 8080, 8081}
    assert audited.caps["effective"] == []  # no capability needed
    assert audited.findings == [HOME_INFO]
