"""A zombie and a kernel thread are said to be what they are, never "does not exist"
and a count of unreadable processes takes the right noun.

Oracles: `ps -o stat=` says Z for the staged zombie; a kernel thread is one whose
/proc/PID/stat flags carry PF_KTHREAD, and kthreadd is the parent of them all.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from staging import Stage, spawn_zombie

from agent.audit import AuditRequest, audit
from agent.collect.netns import unreadable_processes


def gap_reasons(pid: int) -> dict[str, str]:
    [target] = audit([AuditRequest(pid)]).targets
    return {gap.fact: gap.reason for gap in target.observed.incomplete}


def kthreadd_pid() -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "kthreadd":
                    return int(entry.name)
            except OSError:
                continue
    return None


def test_a_zombie_is_named_a_zombie_with_its_parent(stage: Stage) -> None:
    parent, zombie = spawn_zombie(stage)
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(zombie)], capture_output=True,
                           text=True).stdout.strip()
    assert state.startswith("Z"), state  # the oracle: ps says so too
    reasons = gap_reasons(zombie)
    assert {"environ", "filesystem", "network", "identity.user"} <= reasons.keys()
    assert "process" not in reasons  # not "exited during inspection": it is a zombie
    for fact, reason in reasons.items():
        assert "does not exist" not in reason, (fact, reason)
        assert f"process {zombie} is a zombie" in reason
        assert f"parent (pid {parent.pid})" in reason


def test_a_kernel_thread_is_named_a_kernel_thread() -> None:
    pid = kthreadd_pid()
    if pid is None:
        pytest.skip("no kthreadd in this pid namespace (a container): no kernel thread to see")
    reasons = gap_reasons(pid)
    assert "environ" in reasons  # a kernel thread has no user memory, so no environ
    for fact, reason in reasons.items():
        assert "does not exist" not in reason, (fact, reason)
    assert f"pid {pid} is a kernel thread" in reasons["environ"]


def test_the_count_of_unreadable_processes_takes_the_right_noun() -> None:
    assert unreadable_processes(1).startswith("1 process unreadable")
    assert unreadable_processes(2).startswith("2 processes unreadable")
