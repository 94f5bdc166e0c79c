"""`opaudit lint -o helm-values`: one values overlay for the Spark Operator chart that fixes
every finding of its controller and webhook (`helm upgrade -f overlay.yaml`, given last).

Helm merges maps key by key but replaces lists whole, so a list the overlay sets (env,
volumes, capabilities.add) carries what the rendered manifest already had.
"""

from __future__ import annotations

from typing import Any

from agent.model import LintContainer, LintResult, capability_bit

SYSCTL = "net.ipv4.ip_unprivileged_port_start"
WEBHOOK_PORT = 9443  # the chart's default webhook.port: no privilege needed
DEFAULT_UID = 1000
CAPABILITY_RULES = ("CapabilitiesNotDropped", "CapabilityAddedButIneffective",
                    "NetBindServiceUnneeded", "PrivilegedContainer")


def _kept_capabilities(container: LintContainer) -> list[str]:
    """The added capabilities some prediction holds as effective, unless unneeded."""
    unneeded = any(f.finding.rule == "NetBindServiceUnneeded" for f in container.findings)
    kept = []
    for name in container.declared.capabilities_add:
        bit = capability_bit(name)
        if bit is None or (unneeded and bit == 10):
            continue
        if any(p.observed.capabilities and p.observed.capabilities.effective >> bit & 1
               for p in container.predictions):
            kept.append(name)
    return kept


def _volumes(container: LintContainer, section: dict[str, Any], need: str | None) -> bool:
    """Every mounted emptyDir with a sizeLimit, plus one at `need`; False when a mounted
    volume is not an emptyDir (the overlay cannot restate it)."""
    mounts = container.declared.volume_mounts
    if any(m.volume_type != "emptyDir" for m in mounts):
        return False
    volumes: dict[str, dict[str, Any]] = {}
    for mount in mounts:
        empty: dict[str, Any] = {"sizeLimit": mount.size_limit or "1Gi"}
        if mount.medium:
            empty["medium"] = mount.medium
        volumes.setdefault(mount.name, {"name": mount.name, "emptyDir": empty})
    listed = [{k: v for k, v in (("name", m.name), ("mountPath", m.mount_path),
                                 ("readOnly", m.read_only), ("subPath", m.sub_path)) if v}
              for m in mounts]
    if need and need not in {m.mount_path for m in mounts}:
        name = need.strip("/").replace("/", "-").replace(".", "-")[:50] or "data"
        volumes.setdefault(name, {"name": name, "emptyDir": {"sizeLimit": "1Gi"}})
        listed.append({"name": name, "mountPath": need})
    section["volumes"] = list(volumes.values())
    section["volumeMounts"] = listed
    return True


def _fix(container: LintContainer, rule: str, section: dict[str, Any], subject: str) -> bool:
    """Apply one rule's fix to the container's values section; False when it has none."""
    sc = section.setdefault("securityContext", {})
    uid = container.profile.expected_uid or DEFAULT_UID
    if rule in ("RunsAsRoot", "RunAsUserMismatch", "RunAsGroupMismatch"):
        sc.update(runAsNonRoot=True, runAsUser=uid, runAsGroup=uid)
    elif rule == "PrivilegeEscalationAllowed":
        sc["allowPrivilegeEscalation"] = False
    elif rule in CAPABILITY_RULES:
        sc["privileged"] = False
        sc["capabilities"] = {"drop": ["ALL"], "add": _kept_capabilities(container)}
    elif rule == "SeccompUnconfined":
        sc["seccompProfile"] = {"type": "RuntimeDefault"}
    elif rule == "RootFilesystemWritable":
        sc["readOnlyRootFilesystem"] = True
    elif rule == "PrivilegedPortNotBindable":
        if container.profile.helm_values_prefix == "webhook":
            section["port"] = WEBHOOK_PORT
        else:
            low = min((p.port for p in container.declared.ports), default=0)
            section.setdefault("podSecurityContext", {})["sysctls"] = [
                {"name": SYSCTL, "value": str(low)}]
    elif rule == "HomeDirectoryUnusable":
        env = [{"name": k, "value": v} for k, v in container.declared.env if k != "HOME"]
        section["env"] = [*env, {"name": "HOME", "value": "/tmp"}]
    elif rule == "WritablePathMissing":
        return _volumes(container, section, subject or None)
    elif rule == "EmptyDirWithoutSizeLimit":
        return _volumes(container, section, None)
    else:
        return False
    return True


def overlay(lint_result: LintResult) -> tuple[dict[str, Any], list[str], list[str]]:
    """The values, what each key fixes, and the findings it cannot fix."""
    values: dict[str, Any] = {}
    fixed: list[str] = []
    open_findings: list[str] = []
    for container in lint_result.containers:
        prefix = container.profile.helm_values_prefix
        for finding in container.findings:
            rule = finding.finding.rule
            where = f"{container.source.kind} {container.source.name}: {rule}"
            section = values.setdefault(prefix, {}) if prefix else {}
            subject = finding.finding.subject or _path_of(finding.finding.declared)
            if prefix and _fix(container, rule, section, subject):
                fixed.append(f"{prefix}: {where}")
            else:
                open_findings.append(where)
    for section in values.values():
        if not section.get("securityContext"):
            section.pop("securityContext", None)
    # A finding split by runtime (its text names each runtime's threshold) is one line here.
    return ({k: v for k, v in values.items() if v}, list(dict.fromkeys(fixed)),
            list(dict.fromkeys(open_findings)))


def _path_of(declared: str | None) -> str:
    """The path of a WritablePathMissing finding ("must write /tmp: ...")."""
    if declared and declared.startswith("must write "):
        return declared.removeprefix("must write ").split(":", 1)[0]
    return ""


def render_helm_values(lint_result: LintResult) -> str:
    import yaml

    values, fixed, open_findings = overlay(lint_result)
    lines = ["# opaudit lint: Helm values overlay for the Spark Operator chart (kubeflow/",
             "# spark-operator). Give it last: helm upgrade ... -f <your values> -f this.yaml",
             "# (a --set flag wins over every -f file: move such values into a file first)"]
    lines += [f"# fixes {item}" for item in fixed]
    lines += [f"# NOT fixed here (no chart value for it): {item}" for item in open_findings]
    if not fixed and not open_findings:
        lines.append("# no finding: nothing to change")
    body = yaml.safe_dump(values, sort_keys=False) if values else "{}\n"
    return "\n".join(lines) + "\n" + body
