"""The kubelet's part, and only that: a pod manifest -> the CRI requests the kubelet sends.

containerd does the rest (capability sets, no_new_privs, seccomp, the OCI spec, the netns,
CNI, cgroups): that is what the lane tests. Each mapping names where the kubelet does it, in
kubernetes/kubernetes `pkg/kubelet/`:
- kuberuntime/kuberuntime_sandbox.go `generatePodSandboxConfig`: metadata, hostname, log
  directory, DNS, port mappings (hostPort only), labels and annotations;
  `generatePodSandboxLinuxConfig`: cgroup parent, sysctls, the sandbox's security context.
- cm/pod_container_manager_linux.go `GetPodContainerName` with cm/qos_container_manager_linux.go:
  the cgroup parent `<cgroup-root>/kubepods[/burstable|/besteffort]/pod<uid>` (cgroupfs driver);
  the QoS class as pkg/apis/core/v1/helper/qos `GetPodQOS` computes it.
- kuberuntime/kuberuntime_container.go `generateContainerConfig`: metadata (attempt = restart
  count), command/args, working dir, env, mounts, labels, log path;
  kuberuntime_container_linux.go `generateLinuxContainerConfig` and
  kuberuntime/security_context.go `determineEffectiveSecurityContext`: container over pod
  securityContext, fsGroup and supplementalGroups as groups, no_new_privs, masked paths.
- kubelet_pods.go `makeMounts` (volume mounts, the managed /etc/hosts) and
  `makeEnvironmentVariables`; kuberuntime/labels.go `newPodLabels`/`newContainerLabels`.
- the volumes: pkg/volume/emptydir/empty_dir.go (a 0777 directory) and
  pkg/volume/volume_linux.go `SetVolumeOwnership` (group fsGroup, setgid); configMap, secret
  and projected volumes are always mounted read-only (their `GetAttributes`: ReadOnly).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from e2e.cri_client import api

CLUSTER_DNS = "192.0.2.53"  # the cluster DNS Service's IP (a documentation address)
CLUSTER_DOMAIN = "cluster.local"
# pkg/securitycontext/util.go: what procMount Default masks and makes read-only.
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
SECCOMP = {"RuntimeDefault": 0, "Unconfined": 1, "Localhost": 2}  # SecurityProfile.ProfileType


def qos_class(pod: Mapping[str, Any]) -> str:
    """GetPodQOS: Guaranteed when every container's cpu and memory limits equal its requests
    (requests default to limits), BestEffort when nothing is requested or limited."""
    containers = pod["spec"]["containers"]
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, {**(r.get("limits") or {}),
                                                   **(r.get("requests") or {})}
        if any(limits.get(k) is None or limits[k] != requests.get(k) for k in ("cpu", "memory")):
            return "Burstable"
    return "Guaranteed"


def cgroup_parent(pod: Mapping[str, Any], cgroup_root: str) -> str:
    """The pod's cgroup under the cgroupfs driver, below the kubelet's `--cgroup-root`."""
    qos = qos_class(pod)
    tier = "" if qos == "Guaranteed" else f"/{qos.lower()}"
    return f"/{cgroup_root}/kubepods{tier}/pod{pod['metadata']['uid']}"


def pod_security(pod: Mapping[str, Any]) -> dict[str, Any]:
    return dict(pod["spec"].get("securityContext") or {})


def effective_security(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """determineEffectiveSecurityContext: the container's fields over the pod's."""
    inherited = ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile", "seLinuxOptions")
    merged = {k: v for k, v in pod_security(pod).items() if k in inherited}
    merged.update(container.get("securityContext") or {})
    return merged


def groups(pod: Mapping[str, Any]) -> list[int]:
    """supplementalGroups, then fsGroup: the extra groups of every container's first process."""
    sc = pod_security(pod)
    extra = list(sc.get("supplementalGroups", []))
    if sc.get("fsGroup") is not None:
        extra.append(sc["fsGroup"])
    return extra


def seccomp(security: Mapping[str, Any]) -> Any:
    """No seccompProfile is Unconfined (the kubelet's default without `seccompDefault`)."""
    profile = security.get("seccompProfile") or {"type": "Unconfined"}
    return api.SecurityProfile(profile_type=SECCOMP[profile["type"]],
                               localhost_ref=profile.get("localhostProfile", ""))


