"""docs/ARCHITECTURE.md is the code map: it must name every layer and module that exists,
name nothing that does not, and be the only place comments point to besides the README.

The map goes stale the day a module moves without it; these checks make that a red test.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAP = REPO / "docs" / "ARCHITECTURE.md"

# Documents that live outside the repository. A comment citing them sends the reader where
# a clone cannot follow, so none may: built from parts, so this file does not cite them.
OUTSIDE = re.compile("|".join([r"\b" + "SP" + r"EC\b", r"\b" + "STY" + r"LE\.md",
                               r"\b[Ii]ssues? #?\d+", "\u00a7"]))


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    return [REPO / line for line in out.splitlines() if (REPO / line).is_file()]


def source_modules() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "agent").rglob("*.py")
                  if "__pycache__" not in p.parts and p.name != "__init__.py")


def test_the_map_names_every_module_of_agent() -> None:
    text = MAP.read_text()
    missing = [m for m in source_modules() if f"`{m}`" not in text]
    assert missing == []


def test_every_path_the_map_names_exists() -> None:
    named = re.findall(r"`((?:agent|tests|scripts|daemonset|docs)/[\w./-]*)`", MAP.read_text())
    assert named, "the map names no path"
    assert sorted({p for p in named if not (REPO / p).exists()}) == []


def test_the_readme_points_at_the_map() -> None:
    assert "docs/ARCHITECTURE.md" in (REPO / "README.md").read_text()


def test_no_comment_points_outside_the_repository() -> None:
    bad = []
    for path in tracked("agent", "tests", "scripts", "daemonset", "docs"):
        if path.suffix not in {".py", ".md", ".yaml", ".sh", ""} or "fixtures" in path.parts:
            continue
        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError:
            continue
        bad += [f"{path.relative_to(REPO)}:{n}" for n, line in enumerate(lines, 1)
                if OUTSIDE.search(line)]
    assert bad == []
