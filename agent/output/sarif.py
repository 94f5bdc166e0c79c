"""`opaudit lint -o sarif`: SARIF 2.1.0 as GitHub code scanning ingests it.

GitHub reads `level` for the alert's severity and `properties.security-severity` for its
security ranking, the rule's `help` as the fix, the first physical location as where to
annotate the pull request, and `partialFingerprints` to follow one alert across commits
(docs.github.com, "SARIF support for code scanning"). The fingerprint hashes what names the
finding (object, container, rule, subject), never its line or wording, so an alert survives
an edit above it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.model import LintContainer, LintFinding, LintResult, Severity
from agent.output.lintoutput import where_it_holds

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
# A placeholder until a release says where opaudit is published (as the krew manifest's).
INFORMATION_URI = "https://example.com/opaudit"
LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning",
         Severity.LOW: "note", Severity.INFO: "note"}
# GitHub maps security-severity to critical (>= 9.0), high (7.0-8.9), medium (4.0-6.9), low.
SECURITY_SEVERITY = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5",
                     Severity.LOW: "3.0", Severity.INFO: "1.0"}


@dataclass(frozen=True, slots=True)
class RuleText:
    """A catalogue entry as SARIF describes a rule."""

    id: str
    severity: Severity
    title: str
    why: str
    fix: str
    category: str


def _rule(rule: RuleText) -> dict[str, Any]:
    return {
        "id": rule.id,
        "shortDescription": {"text": f"{rule.id}: {rule.title}."},
        "fullDescription": {"text": f"Fires when {rule.title}; {rule.why}."},
        "help": {"text": f"Fix: {rule.fix}.",
                 "markdown": f"**Fix:** {rule.fix}.\n\nSee the opaudit README, rule "
                             f"`{rule.id}`."},
        "helpUri": f"{INFORMATION_URI}#rules",
        "defaultConfiguration": {"level": LEVEL[rule.severity]},
        "properties": {"tags": ["security", "kubernetes", rule.category or "opaudit"],
                       "security-severity": SECURITY_SEVERITY[rule.severity],
                       "precision": "high", "problem.severity": _problem(rule.severity)},
    }


def _problem(severity: Severity) -> str:
    return {"error": "error", "warning": "warning", "note": "recommendation"}[LEVEL[severity]]


def artifact_uri(path: str) -> str:
    """A path relative to the checkout, as GitHub needs it (SARIF GH1005)."""
    if path in ("-", "stdin"):
        return "stdin"
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    uri = relative if not relative.startswith("..") else absolute.lstrip("/")
    return uri.replace(os.sep, "/")


def fingerprint(container: LintContainer, finding: LintFinding) -> str:
    src, f = container.source, finding.finding
    key = "\0".join((src.kind, src.namespace, src.name, container.declared.container_name,
                     f.rule, f.subject, f.declared or ""))
    return hashlib.sha256(key.encode()).hexdigest()


def _result(container: LintContainer, findings: Sequence[LintFinding], index: dict[str, int],
            lint_result: LintResult) -> dict[str, Any]:
    """One result per fingerprint: a finding whose text differs between runtimes (each
    runtime's own threshold) is one alert that says each text with where it holds."""
    finding = findings[0]
    f, src = finding.finding, container.source
    namespace = f"{src.namespace}/" if src.namespace else ""
    head = f"{src.kind} {namespace}{src.name}, container {container.declared.container_name}"
    if len(findings) == 1:
        text = f"{head} (predicted, {where_it_holds(finding, lint_result)}): {f.message}"
    else:
        text = f"{head} (predicted): " + " ".join(
            f"[{where_it_holds(one, lint_result, not_on=False)}] {one.finding.message}"
            for one in findings)
    return {
        "ruleId": f.rule, "ruleIndex": index[f.rule], "level": LEVEL[f.severity],
        "message": {"text": text},
        "locations": [{"physicalLocation": {
            "artifactLocation": {"uri": artifact_uri(src.file), "uriBaseId": "%SRCROOT%"},
            "region": {"startLine": max(src.line, 1)}}}],
        "partialFingerprints": {"opauditFinding/v1": fingerprint(container, finding)},
        "properties": {"runtimes": [r for r in lint_result.runtimes
                                    if any(r in one.runtimes for one in findings)],
                       "conditions": {r: c for one in findings for r, c in one.conditions},
                       "predicted": True, "remediation": f.remediation},
    }


def _by_fingerprint(container: LintContainer, index: dict[str, int]
                    ) -> list[list[LintFinding]]:
    groups: dict[str, list[LintFinding]] = {}
    for finding in container.findings:
        if finding.finding.rule in index:
            groups.setdefault(fingerprint(container, finding), []).append(finding)
    return list(groups.values())


def render_sarif(lint_result: LintResult, rules: Sequence[RuleText], version: str) -> str:
    index = {rule.id: i for i, rule in enumerate(rules)}
    results = [_result(c, group, index, lint_result)
               for c in lint_result.containers for group in _by_fingerprint(c, index)]
    document = {
        "$schema": SARIF_SCHEMA, "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "opaudit", "version": version,
                                "semanticVersion": version, "informationUri": INFORMATION_URI,
                                "rules": [_rule(r) for r in rules]}},
            "automationDetails": {"id": "opaudit-lint/"},
            "originalUriBaseIds": {"%SRCROOT%": {"description": {
                "text": "the directory opaudit lint ran in (the repository checkout)"}}},
            "results": results,
            "columnKind": "unicodeCodePoints",
        }],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
