"""One-line reads of a live process through opaudit's own handle, for tests that need a fact
of a process they staged (its netns inode, start time, mountinfo) to compare against."""

from __future__ import annotations

from agent.collect.procfs import ProcFS


def netns_inode_of(pid: int) -> int:
    with ProcFS().process(pid) as process:
        return process.netns_inode()


def start_time_of(pid: int) -> int:
    with ProcFS().process(pid) as process:
        return process.start_time()


def mountinfo_of(pid: int) -> str:
    with ProcFS().process(pid) as process:
        return process.mountinfo()
