"""A real crash loop caught by the watch, not the interval: `webhook.port=443`
(kubeflow/spark-operator#2331) on containerd 1.x, where uid 185 cannot bind 443.

The harness plays the kubelet: the container exits with Go's bind error, it is started again
as the kubelet does (CreateContainer with attempt n+1 in the same sandbox), and the pod's
status on the API test server says so (restartCount, `waiting.reason: CrashLoopBackOff`,
lastState with the dead `containerd://<id>`). `opaudit run --interval 3600` must post
PrivilegedPortNotBindable from the watch event: the interval cannot have run (its first cycle
ran before the pod had any container, the next is an hour away), and /metrics counts the
cycle as `trigger="watch"`. On containerd 2.x's default (`enable_unprivileged_ports`) the
same pod binds 443 and runs, and the watch-triggered audit finds nothing to post. In both
modes `opaudit lint`'s prediction of each pod must match what runs, or what the crash left
(e2e/prediction.py).
"""

from __future__ import annotations

import copy
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from agent_run import free_port, http_get, wait_for
from e2e.agreement import (
    NODE,
    OPAUDIT,
    SELECTOR,
    load_fixture,
    other_app,
    variant,
    webhook_on_443,
)
from e2e.containerd import Containerd
from e2e.cri_pods import KubePod, restart, run_pod
from e2e.prediction import assert_pod_agrees
from kube.apiserver import ApiServer
from pod_staging import events_on

RULE = "PrivilegedPortNotBindable"


def pending(manifest: dict[str, Any]) -> dict[str, Any]:
    """The pod as the API shows it before the kubelet started its container."""
    pod = copy.deepcopy(manifest)
    [status] = pod["status"]["containerStatuses"]
    status.update(ready=False, started=False, restartCount=0, lastState={},
                  state={"waiting": {"reason": "ContainerCreating"}})
    status.pop("containerID", None)
    pod["status"].update(phase="Pending", conditions=[
        c for c in pod["status"]["conditions"] if c["type"] in ("PodScheduled",)])
    return pod


def watch_cycles(port: int) -> float:
    _, text = http_get(port, "/metrics")
    match = re.search(r'^opaudit_cycles_total\{trigger="watch"\} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


def cycles_total(port: int) -> float:
    _, text = http_get(port, "/metrics")
    return sum(float(v) for v in re.findall(r"^opaudit_cycles_total\{[^}]*\} (\S+)$", text,
                                            re.M))


@pytest.mark.parametrize("runtime_name", ["containerd", "containerd_2x"])
def test_the_watch_catches_a_real_crash_loop(
    request: pytest.FixtureRequest, runtime_name: str, kube_pods: list[KubePod],
    server: ApiServer, tmp_path: Path
) -> None:
    runtime: Containerd = request.getfixturevalue(runtime_name)
    pod = run_pod(runtime, webhook_on_443(False), node=NODE)
    # A running pod the selector does not pick, on the same node: never audited.
    unselected = run_pod(runtime, variant(load_fixture("spark-operator-controller.yaml"),
                                          other_app), node=NODE)
    kube_pods += [pod, unselected]
    server.add_pod(pending(pod.manifest))
    server.add_pod(unselected.manifest)
    port = free_port()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    agent = subprocess.Popen(
        [str(OPAUDIT), "run", "--node", NODE, "-l", SELECTOR, "--interval", "3600",
         "--metrics-port", str(port), "--kubeconfig", kubeconfig],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: http_get(port, "/readyz")[0] == 200, 60), "never ready"
        assert wait_for(lambda: cycles_total(port) >= 1, 60)  # the first (interval) cycle
        before = watch_cycles(port)
        if runtime.unprivileged_ports:
            # 2.x: the runtime lowered the threshold; the webhook serves 443.
            assert pod.app.pid is not None, pod.app.exit_output
        else:
            # 1.x: it exited on its bind, and exits again when the kubelet restarts it.
            assert pod.app.pid is None and "bind: permission denied" in pod.app.exit_output
            again = restart(runtime, pod, pod.app.name)
            assert again.pid is None and again.attempt == 1 and again.exit_code == 1
            status = pod.manifest["status"]["containerStatuses"][0]
            assert status["restartCount"] == 1
            assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            assert status["lastState"]["terminated"]["containerID"] == f"containerd://{again.id}"
        changed = time.monotonic()
        server.update_pod(pod.manifest)
        assert wait_for(lambda: watch_cycles(port) > before, 60), "the watch never triggered"
        if runtime.unprivileged_ports:
            # The same watch-triggered audit posts the webhook's one finding (HOME, at info:
            # the webhook writes nothing there): its Events were written, and none says 443.
            assert wait_for(lambda: bool(events_on(server, pod.uid)), 60)
            assert {(e["reason"], e["type"]) for e in events_on(server, pod.uid)} == {
                ("HomeDirectoryUnusable", "Normal")}
            _, metrics = http_get(port, "/metrics")
            assert f'opaudit_findings{{rule="{RULE}"' not in metrics
        else:
            assert wait_for(lambda: bool(events_on(server, pod.uid)), 60)
            latency = time.monotonic() - changed
            print(f"\nstatus change -> {RULE} Event: {latency:.2f} s (target: 2 s)")
            assert {(e["reason"], e["type"]) for e in events_on(server, pod.uid)} == {
                (RULE, "Warning")}
        assert cycles_total(port) - watch_cycles(port) == 1  # the interval ran only once
        assert server.regarding_uids() == {pod.uid}  # exactly the selected pod's Events
        # lint saw it coming: 443 not bindable under 1.x (the restarted container's bind
        # error), bindable under 2.x (it listens); the unselected pod as it runs.
        assert_pod_agrees(pod, tmp_path)
        assert_pod_agrees(unselected, tmp_path)
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(timeout=20)
        assert agent.stderr is not None
        agent.stderr.close()
