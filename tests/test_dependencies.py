"""Honest dependencies: the runtime dependencies are exactly what agent/ imports, and agent/
uses only their public API (no sys.modules edits, no private names)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AGENT = REPO / "agent"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def distribution(requirement: str) -> str:
    name = re.split(r"[=<>!~;\[ ]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def trees() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text())) for p in sorted(AGENT.rglob("*.py"))
            if "__pycache__" not in p.parts]


def third_party_imports() -> dict[str, set[str]]:
    """Top-level import name -> the modules of agent/ that import it."""
    found: dict[str, set[str]] = {}
    for path, tree in trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "agent" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def distributions_of(import_names: set[str]) -> set[str]:
    providers = packages_distributions()
    return {distribution(d) for name in import_names for d in providers.get(name, [name])}


def test_runtime_dependencies_are_what_agent_imports() -> None:
    runtime = {distribution(r) for r in PROJECT["dependencies"]}
    assert distributions_of(set(third_party_imports())) == runtime


def test_the_oracles_are_dev_dependencies_only() -> None:
    dev = {distribution(r) for r in PROJECT["optional-dependencies"]["dev"]}
    runtime = {distribution(r) for r in PROJECT["dependencies"]}
    assert {"psutil", "pyroute2"} <= dev
    assert not {"psutil", "pyroute2"} & runtime
    assert not {"psutil", "pyroute2"} & set(third_party_imports())


def test_agent_touches_no_sys_modules_and_no_private_name_of_a_dependency() -> None:
    third_party = set(third_party_imports())
    bad = []
    for path, tree in trees():
        aliases = {}  # local name -> dependency it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in third_party:
                        aliases[(a.asname or a.name).split(".")[0]] = a.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] not in third_party:
                    continue
                private = [p for p in node.module.split(".") if p.startswith("_")]
                private += [a.name for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    bad.append(f"{path.name}:{node.lineno} from {node.module} import {private}")
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id == "sys" and node.attr == "modules":
                    bad.append(f"{path.name}:{node.lineno} sys.modules")
                elif node.value.id in aliases and node.attr.startswith("_") \
                        and not node.attr.startswith("__"):
                    bad.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
            elif isinstance(node, ast.Attribute) and node.attr == "module_from_spec":
                bad.append(f"{path.name}:{node.lineno} importlib.util.module_from_spec")
    assert bad == []
