"""`opaudit lint` as a table, JSON or YAML (schema `opaudit.lint/v1`), grouped by object and
container; each finding says under which runtimes (and conditions) it holds."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from agent.model import (
    Fact,
    LintContainer,
    LintFinding,
    LintResult,
    ObservedProcess,
    RuntimePrediction,
    mask_names,
)
from agent.output.document import incomplete_gaps

SCHEMA = "opaudit.lint/v1"
LISTENER_NOTE = ("Listeners cannot be predicted: the rules about observed listeners are "
                 "unknown here, and the port rules judge the declared ports and probe ports.")


def where_it_holds(finding: LintFinding, lint_result: LintResult, *, not_on: bool = True) -> str:
    """"on containerd 1.x, CRI-O; not on containerd 2.x", with each runtime's condition
    (without the "not on" part when `not_on` is False)."""
    label = dict(lint_result.labels)
    conditions = dict(finding.conditions)
    groups: dict[str, list[str]] = {}
    for runtime in finding.runtimes:
        groups.setdefault(conditions.get(runtime, ""), []).append(label.get(runtime, runtime))
    text = "; ".join(f"on {', '.join(names)}{', ' + cond if cond else ''}"
                     for cond, names in groups.items())
    missing = [label.get(r, r) for r in lint_result.runtimes if r not in finding.runtimes]
    return f"{text}; not on {', '.join(missing)}" if missing and not_on else text


def object_label(container: LintContainer) -> str:
    src = container.source
    namespace = f"{src.namespace}/" if src.namespace else ""
    return f"{src.kind} {namespace}{src.name}"


def _facts(observed: ObservedProcess) -> dict[str, Any]:
    caps, identity, network = observed.capabilities, observed.identity, observed.network
    start = network.sysctls.ip_unprivileged_port_start if network else None
    return {
        "uid": identity.uid.effective if identity.uid else None,
        "gid": identity.gid.effective if identity.gid else None,
        "groups": list(identity.groups or ()),
        "home": identity.home, "env_home": identity.env_home,
        "capabilities": None if caps is None else {
            name: list(mask_names(getattr(caps, name)))
            for name in ("effective", "permitted", "inheritable", "bounding", "ambient")},
        "no_new_privs": observed.no_new_privs,
        "seccomp": observed.seccomp,
        "root_readonly": observed.filesystem.root_readonly if observed.filesystem else None,
        "writable_mounts": list(observed.filesystem.writable_mounts)
        if observed.filesystem else [],
        "paths": {p.path: p.writable for p in observed.paths},
        "ip_unprivileged_port_start": start,
        # Which ports bind turns on the threshold: with it unknown (hostNetwork: the node's
        # own sysctl), so are they, and null says so where [] would say "none".
        "bindable_ports": sorted({f"{s.protocol}/{s.port}" for s in network.listeners})
        if network is not None and start is not None else None,
        "incomplete": [{"fact": g.fact, "reason": g.reason} for g in incomplete_gaps(observed)],
    }


def _prediction(prediction: RuntimePrediction) -> dict[str, Any]:
    return {"runtime": prediction.runtime, "condition": prediction.condition,
            **_facts(prediction.observed)}


def finding_dict(finding: LintFinding, runtimes: tuple[str, ...]) -> dict[str, Any]:
    f = finding.finding
    return {"rule": f.rule, "severity": f.severity.value, "predicted": True,
            "runtimes": list(finding.runtimes),
            "not_runtimes": [r for r in runtimes if r not in finding.runtimes],
            "conditions": dict(finding.conditions), "subject": f.subject,
            "message": f.message, "observed": f.observed, "declared": f.declared,
            "remediation": f.remediation}


def container_dict(container: LintContainer, runtimes: tuple[str, ...]) -> dict[str, Any]:
    src = container.source
    return {
        "kind": src.kind, "namespace": src.namespace, "name": src.name,
        "container": container.declared.container_name, "init": container.init,
        "file": src.file, "line": src.line, "profile": container.profile.name,
        "findings": [finding_dict(f, runtimes) for f in container.findings],
        "unknown": [{"rule": v.rule, "missing": [{"fact": g.fact, "reason": g.reason}
                                                  for g in v.missing]}
                    for v in container.unknown],
        "predicted": [_prediction(p) for p in container.predictions],
    }


def lint_dict(lint_result: LintResult) -> dict[str, Any]:
    labels, sources = dict(lint_result.labels), dict(lint_result.sources)
    models = [{"name": r, "label": labels.get(r, r), "sources": list(sources.get(r, ()))}
              for r in lint_result.runtimes]
    return {"schema": SCHEMA, "runtimes": list(lint_result.runtimes), "models": models,
            "objects": lint_result.objects,
            "skipped": dict(lint_result.skipped), "note": LISTENER_NOTE,
            "containers": [container_dict(c, lint_result.runtimes) for c in lint_result.containers]}


def render_lint_document(lint_result: LintResult, output: str) -> str:
    document = lint_dict(lint_result)
    if output == "json":
        return render_json(document)
    import yaml

    return str(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def _wrapped(text: str, width: int, indent: str, hanging: str | None = None) -> list[str]:
    return textwrap.wrap(text, width=max(width, len(indent) + 30), initial_indent=indent,
                         subsequent_indent=indent if hanging is None else hanging,
                         break_on_hyphens=False) or [indent]


def render_lint_table(lint_result: LintResult, width: int = 100) -> str:
    """Grouped by object and container; text wrapped to `width` columns."""
    lines: list[str] = []
    previous = None
    for container in lint_result.containers:
        label = object_label(container)
        if label != previous:
            lines.append(f"{label}  ({container.source.file})")
            previous = label
        kind = "init container" if container.init else "container"
        lines.append(f"  {kind} {container.declared.container_name} "
                     f"(line {container.source.line}, profile {container.profile.name})")
        if not container.findings:
            lines.append("    no finding")
        for finding in container.findings:
            f = finding.finding
            lines += _wrapped(f"{f.severity.value.upper():<8} {f.rule}  "
                              f"[{where_it_holds(finding, lint_result)}]", width, "    ", " " * 13)
            lines += _wrapped(f.message, width, " " * 13)
            lines += _wrapped(f"fix: {f.fix_line}", width, " " * 13)
        if container.unknown:
            names = ", ".join(v.rule for v in container.unknown)
            lines += _wrapped(f"unknown: {names}", width, "    ", " " * 13)
            # Why, once per missing fact; the listeners' reason is the closing note.
            why = {g.fact: g.reason for v in container.unknown for g in v.missing
                   if g.fact != Fact.LISTENERS}
            for fact, reason in why.items():
                lines += _wrapped(f"{fact}: {reason}", width, " " * 13, " " * 15)
    skipped = ", ".join(f"{kind} {count}" for kind, count in lint_result.skipped) or "none"
    count = len(lint_result.findings)
    noun = "finding" if count == 1 else "findings"
    lines += _wrapped(f"{lint_result.objects} workloads, {len(lint_result.containers)} "
                      f"containers, {count} {noun}; runtimes: "
                      f"{', '.join(lint_result.runtimes)}; skipped "
                      f"kinds: {skipped}", width, "")
    lines += _wrapped(LISTENER_NOTE, width, "")
    return "\n".join(lines) + "\n"


def render_json(document: dict[str, object]) -> str:
    """The document with one container per line: json's C encoder runs only without indent,
    and the pure-Python one costs seconds at 1,000 workloads."""
    containers = document.get("containers")
    head = {k: v for k, v in document.items() if k != "containers"}
    lines = [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    items = [json.dumps(c, ensure_ascii=False, separators=(", ", ": "))
             for c in containers or []] if isinstance(containers, list) else []
    body = ",\n    ".join(items)
    return "{\n" + "\n".join(lines) + f'\n  "containers": [\n    {body}\n  ]\n}}\n' \
        if items else "{\n" + "\n".join(lines) + '\n  "containers": []\n}\n'
