"""`scripts/bench --only lint` and the lint curve of `--curves` (README: "Speed" under "Before
deploy"): `opaudit lint` of the Spark Operator chart as `helm template` renders it, and of one
file holding N workloads (the chart's controller Deployment, renamed N times), as whole
processes.

Needs no root and stages nothing in the kernel: only files in a temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from benchlib.curves import Point
from benchlib.table import Row, ms, render
from benchlib.timing import time_alternating

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "tests" / "fixtures" / "charts" / "spark-operator-2.5.2"
HELM = ROOT / ".venv" / "bin" / "helm"
WORKLOAD_SIZES = (10, 100, 1_000, 3_000)
CHART_TARGET_S, THOUSAND_TARGET_S = 0.3, 2.0


def render_chart(workdir: Path) -> Path:
    helm = str(HELM) if HELM.exists() else shutil.which("helm")
    if helm is None:
        raise SystemExit("bench: lint needs helm (scripts/devtools installs it)")
    out = subprocess.run([helm, "template", "spark-operator", str(CHART), "--namespace",
                          "spark-operator"], capture_output=True, text=True, check=True).stdout
    path = workdir / "chart.yaml"
    path.write_text(out)
    return path


def workloads_file(chart: Path, count: int, workdir: Path) -> Path:
    """`count` copies of the chart's controller Deployment, each its own name, one stream."""
    (deployment,) = [d for d in yaml.safe_load_all(chart.read_text())
                     if d and d["kind"] == "Deployment" and "controller" in d["metadata"]["name"]]
    docs = []
    for i in range(count):
        deployment["metadata"]["name"] = f"controller-{i:05d}"
        docs.append(yaml.safe_dump(deployment, sort_keys=False))
    path = workdir / f"workloads-{count}.yaml"
    path.write_text("---\n".join(docs))
    return path


def check_lint(opaudit: str, path: Path, containers: int) -> None:
    result = subprocess.run([opaudit, "lint", str(path), "-o", "json"], capture_output=True,
                            text=True)
    if result.returncode not in (0, 1):
        raise SystemExit(f"bench: lint exited {result.returncode}: {result.stderr[-400:]}")
    found = len(json.loads(result.stdout)["containers"])
    if found != containers:
        raise SystemExit(f"bench: lint of {path.name} reported {found} containers, "
                         f"not {containers}")


def lint_timings(opaudit: str, runs: int, sizes: tuple[int, ...]
                 ) -> tuple[float, dict[int, tuple[float, tuple[float, ...]]]]:
    workdir = Path(tempfile.mkdtemp(prefix=f"opa{os.getpid()}lintbench-"))
    try:
        chart = render_chart(workdir)
        check_lint(opaudit, chart, 2)
        commands = {"chart": [opaudit, "lint", str(chart), "-o", "json"]}
        for size in sizes:
            path = workloads_file(chart, size, workdir)
            check_lint(opaudit, path, size)
            commands[str(size)] = [opaudit, "lint", str(path), "-o", "json"]
        timed = time_alternating(commands, runs, ok_codes={k: (0, 1) for k in commands})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return timed["chart"].median, {int(k): (t.median, t.seconds) for k, t in timed.items()
                                   if k != "chart"}


def lint_bench(opaudit: str, runs: int) -> str:
    chart_s, sizes = lint_timings(opaudit, runs, (100, 1_000, 3_000))
    thousand = sizes[1_000][0]
    # Linear: the cost of each workload past 1,000 is about what it was up to 1,000.
    early = (sizes[1_000][0] - sizes[100][0]) / 900
    late = (sizes[3_000][0] - sizes[1_000][0]) / 2_000
    rows = [
        Row("`opaudit lint` of the Spark Operator chart (helm template), wall",
            ms(chart_s), f"< {CHART_TARGET_S} s", chart_s < CHART_TARGET_S),
        Row("`opaudit lint` of 1,000 workloads in one file, wall", ms(thousand),
            f"< {THOUSAND_TARGET_S:g} s", thousand < THOUSAND_TARGET_S),
        Row("100 / 3,000 workloads", f"{ms(sizes[100][0])} / {ms(sizes[3_000][0])}"),
        Row("per workload, 100 -> 1,000 and 1,000 -> 3,000",
            f"{early * 1000:.2f} ms, {late * 1000:.2f} ms", "linear (within 1.5x)",
            late <= 1.5 * early),
    ]
    return render(f"lint: median of {runs} alternating runs, load average "
                  f"{os.getloadavg()[0]:.1f}", rows)


def lint_points(opaudit: str, runs: int, log: Callable[[str], None] = print) -> list[Point]:
    _, sizes = lint_timings(opaudit, runs, WORKLOAD_SIZES)
    load = os.getloadavg()[0]
    log("bench: lint: " + ", ".join(f"{n} workloads {s[0] * 1000:.0f} ms"
                                    for n, s in sizes.items()))
    return [Point("lint", n, "opaudit lint", median, seconds, load)
            for n, (median, seconds) in sizes.items()]
