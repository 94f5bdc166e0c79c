"""Pod -> container -> pids on this node, from /proc/*/cgroup.

A process belongs to a declared container when its container scope (see
`agent.collect.cgroups`) carries the container's `status.containerStatuses[].containerID`.
The pod UID alone never attributes a process: the pod's cgroup also holds the sandbox
(pause) container and, under CRI-O, conmon; neither runs the workload. When the cgroup
path also names a pod, it must be this pod (its metadata.uid, or a static pod's config
hash), so a container ID that some status reports for the wrong pod blames nobody.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.collect.cgroups import parse_cgroup_file
from agent.collect.errors import CollectError
from agent.collect.procfs import ProcFS
from agent.kube.containers import bare_container_id
from agent.model import DeclaredContainer

ContainerKey = tuple[str, str]  # (pod metadata.uid, container name)


def _pod_names(container: DeclaredContainer) -> frozenset[str]:
    names = {container.pod.uid.lower()}
    if container.pod.config_hash:
        names.add(container.pod.config_hash.lower())
    return frozenset(names)


def pids_for_containers(
    containers: Sequence[DeclaredContainer], proc: ProcFS
) -> dict[ContainerKey, tuple[int, ...]]:
    """Sorted pids of each declared container, keyed by (pod uid, container name).

    Reads /proc/*/cgroup in the cycle's one pass over /proc (`ProcFS.walk`). Every
    container gets a key; one with no container ID yet (not started) or no live process
    gets `()`. Processes that vanish mid-scan, or whose cgroup file cannot be read or
    parsed, are skipped. Raises CollectError only when /proc itself cannot be listed.
    """
    found: dict[ContainerKey, list[int]] = {
        (c.pod.uid, c.container_name): [] for c in containers
    }
    by_id: dict[str, DeclaredContainer] = {}
    for container in containers:
        bare = bare_container_id(container.container_id)
        if bare is not None:
            by_id[bare] = container
    if by_id:
        for entry in proc.walk(cgroups=True).entries:
            owner = _container_of(entry.cgroup, by_id) if entry.cgroup is not None else None
            if owner is not None:
                found[(owner.pod.uid, owner.container_name)].append(entry.pid)
    return {key: tuple(sorted(pids)) for key, pids in found.items()}


def _container_of(text: str, by_id: dict[str, DeclaredContainer]) -> DeclaredContainer | None:
    # Most processes on a node belong to none of the targets: skip them before parsing.
    if not any(bare in text for bare in by_id):
        return None
    try:
        membership = parse_cgroup_file(text)
    except CollectError:
        return None
    container = by_id.get(membership.container_id or "")
    if container is None:
        return None  # e.g. the ID is a parent of the process's scope, or the sandbox's
    if membership.pod_uid is not None and membership.pod_uid not in _pod_names(container):
        return None
    return container
