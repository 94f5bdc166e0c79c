"""Paste-ready remediation snippets: the pod field, and for chart-managed pods the Helm values."""

from __future__ import annotations

from agent.model import DeclaredContainer, DeclaredVolumeMount, ObservedProcess, Profile

IVY_SUBMIT_OPTS = "-Divy.cache.dir=/tmp/ivy2/cache -Divy.home=/tmp/ivy2"


def nest(dotted: str, body: str) -> str:
    """Indent `body` under each key of `dotted`: nest("a.b", "c: 1") -> "a:\\n  b:\\n    c: 1"."""
    keys = dotted.split(".")
    lines = [f"{'  ' * depth}{key}:" for depth, key in enumerate(keys)]
    pad = "  " * len(keys)
    lines += [pad + line if line else line for line in body.splitlines()]
    return "\n".join(lines)


def _helm(profile: Profile, key: str, body: str) -> list[str]:
    if not profile.helm_values_prefix:
        return []
    path = f"{profile.helm_values_prefix}.{key}"
    return [f"# Helm values (spark-operator chart): {path}", nest(path, body)]


def container_security_fix(profile: Profile, body: str) -> str:
    """`body` goes under the container's securityContext (Helm: <prefix>.securityContext)."""
    lines = ["# Pod spec: spec.containers[].securityContext", nest("securityContext", body)]
    return "\n".join(lines + _helm(profile, "securityContext", body))


def pod_security_fix(profile: Profile, body: str) -> str:
    """`body` goes under the pod's securityContext (Helm: <prefix>.podSecurityContext)."""
    lines = ["# Pod spec: spec.securityContext", nest("securityContext", body)]
    return "\n".join(lines + _helm(profile, "podSecurityContext", body))


def sysctl_fix(profile: Profile, name: str, value: int, note: str = "") -> str:
    body = f'sysctls:\n- name: {name}\n  value: "{value}"'
    text = pod_security_fix(profile, body)
    return f"{text}\n# {note}" if note else text


def env_fix(profile: Profile, name: str, value: str, *more: tuple[str, str]) -> str:
    body = "\n".join(f"- name: {n}\n  value: {v}" for n, v in ((name, value), *more))
    lines = ["# Pod spec: spec.containers[].env", nest("env", body)]
    return "\n".join(lines + _helm(profile, "env", body))


def empty_dir_fix(profile: Profile, name: str, mount_path: str, size_limit: str = "100Mi") -> str:
    volumes = f"- name: {name}\n  emptyDir:\n    sizeLimit: {size_limit}"
    mounts = f"- name: {name}\n  mountPath: {mount_path}"
    lines = ["# Pod spec: spec.volumes", nest("volumes", volumes),
             "# Pod spec: spec.containers[].volumeMounts", nest("volumeMounts", mounts)]
    lines += _helm(profile, "volumes", volumes) + _helm(profile, "volumeMounts", mounts)
    if profile.helm_values_prefix:
        lines.append("# Helm replaces lists wholesale: re-list the chart's default volumes too.")
    return "\n".join(lines)


def volume_name_for(path: str, declared: DeclaredContainer | None = None) -> str:
    """A DNS-1123 volume name derived from a mount path (/etc/k8s-webhook-server/x -> x), not
    one the container already mounts (a second volume of the same name is refused)."""
    tail = path.rstrip("/").rsplit("/", 1)[-1].lower() or "data"
    base = ("".join(c if c.isalnum() else "-" for c in tail).strip("-") or "data")[:60]
    taken = {m.name for m in declared.volume_mounts} if declared is not None else set()
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def mount_at(declared: DeclaredContainer | None, path: str) -> DeclaredVolumeMount | None:
    """The container's volumeMount at exactly `path` (mountPaths are unique per container)."""
    if declared is None:
        return None
    return next((m for m in declared.volume_mounts if m.mount_path.rstrip("/") == path), None)


# Volume types the kubelet always mounts read-only: secret, configMap, downwardAPI and
# projected (since Kubernetes 1.9.4, the fix for CVE-2017-1002102).
READ_ONLY_VOLUME_TYPES = ("secret", "configMap", "downwardAPI", "projected")


def writable_volume_fix(profile: Profile, declared: DeclaredContainer | None,
                        observed: ObservedProcess, path: str) -> str:
    """Make `path` writable for the process: add an emptyDir there, or fix the volume the pod
    already mounts there (a second volumeMount at one mountPath is refused by the API server)."""
    mount = mount_at(declared, path)
    access = observed.path(path)
    if mount is None:
        return empty_dir_fix(profile, volume_name_for(path, declared), path)
    if mount.volume_type in READ_ONLY_VOLUME_TYPES:
        return (f"# Volume {mount.name} at {path} is a {mount.volume_type} volume, which the "
                "kubelet always\n# mounts read-only: mount an emptyDir there instead.\n"
                + empty_dir_fix(profile, mount.name, path))
    if mount.read_only:
        body = f"- name: {mount.name}\n  mountPath: {path}\n  readOnly: false"
        lines = [f"# Volume {mount.name} is mounted readOnly at {path}: mount it writable.",
                 "# Pod spec: spec.containers[].volumeMounts", nest("volumeMounts", body),
                 *_helm(profile, "volumeMounts", body)]
        return "\n".join(lines)
    if access is not None and access.on_readonly_mount:
        return (f"# Volume {mount.name} is declared read-write at {path}, yet the process sees "
                "a read-only\n# mount there (a container started before the spec changed?): "
                "recreate the pod, with\n" + empty_dir_fix(profile, mount.name, path))
    return (f"# Volume {mount.name} at {path} is mounted read-write, but its owner or mode "
            "keeps the\n# process out: give the pod an fsGroup the volume is made writable "
            "for.\n" + pod_security_fix(profile, "fsGroup: <the process's gid>"))
