"""The targets `diagnose` names: `--pod`/`-l` (pods from the API) and `--pod-spec` -> their
containers' processes on this host; `--pid --pod-spec` -> the container each pid runs in.

Without `--node` or `NODE_NAME`, this host's node is the node of the selected pods whose
containers have a process in this host's /proc: a container ID from the API's
containerStatuses found in /proc/PID/cgroup proves where the container runs. The hostname
cannot tell (a pod without hostNetwork has the pod's name as hostname, and cloud node names
often differ from hostnames: `ip-10-0-0-1.ec2.internal` for host `ip-10-0-0-1`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.audit import AuditRequest
from agent.kube.client import Api
from agent.kube.containers import container_statuses
from agent.kube.errors import KubeError
from agent.kube.podspec import declared_from_pod
from agent.targets.procmap import pids_for_containers
from agent.targets.requests import container_requests, declared_containers, sandbox_requests

if TYPE_CHECKING:
    from agent.collect.procfs import ProcFS


class TargetError(ValueError):
    """The user's pods or selector select nothing auditable here: one line, exit 2."""


@dataclass(frozen=True, slots=True)
class PodSelection:
    """What `--pod`/`-l` name, as given on the command line."""

    pods: tuple[tuple[str, str], ...] = ()  # (namespace, name)
    selector: str | None = None
    namespace: str | None = None  # for the selector
    container: str | None = None  # only this container of each pod
    node: str | None = None  # this host's node, when the user or NODE_NAME says


@dataclass(frozen=True, slots=True)
class PodTargets:
    requests: tuple[AuditRequest, ...]
    node: str | None  # the node the audited pods run on, when one


def fetch_pods(api: Api, selection: PodSelection) -> list[dict[str, Any]]:
    """The named pods and the pods the selector matches; user mistakes as TargetError."""
    pods = []
    for namespace, name in selection.pods:
        try:
            pod = api.get_pod(namespace, name)
        except KubeError as exc:
            if exc.status == 404:
                raise TargetError(f"pod {namespace}/{name} not found") from None
            raise
        where = _node_of(pod)
        if selection.node and where and where != selection.node:
            raise TargetError(f"pod {namespace}/{name} runs on node {where}, not on "
                              f"{selection.node}: run opaudit on {where}")
        pods.append(pod)
    if selection.selector is not None:
        try:
            pods += api.list_pods(selection.node, selection.selector, selection.namespace)[0]
        except KubeError as exc:
            if exc.status == 400:  # the API server's parse error names the bad part
                raise TargetError(f"-l {selection.selector!r}: not a label selector: "
                                  f"{exc.message}") from None
            raise
        if not pods:
            raise TargetError(f"no pod matches -l {selection.selector!r}{_scope(selection)}")
    return pods


def pod_targets(pods: Sequence[dict[str, Any]], selection: PodSelection,
                proc: ProcFS) -> PodTargets:
    # Every container's processes are mapped, the ones --container leaves out too: their
    # listeners in the pod's netns are theirs, not nobody's.
    everything = declared_containers(pods)
    declared = [c for c in everything if selection.container in (None, c.container_name)]
    # Restarting containers (no process) whose pod's sandbox is on this host.
    stalled = [r for r in sandbox_requests(pods, proc) if r.declared is not None
               and selection.container in (None, r.declared.container_name)]
    if not declared and not stalled:
        raise TargetError(f"no running container{_named(selection.container)} in the "
                          f"{_count(pods, 'selected pod')}")
    pids = pids_for_containers(everything, proc)
    here = {c.pod.uid for c in declared if pids[(c.pod.uid, c.container_name)]}
    here |= {r.declared.pod.uid for r in stalled if r.declared is not None}
    nodes = {uid: _node_of(p) for p in pods if (uid := _uid(p))}
    if selection.node is None:
        for namespace, name in selection.pods:
            pod = next(p for p in pods if _ref(p) == (namespace, name))
            if _uid(pod) not in here:
                raise TargetError(f"pod {namespace}/{name} has no process in this host's "
                                  f"/proc{_why_not_here(pod)}")
    if not here:  # said once here, not as a warning per container first
        where = sorted({n for n in nodes.values() if n})
        raise TargetError(
            f"no process of the {_count(declared, 'running container')} of the selected "
            f"pods is in this host's /proc (pods on node {', '.join(where) or '?'}): on "
            "their node, opaudit needs the host's PID namespace (hostPID) to see them")
    if selection.node is None:
        declared = [c for c in declared if c.pod.uid in here]  # the other nodes' pods
    requests = container_requests(declared, proc, pids) + stalled
    local = {nodes.get(uid) for uid in here}
    node = selection.node or (local.pop() if len(local) == 1 else None)
    return PodTargets(requests=tuple(requests), node=node)


