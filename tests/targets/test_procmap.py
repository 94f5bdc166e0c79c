"""agent.targets.procmap: real processes in real kubepods cgroups, seen from the host's
cgroup namespace and from a private one (a DaemonSet on a cgroup v2 node)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cgroup_staging import (
    V1_HIERARCHIES,
    KubepodsCgroups,
    cgroupfs_dir,
    declared,
    random_config_hash,
    random_container_id,
    random_pod_uid,
    systemd_scope,
)
from staging import Stage

from agent.collect.cgroups import parse_cgroup_file
from agent.collect.procfs import ProcFS
from agent.kube.containers import bare_container_id
from agent.kube.podspec import declared_from_pod
from agent.model import DeclaredContainer
from agent.targets.procmap import pids_for_containers

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Scenario:
    containers: list[DeclaredContainer] = field(default_factory=list)
    expected: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)
    not_attributed: list[int] = field(default_factory=list)  # sandbox, conmon
    v2_only: list[int] = field(default_factory=list)
    v1_only: list[int] = field(default_factory=list)
    static_pod: DeclaredContainer | None = None

    def add(self, container: DeclaredContainer, *pids: int) -> None:
        self.containers.append(container)
        self.expected[(container.pod.uid, container.container_name)] = tuple(sorted(pids))


def stage_pods(stage: Stage, tree: KubepodsCgroups) -> Scenario:
    """Four pods, as containerd/CRI-O with the systemd driver on v2 and as cgroupfs on v1."""
    scene = Scenario()

    # Pod A: containerd, systemd driver, cgroup v2 only; a sandbox (pause) scope beside
    # the workload, and a second container whose process sits in a sub-cgroup.
    pod_a, app_id, sidecar_id, sandbox_id = (random_pod_uid(), random_container_id(),
                                             random_container_id(), random_container_id())
    app, sidecar, pause = stage.spawn(), stage.spawn(), stage.spawn()
    tree.place_v2(app.pid, systemd_scope(pod_a, app_id, "burstable"))
    tree.place_v2(sidecar.pid, systemd_scope(pod_a, sidecar_id, "burstable", sub="kube-proxy"))
    tree.place_v2(pause.pid, systemd_scope(pod_a, sandbox_id, "burstable"))
    scene.add(declared(pod_a, "app", f"containerd://{app_id}"), app.pid)
    scene.add(declared(pod_a, "sidecar", f"containerd://{sidecar_id}"), sidecar.pid)
    scene.not_attributed.append(pause.pid)
    scene.v2_only += [app.pid, sidecar.pid]

    # Pod B: cgroupfs driver on the v1 controllers only (0:: stays at the root).
    pod_b, web_id = random_pod_uid(), random_container_id()
    web = stage.spawn()
    tree.place_v1(web.pid, cgroupfs_dir(pod_b, web_id, "besteffort"))
    scene.add(declared(pod_b, "web", f"containerd://{web_id}"), web.pid)
    scene.v1_only.append(web.pid)

    # Pod C: CRI-O on v2 with crun's `container` sub-cgroup, and conmon in the pod slice.
    pod_c, ctl_id = random_pod_uid(), random_container_id()
    ctl, conmon = stage.spawn(), stage.spawn()
    tree.place_v2(ctl.pid, systemd_scope(pod_c, ctl_id, "", runtime="crio", sub="container"))
    tree.place_v2(conmon.pid, systemd_scope(pod_c, ctl_id, "", runtime="crio-conmon"))
    scene.add(declared(pod_c, "ctl", f"cri-o://{ctl_id}"), ctl.pid)
    scene.not_attributed.append(conmon.pid)

    # Pod D: a static pod, Guaranteed, cgroupfs on v1 and v2 both: its cgroups carry the
    # config hash; the API object (mirror pod) has another uid.
    config_hash, etcd_id = random_config_hash(), random_container_id()
    etcd = stage.spawn()
    tree.place_v1(etcd.pid, cgroupfs_dir(config_hash, etcd_id, ""))
    tree.place_v2(etcd.pid, cgroupfs_dir(config_hash, etcd_id, ""))
    static = declared(random_pod_uid(), "etcd", f"docker://{etcd_id}", config_hash=config_hash)
    scene.add(static, etcd.pid)
    scene.static_pod = static

    # A container the status does not name yet, and one whose process is not here.
    scene.add(declared(pod_a, "starting", None))
    scene.add(declared(pod_b, "elsewhere", f"containerd://{random_container_id()}"))
    return scene


def test_bare_container_id_strips_the_runtime_scheme() -> None:
    hex_id = "ab" * 32
    assert bare_container_id(f"containerd://{hex_id}") == hex_id
    assert bare_container_id(f"cri-o://{hex_id}") == hex_id
    assert bare_container_id(f"docker://{hex_id.upper()}") == hex_id
    assert bare_container_id(hex_id) == hex_id
    assert bare_container_id("") is None
    assert bare_container_id(None) is None


def test_maps_containers_from_the_host_cgroup_namespace(
    stage: Stage, cgroups: KubepodsCgroups
) -> None:
    scene = stage_pods(stage, cgroups)
    mapping = pids_for_containers(scene.containers, ProcFS())
    assert mapping == scene.expected
    attributed = {pid for pids in mapping.values() for pid in pids}
    assert attributed.isdisjoint(scene.not_attributed)


def test_static_pod_needs_its_config_hash(stage: Stage, cgroups: KubepodsCgroups) -> None:
    scene = stage_pods(stage, cgroups)
    assert scene.static_pod is not None
    without_hash = replace(scene.static_pod, pod=replace(scene.static_pod.pod, config_hash=None))
    key = (without_hash.pod.uid, without_hash.container_name)
    assert pids_for_containers([scene.static_pod], ProcFS())[key] != ()
    # The cgroup names another pod than the one declared: the process is not blamed on it.
    assert pids_for_containers([without_hash], ProcFS()) == {key: ()}


def test_vanished_process_is_skipped(stage: Stage, cgroups: KubepodsCgroups) -> None:
    pod, container_id = random_pod_uid(), random_container_id()
    first, second = stage.spawn(), stage.spawn()
    for process in (first, second):
        cgroups.place_v2(process.pid, systemd_scope(pod, container_id))
    container = declared(pod, "app", f"containerd://{container_id}")
    assert pids_for_containers([container], ProcFS()) == {(pod, "app"): tuple(sorted([first.pid,
                                                                           second.pid]))}
    stage.kill(first)
    assert pids_for_containers([container], ProcFS()) == {(pod, "app"): (second.pid,)}


# Runs in a private cgroup namespace rooted at the agent's own container cgroup.
READER = r"""
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
from cgroup_staging import declared
from agent.collect.cgroups import parse_cgroup_file
from agent.collect.procfs import ProcFS
from agent.targets.procmap import pids_for_containers
spec = json.loads(sys.argv[2])
containers = [declared(c["uid"], c["name"], c["id"], c["hash"]) for c in spec["containers"]]
mapping = pids_for_containers(containers, ProcFS())
views = {pid: open(f"/proc/{pid}/cgroup").read() for pid in spec["show"]}
print(json.dumps({"map": [[u, n, list(p)] for (u, n), p in mapping.items()],
                  "views": views, "self": open("/proc/self/cgroup").read()}))
