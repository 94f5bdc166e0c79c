"""Containers with no live process (a crash loop), and the sandbox that holds their pod's netns.

A crash-looping container has no process between restarts, but every container of a pod
shares the netns that the pod's sandbox (`pause`, the infra container) holds for the pod's
whole life. The sandbox sits in the pod's cgroup under its own container scope, whose id is
none of the pod's app containers' (kubelet kuberuntime: one sandbox per pod). CRI-O's
`crio-conmon-<id>.scope` also sits in the pod's cgroup, but conmon runs in the host's
netns: it has no container scope (`agent.collect.cgroups`) and is never taken.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.collect.cgroups import parse_cgroup_file
from agent.collect.errors import CollectError
from agent.collect.procfs import ProcFS
from agent.kube.containers import Pod, as_mapping, bare_container_id, mapping_entries


def restarting_containers(pod: Pod) -> tuple[str, ...]:
    """Names of the pod's app containers that ran and died and are not running now (waiting
    in CrashLoopBackOff, or terminated), sorted; none for a pod that has finished."""
    status = as_mapping(pod.get("status"))
    if status.get("phase") not in ("Running", "Pending"):
        return ()
    names = []
    for entry in mapping_entries(status.get("containerStatuses")):
        state = as_mapping(entry.get("state"))
        if state.get("running") is not None:
            continue
        died = state.get("terminated") is not None
        if died or as_mapping(entry.get("lastState")).get("terminated") is not None:
            names.append(str(entry.get("name")))
    return tuple(sorted(names))


def _pod_keys(pod: Pod) -> tuple[str, frozenset[str], frozenset[str]]:
    """(uid, the names its cgroups may carry, the bare ids of its app containers)."""
    meta = as_mapping(pod.get("metadata"))
    uid = str(meta.get("uid", "")).lower()
    names = {uid}
    annotations = as_mapping(meta.get("annotations"))
    mirror = annotations.get("kubernetes.io/config.mirror")
    if mirror:
        names.add(str(mirror).lower())  # a static pod's cgroups carry its config hash
    status = as_mapping(pod.get("status"))
    ids = set()
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for entry in mapping_entries(status.get(key)):
            for state in (entry, as_mapping(as_mapping(entry.get("lastState")).get("terminated"))):
                bare = bare_container_id(str(state.get("containerID") or ""))
                if bare is not None:
                    ids.add(bare)
    return uid, frozenset(names), frozenset(ids)


def sandbox_pids(pods: Sequence[Pod], proc: ProcFS) -> dict[str, int]:
    """Pod uid -> the lowest live pid in the pod's sandbox scope, for the pods that have one.

    Reads /proc/*/cgroup in the cycle's one pass over /proc (`ProcFS.walk`); raises
    CollectError only when /proc cannot be listed.
    """
    keyed = [_pod_keys(pod) for pod in pods]
    wanted = {name: (uid, ids) for uid, names, ids in keyed if uid for name in names}
    # The systemd driver writes the uid with '_' for '-' in the slice name.
    needles = {*wanted, *(name.replace("-", "_") for name in wanted)}
    found: dict[str, int] = {}
    if not wanted:
        return found
    for entry in sorted(proc.walk(cgroups=True).entries, key=lambda e: e.pid):
        text = entry.cgroup
        if text is None or not any(needle in text for needle in needles):
            continue
        try:
            membership = parse_cgroup_file(text)
        except CollectError:
            continue
        owner = wanted.get(membership.pod_uid or "")
        if owner is None or membership.container_id is None:
            continue  # not in a pod we want, or a pod-level process such as conmon
        uid, app_ids = owner
        if membership.container_id not in app_ids:
            found.setdefault(uid, entry.pid)
    return found