def pid_spec_requests(pod: dict[str, Any], pids: Sequence[int], container: str | None,
                      proc: ProcFS) -> list[AuditRequest]:
    """`--pid P --pod-spec F`: each pid judged as the container of F it runs in, found by
    the containerID (status.containerStatuses) in /proc/P/cgroup, with every process of
    that container; failing that the only container, or the one `--container` names. A
    sidecar listed first must not be taken for the app (TargetError otherwise)."""
    names = _container_names(pod)
    running = declared_containers([pod])
    placed = pids_for_containers(running, proc) if running else {}
    requests: dict[int, AuditRequest] = {}
    for pid in pids:
        home = next((name for (_uid, name), found in placed.items() if pid in found), None)
        if container is not None and home is not None and home != container:
            raise TargetError(f"pid {pid} runs in container {home!r} of the pod, not in "
                              f"{container!r}: drop --container, or give a pid of {container}")
        name = container or home or (names[0] if len(names) == 1 else None)
        if name is None:
            raise TargetError(
                f"pid {pid} is in no container of pod {_ref(pod)[0]}/{_ref(pod)[1]} by its "
                f"cgroup{_no_ids(pod)}, and the pod has {len(names)} containers "
                f"({', '.join(names)}): give --container NAME")
        if home is None:
            requests.setdefault(pid, AuditRequest(pid=pid, declared=declared_from_pod(pod, name)))
            continue
        declared = next(c for c in running if c.container_name == home)
        own = placed[(declared.pod.uid, home)]
        everyone = frozenset(p for found in placed.values() for p in found)
        for member in own:
            requests.setdefault(member, AuditRequest(pid=member, declared=declared,
                                                     container_pids=own, pod_pids=everyone))
    return list(requests.values())


def _container_names(pod: dict[str, Any]) -> list[str]:
    containers = (pod.get("spec") or {}).get("containers") or []
    return [str(c.get("name")) for c in containers if isinstance(c, dict)]


def _no_ids(pod: dict[str, Any]) -> str:
    if not container_statuses(pod):
        return " (the spec has no status.containerStatuses[].containerID to match)"
    return ""


def _node_of(pod: dict[str, Any]) -> str | None:
    where = (pod.get("spec") or {}).get("nodeName")
    return str(where) if where else None


def _uid(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("uid") or "")


def _ref(pod: dict[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _why_not_here(pod: dict[str, Any]) -> str:
    """Why none of the pod's containers has a process here, as far as this host can tell:
    another node, or this one (its hostname is the node's name) and the IDs match nothing."""
    node = _node_of(pod)
    if node is None:
        return ": it is not scheduled on a node yet"
    host = os.uname().nodename
    if node.split(".")[0] != host.split(".")[0]:
        return (f": it runs on node {node} (this host is {host}); run opaudit there (with "
                "hostPID in a pod)")
    ids = [s.container_id for s in container_statuses(pod)]
    if not ids:
        return (f": it runs on this node ({node}), but its status has no containerStatuses"
                "[].containerID to find its processes by (a spec from `kubectl get pod -o "
                "yaml` of a running pod has them; or give --pid)")
    shown = ", ".join(i.rpartition("://")[2][:12] for i in ids)
    return (f": it runs on this node ({node}), but no process here is in a cgroup of its "
            f"containers ({shown}): they have exited or restarted since this status was "
            "read (read the pod again), or opaudit does not see the host's PID namespace "
            "(hostPID)")


def _scope(selection: PodSelection) -> str:
    scope = f" in namespace {selection.namespace}" if selection.namespace else ""
    return scope + (f" on node {selection.node}" if selection.node else "")


def _named(container: str | None) -> str:
    return f" named {container!r}" if container else ""


def _count(items: Sequence[object], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"
