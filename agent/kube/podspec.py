"""The declared side from a Pod manifest (as `kubectl get pod -o yaml|json` prints it).

Pure: no API client. Container-level securityContext wins over pod-level, as the kubelet
resolves it (pkg/securitycontext: DetermineEffectiveSecurityContext).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.kube.containers import as_mapping, container_statuses
from agent.model import (
    PORT_PROTOCOLS,
    DeclaredContainer,
    DeclaredPort,
    DeclaredProbe,
    DeclaredVolumeMount,
    PodRef,
)
from agent.userfile import STDIN, InputFileError, load_user_yaml

PROBE_KINDS = (("livenessProbe", "liveness"), ("readinessProbe", "readiness"),
               ("startupProbe", "startup"))
PROBE_HANDLERS = ("httpGet", "tcpSocket", "grpc", "exec")
# Only these fields exist at both levels; privileged, capabilities, allowPrivilegeEscalation and
# readOnlyRootFilesystem are container-only (core/v1 PodSecurityContext).
POD_LEVEL_FIELDS = ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")
# etcd stores an object of at most 1.5 MiB (its default --max-request-bytes); YAML adds a little.
POD_SPEC_LIMIT = 2 << 20


class PodSpecError(ValueError):
    """A manifest that cannot be used; `str()` is one line naming the problem."""


def load_pod_manifest(path: str) -> dict[str, Any]:
    """Read a Pod manifest in YAML or JSON (`-` is stdin); one clear PodSpecError otherwise."""
    try:
        pod = load_user_yaml(path, "pod spec", POD_SPEC_LIMIT)
    except InputFileError as exc:
        raise PodSpecError(str(exc)) from None
    path = "stdin" if path == STDIN else path
    if not isinstance(pod, dict):
        raise PodSpecError(f"pod spec {path}: expected a Pod object, got {type(pod).__name__}")
    kind = pod.get("kind", "Pod")
    if kind != "Pod":
        raise PodSpecError(f"pod spec {path}: kind is {kind!r}, expected 'Pod'")
    containers = as_mapping(pod.get("spec")).get("containers")
    if not isinstance(containers, list) or not containers:
        raise PodSpecError(f"pod spec {path}: spec.containers is missing or empty")
    return pod


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _pick_container(spec: Mapping[str, Any], name: str | None) -> Mapping[str, Any]:
    containers = [as_mapping(c) for c in _list(spec.get("containers"))]
    if not containers:
        raise PodSpecError("pod spec: spec.containers is missing or empty")
    if name is None:
        return containers[0]
    candidates = containers + [as_mapping(c) for c in _list(spec.get("initContainers"))]
    for container in candidates:
        if container.get("name") == name:
            return container
    known = ", ".join(str(c.get("name")) for c in candidates)
    raise PodSpecError(f"pod spec: no container named {name!r} (containers: {known})")


def _effective_security(pod_sc: Mapping[str, Any], ctr_sc: Mapping[str, Any]) -> dict[str, Any]:
    merged = {key: pod_sc[key] for key in POD_LEVEL_FIELDS if key in pod_sc}
    merged.update({key: value for key, value in ctr_sc.items() if value is not None})
    return merged


def _ports(container: Mapping[str, Any]) -> tuple[DeclaredPort, ...]:
    ports = []
    for entry in map(as_mapping, _list(container.get("ports"))):
        number = _int(entry.get("containerPort"))
        if number is not None:
            name = entry.get("name")
            protocol = next((p for p in PORT_PROTOCOLS
                             if p == str(entry.get("protocol") or "TCP")), None)
            if protocol is None:
                continue  # the API server accepts no other (core/v1 Protocol)
            ports.append(DeclaredPort(port=number, protocol=protocol,
                                      name=str(name) if name else None))
    return tuple(ports)


def _probe(kind: str, probe: Mapping[str, Any], ports: tuple[DeclaredPort, ...]
           ) -> DeclaredProbe | None:
    handler = next((h for h in PROBE_HANDLERS if h in probe), None)
    if handler is None:
        return None
    action = as_mapping(probe.get(handler))
    raw = action.get("port")
    number, port_name = _int(raw), None
    if number is None and isinstance(raw, str):
        # An IntOrString port that is a name resolves against the container's own ports.
        port_name = raw
        number = next((p.port for p in ports if p.name == raw), None)
    host = action.get("host")
    return DeclaredProbe(kind=kind, handler=handler, port=number, port_name=port_name,
                         host=str(host) if host else None)


def _probes(container: Mapping[str, Any], ports: tuple[DeclaredPort, ...]
            ) -> tuple[DeclaredProbe, ...]:
    found = []
    for field_name, kind in PROBE_KINDS:
        if isinstance(container.get(field_name), Mapping):
            probe = _probe(kind, container[field_name], ports)
            if probe is not None:
                found.append(probe)
    return tuple(found)


def _volume_mounts(spec: Mapping[str, Any], container: Mapping[str, Any]
                   ) -> tuple[DeclaredVolumeMount, ...]:
    # Names as text: a hostile manifest's list or mapping name must not crash the lookup.
    volumes = {str(v.get("name")): v for v in map(as_mapping, _list(spec.get("volumes")))}
    mounts = []
    for mount in map(as_mapping, _list(container.get("volumeMounts"))):
        volume = as_mapping(volumes.get(str(mount.get("name"))))
        volume_type = next((k for k in volume if k != "name"), None)
        empty_dir = as_mapping(volume.get("emptyDir")) if volume_type == "emptyDir" else {}
        size, medium = empty_dir.get("sizeLimit"), empty_dir.get("medium")
        sub_path = mount.get("subPath") or mount.get("subPathExpr")
        mounts.append(DeclaredVolumeMount(
            name=str(mount.get("name", "")), mount_path=str(mount.get("mountPath", "")),
            read_only=mount.get("readOnly") is True,
            sub_path=str(sub_path) if sub_path else None, volume_type=volume_type,
            size_limit=str(size) if size not in (None, "") else None,
            medium=str(medium) if medium else None))
    return tuple(mounts)


def _pod_ips(status: Mapping[str, Any]) -> tuple[str, ...]:
    ips = [str(as_mapping(e).get("ip")) for e in _list(status.get("podIPs"))
           if as_mapping(e).get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return tuple(ips)


def _status_uid(status: Mapping[str, Any], name: str) -> int | None:
    """The uid the runtime started the container with, as the kubelet reports it."""
    for entry in map(as_mapping, _list(status.get("containerStatuses"))):
        if entry.get("name") == name:
            return _int(as_mapping(as_mapping(entry.get("user")).get("linux")).get("uid"))
    return None


def _config_hash(meta: Mapping[str, Any]) -> str | None:
    # A static pod's cgroups are named after its config hash, which the mirror pod in the
    # API carries as this annotation (its metadata.uid differs; kubelet pkg/kubelet/types).
    annotations = as_mapping(meta.get("annotations"))
    value = annotations.get("kubernetes.io/config.mirror") or annotations.get(
        "kubernetes.io/config.hash")
    return str(value) if value else None


def _literal_env(container: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    env = []
    for entry in map(as_mapping, _list(container.get("env"))):
        if entry.get("name") and "valueFrom" not in entry:
            env.append((str(entry["name"]), str(entry.get("value", ""))))
    return tuple(env)


def _sysctls(pod_sc: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The pod's sysctls as written (pod level only: a container cannot set one)."""
    return tuple((str(entry["name"]), str(entry.get("value", "")))
                 for entry in map(as_mapping, _list(pod_sc.get("sysctls"))) if entry.get("name"))


