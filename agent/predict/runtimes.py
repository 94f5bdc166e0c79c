"""What each container runtime does with a pod spec, as data, each fact with its source.

The predictor reads only these models; a new runtime is a new entry, not new code. The
`containerd` models are checked against a real containerd/runc in tests/e2e; `cri-o` has no
runtime on the test machine and rests on the sources cited here (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RuntimeModel:
    name: str  # as `--runtime` takes it
    label: str  # as a finding says it: "containerd 1.x"
    # The capability set a container gets when its securityContext says nothing; the CRI
    # puts it in the bounding, permitted and effective sets of the OCI spec alike.
    default_capabilities: tuple[str, ...]
    # net.ipv4.ip_unprivileged_port_start in a pod's own network namespace when the pod's
    # sysctls do not set it (the kernel's default is 1024, net/ipv4/af_inet.c).
    unprivileged_port_start: int
    sources: tuple[str, ...]


# containerd oci/spec.go defaultUnixCaps(): the set containerd's CRI starts from (1.6, 1.7, 2.x).
CONTAINERD_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)
# cri-o internal/config/capabilities/capabilities.go Default() (`default_capabilities` in
# crio.conf, since 1.18 without MKNOD, NET_RAW, SYS_CHROOT, SETFCAP and AUDIT_WRITE).
CRIO_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "SETGID", "SETUID", "SETPCAP",
    "NET_BIND_SERVICE", "KILL",
)

# Facts every model shares, each with its source:
SHARED_SOURCES = (
    # No ambient capabilities: the CRI has no field for them (the ambient-capabilities KEP,
    # kubernetes/enhancements#2763, is provisional), so execve by a non-root uid leaves
    # permitted and effective empty unless the file has capabilities (capabilities(7)).
    "kubernetes/enhancements#2763 (ambient capabilities: provisional); capabilities(7)",
    # Inheritable is empty since containerd 1.5.11/1.6.2 (CVE-2022-24769) and CRI-O 1.24
    # (CVE-2022-27652, cri-o/cri-o#5769).
    "containerd GHSA-c9cp-9c75-9v8c, cri-o/cri-o#5769: empty inheritable set",
    # The kubelet asks for no_new_privs exactly when allowPrivilegeEscalation is false
    # (pkg/securitycontext/util.go AddNoNewPrivileges); the API rejects false together with
    # privileged: true or an added "CAP_SYS_ADMIN" (pkg/apis/core/validation).
    "kubernetes pkg/securitycontext/util.go AddNoNewPrivileges",
    # A container without seccompProfile is Unconfined unless the kubelet runs with
    # --seccomp-default (RuntimeDefault); a privileged container never gets a filter
    # (containerd internal/cri generateSeccompSpecOpts, CRI-O the same).
    "kubelet --seccomp-default (Kubernetes docs: Restrict a Container's Syscalls with seccomp)",
)

MODELS: dict[str, RuntimeModel] = {
    "containerd": RuntimeModel(
        name="containerd", label="containerd 1.x",
        default_capabilities=CONTAINERD_CAPABILITIES, unprivileged_port_start=1024,
        sources=("containerd oci/spec.go defaultUnixCaps",
                 "containerd 1.x CRI config: enable_unprivileged_ports = false",
                 *SHARED_SOURCES)),
    "containerd-2": RuntimeModel(
        name="containerd-2", label="containerd 2.x",
        default_capabilities=CONTAINERD_CAPABILITIES, unprivileged_port_start=0,
        # containerd 2.0 turned enable_unprivileged_ports on by default (containerd#9348,
        # release note containerd#11502): the CRI sets net.ipv4.ip_unprivileged_port_start=0
        # in every pod that has its own netns.
        sources=("containerd oci/spec.go defaultUnixCaps",
                 "containerd#9348: enable_unprivileged_ports = true by default in 2.0",
                 *SHARED_SOURCES)),
    "cri-o": RuntimeModel(
        name="cri-o", label="CRI-O",
        default_capabilities=CRIO_CAPABILITIES, unprivileged_port_start=1024,
        sources=("cri-o internal/config/capabilities/capabilities.go Default",
                 "cri-o/cri-o#10050: CRI-O sets no ip_unprivileged_port_start of its own "
                 "(only through default_sysctls)", *SHARED_SOURCES)),
}
RUNTIME_NAMES = tuple(MODELS)
