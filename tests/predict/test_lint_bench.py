"""scripts/bench's lint part stages what it claims (no timing here): the chart as helm renders
it, and one file of N workloads that lint reads as N containers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from manifests import need

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib.lintbench import check_lint, render_chart, workloads_file  # noqa: E402

OPAUDIT = str(ROOT / ".venv" / "bin" / "opaudit")


def test_the_lint_bench_inputs_are_the_chart_and_n_distinct_workloads(tmp_path: Path) -> None:
    need("helm")
    chart = render_chart(tmp_path)
    check_lint(OPAUDIT, chart, 2)
    many = workloads_file(chart, 25, tmp_path)
    check_lint(OPAUDIT, many, 25)
    assert many.read_text().count("kind: Deployment") == 25
    with pytest.raises(SystemExit, match="reported 25 containers, not 26"):
        check_lint(OPAUDIT, many, 26)
