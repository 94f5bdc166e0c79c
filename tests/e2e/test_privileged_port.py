"""`webhook.port=443` (kubeflow/spark-operator#2331) on Kubernetes semantics: uid 185 cannot
bind 443 unless NET_BIND_SERVICE is effective or the netns's ip_unprivileged_port_start is
lowered. Under the CRI an added capability stays in the bounding set, so the webhook crash-loops
with the capability too; its pod's sandbox still holds the netns, which opaudit reads.

The oracle for each case: what the runtime printed (Go's `bind: permission denied`), a real
bind() of 443 as uid 185 in the pod's netns, and the capability sets from /proc."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from e2e.agreement import HOME_INFO, NODE, audit_and_check, run_once, webhook_on_443, write_manifest
from e2e.cri import SYSTEMD
from e2e.lane import Lane
from e2e.pods import CriPod, start_pod
from kube.apiserver import ApiServer

RULE = ("PrivilegedPortNotBindable", "high")
BIND_AS_185 = ("import os, socket, sys\nos.setgroups([185]); os.setgid(185); os.setuid(185)\n"
               "try:\n    socket.socket(socket.AF_INET6).bind(('::', int(sys.argv[1])))\n"
               "except PermissionError:\n    sys.exit(13)\n")



def uid_185_can_bind(netns: str, port: int = 443) -> bool:
    """A real bind() as uid 185, no capabilities, in the pod's netns."""
    result = subprocess.run(["ip", "netns", "exec", netns, "/usr/bin/python3", "-c",
                             BIND_AS_185, str(port)], timeout=10)
    assert result.returncode in (0, 13)
    return result.returncode == 0




def crash_looping(pod: dict[str, Any], output: str) -> None:
    """The status the kubelet reports between restarts of a container that exited 1."""
    status = pod["status"]
    status["conditions"] = [c for c in status["conditions"]
                            if c["type"] not in ("Ready", "ContainersReady")]
    [container] = status["containerStatuses"]
    container.update(ready=False, started=False, restartCount=3, state={"waiting": {
        "reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
        lastState={"terminated": {"exitCode": 1, "reason": "Error", "message": output,
                                  "containerID": container["containerID"],
                                  "startedAt": "2026-08-03T09:14:33Z",
                                  "finishedAt": "2026-08-03T09:14:33Z"}})




@pytest.mark.parametrize("with_capability", [False, True], ids=["no-capability", "capability"])
def test_a_webhook_on_443_crash_loops_and_run_once_says_why(
    lane: Lane, pods: list[CriPod], server: ApiServer, tmp_path: Path, with_capability: bool
) -> None:
    pod = start_pod(lane, webhook_on_443(with_capability), SYSTEMD, node=NODE)
    pods.append(pod)
    # The runtime's own word: the process exited on its bind, as Go reports it; the sandbox
    # lives on, and uid 185 really cannot bind 443 in the pod's netns.
    assert pod.app.pid is None and pod.sandbox.pid is not None
    assert "listen tcp :443: bind: permission denied" in pod.app.exit_output
    assert not uid_185_can_bind(pod.netns)
    crash_looping(pod.manifest, pod.app.exit_output)
    server.add_pod(pod.manifest)

    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    report = json.loads(run_once(kubeconfig, "stdout"))
    assert sorted((f["rule"], f["severity"]) for f in report["findings"]) == [RULE]
    run_once(kubeconfig, "events")
    assert {(e["regarding"]["uid"], e["reason"], e["type"]) for e in server.events()} == {
        (pod.uid, RULE[0], "Warning")}


def test_a_live_process_that_cannot_bind_443(
    lane: Lane, pods: list[CriPod], tmp_path: Path
) -> None:
    pod = start_pod(lane, webhook_on_443(False), SYSTEMD, env={"OPLISTEN_KEEP_GOING": "1"})
    pods.append(pod)
    assert pod.app.pid is not None
    audited = audit_and_check(pod.app.pid, write_manifest(pod.manifest, tmp_path, "443"),
                              runtime="containerd", image=lane.image)
    # 443 failed, the rest serve; uid 185 has no capability and cannot bind 443.
    assert audited.caps["effective"] == [] and audited.ports == {8080, 8081}
    assert not uid_185_can_bind(pod.netns)
    assert audited.findings == sorted([RULE, ("DeclaredPortNotListening", "medium"), HOME_INFO])


def test_lowering_the_threshold_lets_uid_185_bind_443(
    lane: Lane, pods: list[CriPod], tmp_path: Path
) -> None:
    pod = start_pod(lane, webhook_on_443(False), SYSTEMD,
                    sysctls={"net.ipv4.ip_unprivileged_port_start": 0})
    pods.append(pod)
    assert pod.app.pid is not None
    # containerd 2.x's pod netns: the CRI sets the sysctl to 0.
    audited = audit_and_check(pod.app.pid, write_manifest(pod.manifest, tmp_path, "443"),
                              runtime="containerd-2", image=lane.image)
    # 443 is taken by the webhook itself: the oracle binds another port below 1024.
    assert uid_185_can_bind(pod.netns, 442) and audited.ports == {443, 8080, 8081}
    assert audited.findings == [HOME_INFO]
