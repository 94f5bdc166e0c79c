"""Hardening tests: per-parser example counts for scripts/fuzz."""

from __future__ import annotations

from collections import Counter

import pytest

# parser name -> examples run in this session (property tests call `fuzz_counts[name] += 1`).
FUZZ_COUNTS: Counter[str] = Counter()


@pytest.fixture(scope="session")
def fuzz_counts() -> Counter[str]:
    # Session scope: Hypothesis re-runs the test body, not the fixture, for each example.
    return FUZZ_COUNTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FUZZ_COUNTS:
        return
    terminalreporter.section("fuzz examples per parser")
    for name, count in sorted(FUZZ_COUNTS.items()):
        terminalreporter.write_line(f"{name:<28} {count:>9,}")
