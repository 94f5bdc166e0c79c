"""The audit requests for a set of pods: each running container's processes on this host,
and each restarting container through its pod's sandbox. `run` builds a cycle's requests
here; `diagnose --pod/-l/--pod-spec` too (`agent.targets.diagnose`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from agent.audit import AuditRequest
from agent.collect.errors import CollectError
from agent.collect.procfs import ProcFS
from agent.kube.containers import Pod, pod_uid, running_containers
from agent.kube.podspec import declared_from_pod
from agent.model import NO_PROCESS, DeclaredContainer
from agent.targets.procmap import pids_for_containers
from agent.targets.sandbox import restarting_containers, sandbox_pids

log = logging.getLogger(__name__)


def declared_containers(pods: Sequence[Pod]) -> list[DeclaredContainer]:
    """The declared side of every running container of the pods, skipping unreadable pods."""
    found: list[DeclaredContainer] = []
    for pod in pods:
        for name, _container_id in running_containers(pod):
            try:
                found.append(declared_from_pod(pod, name))
            except Exception as exc:  # noqa: BLE001 - one odd pod must not stop the others
                log.warning("cannot read the pod spec", extra={
                    "pod_uid": pod_uid(pod), "container": name, "error": str(exc)})
    return found


def container_requests(
    declared: Sequence[DeclaredContainer], proc: ProcFS,
    pids: Mapping[tuple[str, str], tuple[int, ...]] | None = None,
) -> list[AuditRequest]:
    """One request per process of each declared container on this node, each knowing its
    container's processes and its pod's; a container with none is logged and gets a
    NO_PROCESS request (a target whose facts are unknown, and why). `pids` when the caller
    has mapped them already (every container of the pods, for the pods' processes). Raises
    CollectError when /proc cannot be listed."""
    if pids is None:
        pids = pids_for_containers(declared, proc)
    by_pod: dict[str, set[int]] = {}
    for (uid, _name), found in pids.items():
        by_pod.setdefault(uid, set()).update(found)
    requests: list[AuditRequest] = []
    for container in declared:
        container_pids = pids.get((container.pod.uid, container.container_name), ())
        pod_pids = frozenset(by_pod.get(container.pod.uid, ()))
        if not container_pids:
            why = (f"status says container {container.container_name} is running "
                   f"({container.container_id or 'no containerID'}), but no process in this "
                   "host's /proc is in its cgroup: it has exited since, or opaudit does not "
                   "see the host's PID namespace (hostPID)")
            log.warning("no process of this container found on this node", extra={
                "pod": f"{container.pod.namespace}/{container.pod.name}",
                "container": container.container_name,
                "container_id": container.container_id,
            })
            requests.append(AuditRequest(pid=NO_PROCESS, declared=container, absent=why))
        requests.extend(AuditRequest(pid=pid, declared=container, container_pids=container_pids,
                                     pod_pids=pod_pids) for pid in container_pids)
    return requests


def sandbox_requests(pods: Sequence[Pod], proc: ProcFS) -> list[AuditRequest]:
    """A request for each restarting container of `pods` (a crash loop: no live process),
    through its pod's sandbox, which holds the netns; a pod with no sandbox here is logged."""
    stalled = [(pod, name) for pod in pods for name in restarting_containers(pod)]
    if not stalled:
        return []
    try:
        holders = sandbox_pids([pod for pod, _ in stalled], proc)
    except CollectError as exc:
        log.error("cannot look for pod sandboxes", extra={"error": str(exc)})
        return []
    requests = []
    for pod, name in stalled:
        meta = pod.get("metadata") or {}
        where = {"pod": f"{meta.get('namespace')}/{meta.get('name')}", "container": name}
        pid = holders.get(pod_uid(pod).lower())
        if pid is None:
            log.warning("restarting container, and no sandbox of its pod on this node", extra=where)
            continue
        try:
            declared = declared_from_pod(pod, name)
        except Exception as exc:  # noqa: BLE001 - one odd pod must not stop the others
            log.warning("cannot read the pod spec", extra={**where, "error": str(exc)})
            continue
        requests.append(AuditRequest(pid=pid, declared=declared, via_sandbox=True))
    return requests
