"""Pods of several processes, staged for real: a parent that forks children with their own
comms (and sockets), containers sharing one netns, each in its own kubepods cgroup scope.
The oracle for who holds what is `ss -tulnpH` in the netns and /proc/PID/cgroup."""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cgroup_staging import KubepodsCgroups, systemd_scope
from pod_staging import ApiPod, running_pod
from staging import STAGE_PYTHON, Sock, Stage, run

# The parent binds its shared sockets (inherited by every child, as a prefork server's
# workers share the listen socket), forks its children, each of which renames itself and
# binds its own sockets; the parent prints the children's pids once they are all bound.
FAMILY_CODE = r"""
import ctypes, json, os, signal, socket, sys
spec = json.loads(sys.argv[1])
libc = ctypes.CDLL(None)
def bind(items):
    held = []
    for s in items:
        fam = socket.AF_INET6 if s["family"] == 6 else socket.AF_INET
        k = socket.socket(fam, socket.SOCK_STREAM)
        k.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if s.get("v6only") is not None:
            k.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(s["v6only"]))
        k.bind((s["addr"], s["port"])); k.listen(8); held.append(k)
    return held
shared = bind(spec["sockets"])
libc.prctl(15, spec["comm"].encode()[:15], 0, 0, 0)
children = []
for child in spec["children"]:
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        libc.prctl(15, child["comm"].encode()[:15], 0, 0, 0)
        mine = bind(child["sockets"])
        if child.get("uid") is not None:  # a worker dropping root, as httpd's do
            os.setgroups([]); os.setresgid(child["uid"], child["uid"], child["uid"])
            os.setresuid(child["uid"], child["uid"], child["uid"])
        os.write(ready_w, b"1")
        while True:
            signal.pause()
    os.read(ready_r, 1)
    children.append(pid)
print(json.dumps(children), flush=True)
while True:
    signal.pause()
"""


@dataclass
class Container:
    name: str
    comm: str
    sockets: list[Sock] = field(default_factory=list)
    # (comm, sockets, uid it switches to after binding: None stays)
    children: list[tuple[str, list[Sock], int | None]] = field(default_factory=list)
    uid: int | None = None  # None: root
    bounding: list[str] | None = None  # None: every capability
    spec: dict[str, Any] = field(default_factory=dict)  # the manifest's container entry
    container_id: str = field(default_factory=lambda: os.urandom(32).hex())
    pids: list[int] = field(default_factory=list)  # parent first

    @property
    def comms(self) -> list[str]:
        return [self.comm, *(comm for comm, _, _ in self.children)]


@dataclass
class StagedFamilyPod(ApiPod):
    containers: list[Container]
    netns: str

    def container(self, name: str) -> Container:
        return next(c for c in self.containers if c.name == name)


def stage_family_pod(stage: Stage, cgroups: KubepodsCgroups, name: str,
                     containers: list[Container], labels: dict[str, str]) -> StagedFamilyPod:
    """The containers' process families in one netns, each container in its own systemd
    scope of one kubepods pod slice, and the pod as the API would show it."""
    netns = stage.netns()
    uid = str(uuid.uuid4())
    for container in containers:
        spec = {"sockets": [s.as_spec() for s in container.sockets], "comm": container.comm,
                "children": [{"comm": c, "sockets": [s.as_spec() for s in socks], "uid": u}
                             for c, socks, u in container.children]}
        staged = stage.spawn(netns=netns, uid=container.uid, bounding=container.bounding,
                             argv=[STAGE_PYTHON, "-c", FAMILY_CODE, json.dumps(spec)])
        assert staged.popen.stdout is not None
        children = json.loads(staged.popen.stdout.readline())
        container.pids = [staged.pid, *children]
        for pid in container.pids:
            cgroups.place_v2(pid, systemd_scope(uid, container.container_id))
    manifest = running_pod(name, uid, labels, [
        ({"name": c.name, "image": f"registry.example/{c.name}:1", **c.spec},
         f"containerd://{c.container_id}") for c in containers])
    return StagedFamilyPod(manifest, containers, netns)


def ss_owners(netns: str) -> dict[tuple[str, int], set[int]]:
    """`ss -tulnpH` in the netns: (proto, port) -> the pids holding the socket."""
    out = run(["ip", "netns", "exec", netns, "ss", "-tulnpH"]).stdout
    found: dict[tuple[str, int], set[int]] = {}
    for line in out.splitlines():
        fields = line.split()
        port = int(fields[4].rpartition(":")[2])
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        found.setdefault((fields[0], port), set()).update(pids)
    return found


def cgroup_names(pid: int, container_id: str) -> bool:
    """Whether /proc/PID/cgroup names the container's scope."""
    return f"cri-containerd-{container_id}.scope" in Path(f"/proc/{pid}/cgroup").read_text()
