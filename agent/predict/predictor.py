"""The snapshot `collect/` would read from a running container, predicted from its pod spec,
a runtime model and (optionally) its image, so that the same rules judge it before deploy.

A fact that cannot be known before the container runs is a Gap with its reason, so the
rules that need it say "unknown", never "pass". Where the answer turns on something about
the image that was not given (is its USER root? does its entrypoint carry file
capabilities?) each alternative is predicted, with the condition under which it holds.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from agent.model import (
    CAPABILITY_NAMES,
    NO_PROCESS,
    Capabilities,
    DeclaredContainer,
    Fact,
    Filesystem,
    Gap,
    Identity,
    IdQuad,
    Listener,
    NetnsFacts,
    ObservedProcess,
    PathAccess,
    Profile,
    RuntimePrediction,
    SocketOwner,
    Sysctls,
    capability_bit,
)
from agent.predict.imagefacts import ImageFacts
from agent.predict.paths import DAC_OVERRIDE, READ_ONLY_VOLUMES, predict_paths
from agent.predict.runtimes import RuntimeModel
from agent.rules.paths import required_paths
from agent.rules.ports import promised_ports

# The kernel's highest capability (CAP_CHECKPOINT_RESTORE, Linux 5.9); a privileged
# container gets every one the node's kernel knows.
LAST_CAP = len(CAPABILITY_NAMES) - 1
ALL_CAPS = (1 << (LAST_CAP + 1)) - 1
NET_BIND_SERVICE = 1 << 10
SYSCTL = Fact.UNPRIVILEGED_PORT_START
NOT_ROOT = -1  # the uid is not 0 (runAsNonRoot: true), but which one is not known
IF_ROOT = "if the image's USER is root (give --image or --image-user to settle it)"
IF_NOT_ROOT = "if the image's USER is not root (give --image or --image-user to settle it)"
NO_FILE_CAPS = "unless the entrypoint has file capabilities (give --image to settle it)"
WITH_FILE_CAPS = "if the entrypoint has file capabilities (setcap {names}+ep)"


@dataclass(frozen=True, slots=True)
class PodFacts:
    """What a pod spec says beyond `DeclaredContainer`, as the predictor needs it."""

    fs_group: int | None
    supplemental_groups: tuple[int, ...]
    command: tuple[str, ...] | None  # the container's command (replaces ENTRYPOINT), if set
    args: tuple[str, ...] | None  # its args (replace CMD), if set


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def pod_facts(pod: Mapping[str, Any], container: str) -> PodFacts:
    """Read as leniently as `declared_from_pod`: a field of the wrong type counts as unset."""
    spec = _dict(pod.get("spec"))
    psc = _dict(spec.get("securityContext"))
    groups = tuple(g for g in map(_number, _list(psc.get("supplementalGroups")))
                   if g is not None)
    command = args = None
    for entry in [*_list(spec.get("initContainers")), *_list(spec.get("containers"))]:
        if isinstance(entry, dict) and entry.get("name") == container:
            if isinstance(entry.get("command"), list) and entry["command"]:
                command = tuple(str(a) for a in entry["command"])
            if isinstance(entry.get("args"), list) and entry["args"]:
                args = tuple(str(a) for a in entry["args"])
    return PodFacts(fs_group=_number(psc.get("fsGroup")), supplemental_groups=groups,
                    command=command, args=args)


def command_line(facts: PodFacts, image: ImageFacts | None) -> tuple[str, ...]:
    """What the container runs, as Kubernetes composes it: `command` replaces the image's
    ENTRYPOINT and `args` its CMD (a `command` alone drops the CMD too). Empty when the
    executable is the image's and the image was not given."""
    if facts.command is not None:
        return facts.command + (facts.args or ())
    if image is None or not image.entrypoint and not image.cmd:
        return ()
    return image.entrypoint + (facts.args if facts.args is not None else image.cmd)


@functools.lru_cache(maxsize=1024)
def _mask(names: tuple[str, ...]) -> int:
    bits = (capability_bit(n) for n in names if n.strip().upper() != "ALL")
    return sum(1 << b for b in set(bits) if b is not None and b <= LAST_CAP)


def bounding_set(model: RuntimeModel, declared: DeclaredContainer) -> int:
    """The CRI's order (containerd internal/cri/opts WithCapabilities, CRI-O alike): add ALL,
    then drop ALL, then each added, then each dropped; privileged gets every capability."""
    if declared.privileged:
        return ALL_CAPS
    upper_add = {c.strip().upper() for c in declared.capabilities_add}
    upper_drop = {c.strip().upper() for c in declared.capabilities_drop}
    caps = ALL_CAPS if "ALL" in upper_add else _mask(model.default_capabilities)
    if "ALL" in upper_drop:
        caps = 0
    caps |= _mask(declared.capabilities_add)
    return caps & ~_mask(declared.capabilities_drop)


