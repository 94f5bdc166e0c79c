"""The owner scan walks /proc/PID/fd by number: holes and far fds must not be missed."""

from __future__ import annotations

import json
import os
import select
import subprocess

from staging import STAGE_PYTHON, Stage, Staged

from agent.collect.sockets import MAX_FD_GAP, scan_socket_owners

# Listeners dup'ed to a hole inside the walk's gap allowance and to one far beyond it.
SPARSE_FDS = (200, MAX_FD_GAP + 3000)
HOLDER = r"""
import json, os, signal, socket, sys
far = [int(x) for x in sys.argv[1].split(",")]
socks = [socket.socket() for _ in far]
for s, fd in zip(socks, far):
    s.bind(("127.0.0.1", 0)); s.listen()
    os.dup2(s.fileno(), fd)
inodes = [os.fstat(s.fileno()).st_ino for s in socks]
print(json.dumps({"inodes": inodes, "fds": [s.fileno() for s in socks]}), flush=True)
signal.pause()
"""


def spawn_holder(stage: Stage, netns: str) -> tuple[Staged, dict[str, list[int]]]:
    popen = subprocess.Popen(
        ["ip", "netns", "exec", netns, STAGE_PYTHON, "-c", HOLDER,
         ",".join(map(str, SPARSE_FDS))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    staged = Staged(pid=popen.pid, popen=popen, netns=netns)
    stage.processes.append(staged)
    assert popen.stdout is not None
    ready, _, _ = select.select([popen.stdout], [], [], 10)
    assert ready, "holder did not start"
    return staged, json.loads(popen.stdout.readline())


def test_sparse_and_far_fds_are_all_found(stage: Stage) -> None:
    netns = stage.netns()
    holder, told = spawn_holder(stage, netns)
    ns_ino = os.stat(f"/proc/{holder.pid}/ns/net").st_ino
    owners = scan_socket_owners(told["inodes"], ns_ino).owners
    for inode, low_fd, far_fd in zip(told["inodes"], told["fds"], SPARSE_FDS, strict=True):
        assert {(o.pid, o.fd) for o in owners[inode]} == {(holder.pid, low_fd),
                                                         (holder.pid, far_fd)}
