"""`scripts/bench --curves`: how cost grows with sockets and with targets (README: Performance).

Sockets: `opaudit sockets` against `ss -tlnp` and `psutil.net_connections()` in one netns
holding 1k, 10k, 100k and 300k established TCP sockets (both ends of loopback connections)
plus 50 listeners; one size staged at a time, since `ss -p` and psutil read every process's
fds, not only the netns's. Targets: one `opaudit diagnose` over 1, 10, 100 and 300 targets,
each alone in its netns, all staged once and the sizes alternated. Every figure is the median
of whole-process runs, alternating, after a checked and untimed first round.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from staging import Stage

from benchlib.conns import check_sockets_output, stage_connections
from benchlib.targets import stage_targets
from benchlib.timing import time_alternating

SOCKET_SIZES = (1_000, 10_000, 100_000, 300_000)
TARGET_SIZES = (1, 10, 100, 300)


@dataclass(frozen=True)
class Point:
    curve: str  # "sockets" or "targets"
    size: int  # established sockets, or targets
    command: str
    median_s: float
    runs: tuple[float, ...]
    load: float  # 1-min load average when the size was timed


def socket_points(opaudit: str, python: str, runs: int,
                  log: Callable[[str], None] = print) -> list[Point]:
    points: list[Point] = []
    for size in SOCKET_SIZES:
        stage = Stage()
        try:
            staged = stage_connections(stage, size // 2, log=log)
            check_sockets_output(staged, opaudit, python)
            pid = str(staged.target.pid)
            enter = ["nsenter", "-t", pid, "-n"]
            timed = time_alternating({
                "opaudit sockets": [opaudit, "sockets", "--pid", pid, "-o", "json"],
                "ss -tlnp": [*enter, "ss", "-tlnp"],
                "psutil": [*enter, python, "-c", "import psutil; psutil.net_connections()"],
            }, runs)
        finally:
            stage.close()
        load = os.getloadavg()[0]
        points += [Point("sockets", size, t.label, t.median, t.seconds, load)
                   for t in timed.values()]
        log(f"bench: {size:,} sockets: " + ", ".join(
            f"{t.label} {t.median * 1000:.0f} ms" for t in timed.values()))
    return points


def target_points(opaudit: str, runs: int, check: Callable[[list[str], list[int]], None],
                  log: Callable[[str], None] = print) -> list[Point]:
    stage = Stage()
    try:
        pids = stage_targets(stage, max(TARGET_SIZES))
        commands = {}
        for size in TARGET_SIZES:
            argv = [opaudit, "diagnose", *(f"--pid={p}" for p in pids[:size]), "-o", "json"]
            check(argv, pids[:size])
            commands[str(size)] = argv
        timed = time_alternating(commands, runs, ok_codes={k: (0, 1) for k in commands})
    finally:
        stage.close()
    load = os.getloadavg()[0]
    log("bench: diagnose: " + ", ".join(
        f"{k} targets {t.median * 1000:.0f} ms" for k, t in timed.items()))
    return [Point("targets", int(k), "opaudit diagnose", t.median, t.seconds, load)
            for k, t in timed.items()]


def write_csv(points: Sequence[Point], path: Path) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["curve", "size", "command", "median_ms", "runs_ms", "load_1min"])
        for p in points:
            out.writerow([p.curve, p.size, p.command, f"{p.median_s * 1000:.1f}",
                          " ".join(f"{r * 1000:.1f}" for r in p.runs), f"{p.load:.2f}"])


def plot(points: Sequence[Point], path: Path, note: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    lint = [p for p in points if p.curve == "lint"]
    fig, axes = plt.subplots(1, 3 if lint else 2, figsize=(16 if lint else 11, 4.2))
    left, right = axes[0], axes[1]
    for command in dict.fromkeys(p.command for p in points if p.curve == "sockets"):
        mine = [p for p in points if p.curve == "sockets" and p.command == command]
        left.plot([p.size for p in mine], [p.median_s * 1000 for p in mine], "o-",
                  label=command)
    left.set(xscale="log", yscale="log", xlabel="established TCP sockets in the netns",
             ylabel="wall time, median (ms)", title="listeners with owners, one netns")
    left.legend()
    mine = [p for p in points if p.curve == "targets"]
    right.plot([p.size for p in mine], [p.median_s * 1000 for p in mine], "o-",
               label="opaudit diagnose", color="C0")
    right.set(xscale="log", yscale="log", xlabel="targets, each in its own netns",
              ylabel="wall time, median (ms)", title="one diagnose over many targets")
    right.legend()
    if lint:  # one `opaudit lint` over N workloads in one file
        axes[2].plot([p.size for p in lint], [p.median_s * 1000 for p in lint], "o-",
                     label="opaudit lint", color="C3")
        axes[2].set(xscale="log", yscale="log", xlabel="workloads in one file",
                    ylabel="wall time, median (ms)", title="lint of N workloads")
        axes[2].legend()
    for axis in axes:
        axis.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"scripts/bench --curves ({note})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
