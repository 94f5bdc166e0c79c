"""The `opaudit.report/v1` JSON/YAML document of `diagnose` (see the README).

Lint's documents are `lintoutput.py` and `sarif.py`; Events and policy reports build their
own bodies (`events/body.py`, `policyreports/body.py`).
"""

from __future__ import annotations

import json
from typing import Any

from agent.model import (
    NO_PROCESS,
    AuditResult,
    Capabilities,
    Finding,
    Gap,
    IdQuad,
    Listener,
    NetnsFacts,
    ObservedProcess,
    Outcome,
    OwnerReader,
    TargetResult,
    Verdict,
    mask_names,
)
from agent.output.merge import merge_findings

SCHEMA = "opaudit.report/v1"
SYSCTL_KEYS = (
    ("net.ipv6.bindv6only", "bindv6only"),
    ("net.ipv6.conf.all.disable_ipv6", "disable_ipv6"),
    ("net.ipv4.ip_unprivileged_port_start", "ip_unprivileged_port_start"),
)


def document_dict(audit_result: AuditResult) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "node": audit_result.node,
        "targets": [target_dict(t) for t in audit_result.targets],
        # One per container and rule, naming every pid it was seen in (`pid` is the first).
        "findings": [finding_dict(m.finding, m.pids)
                     for m in merge_findings(audit_result.findings)],
    }


def render_json(audit_result: AuditResult) -> str:
    return json.dumps(document_dict(audit_result), indent=2, ensure_ascii=False) + "\n"


def render_yaml(audit_result: AuditResult) -> str:
    import yaml  # only -o yaml pays for it

    return str(yaml.safe_dump(document_dict(audit_result), sort_keys=False, allow_unicode=True))


def target_dict(target: TargetResult) -> dict[str, Any]:
    obs = target.observed
    declared = target.declared
    return {
        "pid": None if obs.pid == NO_PROCESS else obs.pid,  # a container with no process
        "comm": obs.comm,
        "cmdline": list(obs.cmdline),
        "pod": None if declared is None else {
            "namespace": declared.pod.namespace, "name": declared.pod.name,
            "uid": declared.pod.uid,
        },
        "container": None if declared is None else {
            "name": declared.container_name, "id": declared.container_id,
        },
        "profile": target.profile.name,
        "identity": identity_dict(obs),
        "capabilities": capabilities_dict(obs.capabilities),
        "no_new_privs": obs.no_new_privs,
        "seccomp": obs.seccomp,
        "filesystem": None if obs.filesystem is None else {
            "root_readonly": obs.filesystem.root_readonly,
            "writable_mounts": list(obs.filesystem.writable_mounts),
        },
        "paths": [
            {"path": p.path, "exists": p.exists, "writable": p.writable,
             "on_readonly_mount": p.on_readonly_mount, **({"error": p.error} if p.error else {})}
            for p in obs.paths
        ],
        "network": network_dict(obs.network),
        "incomplete": [{"fact": g.fact, "reason": g.reason} for g in incomplete_gaps(obs)],
        **verdicts_dict(target.verdicts),
    }


def verdicts_dict(verdicts: tuple[Verdict, ...]) -> dict[str, Any]:
    """The rules that ran clean, were waived (with the waiver's reason), and could not be
    evaluated (with why)."""
    return {
        "passed": [v.rule for v in verdicts if v.outcome is Outcome.PASSED],
        "waived": [{"rule": v.rule, "reason": v.reason}
                   for v in verdicts if v.outcome is Outcome.WAIVED],
        "unevaluated": [
            {"rule": v.rule, "missing": [{"fact": g.fact, "reason": g.reason} for g in v.missing]}
            for v in verdicts if v.outcome is Outcome.UNKNOWN
        ],
    }


def incomplete_gaps(obs: ObservedProcess) -> tuple[Gap, ...]:
    """The process's gaps and its netns's (e.g. listener owners), once each (README)."""
    network_gaps = obs.network.gaps if obs.network is not None else ()
    return tuple(dict.fromkeys((*obs.incomplete, *network_gaps)))


def identity_dict(obs: ObservedProcess) -> dict[str, Any]:
    ident = obs.identity
    return {
        "uid": _quad(ident.uid),
        "gid": _quad(ident.gid),
        "groups": None if ident.groups is None else list(ident.groups),
        "user": ident.user,
        "home": ident.home,
        "env_home": ident.env_home,
    }


def _quad(quad: IdQuad | None) -> dict[str, int] | None:
    if quad is None:
        return None
    return {"real": quad.real, "effective": quad.effective, "saved": quad.saved, "fs": quad.fs}


def capabilities_dict(caps: Capabilities | None) -> dict[str, list[str]] | None:
    if caps is None:
        return None
    return {
        "effective": list(mask_names(caps.effective)),
        "permitted": list(mask_names(caps.permitted)),
        "inheritable": list(mask_names(caps.inheritable)),
        "bounding": list(mask_names(caps.bounding)),
        "ambient": list(mask_names(caps.ambient)),
    }


def network_dict(net: NetnsFacts | None) -> dict[str, Any] | None:
    if net is None:
        return None
    return {
        "netns": net.inode,
        "host_network": net.host_network,
        "sysctls": {key: getattr(net.sysctls, attr) for key, attr in SYSCTL_KEYS},
        "addresses": [a.address for a in net.addresses],
        "listeners": [listener_dict(x) for x in net.listeners],
        "owner_reader": owner_reader_dict(net.owner_reader),
    }


def owner_reader_dict(reader: OwnerReader | None) -> dict[str, Any] | None:
    """Which reader found the listeners' owners ("proc" or "bpf") and why not the other;
    `fallback` names what refused the BPF iterator when it was wanted (README, Performance)."""
    if reader is None:
        return None
    return {"reader": reader.reader, "why": reader.why, "fallback": reader.fallback or None}


def listener_dict(listener: Listener) -> dict[str, Any]:
    out: dict[str, Any] = {
        "protocol": listener.protocol,
        "address": listener.address,
        "port": listener.port,
        "v6only": listener.v6only,
        "pids": list(listener.pids),
    }
    if listener.interface:
        out["interface"] = listener.interface
    return out


def finding_dict(finding: Finding, pids: tuple[int, ...] = ()) -> dict[str, Any]:
    return {
        "rule": finding.rule,
        "severity": finding.severity.value,
        "pid": finding.pid,
        "pids": list(pids) if pids else ([finding.pid] if finding.pid is not None else []),
        "comms": list(finding.comms),
        "pod": finding.pod,  # targets[].pod as "namespace/name" (as Events and kubectl say it)
        "container": finding.container,
        "subject": finding.subject,
        "message": finding.message,
        "remediation": finding.remediation,
        "observed": finding.observed,
        "declared": finding.declared,
    }
