"""A zombie and a kernel thread are said to be what they are, never "does not exist"
(issue 13, item 15); and a count of unreadable processes takes the right noun.

Oracles: `ps -o stat=` says Z for the staged zombie; a kernel thread is one whose
/proc/PID/stat flags carry PF_KTHREAD, and kthreadd is the parent of them all.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import needs_root
from staging import STAGE_PYTHON

from agent.audit import AuditRequest, audit
from agent.collect.netns import unreadable_processes

# Fork a child that exits at once, and never reap it.
ZOMBIE_PARENT = r"""
import os, signal
child = os.fork()
if child == 0:
    os._exit(0)
print(child, flush=True)
signal.pause()
"""


def await_zombie(pid: int) -> None:
    """The child exits right after the fork: wait until the kernel shows it as a zombie."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rfind(")") + 2] == "Z":
            return
        time.sleep(0.01)
    raise AssertionError(f"{pid} did not become a zombie")


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


@needs_root
def test_a_zombie_is_named_a_zombie_with_its_parent() -> None:
    parent = subprocess.Popen([STAGE_PYTHON, "-c", ZOMBIE_PARENT], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        await_zombie(zombie)
        state = subprocess.run(["ps", "-o", "stat=", "-p", str(zombie)], capture_output=True,
                               text=True).stdout.strip()
        assert state.startswith("Z"), state
        reasons = gap_reasons(zombie)
    finally:
        parent.kill()
        parent.wait()
    assert {"environ", "filesystem", "network", "identity.user"} <= reasons.keys()
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
