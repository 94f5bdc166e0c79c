"""A Pod's containers as its status reports them; the one parser of `containerID`.

The kubelet writes `status.containerStatuses[].containerID` as `<runtime>://<id>`
(`containerd://`, `cri-o://`, `docker://`; kubelet kubecontainer.ContainerID.String()).
The bare id is what names the container's cgroup scope (`agent.collect.cgroups`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Pod = Mapping[str, Any]
Fingerprint = tuple[tuple[str, str], ...]  # (container name, containerID) of running containers


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    name: str
    container_id: str  # as the status spells it: "containerd://<64 hex>"
    bare_id: str  # the id alone, lower case: "<64 hex>"
    running: bool
    init: bool  # from initContainerStatuses


def bare_container_id(status_id: str | None) -> str | None:
    """`containerd://<64 hex>` (or `cri-o://`, `docker://`) -> `<64 hex>`; empty -> None."""
    if not status_id:
        return None
    _, _, bare = status_id.rpartition("://")
    return bare.strip().lower() or None


def as_mapping(value: Any) -> Mapping[str, Any]:
    """`value` if the API gave a mapping there, else an empty one (a hostile or odd pod)."""
    return value if isinstance(value, Mapping) else {}


def mapping_entries(value: Any) -> list[Mapping[str, Any]]:
    """The mappings of a list the API gave, nothing for anything else."""
    return [e for e in value if isinstance(e, Mapping)] if isinstance(value, list) else []


def container_statuses(pod: Pod) -> tuple[ContainerStatus, ...]:
    """Every app and init container status that carries a containerID."""
    status = pod.get("status")
    status = status if isinstance(status, Mapping) else {}
    found = []
    for key, init in (("containerStatuses", False), ("initContainerStatuses", True)):
        for entry in mapping_entries(status.get(key)):
            raw = entry.get("containerID")
            bare = bare_container_id(str(raw)) if raw else None
            if bare is None:
                continue
            state = entry.get("state")
            running = isinstance(state, Mapping) and state.get("running") is not None
            found.append(ContainerStatus(str(entry.get("name")), str(raw), bare, running, init))
    return tuple(found)


def running_containers(pod: Pod) -> Fingerprint:
    """(container name, containerID) of the pod's running app containers, sorted.

    Init and ephemeral containers are not audited; a container without a containerID or
    not in state `running` has no process to read yet.
    """
    status = pod.get("status")
    if not isinstance(status, Mapping) or status.get("phase") != "Running":
        return ()
    found = [(c.name, c.container_id) for c in container_statuses(pod)
             if c.running and not c.init]
    return tuple(sorted(found))


def restart_marks(pod: Pod) -> Fingerprint:
    """(container name, "restart <restartCount> <last containerID>") of each app container
    that is not running and has died (waiting in CrashLoopBackOff, or terminated), sorted.

    A crash-looping container has no running containerID to notice: each restart raises
    its restartCount (kubelet kuberuntime_manager.go) and names the dead container in
    lastState, so a new mark means a restart the `run` loop has not audited yet.
    """
    status = pod.get("status")
    if not isinstance(status, Mapping) or status.get("phase") not in ("Running", "Pending"):
        return ()
    found = []
    for entry in mapping_entries(status.get("containerStatuses")):
        state, last = (as_mapping(entry.get(key)) for key in ("state", "lastState"))
        dead = state.get("terminated") or last.get("terminated")
        if state.get("running") is not None or not isinstance(dead, Mapping):
            continue
        found.append((str(entry.get("name")),
                      f"restart {entry.get('restartCount', 0)} {dead.get('containerID', '')}"))
    return tuple(sorted(found))


def pod_uid(pod: Pod) -> str:
    meta = pod.get("metadata")
    return str(meta.get("uid", "")) if isinstance(meta, Mapping) else ""
