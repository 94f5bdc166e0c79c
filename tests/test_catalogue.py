"""The README's rule table is generated from the catalogue the code runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.rules.catalogue import CATALOGUE, catalogue_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- rules:begin -->", "<!-- rules:end -->"


def test_readme_table_matches_the_catalogue() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, "README.md lacks the rules markers"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block.strip() == catalogue_markdown().strip(), (
        "README rule table drifted: regenerate with `python -m agent.rules.catalogue`")


def test_every_rule_has_a_row_with_its_severity() -> None:
    table = catalogue_markdown()
    for rule in CATALOGUE:
        assert f"| `{rule.id}` | {rule.severity.value} |" in table


def test_module_prints_the_table() -> None:
    out = subprocess.run([sys.executable, "-m", "agent.rules.catalogue"], capture_output=True,
                         text=True, check=True, cwd=README.parent)
    assert out.stdout == catalogue_markdown()
    assert out.stderr == ""
