"""The lane leaves no container, pod, image, network, netns or cgroup behind: checked before
a full cycle (nothing of this run's exists) and after it (nothing is left), looking only at
names unique to this run, since other worktrees run podman and runc on the same machine."""

from __future__ import annotations

import pytest
from e2e.agreement import load_fixture
from e2e.cri import SYSTEMD
from e2e.lane import new_prefix, open_lane, traces, unavailable_reason
from e2e.podman import holders_of_netns
from e2e.pods import start_pod
from staging import leftover_netns


def test_a_full_cycle_leaves_nothing_behind() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    prefix = new_prefix()
    assert traces(prefix) == [] and leftover_netns() == []
    lane = open_lane(prefix)
    try:
        played = lane.podman.play(load_fixture("spark-operator-webhook.yaml"))
        cri = start_pod(lane, load_fixture("spark-operator-controller.yaml"), SYSTEMD)
        assert cri.app.pid is not None and cri.sandbox.pid is not None
        # The checks below can see what a cycle makes: they are not vacuous.
        made = traces(prefix)
        assert any("kubepods" in t for t in made) and any(lane.podman.store.name in t or
                                                          str(lane.workdir) in t for t in made)
        assert holders_of_netns({played.netns_inode}, [played.pod_id]) != []
        assert leftover_netns() != []
        assert lane.podman.cmd("images", "--quiet").split() != []
    finally:
        lane.close()
    assert lane.leftovers() == []
    assert traces(prefix) == [] and leftover_netns() == []
    assert holders_of_netns({played.netns_inode}, [played.pod_id]) == []
