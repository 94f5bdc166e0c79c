"""Fixtures of the real-runtime lane (tests/e2e/lane.py): one lane per session, pods per test.

`containerd` is containerd 1.x as Debian ships it (`enable_unprivileged_ports = false`);
`containerd_2x` is the same binary with containerd 2.x's default (`true`). Each is started
the first time a test asks for it, and removed, with everything it made, when the session
ends, even when a test failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from e2e.containerd import RUNTIME_MODES, Containerd, containerd_unavailable
from e2e.cri_pods import KubePod, run_pod, stop_pod
from e2e.lane import Lane, open_lane, unavailable_reason
from e2e.pods import CriPod
from e2e.pods import stop_pod as stop_runc_pod


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


def started_containerd(lane: Lane, unprivileged_ports: bool) -> Iterator[Containerd]:
    reason = containerd_unavailable()
    if reason is not None:
        pytest.skip(reason)
    runtime = Containerd(lane.workdir, lane.prefix, unprivileged_ports=unprivileged_ports)
    try:
        runtime.start(lane.podman, lane.image)
        yield runtime
    finally:
        runtime.close()
    assert runtime.leftovers() == []


@pytest.fixture(scope="session")
def containerd(lane: Lane) -> Iterator[Containerd]:
    yield from started_containerd(lane, unprivileged_ports=False)


@pytest.fixture(scope="session")
def containerd_2x(lane: Lane) -> Iterator[Containerd]:
    yield from started_containerd(lane, unprivileged_ports=True)


@pytest.fixture
def kube_pods() -> Iterator[list[KubePod]]:
    """Pods a test started on containerd; removed through the CRI when it ends."""
    started: list[KubePod] = []
    yield started
    for pod in started:
        stop_pod(pod)


@pytest.fixture
def play_pod(request: pytest.FixtureRequest, kube_pods: list[KubePod]
             ) -> Callable[..., KubePod]:
    """`play_pod(manifest, mode="1.x", **run_pod options)`: the pod started on containerd
    with 1.x's defaults ("1.x") or 2.x's enable_unprivileged_ports ("2.x"), as the kubelet
    starts it; `.pids()` and `.containers[name].id` say where each container runs. Removed
    when the test ends. For tests that compare a manifest's prediction with what runs."""
    def play(manifest: Mapping[str, Any], mode: str = "1.x", **options: Any) -> KubePod:
        runtime: Containerd = request.getfixturevalue(RUNTIME_MODES[mode])
        pod = run_pod(runtime, manifest, **options)
        kube_pods.append(pod)
        return pod

    return play


@pytest.fixture
def pods(lane: Lane) -> Iterator[list[CriPod]]:
    """runc pods (hand-built specs) a test starts; stopped when it ends."""
    started: list[CriPod] = []
    yield started
    for pod in started:
        stop_runc_pod(lane, pod)