def namespaces(pod: Mapping[str, Any]) -> Any:
    """namespacesForPod: hostNetwork/hostPID/hostIPC are NODE; each container has its own pid
    namespace unless shareProcessNamespace."""
    spec = pod["spec"]
    pid = 2 if spec.get("hostPID") else 0 if spec.get("shareProcessNamespace") else 1
    return api.NamespaceOption(network=2 if spec.get("hostNetwork") else 0, pid=pid,
                               ipc=2 if spec.get("hostIPC") else 0)


def int64(value: int | None) -> Any:
    return None if value is None else api.Int64Value(value=value)


def pod_labels(pod: Mapping[str, Any]) -> dict[str, str]:
    meta = pod["metadata"]
    return {**meta.get("labels", {}), "io.kubernetes.pod.name": meta["name"],
            "io.kubernetes.pod.namespace": meta["namespace"], "io.kubernetes.pod.uid": meta["uid"]}


def dns_config(pod: Mapping[str, Any]) -> Any:
    """ClusterFirst: the cluster DNS and the namespace's search path (pkg/kubelet/network/dns)."""
    if pod["spec"].get("dnsPolicy", "ClusterFirst") != "ClusterFirst" or pod["spec"].get(
            "hostNetwork"):
        return None  # the node's resolv.conf
    ns = pod["metadata"]["namespace"]
    return api.DNSConfig(servers=[CLUSTER_DNS], options=["ndots:5"], searches=[
        f"{ns}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN])


def sandbox_config(pod: Mapping[str, Any], log_root: Path, cgroup_root: str) -> Any:
    meta, spec = pod["metadata"], pod["spec"]
    sc = pod_security(pod)
    security = api.LinuxSandboxSecurityContext(
        namespace_options=namespaces(pod), run_as_user=int64(sc.get("runAsUser")),
        run_as_group=int64(sc.get("runAsGroup")), supplemental_groups=groups(pod),
        seccomp=seccomp(sc))
    ports = [api.PortMapping(protocol={"TCP": 0, "UDP": 1, "SCTP": 2}[p.get("protocol", "TCP")],
                             container_port=p["containerPort"], host_port=p["hostPort"],
                             host_ip=p.get("hostIP", ""))
             for c in spec["containers"] for p in c.get("ports", []) if p.get("hostPort")]
    log_dir = log_root / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"
    log_dir.mkdir(parents=True, exist_ok=True)
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=meta["name"], uid=meta["uid"],
                                        namespace=meta["namespace"], attempt=0),
        hostname="" if spec.get("hostNetwork") else spec.get("hostname", meta["name"]),
        log_directory=str(log_dir), dns_config=dns_config(pod), port_mappings=ports,
        labels=pod_labels(pod), annotations=meta.get("annotations", {}),
        linux=api.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent(pod, cgroup_root), security_context=security,
            sysctls={s["name"]: str(s["value"]) for s in sc.get("sysctls", [])}))


