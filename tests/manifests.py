"""Rendering daemonset/ for tests: the Kustomize base with the real kubectl, the Helm chart
with the real helm (scripts/devtools installs it), and checkov over the result."""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DAEMONSET_DIR = Path(__file__).resolve().parents[1] / "daemonset"
CHART_DIR = DAEMONSET_DIR / "chart"
K8S_VERSION = "1.37.0"  # the schemas kubernetes-validate ships (pinned in pyproject.toml)
# The release scripts and README install: `helm install opaudit ... -n opaudit`.
RELEASE, NAMESPACE = "opaudit", "opaudit"
_AGENT_UIDS = itertools.count(1)  # agent_pod: each pod its own uid


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/bootstrap and scripts/devtools install it)")
    return path


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize() -> list[dict[str, Any]]:
    result = subprocess.run([need("kubectl"), "kustomize", str(DAEMONSET_DIR)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need("helm"), *args], capture_output=True, text=True, timeout=120)


def helm_template(*args: str) -> list[dict[str, Any]]:
    result = helm("template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def by_kind(rendered: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in rendered if doc["kind"] == kind]
    return found


# --- the DaemonSet's pods, as its controller creates them ------------------------------


def daemonset_pod(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    """The Pod the DaemonSet controller would create from the template, as it runs."""
    daemonset = by_kind(rendered, "DaemonSet")
    template = copy.deepcopy(daemonset["spec"]["template"])
    name = template["spec"]["containers"][0]["name"]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {**template["metadata"], "name": "opaudit-x7k2p", "namespace": "opaudit",
                     "uid": "5f0c1b9e-0a6d-4d43-9a53-3c1f0b6f7e21"},
        "spec": {**template["spec"], "nodeName": "worker-1"},
        "status": {"phase": "Running", "podIP": "192.0.2.10", "podIPs": [{"ip": "192.0.2.10"}],
                   "containerStatuses": [{
                       "name": name, "ready": True, "restartCount": 0, "image": "opaudit",
                       "imageID": "", "state": {"running": {}},
                       "containerID": "containerd://" + "ab" * 32}]},
    }


def agent_pod(node: str, *, phase: str = "Running", name: str | None = None) -> dict[str, Any]:
    """A pod of the Kustomize base's DaemonSet, as its controller would create it on `node`."""
    template = copy.deepcopy(by_kind(kustomize(), "DaemonSet")["spec"]["template"])
    n = next(_AGENT_UIDS)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {**template["metadata"], "name": name or f"opaudit-{node}-{n}",
                     "namespace": "opaudit",
                     "uid": f"00000000-0000-4000-8000-{n:012d}"},
        "spec": {**template["spec"], "nodeName": node},
        "status": {"phase": phase, "conditions": [
            {"type": "Ready", "status": "True" if phase == "Running" else "False"}]},
    }


def checkov(files: list[Path]) -> dict[str, dict[str, Any]]:
    """checkov's kubernetes results per file: {path: {"passed", "failed", "skipped"}}."""
    binary = os.environ.get("CHECKOV_BIN") or str(
        Path(__file__).resolve().parents[1] / ".venv" / "checkov" / "bin" / "checkov")
    if not os.access(binary, os.X_OK):
        pytest.skip("checkov is not installed (scripts/devtools installs it)")
    args = [binary, "--framework", "kubernetes", "--compact", "-o", "json",
            # No call to Prisma Cloud for guidelines: only the registries are reachable.
            "--skip-download"]
    for path in files:
        args += ["-f", str(path)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    assert result.returncode in (0, 1), result.stderr  # 1: some check failed
    report = json.loads(result.stdout)
    results = (report if isinstance(report, dict) else report[0])["results"]
    per_file: dict[str, dict[str, Any]] = {
        str(p): {"passed": [], "failed": [], "skipped": []} for p in files}
    for outcome in ("passed", "failed", "skipped"):
        for check in results.get(f"{outcome}_checks", []):
            per_file[_absolute(check["file_abs_path"])][outcome].append(check)
    return per_file


def _absolute(path: str) -> str:
    return str(Path(path).resolve())
