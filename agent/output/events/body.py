"""The events.k8s.io/v1 Event opaudit posts for a finding: name, note and body.

Facts the API server enforces (pkg/apis/core/validation/events.go): `eventTime` is a
MicroTime with exactly six fractional digits; `note` is at most 1024 bytes;
`reportingController` is a qualified name; `reportingInstance`, `action` and `reason`
at most 128 characters; the name is a DNS subdomain of at most 253 characters.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.model import Finding, PodRef, Severity
from agent.output.merge import MergedFinding, merge_findings

REPORTING_CONTROLLER = "opaudit"
ACTION = "Audit"
NOTE_LIMIT_BYTES = 1024  # apiserver: len(note) > 1024 bytes is Invalid
SHORT_FIX_CHARS = 240  # two securityContext paths plus their Helm values twins
PART_ENDINGS = (".", ",", ":", ";", "!", "?")  # a fix part ending so needs no "; " after it


@dataclass(frozen=True, slots=True)
class EventKey:
    pod_uid: str
    container: str
    rule: str
    cleared: bool = False


def event_name(pod: PodRef, container: str, rule: str, *, cleared: bool = False) -> str:
    """`<pod name>.<16 hex>`: stable across restarts, a DNS subdomain of at most 253."""
    identity = f"{pod.uid}/{container}/{rule}" + ("/cleared" if cleared else "")
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    prefix = pod.name[: 253 - len(digest) - 1].rstrip(".-")
    return f"{prefix}.{digest}"


def micro_time(moment: datetime) -> str:
    """A MicroTime: exactly six fractional digits, UTC, e.g. `2026-01-01T00:00:00.000000Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(
    pod: PodRef, key: EventKey, findings: list[Finding], node: str, when: datetime
) -> dict[str, Any]:
    """The events.k8s.io/v1 Event for `findings` of one rule in one container (or a clear)."""
    if key.cleared:
        event_type = "Normal"
        note = fit_note(f"Cleared: {key.rule} is no longer observed in container {key.container}.")
    else:
        worst = max(f.severity.rank for f in findings)
        event_type = "Warning" if worst >= Severity.LOW.rank else "Normal"
        note = finding_note(pod, key.container, findings)
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": event_name(pod, key.container, key.rule, cleared=key.cleared),
            "namespace": pod.namespace,
        },
        "eventTime": micro_time(when),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": node[:128],  # apiserver: at most 128 characters
        "action": ACTION,
        "reason": key.rule[:128],
        "type": event_type,
        "note": note,
        "regarding": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
        },
    }


def finding_note(pod: PodRef, container: str, findings: list[Finding]) -> str:
    """What was found, one short fix line, and where the full fix is (Kubernetes shows a
    note as one line: a YAML snippet flattened into it reads as noise)."""
    merged = merge_findings(findings)
    where = f"Full fix: opaudit diagnose --pod {pod.namespace}/{pod.name}"
    fix = short_fix(merged[0].finding).rstrip(",:;")
    if fix and not fix.endswith((".", "!", "?")):
        fix += "."  # a fix that is a sentence already ends in one: not `alive.. Full fix`
    tail = f"Fix: {fix} {where}" if fix else where
    room = NOTE_LIMIT_BYTES - len(sanitize_text(tail).encode()) - 1
    return fit_note(_note_head(container, merged, room), tail)


def _note_head(container: str, merged: list[MergedFinding], room: int) -> str:
    """Every message when they fit; else never a list cut short in silence: how many, what
    each observed (`tcp 0.0.0.0:8082, ...`) and the first in full, as much as fits."""
    first = merged[0].finding
    everything = f"container {container}: " + " ".join(m.finding.message for m in merged)
    if len(merged) == 1:
        return everything  # one finding: fit_note shortens it, there is no list to cut
    count = f"container {container}: {len(merged)} {first.rule} findings"
    seen = ", ".join(m.finding.observed for m in merged if m.finding.observed)
    candidates = [everything]
    if seen:
        candidates += [f"{count} ({seen}); the first: {first.message}", f"{count} ({seen})."]
    candidates.append(f"{count}; the first: {first.message} The other {len(merged) - 1} are "
                      "in the full report.")
    for head in candidates:
        if len(sanitize_text(head).encode()) <= room:
            return head
    return candidates[-1]


def short_fix(finding: Finding) -> str:
    """The fix as dotted paths when it is a securityContext/values snippet that fits one
    short line; else the catalogue's one-line fix."""
    compact = compact_fix(finding.remediation) if finding.remediation else ""
    if compact and len(compact) <= SHORT_FIX_CHARS and not _bare_snippet(finding.remediation):
        return compact
    return finding.fix_line or compact


def _bare_snippet(remediation: str) -> bool:
    """YAML with no `# Pod spec:` / `# Helm values` label: it flattens into noise."""
    labelled = False
    for line in remediation.splitlines():
        comment = line.lstrip().lstrip("#").strip() if line.lstrip().startswith("#") else None
        if comment is not None:
            labelled = comment.startswith(("Pod spec", "Helm values"))
        elif line.strip() and not labelled:
            return True
    return False


