"""Paste-ready remediation snippets: the pod field, and for chart-managed pods the Helm values."""

from __future__ import annotations

from agent.model import Profile

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


def volume_name_for(path: str) -> str:
    """A DNS-1123 volume name derived from a mount path: /etc/k8s-webhook-server/x -> x."""
    tail = path.rstrip("/").rsplit("/", 1)[-1].lower() or "data"
    cleaned = "".join(c if c.isalnum() else "-" for c in tail).strip("-")
    return (cleaned or "data")[:63]
