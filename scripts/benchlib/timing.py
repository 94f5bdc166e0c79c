"""Time commands as whole processes: alternating, so drift in machine load hits all alike."""

from __future__ import annotations

import shlex
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Timed:
    label: str
    argv: tuple[str, ...]
    seconds: tuple[float, ...]  # one per run, in run order

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


class CommandFailed(RuntimeError):
    pass


def time_once(argv: Sequence[str], ok_codes: Sequence[int] = (0,)) -> float:
    started = time.perf_counter()
    result = subprocess.run(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if result.returncode not in ok_codes:
        raise CommandFailed(f"{shlex.join(argv)} exited {result.returncode}: "
                            f"{result.stderr.decode(errors='replace').strip()[-500:]}")
    return elapsed


def time_alternating(commands: Mapping[str, Sequence[str]], runs: int,
                     ok_codes: Mapping[str, Sequence[int]] | None = None,
                     warmup: bool = True) -> dict[str, Timed]:
    """Each command `runs` times, round-robin, after one untimed warm-up round."""
    codes = ok_codes or {}
    samples: dict[str, list[float]] = {label: [] for label in commands}
    for round_no in range(runs + (1 if warmup else 0)):
        for label, argv in commands.items():
            elapsed = time_once(argv, codes.get(label, (0,)))
            if warmup and round_no == 0:
                continue
            samples[label].append(elapsed)
    return {label: Timed(label, tuple(commands[label]), tuple(s)) for label, s in samples.items()}


def pair_ratio(top: Timed, bottom: Timed) -> float:
    """Median of per-round ratios top/bottom (rounds ran back to back, so load is shared)."""
    return statistics.median(t / b for t, b in zip(top.seconds, bottom.seconds, strict=True))
