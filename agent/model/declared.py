"""The declared side: a container's effective settings from its pod, and profiles."""

from __future__ import annotations

from dataclasses import dataclass

from agent.model.protocols import PortProtocol


@dataclass(frozen=True, slots=True)
class DeclaredPort:
    port: int
    protocol: PortProtocol = "TCP"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class DeclaredProbe:
    kind: str  # "liveness" | "readiness" | "startup"
    handler: str  # "httpGet" | "tcpSocket" | "grpc" | "exec"
    port: int | None  # resolved number; None for exec or an unresolvable name
    port_name: str | None = None  # the name as written, when it was a name
    host: str | None = None


@dataclass(frozen=True, slots=True)
class DeclaredVolumeMount:
    name: str
    mount_path: str
    read_only: bool
    sub_path: str | None
    volume_type: str | None  # "emptyDir", "configMap", "secret", "projected", ...
    size_limit: str | None = None  # emptyDir sizeLimit as written
    medium: str | None = None  # emptyDir medium


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str
    uid: str
    # A static pod's cgroups carry its config hash, not the mirror pod's uid: the mirror
    # pod's `kubernetes.io/config.mirror` annotation holds that hash (32 hex).
    config_hash: str | None = None


@dataclass(frozen=True, slots=True)
class DeclaredContainer:
    """One container's effective declared settings: container-level over pod-level."""

    pod: PodRef
    container_name: str
    container_id: str | None  # "containerd://<64 hex>" from status
    labels: tuple[tuple[str, str], ...]
    run_as_user: int | None
    run_as_group: int | None
    run_as_non_root: bool | None
    privileged: bool | None
    allow_privilege_escalation: bool | None
    capabilities_add: tuple[str, ...]
    capabilities_drop: tuple[str, ...]
    seccomp_profile: str | None  # "RuntimeDefault" | "Unconfined" | "Localhost" | None
    read_only_root_filesystem: bool | None
    ports: tuple[DeclaredPort, ...]
    probes: tuple[DeclaredProbe, ...]
    volume_mounts: tuple[DeclaredVolumeMount, ...]
    pod_ips: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()  # literal `value`s only; valueFrom is not resolved
    status_uid: int | None = None  # containerStatuses[].user.linux.uid (Kubernetes >= 1.31)
    host_network: bool = False  # spec.hostNetwork: the node's netns, and its sockets
    sysctls: tuple[tuple[str, str], ...] = ()  # spec.securityContext.sysctls (name, value)

    def label(self, key: str) -> str | None:
        for k, v in self.labels:
            if k == key:
                return v
        return None

    def sysctl(self, name: str) -> str | None:
        """The value the pod sets for `name`; Kubernetes accepts `/` as the separator too."""
        for k, v in self.sysctls:
            if k.replace("/", ".") == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Profile:
    """What a kind of workload needs: matched by labels, from the built-ins or --config."""

    name: str
    selector: tuple[tuple[str, str], ...] = ()
    writable_paths: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    expected_uid: int | None = None
    helm_values_prefix: str | None = None  # e.g. "controller" -> controller.securityContext
    # Whether the workload writes its temp dir / uses HOME: True/False from the profile;
    # None (not said) leaves it to the process: a JVM, or an explicit $TMPDIR/$HOME.
    temp_matters: bool | None = None
    home_matters: bool | None = None


GENERIC_PROFILE = Profile(name="generic")
