"""Pods started by containerd's CRI, as the kubelet starts them (e2e/kubelet.py builds the
requests): RunPodSandbox, then CreateContainer/StartContainer for each container in order.

`run_pod(runtime, manifest)` is the lane's one entry point: it returns the pod with the
manifest as the API would show it for this run (a fresh uid, status.podIP(s) from CNI, each
container's `containerd://<id>`), the sandbox, and each container's id and pid. The lint
tests use it too: start a manifest, then compare what `opaudit lint` predicts with what
`diagnose` observes on `pod.pids()`.
"""

from __future__ import annotations

import copy
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.containerd import Containerd
from e2e.kubelet import PodVolumes, container_config, qos_class, sandbox_config

EXITED = 2  # ContainerState.CONTAINER_EXITED
PAUSE_SYSCALL = 34  # x86_64 pause(2): the listener stand-in's last call once it serves
RESTARTED_AT = "2026-08-03T09:14:33Z"

Ready = Callable[[int], bool]  # given the container's pid: has it finished starting?


def in_pause(pid: int) -> bool:
    """The listener stand-in (e2e/listener.c) has bound everything and sleeps in pause()."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split()[0] == str(PAUSE_SYSCALL)
    except (OSError, IndexError):
        return False


@dataclass(frozen=True)
class Container:
    name: str
    id: str
    attempt: int
    pid: int | None  # None: it exited (a crash-looping container between restarts)
    exit_output: str = ""
    exit_code: int | None = None


@dataclass
class KubePod:
    manifest: dict[str, Any]  # as the API would return it for this run
    sandbox_id: str
    sandbox_pid: int
    netns: str  # the pod's network namespace, a path containerd keeps (nsenter --net=)
    containers: dict[str, Container]
    sandbox_config: Any
    runtime: Containerd

    @property
    def uid(self) -> str:
        return str(self.manifest["metadata"]["uid"])

    @property
    def app(self) -> Container:
        """The pod's first container (the chart's pods have one)."""
        return next(iter(self.containers.values()))

    def pids(self) -> dict[str, int | None]:
        return {name: c.pid for name, c in self.containers.items()}

    def oci_spec(self, name: str | None = None) -> dict[str, Any]:
        """The OCI spec containerd generated for a container (default: the first)."""
        container = self.containers[name] if name else self.app
        assert self.runtime.cri is not None
        spec: dict[str, Any] = self.runtime.cri.container_info(container.id)["runtimeSpec"]
        return spec


def as_scheduled(fixture: Mapping[str, Any], node: str | None) -> dict[str, Any]:
    pod = copy.deepcopy(dict(fixture))
    pod["metadata"]["uid"] = str(uuid.uuid4())
    pod["metadata"].setdefault("namespace", "default")
    if node is not None:
        pod["spec"]["nodeName"] = node
    return pod


def run_pod(runtime: Containerd, fixture: Mapping[str, Any], *,
            env: Mapping[str, str] | None = None, node: str | None = None,
            ready: Ready = in_pause, image: str | None = None) -> KubePod:
    """Start the pod; every container is created and started, then given `ready` (or its
    exit) before the next one, as the kubelet starts them in order."""
    cri = runtime.cri
    assert cri is not None
    manifest = as_scheduled(fixture, node)
    config = sandbox_config(manifest, runtime.dir / "logs", runtime.cgroup_top)
    sandbox_id = cri.call("RunPodSandbox", config=config).pod_sandbox_id
    info = cri.sandbox_info(sandbox_id)
    # hostNetwork: the sandbox joins no network namespace of its own (the node's)
    netns = next((ns.get("path", "") for ns in info["runtimeSpec"]["linux"]["namespaces"]
                  if ns["type"] == "network"), f"/proc/{info['pid']}/ns/net")
    pod = KubePod(manifest, sandbox_id, int(info["pid"]), netns, {}, config, runtime)
    volumes = PodVolumes(manifest, runtime.dir / "kubelet")
    for container in manifest["spec"]["containers"]:
        pod.containers[container["name"]] = start_container(
            runtime, pod, volumes, container, 0, env or {}, ready, image or runtime.app_image)
    record_status(runtime, pod)
    return pod


def start_container(runtime: Containerd, pod: KubePod, volumes: PodVolumes,
                    container: Mapping[str, Any], attempt: int, env: Mapping[str, str],
                    ready: Ready, image: str, timeout: float = 30) -> Container:
    cri = runtime.cri
    assert cri is not None
    config = container_config(pod.manifest, container, volumes, image, attempt, env)
    cid = cri.call("CreateContainer", pod_sandbox_id=pod.sandbox_id, config=config,
                   sandbox_config=pod.sandbox_config).container_id
    cri.call("StartContainer", container_id=cid)
    pid = int(cri.container_info(cid)["pid"])
    deadline = time.monotonic() + timeout
    while True:
        status = cri.call("ContainerStatus", container_id=cid).status
        if status.state == EXITED:
            log = Path(pod.sandbox_config.log_directory) / status.log_path  # or absolute
            return Container(container["name"], cid, attempt, None, container_log(log),
                             status.exit_code)
        if ready(pid):
            return Container(container["name"], cid, attempt, pid)
        if time.monotonic() > deadline:
            raise TimeoutError(f"container {container['name']} neither ready nor exited")
        time.sleep(0.02)


def container_log(path: Path) -> str:
    """The message part of the CRI log format: `<time> <stream> <F|P> <message>` lines."""
    if not path.exists():
        return ""
    return "".join(line.split(" ", 3)[3] + "\n" for line in path.read_text().splitlines()
                   if line.count(" ") >= 3)


def restart(runtime: Containerd, pod: KubePod, name: str, *, ready: Ready = in_pause,
            env: Mapping[str, str] | None = None) -> Container:
    """What the kubelet does after a container exited: a new container, attempt n+1, in the
    same sandbox (kuberuntime_manager.go SyncPod: computePodActions, startContainer)."""
    previous = pod.containers[name]
    spec = next(c for c in pod.manifest["spec"]["containers"] if c["name"] == name)
    volumes = PodVolumes(pod.manifest, runtime.dir / "kubelet")
    started = start_container(runtime, pod, volumes, spec, previous.attempt + 1, env or {},
                              ready, runtime.app_image)
    pod.containers[name] = started
    record_status(runtime, pod, last={name: previous})
    return started


def record_status(runtime: Containerd, pod: KubePod,
                  last: Mapping[str, Container] | None = None) -> None:
    """status as the kubelet reports it: podIP from the sandbox, one containerStatus per
    container with its containerd:// ID, running or (exited) waiting in CrashLoopBackOff."""
    cri = runtime.cri
    assert cri is not None
    network = cri.call("PodSandboxStatus", pod_sandbox_id=pod.sandbox_id).status.network
    ips = [network.ip, *(x.ip for x in network.additional_ips)]
    status = pod.manifest.setdefault("status", {})
    status.update(phase="Running", podIP=ips[0], podIPs=[{"ip": ip} for ip in ips],
                  qosClass=qos_class(pod.manifest))
    known = {s["name"]: s for s in status.get("containerStatuses", [])}
    statuses = []
    for name, container in pod.containers.items():
        entry = copy.deepcopy(known.get(name, {"name": name, "image": "localhost/e2e",
                                               "imageID": "", "lastState": {}}))
        entry.update(containerID=f"containerd://{container.id}", restartCount=container.attempt)
        if container.pid is not None:
            entry.update(ready=True, started=True,
                         state={"running": {"startedAt": RESTARTED_AT}})
        else:
            entry.update(ready=False, started=False, state={"waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off 10s restarting failed container={name}"}})
        # lastState: the last death, the current container's when it is dead itself
        before = container if container.pid is None else (last or {}).get(name)
        if before is not None and before.pid is None:
            entry["lastState"] = {"terminated": {
                "exitCode": before.exit_code or 0, "reason": "Error",
                "message": before.exit_output, "containerID": f"containerd://{before.id}",
                "startedAt": RESTARTED_AT, "finishedAt": RESTARTED_AT}}
        statuses.append(entry)
    status["containerStatuses"] = statuses
    if any(c.pid is None for c in pod.containers.values()):
        status["conditions"] = [c for c in status.get("conditions", [])
                                if c["type"] not in ("Ready", "ContainersReady")]


def netns_sysctl(netns: str, key: str) -> int:
    """A sysctl of the pod's network namespace, read there with sysctl(8)."""
    out = subprocess.run(["nsenter", f"--net={netns}", "sysctl", "-n", key],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return int(out)


def stop_pod(pod: KubePod) -> None:
    """StopPodSandbox then RemovePodSandbox: containers, netns, IP and cgroups go."""
    cri = pod.runtime.cri
    assert cri is not None
    cri.call("StopPodSandbox", pod_sandbox_id=pod.sandbox_id)
    cri.call("RemovePodSandbox", pod_sandbox_id=pod.sandbox_id)
