"""`opaudit lint` outputs: SARIF that Microsoft's SARIF Multitool validates with GitHub's
ingestion rules, stable fingerprints, the table and JSON/YAML grouped by object and
container; and the README's CI job and the pre-commit hook as users copy them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_run import ROOT, opaudit

MULTITOOL = Path(os.environ.get("SARIF_MULTITOOL_BIN") or (
    ROOT / ".venv" / "sarif" / "node_modules" / ".bin" / "sarif-multitool"))
# The npm wrapper hands its arguments to a shell, which splits "Gh;Sarif" at the `;`: run
# the platform binary it wraps.
MULTITOOL_BINARY = MULTITOOL.parent.parent / "@microsoft" / "sarif-multitool-linux" / \
    "Sarif.Multitool"

BAD = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      securityContext:
        runAsUser: 1000
      containers:
      - name: web
        image: example/web:1
        ports: [{containerPort: 443}]
        securityContext:
          capabilities: {add: [NET_BIND_SERVICE]}
      - name: sidecar
        image: example/sidecar:1
        securityContext: {privileged: true}
"""


def lint(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return opaudit("lint", str(path), *args)


@pytest.fixture
def bad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "deploy" / "web.yaml"
    path.parent.mkdir()
    path.write_text(BAD)
    return path


def test_sarif_validates_with_the_multitool_github_rules(bad: Path, tmp_path: Path) -> None:
    if not os.access(MULTITOOL_BINARY, os.X_OK):
        pytest.skip("sarif-multitool is not installed (scripts/devtools installs it with npm)")
    done = subprocess.run(["python", "-m", "agent.cli", "lint", str(bad.relative_to(tmp_path)),
                           "-o", "sarif"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 1, done.stderr  # a critical and highs: --fail-on high
    sarif = tmp_path / "out.sarif"
    sarif.write_text(done.stdout)
    log = tmp_path / "validation.sarif"
    check = subprocess.run([str(MULTITOOL_BINARY), "validate", str(sarif), "--rule-kind",
                            "Gh;Sarif", "--output", str(log)], capture_output=True, text=True,
                           timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    problems = json.loads(log.read_text())["runs"][0]["results"]
    assert [p for p in problems if p.get("level", "warning") == "error"] == [], problems
    assert problems == [], [p["message"] for p in problems]  # not even a warning
    document = json.loads(done.stdout)
    results = document["runs"][0]["results"]
    by_rule = {r["ruleId"]: r for r in results}
    assert by_rule["PrivilegedContainer"]["level"] == "error"
    assert by_rule["PrivilegedPortNotBindable"]["level"] == "error"
    location = by_rule["PrivilegedPortNotBindable"]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "deploy/web.yaml"
    assert location["region"]["startLine"] == 11  # `- name: web`
    rules = {r["id"]: r for r in document["runs"][0]["tool"]["driver"]["rules"]}
    assert rules["PrivilegedPortNotBindable"]["help"]["text"].startswith("Fix: ")
    assert rules["PrivilegedPortNotBindable"]["properties"]["security-severity"] == "8.0"


def test_fingerprints_survive_a_moved_container_and_differ_between_findings(
        bad: Path) -> None:
    first = json.loads(lint(bad, "-o", "sarif").stdout)["runs"][0]["results"]
    bad.write_text("# a comment above shifts every line\n" * 3 + BAD)
    moved = json.loads(lint(bad, "-o", "sarif").stdout)["runs"][0]["results"]
    prints = [r["partialFingerprints"] for r in first]
    assert prints == [r["partialFingerprints"] for r in moved]
    assert len({json.dumps(p) for p in prints}) == len(prints)
    assert [r["locations"][0]["physicalLocation"]["region"]["startLine"] for r in moved] == [
        r["locations"][0]["physicalLocation"]["region"]["startLine"] + 3 for r in first]


def test_json_and_yaml_group_by_object_and_container_with_runtimes(bad: Path) -> None:
    document: dict[str, Any] = json.loads(lint(bad, "-o", "json").stdout)
    assert document["schema"] == "opaudit.lint/v1"
    models = {m["name"]: m for m in document["models"]}
    assert models["containerd-2"]["label"] == "containerd 2.x"
    assert any("containerd#9348" in source for source in models["containerd-2"]["sources"])
    assert yaml.safe_load(lint(bad, "-o", "yaml").stdout) == document
    web, sidecar = document["containers"]
    assert (web["kind"], web["namespace"], web["name"], web["container"], web["line"]) == (
        "Deployment", "shop", "web", "web", 11)
    assert sidecar["container"] == "sidecar" and sidecar["line"] == 16
    port = next(f for f in web["findings"] if f["rule"] == "PrivilegedPortNotBindable")
    assert port["predicted"] is True
    assert port["runtimes"] == ["containerd", "cri-o"] and port["not_runtimes"] == [
        "containerd-2"]
    assert port["conditions"] == {
        "containerd": "unless the entrypoint has file capabilities (give --image to settle it)",
        "cri-o": "unless the entrypoint has file capabilities (give --image to settle it)"}
    facts = {p["runtime"]: p for p in web["predicted"] if p["condition"] is None
             or p["condition"].startswith("unless")}
    assert facts["containerd-2"]["ip_unprivileged_port_start"] == 0
    assert facts["containerd"]["capabilities"]["bounding"] == [
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
        "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]
    assert facts["containerd"]["capabilities"]["effective"] == []
    assert {u["rule"] for u in web["unknown"]} >= {"DeclaredPortNotListening",
                                                   "UndeclaredListener"}


def test_the_table_names_object_container_line_and_runtimes(bad: Path) -> None:
    done = opaudit("lint", str(bad), env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == f"Deployment shop/web  ({bad})"
    assert "  container web (line 11, profile generic)" in lines
    assert any(line.startswith("    CRITICAL PrivilegedContainer  [on containerd 1.x, "
                               "containerd 2.x, CRI-O]") for line in lines)
    assert lines[-1].startswith("Listeners cannot be predicted")
    narrow = opaudit("lint", str(bad), env={**os.environ, "COLUMNS": "60"}).stdout
    body = [line for line in narrow.splitlines() if not line.startswith("Deployment ")]
    assert max(len(line) for line in body) <= 60  # wrapped to the terminal (not the path)
    assert opaudit("lint", str(bad), "--fail-on", "critical", "--runtime",
                   "containerd-2").returncode == 1
    only_high = bad.parent / "high.yaml"
    only_high.write_text(BAD.split("      - name: sidecar")[0])
    assert opaudit("lint", str(only_high), "--fail-on", "critical").returncode == 0


def test_usage_errors_of_the_image_options_are_one_line() -> None:
    for args in (["--image", "example/web:1"], ["--image", "ref=docker:x"],
                 ["--image-user", "ref=abc"], ["--image-user", "ref=1:x"]):
        done = opaudit("lint", *args, stdin_text="")
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr


def test_the_readme_ci_job_uploads_sarif_with_security_events_write() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("# .github/workflows/opaudit-lint.yaml\n")[1].split("```")[0]
    workflow = yaml.safe_load(block)
    job = workflow["jobs"]["lint"]
    assert job["permissions"]["security-events"] == "write"
    steps = {s.get("uses", s.get("name")): s for s in job["steps"]}
    assert steps["github/codeql-action/upload-sarif@v3"]["with"]["sarif_file"] == "opaudit.sarif"
    assert "-o sarif" in steps["lint"]["run"]


def test_the_pre_commit_hook_runs_opaudit_lint(bad: Path) -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "opaudit-lint" and hook["language"] == "python"
    entry = hook["entry"].split()
    assert entry[:2] == ["opaudit", "lint"]
    done = opaudit(*entry[1:], str(bad))  # as pre-commit calls it: the files appended
    assert done.returncode == 1 and "PrivilegedContainer" in done.stdout


def test_config_waivers_and_severity_overrides_apply_as_in_diagnose(bad: Path,
                                                                    tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "waivers": [{"rule": "PrivilegedContainer", "reason": "a reviewed debug sidecar",
                     "namespace": "shop"}],
        "severityOverrides": {"PrivilegedPortNotBindable": "medium"}}))
    document = json.loads(lint(bad, "-o", "json", "--config", str(config)).stdout)
    rules = {(c["container"], f["rule"]): f["severity"] for c in document["containers"]
             for f in c["findings"]}
    assert ("sidecar", "PrivilegedContainer") not in rules
    assert rules[("web", "PrivilegedPortNotBindable")] == "medium"
    elsewhere = tmp_path / "other.yaml"
    elsewhere.write_text(BAD.replace("namespace: shop", "namespace: other"))
    again = json.loads(lint(elsewhere, "-o", "json", "--config", str(config)).stdout)
    assert "PrivilegedContainer" in {f["rule"] for f in again["containers"][1]["findings"]}


def test_helm_values_says_what_it_cannot_fix_outside_the_spark_operator_chart(
        bad: Path) -> None:
    done = lint(bad, "-o", "helm-values")
    assert done.returncode == 1
    comments = [line for line in done.stdout.splitlines() if line.startswith("# NOT fixed")]
    assert "# NOT fixed here (no chart value for it): Deployment web: PrivilegedContainer" \
        in comments
    assert yaml.safe_load(done.stdout) == {}


def test_the_readme_names_every_key_of_the_json_document(bad: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("`-o json` (`schema`: `opaudit.lint/v1`")
    described = readme[start:readme.index("Runtime models (", start)]
    document = json.loads(lint(bad, "-o", "json").stdout)
    container = document["containers"][0]
    keys = {*document, *container, *container["findings"][0], *container["predicted"][0]}
    missing = sorted(k for k in keys if f"`{k}`" not in described and k != "predicted")
    assert missing == []
