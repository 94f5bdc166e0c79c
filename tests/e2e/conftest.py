"""Fixtures of the real-runtime lane (tests/e2e/lane.py): one lane per session, pods per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e.lane import Lane, open_lane, unavailable_reason
from e2e.pods import CriPod, stop_pod


@pytest.fixture(scope="session")
def lane() -> Iterator[Lane]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    opened = open_lane()
    try:
        yield opened
    finally:
        opened.close()
    assert opened.leftovers() == []


@pytest.fixture
def pods(lane: Lane) -> Iterator[list[CriPod]]:
    """CRI pods a test starts; stopped (containers, sandbox, netns) when it ends."""
    started: list[CriPod] = []
    yield started
    for pod in started:
        stop_pod(lane, pod)
