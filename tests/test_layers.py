"""Import contracts (kopf checks its own in CI), over every module of `agent/`.

- `model` and `api_error` import nothing from the package; `rules` imports only `model`.
- `collect` reads the kernel and knows nothing of Kubernetes (no `kube`, no `kubernetes`).
- `output` imports nothing from `kube`: the Events and policy-report sinks' API calls are
  injected (`agent.kube.events`, `agent.kube.policyreports`).
- `audit` turns requests into findings and knows nothing of Kubernetes; `targets` makes the
  requests from pods.
- No module imports a layer above its own: each layer may import only those listed for it.
- Inside `collect`, modules are ranked too (`COLLECT_RANKS`): errors < fileio < parsers <
  procfs < readers, and the bottom rank imports nothing from `collect` at all.
- No import circle anywhere in `agent/`, module by module (what runs on import).
- `kubernetes` is imported only in `kube/`, and only inside functions, so `diagnose --pid`
  and `sockets` never load it (checked on real runs below, not only in the source).
"""

from __future__ import annotations

import ast
import graphlib
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
    "userfile": {"collect"},  # the user's own files (--config, --pod-spec, kubeconfig, lint)
    "output": {"model", "api_error"},
    "kube": {"model", "api_error", "collect", "userfile"},
    "privilege": {"model", "collect"},
    "config": {"model", "userfile", "rules"},
    "arguments": {"__init__"},
    "audit": {"model", "collect", "rules"},  # requests -> findings: no Kubernetes
    "predict": {"model", "userfile", "kube", "rules"},  # lint: facts predicted from manifests
    "targets": {"model", "collect", "kube", "audit"},  # pods -> audit requests
    "daemon": {"model", "api_error", "collect", "kube", "output", "logs", "privilege", "audit",
               "targets"},
    "lint_command": {"__init__", "model", "collect", "rules", "predict", "output"},
    "cli": {"__init__", "model", "api_error", "collect", "kube", "output", "logs", "privilege",
            "config", "arguments", "audit", "targets", "daemon", "lint_command"},
}
KUBERNETES_LAYERS = {"kube"}

# Modules of `agent/collect/`, from the bottom up: a module imports only modules of its own
# rank or below, and the first rank imports nothing from `collect`.
COLLECT_RANKS: dict[str, set[str]] = {
    "errors": {"__init__", "errors", "text", "libc"},  # the leaves: typed errors, text, libc
    "fileio": {"fileio"},  # bounded reads, the errno mapping, the capability hints
    # Pure decoders (the netlink ones also make their dump), the BTF reader, the BPF program.
    "parsers": {"caps", "procparse", "cgroups", "mounts", "netlink", "rtnetlink", "sockdiag",
                "btf", "bpfprogram"},
    "procfs": {"procfs", "nodewalk"},  # the /proc tree, a process handle, the node-wide pass
    "readers": {"process", "rootfs", "sockets", "fditer", "netns"},  # facts of a process/netns
}
COLLECT = AGENT / "collect"


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


def module_name(path: Path) -> str:
    """`agent.collect.procfs`; a package's `__init__.py` is the package itself."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(name: str, known: set[str]) -> str | None:
    """The module a dotted import name lands in (`agent.model.Gap` -> `agent.model`)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def collect_rank(name: str) -> int:
    """The rank of `agent.collect.<module>` (its index in COLLECT_RANKS)."""
    module = name.removeprefix("agent.collect").lstrip(".") or "__init__"
    return next(i for i, members in enumerate(COLLECT_RANKS.values()) if module in members)


def collect_rank_violations() -> list[str]:
    """Every import (lazy ones too) of a collect module ranked above the importer's; for the
    first rank, any import of a collect module but itself."""
    paths = sorted(COLLECT.glob("*.py"))
    known = {module_name(p) for p in paths}
    bad = []
    for path in paths:
        importer = module_name(path)
        rank = collect_rank(importer)
        for name, stmt in imported_names(ast.parse(path.read_text())):
            target = resolve(name, known)
            if target is None or target == importer or target == "agent.collect":
                continue
            if collect_rank(target) > rank or rank == 0:
                bad.append(f"{path.relative_to(AGENT)}:{stmt.lineno} "
                           f"({list(COLLECT_RANKS)[rank]}) imports {target} "
                           f"({list(COLLECT_RANKS)[collect_rank(target)]})")
    return sorted(set(bad))


def test_every_collect_module_has_a_rank() -> None:
    named = {m for members in COLLECT_RANKS.values() for m in members}
    present = {p.stem for p in COLLECT.glob("*.py")}
    assert sorted(present - named) == [] and sorted(named - present) == []


def test_collect_modules_import_only_their_rank_or_below() -> None:
    assert collect_rank_violations() == []


def import_graph() -> dict[str, set[str]]:
    """Module -> the agent modules it imports when it is imported (not inside a function,
    nor under TYPE_CHECKING)."""
    paths = modules()
    known = {module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        importer = module_name(path)
        tree = ast.parse(path.read_text())
        on_import = module_level_statements(tree)
        targets = {resolve(name, known) for name, stmt in imported_names(tree)
                   if stmt in on_import}
        graph[importer] = {t for t in targets if t is not None and t != importer}
    return graph


def import_circle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports (`a -> b -> a`), or [] when there is none."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


def test_agent_has_no_import_circle() -> None:
    graph = import_graph()
    assert "agent.collect.errors" in graph and graph["agent.collect.procfs"]  # it read them
    assert " -> ".join(import_circle(graph)) == ""


def test_the_circle_finder_finds_a_circle() -> None:
    """The check above could fail: a circle of three is found, and named."""
    circle = import_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert circle[0] == circle[-1] and set(circle) == {"a", "b", "c"}



def defined_names(tree: ast.Module) -> list[str]:
    """The public names a module defines at its top level (classes, functions, constants)."""
    names = []
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef | ast.FunctionDef):
            names.append(stmt.name)
        elif isinstance(stmt, ast.Assign):
            names += [t.id for t in stmt.targets if isinstance(t, ast.Name)]
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            names.append(stmt.target.id)
    return [name for name in names if not name.startswith("_")]


def test_every_model_name_is_importable_from_agent_model() -> None:
    """`agent.model` is a package; `from agent.model import X` works for every public name
    of its modules, as it did when it was one module."""
    import importlib

    import agent.model

    missing = []
    for path in sorted((AGENT / "model").glob("*.py")):
        if path.stem == "__init__":
            continue
        module = importlib.import_module(f"agent.model.{path.stem}")
        for name in defined_names(ast.parse(path.read_text())):
            if getattr(agent.model, name, None) is not getattr(module, name) or (
                    name not in agent.model.__all__):
                missing.append(f"{path.stem}.{name}")
    assert len(agent.model.__all__) > 50 and missing == []