def no_new_privs(declared: DeclaredContainer) -> bool:
    # The kubelet asks for no_new_privs exactly when allowPrivilegeEscalation is false
    # (pkg/securitycontext/util.go AddNoNewPrivileges). The API rejects false together with
    # privileged: true or an added "CAP_SYS_ADMIN", spelled so (core/v1 validation; the docs:
    # escalation is "always true" then); "SYS_ADMIN" passes and gets no_new_privs.
    rejected = declared.privileged is True or "CAP_SYS_ADMIN" in declared.capabilities_add
    return declared.allow_privilege_escalation is False and not rejected


def seccomp_mode(declared: DeclaredContainer, seccomp_default: bool) -> str:
    if declared.privileged:
        return "disabled"  # the CRI gives a privileged container no seccomp filter
    profile = declared.seccomp_profile
    if profile in ("RuntimeDefault", "Localhost"):
        return "filter"
    if profile == "Unconfined":
        return "disabled"
    return "filter" if seccomp_default else "disabled"


def _uid_choices(declared: DeclaredContainer, image: ImageFacts | None
                 ) -> list[tuple[int, str | None]]:
    """(uid, condition): certain when the spec or the image says; else both alternatives.
    NOT_ROOT: runAsNonRoot alone (the kubelet refuses to start such a container as uid 0)."""
    if declared.run_as_user is not None:
        return [(declared.run_as_user, None)]
    if image is not None and image.uid is not None:
        return [(image.uid, None)]
    if declared.run_as_non_root:
        return [(NOT_ROOT, None)]
    return [(0, IF_ROOT), (NOT_ROOT, IF_NOT_ROOT)]


def _file_caps_choices(uid: int, bounding: int, declared: DeclaredContainer,
                       image: ImageFacts | None, program: str | None, env: dict[str, str]
                       ) -> list[tuple[int, bool, str | None]]:
    """(file permitted, file effective, condition) of the entrypoint. Under no_new_privs the
    kernel still honours a file capability the process held in its permitted set before
    execve (security/commoncap.c cap_bprm_creds_from_file), and runc applies the spec's
    permitted set (= the bounding set here) before it: allowPrivilegeEscalation does not
    settle this, only the image does (see tests/predict/test_kernel_file_caps.py)."""
    if uid == 0:
        return [(0, False, None)]
    if image is not None and image.layers_read and program:
        caps = image.capabilities_of(program, env)  # the pod's command, else the image's
        return [(caps[0], caps[1], None)] if caps else [(0, False, None)]
    candidate = (_mask(declared.capabilities_add) | NET_BIND_SERVICE) & bounding
    if not candidate:
        return [(0, False, None)]
    names = ",".join(f"cap_{n.lower()}" for n in _names(candidate))
    return [(0, False, NO_FILE_CAPS), (candidate, True, WITH_FILE_CAPS.format(names=names))]


def _names(mask: int) -> list[str]:
    return [CAPABILITY_NAMES[b] for b in range(LAST_CAP + 1) if mask >> b & 1]


def capabilities(uid: int, bounding: int, file_caps: tuple[int, bool]) -> Capabilities:
    """After execve: root gets its bounding set; a non-root uid only what a file capability
    brings (no ambient set, empty inheritable: capabilities(7))."""
    if uid == 0:
        return Capabilities(bounding, bounding, 0, bounding, 0, LAST_CAP)
    permitted = file_caps[0] & bounding
    effective = permitted if file_caps[1] else 0
    return Capabilities(effective, permitted, 0, bounding, 0, LAST_CAP)


def unprivileged_port_start(model: RuntimeModel, declared: DeclaredContainer
                            ) -> tuple[int | None, Gap | None]:
    for name, value in declared.sysctls:
        if name == SYSCTL and value.strip().isdigit():
            return int(value), None
    if declared.host_network:
        return None, Gap(SYSCTL, "hostNetwork: the pod shares the node's network namespace, "
                                 "so this is the node's own sysctl, which a manifest cannot "
                                 "tell; which ports bind is unknown with it")
    return model.unprivileged_port_start, None


def predicted_listeners(declared: DeclaredContainer, start: int | None, caps: Capabilities,
                        comm: str) -> tuple[Listener, ...]:
    """The declared ports and probe ports the process can bind: below `start` only with an
    effective NET_BIND_SERVICE (inet_port_requires_bind_service, net/ipv4/af_inet.c)."""
    if start is None:
        return ()
    found = []
    for promised in promised_ports(declared):
        if promised.port < start and not caps.effective & NET_BIND_SERVICE:
            continue
        found.append(Listener(protocol=promised.protocol, family=4, address="0.0.0.0",
                              port=promised.port, v6only=None, inode=0,
                              owners=(SocketOwner(pid=NO_PROCESS, comm=comm, fd=0),)))
    return tuple(found)


