from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cgroup_staging import KubepodsCgroups, unavailable_reason
from hypothesis import HealthCheck, settings
from kube.apiserver import ApiServer
from staging import Stage

from agent.kube.client import Api, load_api

# scripts/test runs a quick profile; scripts/fuzz selects "fuzz" (100k examples per parser).
settings.register_profile("quick", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=100_000, deadline=None,
                          suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))

@pytest.fixture
def stage() -> Iterator[Stage]:
    if os.geteuid() != 0:
        pytest.skip("stages namespaces and processes on the real kernel: needs root")
    s = Stage()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def cgroups(stage: Stage) -> Iterator[KubepodsCgroups]:
    """kubepods-style cgroups (v2 unified + v1 hierarchies) that are always removed."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    tree = KubepodsCgroups()
    try:
        yield tree
    finally:
        tree.close()
    assert tree.leftovers() == []


@pytest.fixture
def server() -> Iterator[ApiServer]:
    """The in-process Kubernetes API test server (tests/kube/apiserver.py)."""
    with ApiServer() as running:
        yield running


@pytest.fixture
def kubeconfig(server: ApiServer, tmp_path: Path) -> Path:
    """A kubeconfig file that names the API test server, as `opaudit --kubeconfig` reads it."""
    return Path(server.write_kubeconfig(tmp_path / "kubeconfig"))


@pytest.fixture
def api(server: ApiServer) -> Iterator[Api]:
    client = load_api(configuration=server.configuration(), read_timeout=2.0)
    yield client
    client.close()


@pytest.fixture
def embedded_logging() -> Iterator[None]:
    """For a test that runs the agent in-process: its JSON log setup is undone afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
