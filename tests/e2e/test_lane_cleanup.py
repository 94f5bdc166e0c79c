"""The lane leaves no container, pod, image, network, netns, mount, shim, bridge or cgroup
behind: checked before a full cycle (nothing of this run's exists) and after it (nothing is
left), looking only at names unique to this run, since other worktrees run podman and runc
on the same machine. The cycle includes a private containerd with a running pod and a
crashed container, closed without removing the pods first, as a failed session leaves them."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.agreement import load_fixture, webhook_on_443
from e2e.containerd import Containerd, containerd_unavailable
from e2e.cri import SYSTEMD
from e2e.cri_pods import run_pod
from e2e.lane import new_prefix, open_lane, traces, unavailable_reason
from e2e.podman import holders_of_netns, processes_naming
from e2e.pods import start_pod
from e2e.prediction import assert_pod_agrees
from staging import leftover_netns


def test_a_full_cycle_leaves_nothing_behind(tmp_path: Path) -> None:
    reason = unavailable_reason() or containerd_unavailable()
    if reason is not None:
        pytest.skip(reason)
    prefix = new_prefix()
    assert traces(prefix) == [] and leftover_netns() == []
    lane = open_lane(prefix)
    runtime = Containerd(lane.workdir, prefix, unprivileged_ports=False)
    try:
        played = lane.podman.play(load_fixture("spark-operator-webhook.yaml"))
        cri = start_pod(lane, load_fixture("spark-operator-controller.yaml"), SYSTEMD)
        assert cri.app.pid is not None and cri.sandbox.pid is not None
        runtime.start(lane.podman, lane.image)
        serving = run_pod(runtime, load_fixture("spark-operator-controller.yaml"))
        crashed = run_pod(runtime, webhook_on_443(False))
        assert serving.app.pid is not None and crashed.app.pid is None
        assert_pod_agrees(serving, tmp_path)  # lint's prediction, as everywhere in the lane
        assert_pod_agrees(crashed, tmp_path)
        # The checks below can see what a cycle makes: they are not vacuous.
        made = traces(prefix)
        assert any("kubepods" in t for t in made) and any(lane.podman.store.name in t or
                                                          str(lane.workdir) in t for t in made)
        assert holders_of_netns({played.netns_inode}, [played.pod_id]) != []
        assert leftover_netns() != []
        assert lane.podman.cmd("images", "--quiet").split() != []
        assert processes_naming(str(runtime.socket).encode()) != []  # the pods' shims
        assert Path(f"/sys/class/net/{runtime.bridge}").exists()
        assert any(serving.netns in m for m in runtime.mounts())  # containerd's pod netns
        assert any(f"{prefix}-d-kubepods" in t for t in made)
    finally:
        try:
            runtime.close()
        finally:
            lane.close()
    assert runtime.leftovers() == [] and lane.leftovers() == []
    assert traces(prefix) == [] and leftover_netns() == []
    assert holders_of_netns({played.netns_inode}, [played.pod_id]) == []
    assert not Path(serving.netns).exists() and not running(serving.app.pid)


def test_a_containerd_that_died_leaves_nothing_behind(tmp_path: Path) -> None:
    """containerd killed with its pods running (a crashed daemon, a killed test session):
    close() still stops the shims and the pods they ran, and removes mounts, netns, bridge,
    cgroups and the store."""
    reason = unavailable_reason() or containerd_unavailable()
    if reason is not None:
        pytest.skip(reason)
    prefix = new_prefix()
    lane = open_lane(prefix)
    runtime = Containerd(lane.workdir, prefix, unprivileged_ports=True)
    try:
        runtime.start(lane.podman, lane.image)
        pod = run_pod(runtime, load_fixture("spark-operator-webhook.yaml"))
        assert pod.app.pid is not None
        assert_pod_agrees(pod, tmp_path)
        assert runtime.process is not None
        runtime.process.kill()
        runtime.process.wait(timeout=30)
        assert Path(f"/proc/{pod.app.pid}").exists() and runtime.mounts() != []
    finally:
        try:
            runtime.close()
        finally:
            lane.close()
    assert runtime.leftovers() == [] and traces(prefix) == []
    assert not running(pod.app.pid) and not running(pod.sandbox_pid)


def running(pid: int) -> bool:
    """Alive, not a zombie that init has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
