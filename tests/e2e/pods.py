"""Pods with Kubernetes semantics: a sandbox netns (as CNI leaves it), the pause container
holding it, and the app container, all started by runc with CRI-like specs in kubepods cgroups.

The manifest handed to opaudit (`--pod-spec`, or the API test server) is the fixture with what
the cluster would report for this run: a fresh pod uid, the containerd:// ID of the container
runc started, and the sandbox's addresses as status.podIPs.
"""

from __future__ import annotations

import copy
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from e2e.cri import CriContainer, Layout
from e2e.lane import Lane
from staging import run

DUAL_STACK = (("192.0.2.10/24",), ("2001:db8::10/64",))


@dataclass(frozen=True)
class CriPod:
    manifest: dict[str, Any]  # as the API would return it for this run
    netns: str
    sandbox: CriContainer
    app: CriContainer

    @property
    def uid(self) -> str:
        return str(self.manifest["metadata"]["uid"])


def as_running(fixture: Mapping[str, Any], container_id: str,
               addresses: Sequence[str], node: str | None = None) -> dict[str, Any]:
    pod = copy.deepcopy(dict(fixture))
    pod["metadata"]["uid"] = str(uuid.uuid4())
    if node is not None:
        pod["spec"]["nodeName"] = node
    ips = [a.split("/")[0] for a in addresses]
    pod["status"]["podIP"] = ips[0]
    pod["status"]["podIPs"] = [{"ip": ip} for ip in ips]
    pod["status"]["containerStatuses"][0]["containerID"] = f"containerd://{container_id}"
    return pod


def start_pod(lane: Lane, fixture: Mapping[str, Any], layout: Layout, *,
              addresses: tuple[tuple[str, ...], tuple[str, ...]] = DUAL_STACK,
              sysctls: Mapping[str, int] | None = None, env: Mapping[str, str] | None = None,
              node: str | None = None) -> CriPod:
    v4, v6 = addresses
    netns_name = lane.stage.netns(v4=v4, v6=v6, sysctls=sysctls)
    netns = f"/run/netns/{netns_name}"
    container_id = secrets.token_hex(32)
    manifest = as_running(fixture, container_id, [*v4, *v6], node)
    sandbox = lane.runc.sandbox(manifest, netns, layout)
    container = manifest["spec"]["containers"][0]
    spec = lane.runc.spec(manifest, container, netns,
                          lane.runc.cgroups_path(layout, manifest, container_id), env or {})
    app = lane.runc.start(spec, container_id)
    return CriPod(manifest, netns_name, sandbox, app)


def stop_pod(lane: Lane, pod: CriPod) -> None:
    """What the kubelet does when the pod goes: containers, then the sandbox's netns."""
    for container in (pod.app, pod.sandbox):
        lane.runc.runc("delete", "--force", container.id, check=False)
    run(["ip", "netns", "del", pod.netns], check=False)  # Stage.close() skips it then