def _identity(uid: int | None, declared: DeclaredContainer, facts: PodFacts,
              image: ImageFacts | None, env: dict[str, str]) -> tuple[Identity, list[Gap]]:
    gaps: list[Gap] = []
    entry = image.passwd_entry(uid) if image and image.layers_read and uid not in (None, NOT_ROOT) \
        else None
    gid = declared.run_as_group
    if gid is None and entry is not None:
        gid = entry.gid  # containerd/runc take the primary group from the image's passwd
    elif gid is None and image is not None and image.gid is not None:
        gid = image.gid
    groups = [g for g in (gid, facts.fs_group, *facts.supplemental_groups) if g is not None]
    if entry is not None and image is not None:
        groups += image.groups_of(entry.name)
    if uid in (None, NOT_ROOT):
        gaps.append(Gap(Fact.UID, "runAsNonRoot: true says the uid is not 0, but not "
                        "which it is: that is the image's USER (give --image or --image-user)"))
    if gid is None:
        gaps.append(Gap(Fact.GID, "no runAsGroup, and the image's group is not known "
                        "(give --image or --image-user REF=UID:GID)"))
    if image is None or not image.layers_read:
        gaps.append(Gap(Fact.HOME, "the home directory is in the image's /etc/passwd "
                        "(give --image REF=oci-archive:PATH)"))
    known_uid = uid is not None and uid != NOT_ROOT
    # runc sets HOME from the passwd entry, or "/", when the environment has none.
    env_home = env.get("HOME") or (entry.home if entry else None)
    if env_home is None and image is not None and image.layers_read and known_uid:
        env_home = "/"
    identity = Identity(
        uid=IdQuad(uid, uid, uid, uid) if known_uid and uid is not None else None,
        gid=IdQuad(gid, gid, gid, gid) if gid is not None else None,
        groups=tuple(dict.fromkeys(groups)),
        user=entry.name if entry else None, home=entry.home if entry else None,
        env_home=env_home)
    return identity, gaps


PathMemo = dict[tuple[object, ...], tuple[tuple[PathAccess, ...], tuple[Gap, ...]]]


def predict(declared: DeclaredContainer, facts: PodFacts, model: RuntimeModel, profile: Profile,
            *, seccomp_default: bool = False, image: ImageFacts | None = None,
            paths_memo: PathMemo | None = None) -> tuple[RuntimePrediction, ...]:
    """The snapshots of `declared` under `model`: one, or one per unsettled alternative.
    `paths_memo` shares the path predictions of one container between runtime models: they
    differ only by the uid and whether DAC_OVERRIDE is effective."""
    memo: PathMemo = {} if paths_memo is None else paths_memo
    bounding = bounding_set(model, declared)
    env = dict(image.env if image else ())
    env.update(declared.env)
    cmdline = command_line(facts, image)
    # The kernel's comm is the executable's name cut to 15 bytes; with no known executable,
    # the messages name the container.
    comm = posixpath.basename(cmdline[0])[:15] if cmdline else declared.container_name
    start, port_gap = unprivileged_port_start(model, declared)
    predictions = []
    for uid, uid_condition in _uid_choices(declared, image):
        identity, gaps = _identity(uid, declared, facts, image, env)
        for file_perm, file_eff, caps_condition in _file_caps_choices(
                uid, bounding, declared, image, cmdline[0] if cmdline else None, env):
            caps = capabilities(uid, bounding, (file_perm, file_eff))
            listeners = predicted_listeners(declared, start, caps, comm)
            network = NetnsFacts(
                inode=0, sysctls=Sysctls(bindv6only=None, disable_ipv6=None,
                                         ip_unprivileged_port_start=start),
                addresses=(), listeners=listeners, host_network=declared.host_network,
                gaps=(port_gap,) if port_gap else ())
            writable = tuple(m.mount_path for m in declared.volume_mounts if not m.read_only
                             and m.volume_type not in READ_ONLY_VOLUMES)
            observed = ObservedProcess(
                pid=NO_PROCESS, start_time=None, comm=comm, cmdline=cmdline, identity=identity,
                capabilities=caps, no_new_privs=no_new_privs(declared),
                seccomp=seccomp_mode(declared, seccomp_default),
                filesystem=Filesystem(root_readonly=declared.read_only_root_filesystem is True,
                                      writable_mounts=writable, mounts=()),
                network=network, environ=tuple(env.items()), incomplete=tuple(gaps),
                exe=cmdline[0] if cmdline else None)
            key = (uid, caps.effective & DAC_OVERRIDE)
            if key not in memo:
                paths = required_paths(observed, declared, profile)
                memo[key] = predict_paths(observed, declared, profile, paths, image)
            accesses, path_gaps = memo[key]
            observed = replace(observed, paths=accesses,
                               incomplete=(*observed.incomplete, *path_gaps))
            condition = "; ".join(c for c in (uid_condition, caps_condition) if c) or None
            predictions.append(RuntimePrediction(model.name, observed, condition))
    return tuple(predictions)

