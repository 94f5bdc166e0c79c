"""agent.targets.sandbox: restarting containers from pod status, and the pod's sandbox process
found through real kubepods cgroups (systemd driver on v2, cgroupfs on v1)."""

from __future__ import annotations

from typing import Any

from cgroup_staging import (
    KubepodsCgroups,
    cgroupfs_dir,
    random_container_id,
    random_pod_uid,
    systemd_scope,
)
from staging import Stage

from agent.collect.procfs import ProcFS
from agent.targets.sandbox import restarting_containers, sandbox_pids


def status_entry(name: str, container_id: str, state: dict[str, Any],
                 last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "containerID": container_id, "state": state,
            "lastState": last or {}, "ready": False, "restartCount": 3, "image": "x",
            "imageID": ""}


CRASHED = {"terminated": {"exitCode": 1, "reason": "Error"}}
BACKOFF = {"waiting": {"reason": "CrashLoopBackOff"}}
RUNNING = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}


def pod(uid: str, *statuses: dict[str, Any], phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": "p", "namespace": "ns"},
            "status": {"phase": phase, "containerStatuses": list(statuses)}}


def test_restarting_containers_are_those_that_died_and_do_not_run() -> None:
    uid = random_pod_uid()
    mixed = pod(uid, status_entry("web", "containerd://a", BACKOFF, CRASHED),
                status_entry("side", "containerd://b", RUNNING, CRASHED),
                status_entry("done", "containerd://c", CRASHED),
                status_entry("new", "", {"waiting": {"reason": "ContainerCreating"}}))
    assert restarting_containers(mixed) == ("done", "web")
    assert restarting_containers(pod(uid, status_entry("web", "x", CRASHED), phase="Failed")) == ()
    assert restarting_containers({"status": "junk"}) == ()
    assert restarting_containers({}) == ()


def test_the_sandbox_is_found_and_nothing_else_of_the_pod(
        stage: Stage, cgroups: KubepodsCgroups) -> None:
    # Pod A (systemd driver, cgroup v2): a crash-looping app, a running sidecar, CRI-O's
    # conmon in the pod slice (host netns), and the sandbox.
    uid_a, app, side, conmon_id, pause_id = (random_pod_uid(), random_container_id(),
                                             random_container_id(), random_container_id(),
                                             random_container_id())
    sidecar, conmon, pause_a = stage.spawn(), stage.spawn(), stage.spawn(comm="pause")
    cgroups.place_v2(sidecar.pid, systemd_scope(uid_a, side))
    cgroups.place_v2(conmon.pid, systemd_scope(uid_a, conmon_id, runtime="crio-conmon"))
    cgroups.place_v2(pause_a.pid, systemd_scope(uid_a, pause_id))
    pod_a = pod(uid_a, status_entry("web", f"containerd://{app}", BACKOFF, CRASHED),
                status_entry("side", f"containerd://{side}", RUNNING))
    # Pod B (cgroupfs driver, cgroup v1): only the sandbox is alive.
    uid_b, pause_b_id = random_pod_uid(), random_container_id()
    pause_b = stage.spawn(comm="pause")
    cgroups.place_v1(pause_b.pid, cgroupfs_dir(uid_b, pause_b_id, qos="burstable"))
    pod_b = pod(uid_b, status_entry("web", f"docker://{random_container_id()}", BACKOFF, CRASHED))
    # Pod C: nothing of it on this node.
    pod_c = pod(random_pod_uid(), status_entry("web", "containerd://c", BACKOFF, CRASHED))

    found = sandbox_pids([pod_a, pod_b, pod_c], ProcFS())
    assert found == {uid_a: pause_a.pid, uid_b: pause_b.pid}
    # Without the sandbox, a running sibling is not mistaken for it; conmon never is.
    stage.kill(pause_a)
    assert sandbox_pids([pod_a], ProcFS()) == {}