class PodVolumes:
    """What the kubelet keeps per pod on the node: the volumes' directories and /etc/hosts."""

    def __init__(self, pod: Mapping[str, Any], kubelet_root: Path) -> None:
        self.pod = pod
        self.dir = kubelet_root / "pods" / pod["metadata"]["uid"]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o750)
        self.volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}

    def hosts_file(self) -> Path:
        """kubelet_pods.go `ensureHostsFile`: the pod's /etc/hosts, mounted read-write."""
        path = self.dir / "etc-hosts"
        if not path.exists():
            path.write_text("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
                            "::1\tlocalhost ip6-localhost ip6-loopback\n")
        return path

    def source(self, name: str) -> tuple[Path, bool]:
        """A volume's directory on the node, and whether the kubelet forces it read-only."""
        volume = self.volumes[name]
        if "emptyDir" in volume:
            path = self.dir / "volumes" / "kubernetes.io~empty-dir" / name
            if not path.exists():
                path.mkdir(parents=True)
                path.chmod(0o777)  # empty_dir.go: perm 0777, whatever the umask
                fs_group = pod_security(self.pod).get("fsGroup")
                if fs_group is not None:  # SetVolumeOwnership: group fsGroup, setgid
                    os.chown(path, -1, fs_group)
                    path.chmod(0o777 | 0o2000)
            return path, False
        for kind in ("configMap", "secret", "projected", "downwardAPI"):
            if kind in volume:
                path = self.dir / "volumes" / f"kubernetes.io~{kind.lower()}" / name
                if not path.exists():
                    path.mkdir(parents=True)
                    for key in self.keys(volume[kind]):
                        (path / key).write_text(f"{kind} {name} {key}\n")
                        (path / key).chmod(volume[kind].get("defaultMode", 0o644))
                return path, True
        raise ValueError(f"volume {name}: only emptyDir, configMap, secret, projected and "
                         f"downwardAPI are played by this lane")

    @staticmethod
    def keys(source: Mapping[str, Any]) -> list[str]:
        items = [i["path"] for i in source.get("items", [])]
        for projected in source.get("sources", []):
            for kind, value in projected.items():
                if kind == "serviceAccountToken":
                    items.append(value["path"])
                else:
                    items += [i["path"] for i in value.get("items", [])]
        return items or ["data"]

    def mounts(self, container: Mapping[str, Any]) -> list[Any]:
        mounts = []
        for mount in container.get("volumeMounts", []):
            source, forced_ro = self.source(mount["name"])
            if mount.get("subPath"):  # kubelet_pods.go makeMounts: made inside the volume
                inside = source / mount["subPath"]
                if not inside.exists():
                    inside.mkdir(mode=0o750)
                    inside.chmod(source.stat().st_mode & 0o7777)
                    os.chown(inside, -1, source.stat().st_gid)
                source = inside
            mounts.append(api.Mount(container_path=mount["mountPath"], host_path=str(source),
                                    readonly=forced_ro or bool(mount.get("readOnly"))))
        if not self.pod["spec"].get("hostNetwork"):
            mounts.append(api.Mount(container_path="/etc/hosts",
                                    host_path=str(self.hosts_file())))
        return mounts


def env(pod: Mapping[str, Any], container: Mapping[str, Any],
        extra: Mapping[str, str]) -> list[Any]:
    """makeEnvironmentVariables: `value`s, and the downward API fields the lane's pods use."""
    fields = {"metadata.name": pod["metadata"]["name"],
              "metadata.namespace": pod["metadata"]["namespace"],
              "spec.nodeName": pod["spec"].get("nodeName", ""),
              "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "")}
    values: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            values[var["name"]] = var["value"]
        elif "fieldRef" in (var.get("valueFrom") or {}):
            values[var["name"]] = fields.get(var["valueFrom"]["fieldRef"]["fieldPath"], "")
    values.update(extra)
    return [api.KeyValue(key=k, value=v) for k, v in values.items()]


def container_config(pod: Mapping[str, Any], container: Mapping[str, Any], volumes: PodVolumes,
                     image: str, attempt: int, extra_env: Mapping[str, str]) -> Any:
    security = effective_security(pod, container)
    caps = security.get("capabilities") or {}
    privileged = bool(security.get("privileged"))
    linux = api.LinuxContainerSecurityContext(
        capabilities=api.Capability(add_capabilities=caps.get("add", []),
                                    drop_capabilities=caps.get("drop", [])),
        privileged=privileged, namespace_options=namespaces(pod),
        run_as_user=int64(security.get("runAsUser")),
        run_as_group=int64(security.get("runAsGroup")),
        readonly_rootfs=bool(security.get("readOnlyRootFilesystem")),
        supplemental_groups=groups(pod),
        # securitycontext.AddNoNewPrivileges: only an explicit false, and never privileged
        no_new_privs=security.get("allowPrivilegeEscalation") is False and not privileged,
        masked_paths=[] if privileged else list(MASKED_PATHS),
        readonly_paths=[] if privileged else list(READONLY_PATHS),
        seccomp=seccomp(security))
    name = container["name"]
    return api.ContainerConfig(
        metadata=api.ContainerMetadata(name=name, attempt=attempt),
        image=api.ImageSpec(image=image), command=container.get("command", []),
        args=container.get("args", []), working_dir=container.get("workingDir", ""),
        envs=env(pod, container, extra_env), mounts=volumes.mounts(container),
        labels={"io.kubernetes.container.name": name,
                **{k: v for k, v in pod_labels(pod).items() if k.startswith("io.kubernetes.")}},
        annotations={"io.kubernetes.container.restartCount": str(attempt)},
        log_path=f"{name}/{attempt}.log",
        linux=api.LinuxContainerConfig(security_context=linux))
