"""Import direction (STYLE.md): cli/node/audit -> report, rules, collect, kube -> model."""

from __future__ import annotations

import ast
from pathlib import Path

AGENT = Path(__file__).resolve().parents[1] / "agent"

# layer -> agent layers it may import
ALLOWED = {
    "model": set(),
    "api_error": set(),
    "rules": {"model"},
    "collect": {"model", "collect"},
    "kube": {"model", "kube", "collect", "api_error"},
    "report": {"model", "report", "api_error"},  # the Events writer is injected
}


def layer_of(path: Path) -> str:
    rel = path.relative_to(AGENT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def agent_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "agent" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_layers_import_only_downwards() -> None:
    bad = []
    for path in sorted(AGENT.rglob("*.py")):
        layer = layer_of(path)
        if layer not in ALLOWED:
            continue  # cli, node, audit, config, logs, privilege: the wiring layer
        for target in agent_imports(path) - ALLOWED[layer] - {layer}:
            bad.append(f"{path.relative_to(AGENT)} ({layer}) imports agent.{target}")
    assert bad == []


def test_model_imports_nothing_from_the_package() -> None:
    assert agent_imports(AGENT / "model.py") == set()
