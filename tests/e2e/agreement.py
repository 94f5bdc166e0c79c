"""Running opaudit on a container's process, and checking every fact it reports with the oracle."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from e2e.oracle import SsListener, can_write, capability_sets, ss_listeners
from fixture_data import pod_fixture

OPAUDIT = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "opaudit"

Findings = list[tuple[str, str]]  # sorted (rule, severity)


def load_fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(pod_fixture(name).read_text())
    return loaded


def variant(manifest: Mapping[str, Any], change: Callable[[dict[str, Any]], None]
            ) -> dict[str, Any]:
    """A copy of a pod manifest with a seed case's change applied to it."""
    copied = copy.deepcopy(dict(manifest))
    change(copied)
    return copied


def write_manifest(manifest: Mapping[str, Any], directory: Path, name: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(manifest)))
    return path


def diagnose(pid: int, pod_spec: Path) -> dict[str, Any]:
    result = subprocess.run([str(OPAUDIT), "diagnose", "--pid", str(pid), "--pod-spec",
                             str(pod_spec), "-o", "json", "--fail-on", "critical"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def findings(report: Mapping[str, Any]) -> Findings:
    return sorted((f["rule"], f["severity"]) for f in report["findings"])


def reported_listeners(target: Mapping[str, Any]) -> list[SsListener]:
    return sorted(SsListener(x["protocol"], x["address"], x["port"], x["v6only"],
                             tuple(sorted(x["pids"])))
                  for x in target["network"]["listeners"])


def assert_oracle_agrees(report: Mapping[str, Any], pid: int) -> dict[str, bool]:
    """Every capability set, listener and path verdict of the report, found again without
    opaudit. Returns the oracle's path verdicts, for the caller's expected findings."""
    (target,) = report["targets"]
    assert target["incomplete"] == []
    assert target["capabilities"] == capability_sets(pid)
    assert reported_listeners(target) == ss_listeners(pid)
    verdicts = {p["path"]: can_write(pid, p["path"]) for p in target["paths"]}
    assert {p["path"]: p["writable"] for p in target["paths"]} == verdicts
    return verdicts


def audit_and_check(pid: int, pod_spec: Path) -> tuple[Findings, dict[str, bool]]:
    report = diagnose(pid, pod_spec)
    return findings(report), assert_oracle_agrees(report, pid)