"""


def run_in_private_cgroupns(
    tree: KubepodsCgroups, agent_v2: str, agent_v1: str,
    containers: list[DeclaredContainer], show: list[int],
) -> dict[str, Any]:
    """Move a shell into the agent's cgroups, `unshare --cgroup`, and map from there."""
    spec = json.dumps({
        "containers": [{"uid": c.pod.uid, "name": c.container_name, "id": c.container_id,
                        "hash": c.pod.config_hash} for c in containers],
        "show": show,
    })
    moves = [f"echo $$ > {shlex.quote(str(f))}" for f in tree.procs_files(agent_v2, agent_v1)]
    reader = shlex.join(["unshare", "--cgroup", sys.executable, "-c", READER, str(REPO), spec])
    result = subprocess.run(["sh", "-c", " && ".join([*moves, f"exec {reader}"])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def test_maps_containers_from_a_private_cgroup_namespace(
    stage: Stage, cgroups: KubepodsCgroups
) -> None:
    scene = stage_pods(stage, cgroups)
    # The agent's own pod, with a sibling container the agent sees as `/../cri-containerd-…`.
    agent_pod, agent_id, sibling_id = random_pod_uid(), random_container_id(), random_container_id()
    sibling = stage.spawn()
    cgroups.place_v2(sibling.pid, systemd_scope(agent_pod, sibling_id, "burstable"))
    scene.add(declared(agent_pod, "sibling", f"containerd://{sibling_id}"), sibling.pid)

    output = run_in_private_cgroupns(
        cgroups, systemd_scope(agent_pod, agent_id, "burstable"),
        cgroupfs_dir(agent_pod, agent_id, "burstable"), scene.containers,
        show=[*scene.v2_only, *scene.v1_only, sibling.pid],
    )

    # The reader's own cgroups are its namespace roots in every hierarchy it moved into.
    own = parse_cgroup_file(str(output["self"]))
    moved_into = {(), *((name,) for name in V1_HIERARCHIES if name != "systemd"),
                  ("name=systemd",)}
    assert {line.path for line in own.lines if line.controllers in moved_into} == {"/"}
    views = {int(pid): text for pid, text in output["views"].items()}
    for pid in scene.v2_only:
        assert "\n0::/../../kubepods-burstable-pod" in "\n" + views[pid], views[pid]
    for pid in scene.v1_only:
        assert ":pids:/../../../besteffort/pod" in views[pid], views[pid]
    assert f"0::/../cri-containerd-{sibling_id}.scope" in views[sibling.pid]

    mapping = {(uid, name): tuple(pids) for uid, name, pids in output["map"]}
    assert mapping == scene.expected


def test_no_container_ids_maps_nothing(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text("0::/\n")
    containers = [declared(random_pod_uid(), "app", None)]
    assert pids_for_containers(containers, ProcFS(str(tmp_path))) == {
        (containers[0].pod.uid, "app"): ()
    }


def test_unreadable_and_malformed_entries_are_skipped(tmp_path: Path) -> None:
    pod, container_id = random_pod_uid(), random_container_id()
    line = f"0::/kubepods/besteffort/pod{pod}/{container_id}\n"
    (tmp_path / "10").mkdir()
    (tmp_path / "10" / "cgroup").write_text(line)
    (tmp_path / "11").mkdir()  # exited between listing and reading: no cgroup file
    (tmp_path / "12").mkdir()
    (tmp_path / "12" / "cgroup").write_text(f"garbage {container_id}\n")
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "cgroup").write_text(line)
    container = declared(pod, "app", f"containerd://{container_id}")
    assert pids_for_containers([container], ProcFS(str(tmp_path))) == {(pod, "app"): (10,)}


def test_mirror_pod_manifest_maps_through_its_config_hash(
    stage: Stage, cgroups: KubepodsCgroups
) -> None:
    config_hash, container_id = random_config_hash(), random_container_id()
    process = stage.spawn()
    cgroups.place_v2(process.pid, systemd_scope(config_hash, container_id, "burstable"))
    mirror_pod = {
        "metadata": {"namespace": "kube-system", "name": "etcd-node1", "uid": random_pod_uid(),
                     "annotations": {"kubernetes.io/config.mirror": config_hash}},
        "spec": {"containers": [{"name": "etcd"}]},
        "status": {"containerStatuses": [{"name": "etcd",
                                          "containerID": f"containerd://{container_id}"}]},
    }
    container = declared_from_pod(mirror_pod)
    assert container.pod.config_hash == config_hash
    assert pids_for_containers([container], ProcFS()) == {
        (mirror_pod["metadata"]["uid"], "etcd"): (process.pid,)
    }
