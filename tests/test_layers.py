"""Import contracts (kopf checks its own in CI), over every module of `agent/`.

- `model` and `api_error` import nothing from the package; `rules` imports only `model`.
- `collect` reads the kernel and knows nothing of Kubernetes (no `kube`, no `kubernetes`).
- `output` imports nothing from `kube`: the Events sink's writer is injected.
- `audit` turns requests into findings and knows nothing of Kubernetes; `targets` makes the
  requests from pods.
- No module imports a layer above its own: each layer may import only those listed for it.
- `kubernetes` is imported only in `kube/`, and only inside functions, so `diagnose --pid`
  and `sockets` never load it (checked on real runs below, not only in the source).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AGENT = REPO / "agent"

# Layer (a subpackage, or a top-level module) -> the layers it may import, its own aside.
# Listed from the bottom up; a layer imports only layers listed before it.
ALLOWED: dict[str, set[str]] = {
    "__init__": set(),
    "model": set(),
    "api_error": set(),
    "logs": set(),
    # Standalone on purpose: the krew archive ships this one file (scripts/krew-archive).
    "kubectl_plugin": set(),
    "rules": {"model"},
    "collect": {"model"},
    "output": {"model", "api_error"},
    "kube": {"model", "api_error", "collect"},
    "privilege": {"model", "collect"},
    "config": {"model", "collect", "rules"},
    "arguments": {"__init__"},
    "audit": {"model", "collect", "rules"},  # requests -> findings: no Kubernetes
    "predict": {"model", "collect", "kube", "rules"},  # lint: facts predicted from manifests
    "targets": {"model", "collect", "kube", "audit"},  # pods -> audit requests
    "reporting": {"model", "kube", "output"},  # --sink reports: discovery, then the sink
    "daemon": {"model", "api_error", "collect", "kube", "output", "logs", "privilege", "audit",
               "targets", "reporting"},
    "lint_command": {"__init__", "model", "collect", "rules", "predict", "output"},
    "cli": {"__init__", "model", "api_error", "collect", "kube", "output", "logs", "privilege",
            "config", "arguments", "audit", "targets", "reporting", "daemon", "lint_command"},
}
KUBERNETES_LAYERS = {"kube"}


def layer_of(path: Path) -> str:
    rel = path.relative_to(AGENT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def modules() -> list[Path]:
    return sorted(p for p in AGENT.rglob("*.py") if "__pycache__" not in p.parts)


def imported_names(tree: ast.AST) -> list[tuple[str, ast.stmt]]:
    """Every absolute import as a dotted name, with its statement."""
    found: list[tuple[str, ast.stmt]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node))
            found += [(f"{node.module}.{a.name}", node) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node) for a in node.names]
    return found


def agent_layers_imported(path: Path) -> set[str]:
    layers = set()
    submodules = {layer_of(p) for p in modules()}
    for name, _ in imported_names(ast.parse(path.read_text())):
        parts = name.split(".")
        if parts[0] == "agent" and len(parts) > 1:
            layers.add(parts[1] if parts[1] in submodules else "__init__")
    return layers


def module_level_statements(tree: ast.Module) -> set[ast.stmt]:
    """Statements that run on import: not inside a function, nor under TYPE_CHECKING."""
    top: set[ast.stmt] = set()

    def visit(body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
                continue
            top.add(stmt)
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(stmt, field, None)
                if isinstance(inner, list):
                    visit([s for s in inner if isinstance(s, ast.stmt)])
                    for handler in inner:
                        if isinstance(handler, ast.ExceptHandler):
                            visit(handler.body)

    visit(tree.body)
    return top


def test_every_module_has_a_layer() -> None:
    assert sorted({layer_of(p) for p in modules()} - ALLOWED.keys()) == []


def test_the_layers_form_a_ladder() -> None:
    order = list(ALLOWED)
    for layer, allowed in ALLOWED.items():
        assert all(order.index(a) < order.index(layer) for a in allowed), layer


def test_no_module_imports_a_layer_not_below_its_own() -> None:
    bad = []
    for path in modules():
        layer = layer_of(path)
        for target in sorted(agent_layers_imported(path) - ALLOWED[layer] - {layer}):
            bad.append(f"{path.relative_to(AGENT)} ({layer}) imports agent.{target}")
    assert bad == []


def test_the_contracts_named_in_the_issue_hold() -> None:
    assert ALLOWED["rules"] == {"model"}
    assert ALLOWED["model"] == set()
    assert "kube" not in ALLOWED["collect"] and "kube" not in ALLOWED["output"]
    assert "kube" not in ALLOWED["audit"]  # pods become requests in `targets`, above it


def test_kubernetes_is_imported_only_in_kube_and_only_lazily() -> None:
    bad = []
    for path in modules():
        tree = ast.parse(path.read_text())
        on_import = module_level_statements(tree)
        for name, stmt in imported_names(tree):
            if name.split(".")[0] != "kubernetes":
                continue
            where = f"{path.relative_to(AGENT)}:{stmt.lineno}"
            if layer_of(path) not in KUBERNETES_LAYERS:
                bad.append(f"{where} imports {name} outside kube/")
            elif stmt in on_import:
                bad.append(f"{where} imports {name} when the module is imported")
    assert bad == []


LOADED = """
import json, sys
from agent.cli import main
code = main(sys.argv[1:], restrict=False)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"kubernetes", "urllib3", "yaml"})
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize("command", [["diagnose", "--pid", "{pid}", "-o", "json"],
                                     ["sockets", "--pid", "{pid}", "-o", "json"]])
def test_diagnose_pid_and_sockets_never_load_kubernetes(command: list[str]) -> None:
    pid = str(os.getpid())
    args = [part.replace("{pid}", pid) for part in command]
    done = subprocess.run([sys.executable, "-c", LOADED, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    result = json.loads(done.stderr.strip().splitlines()[-1])
    assert result["code"] in (0, 1), done.stderr
    assert json.loads(done.stdout)["pid" if command[0] == "sockets" else "targets"]
    assert result["heavy"] == []
