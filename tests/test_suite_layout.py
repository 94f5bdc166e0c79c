"""The suite's own layout: a test module takes what it shares from harness modules (the
files in tests/ that are not test_*.py), never from another test module or a conftest.
pytest runs in importlib mode (pyproject.toml), which puts no test folder on sys.path, so
such an import would break as soon as the two modules sit in different folders."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.module and not node.level:
                names.add(node.module)
            # `from hardening import test_api_faults` imports a test module by its name.
            names |= {f"{node.module or ''}.{alias.name}".lstrip(".") for alias in node.names}
    return names


def offending(names: set[str]) -> list[str]:
    """The test modules and conftests among imported names."""
    return sorted(name for name in names if name.rsplit(".", 1)[-1].startswith("test_")
                  or name.rsplit(".", 1)[-1] == "conftest")


def test_no_test_module_imports_another_or_a_conftest() -> None:
    modules = sorted(TESTS.rglob("test_*.py"))
    assert len(modules) > 100  # the walk found the suite
    offenders = {str(path.relative_to(TESTS)): offending(imported_modules(path))
                 for path in modules}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_check_sees_such_an_import(tmp_path: Path) -> None:
    module = tmp_path / "test_example.py"
    module.write_text("from test_node import wait_for\nimport rules.test_rules_staged\n"
                      "from conftest import stage\nfrom staging import Stage\n"
                      "from hardening import test_api_faults\nfrom . import conftest\n")
    assert offending(imported_modules(module)) == [
        "conftest", "hardening.test_api_faults", "rules.test_rules_staged", "test_node"]
