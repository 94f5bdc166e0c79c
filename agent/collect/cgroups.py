"""/proc/PID/cgroup: which kubepods pod and container scope a process lives in.

This module knows the cgroup path shapes the kubelet and the container runtimes create,
and nothing of the Kubernetes API:

- systemd driver: `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_underscored>.slice/
  cri-containerd-<id>.scope` (also `crio-<id>.scope`, `docker-<id>.scope`; Guaranteed pods
  have no QoS level: `kubepods-pod<uid>.slice`);
- runc outside systemd-cgroup mode under a systemd kubelet: one directory named
  `kubepods-<qos>-pod<uid>.slice:cri-containerd:<id>`;
- cgroupfs driver: `/kubepods/<qos>/pod<uid>/<id>` (Guaranteed: `/kubepods/pod<uid>/<id>`).

Paths are relative to the reader's cgroup namespace, so a reader in a private one sees
`/../../kubepods-…` or `0::/`; we match the pod and container segments, never a prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.collect.errors import ParseError

# "hierarchy-ID:controller-list:cgroup-path" (cgroups(7)); the path may itself hold ':'.
_LINE = re.compile(r"([0-9]{1,10}):([^:]*):(.*)", re.DOTALL)

_HEX64 = r"[0-9a-f]{64}"
_UUID_DASHED = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID_UNDERSCORED = r"[0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12}"
# A static pod's cgroup carries its config hash (32 hex), not the mirror pod's uid.
_CONFIG_HASH = r"[0-9a-f]{32}"

# cgroupfs driver: the pod directory is `pod<uid>` with the API's dashes.
_CGROUPFS_POD = re.compile(rf"pod(?P<uid>{_UUID_DASHED}|{_CONFIG_HASH})")
# systemd driver: `.slice` names cannot hold '-' inside a unit name part, so the kubelet
# escapes the uid's dashes as '_' (pkg/kubelet/cm/cgroup_manager_linux.go).
_SYSTEMD_POD = re.compile(
    rf"[\w.-]*kubepods[\w-]*-pod(?P<uid>{_UUID_UNDERSCORED}|{_CONFIG_HASH})\.slice"
)
# The container's own scope (systemd) or directory (cgroupfs) right below the pod.
# `crio-conmon-<id>.scope` is CRI-O's monitor process, not the container: no match.
_CONTAINER_SCOPE = re.compile(
    rf"(?:cri-containerd|containerd|crio|cri-o|docker)-(?P<id>{_HEX64})\.scope"
)
_CONTAINER_DIR = re.compile(rf"(?:crio-|docker-)?(?P<id>{_HEX64}|{_UUID_DASHED})")
# runc not in systemd-cgroup mode: `<pod slice>:<runtime>:<id>` as one directory name.
_COLON_FORM = re.compile(rf"(?P<pod>[^:]+):(?:cri-containerd|crio|docker):(?P<id>{_HEX64})")
# Only the CRI runtimes' scopes say "Kubernetes" without a pod segment above them (seen
# from a sibling container's cgroup namespace: `0::/../cri-containerd-<id>.scope`).
# A bare `docker-<id>.scope` there is as likely plain docker, so it is not taken.
_CRI_SCOPE = re.compile(rf"(?:cri-containerd|crio)-(?P<id>{_HEX64})\.scope")


@dataclass(frozen=True, slots=True)
class CgroupLine:
    """One line of /proc/PID/cgroup. Hierarchy 0 with no controllers is cgroup v2."""

    hierarchy_id: int
    controllers: tuple[str, ...]
    path: str


@dataclass(frozen=True, slots=True)
class CgroupMembership:
    """Every hierarchy's line, plus the pod and container scope found in the best one.

    `pod_uid` is in API form (dashes), or a static pod's 32-hex config hash as it appears;
    `container_id` is the runtime's id (64 hex, or a UUID under some cgroupfs setups);
    `container_path` is the path (as the reader sees it) of the container's own cgroup,
    which sub-cgroups such as crun's `.../container` sit below.
    """

    lines: tuple[CgroupLine, ...]
    pod_uid: str | None = None
    container_id: str | None = None
    container_path: str | None = None

    @property
    def unified_path(self) -> str | None:
        """The cgroup v2 path (`0::` line), if the host mounts cgroup v2 at all."""
        for line in self.lines:
            if line.hierarchy_id == 0 and not line.controllers:
                return line.path
        return None


@dataclass(frozen=True, slots=True)
class _PathMatch:
    pod_uid: str | None
    container_id: str | None
    container_path: str | None

    @property
    def rank(self) -> int:
        """Pod and container (3) > container only (2) > pod only (1) > nothing (0)."""
        if self.container_id is not None:
            return 3 if self.pod_uid is not None else 2
        return 1 if self.pod_uid is not None else 0


_NO_MATCH = _PathMatch(None, None, None)


def _pod_uid(segment: str, after_kubepods: bool) -> str | None:
    systemd = _SYSTEMD_POD.fullmatch(segment)
    if systemd:
        return systemd["uid"].replace("_", "-")
    cgroupfs = _CGROUPFS_POD.fullmatch(segment)
    return cgroupfs["uid"] if cgroupfs and after_kubepods else None


def _container_id(segment: str) -> str | None:
    match = _CONTAINER_SCOPE.fullmatch(segment) or _CONTAINER_DIR.fullmatch(segment)
    return match["id"] if match else None


def _joined(segments: list[str], count: int) -> str:
    return "/" + "/".join(segments[:count])


def _match_path(path: str) -> _PathMatch:
    """The pod and container scope named by one cgroup path (no match: all None)."""
    segments = [s for s in path.split("/") if s]
    # cgroupfs `pod<uid>` is taken below a kubepods directory, or below `..` when the
    # reader's cgroup namespace hides the kubepods root (a DaemonSet on cgroup v2).
    after_kubepods = bool(segments) and segments[0] == ".."
    for index, segment in enumerate(segments):
        colon = _COLON_FORM.fullmatch(segment)
        if colon:
            uid = _pod_uid(colon["pod"], after_kubepods)
            if uid is not None:
                return _PathMatch(uid, colon["id"], _joined(segments, index + 1))
        uid = _pod_uid(segment, after_kubepods)
        if uid is not None:
            following = segments[index + 1] if index + 1 < len(segments) else ""
            container = _container_id(following)
            if container is None:
                return _PathMatch(uid, None, None)
            return _PathMatch(uid, container, _joined(segments, index + 2))
        after_kubepods = after_kubepods or segment.startswith("kubepods")
    for index, segment in enumerate(segments):
        cri = _CRI_SCOPE.fullmatch(segment)
        if cri:
            return _PathMatch(None, cri["id"], _joined(segments, index + 1))
    return _NO_MATCH


def parse_cgroup_line(line: str) -> CgroupLine:
    match = _LINE.fullmatch(line)
    if not match:
        raise ParseError("cgroup", f"not 'id:controllers:path': {line[:60]!r}")
    controllers = tuple(c for c in match[2].split(",") if c)
    return CgroupLine(hierarchy_id=int(match[1]), controllers=controllers, path=match[3])


def parse_cgroup_file(text: str) -> CgroupMembership:
    """Parse /proc/PID/cgroup text (v1, v2 or hybrid). Raises ParseError on a malformed line.

    Where hierarchies disagree (a hybrid host whose runtime uses only the v1 controllers,
    leaving `0::/system.slice/containerd.service`), the line naming a pod and container
    wins; among equals the v2 line, then the first in file order.
    """
    lines = tuple(parse_cgroup_line(raw) for raw in text.split("\n") if raw)
    best = _NO_MATCH
    best_key = (0, False)
    for line in lines:
        match = _match_path(line.path)
        key = (match.rank, line.hierarchy_id == 0 and not line.controllers)
        if match.rank and key > best_key:
            best, best_key = match, key
    return CgroupMembership(
        lines=lines, pod_uid=best.pod_uid, container_id=best.container_id,
        container_path=best.container_path,
    )