def declared_from_pod(pod: Mapping[str, Any], container: str | None = None) -> DeclaredContainer:
    """The effective declared settings of one container (default: the first)."""
    meta, spec, status = (as_mapping(pod.get(k)) for k in ("metadata", "spec", "status"))
    chosen = _pick_container(spec, container)
    name = str(chosen.get("name", ""))
    sc = _effective_security(as_mapping(spec.get("securityContext")),
                             as_mapping(chosen.get("securityContext")))
    caps = as_mapping(sc.get("capabilities"))
    ports = _ports(chosen)
    seccomp = as_mapping(sc.get("seccompProfile")).get("type")
    labels = tuple(sorted((str(k), str(v)) for k, v in as_mapping(meta.get("labels")).items()))
    return DeclaredContainer(
        pod=PodRef(namespace=str(meta.get("namespace") or "default"),
                   name=str(meta.get("name", "")), uid=str(meta.get("uid", "")),
                   config_hash=_config_hash(meta)),
        container_name=name,
        container_id=next((c.container_id for c in container_statuses(pod) if c.name == name),
                          None),
        labels=labels,
        run_as_user=_int(sc.get("runAsUser")),
        run_as_group=_int(sc.get("runAsGroup")),
        run_as_non_root=_bool(sc.get("runAsNonRoot")),
        privileged=_bool(sc.get("privileged")),
        allow_privilege_escalation=_bool(sc.get("allowPrivilegeEscalation")),
        capabilities_add=tuple(str(c) for c in _list(caps.get("add"))),
        capabilities_drop=tuple(str(c) for c in _list(caps.get("drop"))),
        seccomp_profile=str(seccomp) if seccomp else None,
        read_only_root_filesystem=_bool(sc.get("readOnlyRootFilesystem")),
        ports=ports,
        probes=_probes(chosen, ports),
        volume_mounts=_volume_mounts(spec, chosen),
        pod_ips=_pod_ips(status),
        env=_literal_env(chosen),
        status_uid=_status_uid(status, name),
        host_network=spec.get("hostNetwork") is True,
        sysctls=_sysctls(as_mapping(spec.get("securityContext"))),
    )