def sanitize_text(text: str) -> str:
    """One line of printable text: control/format characters and lone surrogates removed."""
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cs":  # surrogateescape'd bytes from /proc
            kept.append("\ufffd")
        elif category in ("Cc", "Cf", "Zl", "Zp", "Co"):  # incl. ESC, bidi overrides
            kept.append(" ")
        else:
            kept.append(char)
    return " ".join("".join(kept).split())


def fit_note(message: str, remediation: str = "", limit: int = NOTE_LIMIT_BYTES) -> str:
    """`message remediation`, sanitised, at most `limit` UTF-8 bytes; each part keeps room."""
    head, tail = sanitize_text(message), sanitize_text(remediation)
    if not tail:
        return _truncate(head, limit)
    joined = f"{head} {tail}"
    if len(joined.encode()) <= limit:
        return joined
    tail_bytes = len(tail.encode())
    head = _truncate(head, max(limit // 2, limit - tail_bytes - 1))
    return f"{head} {_truncate(tail, limit - len(head.encode()) - 1)}"


def compact_fix(remediation: str) -> str:
    """A remediation's YAML snippets as one line (`a.b=c`): an Event note has no layout.

    `# Pod spec: ...` / `# Helm values (...): ...` comments label the snippet after them;
    other comments are advice and stay as text. Consecutive advice comments are one
    paragraph wrapped for width, so they join with a space, as prose does.
    """
    parts: list[str] = []
    label: str | None = None  # None: no snippet label yet, the body is plain text
    body: list[str] = []
    prose = False  # the previous line was advice: the next advice line continues it
    for line in [*remediation.splitlines(), "# end"]:
        if not line.lstrip().startswith("#"):
            body.append(line)
            prose = False  # YAML or a blank line ends the paragraph
            continue
        if body:
            text = "\n".join(body)
            parts.append(" ".join(text.split()) if label is None else _flat_yaml(text, label))
            body = []
        comment = line.lstrip().lstrip("#").strip()
        if comment.startswith("Pod spec"):
            # "Pod spec: spec.containers[].securityContext" names the snippet's root key.
            path = comment.partition(": ")[2]
            label = path.rpartition(".")[0] + "." if "." in path else ""
        elif comment.startswith("Helm values"):
            label = "Helm values: "  # the snippet's root key is the values path
        elif comment and comment != "end":
            if prose:
                parts[-1] += " " + comment
            else:
                parts.append(comment)
            prose = True
            continue
        prose = False  # a label, a bare `#` or the end
    return _join_parts(p for p in parts if p)


def _join_parts(parts: Iterable[str]) -> str:
    """`; ` between parts, but a part that ends in punctuation already says where it ends:
    `default: spec...`, not `default:; spec...`."""
    text = ""
    for part in parts:
        if text:
            text += " " if text.endswith(PART_ENDINGS) else "; "
        text += part
    return text


def _flat_yaml(snippet: str, label: str) -> str:
    import yaml  # only the Events sink pays for it

    try:
        data = yaml.safe_load(snippet)
    except yaml.YAMLError:
        return label + " ".join(snippet.split())
    pairs: list[str] = []
    helm = label.startswith("Helm")
    _flatten(data, "" if helm else label.rstrip("."), pairs)
    return ("Helm values: " if helm else "") + ", ".join(pairs)


def _flatten(value: Any, prefix: str, out: list[str]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(inner, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list):
        out.append(f"{prefix}={json.dumps(value, separators=(',', ':'))}")
    else:
        out.append(f"{prefix}={json.dumps(value) if not isinstance(value, str) else value}")


def _truncate(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    ellipsis = "…"  # 3 bytes
    cut = raw[: max(0, limit - len(ellipsis.encode()))].decode("utf-8", "ignore")
    return cut.rstrip() + ellipsis


def event_series(count: int, last_observed: datetime) -> dict[str, Any]:
    return {"count": count, "lastObservedTime": micro_time(last_observed)}
