"""Stage a busy node for `scripts/bench --node` (README: Performance).

110 pods (the kubelet's default maxPods), 20 of them selected; 5,000 processes; 500,000 open
fds in processes that are not targets; 100,000 established TCP sockets in one selected pod's
netns. Every pod is a real process in its own netns and its own kubepods cgroup (systemd
driver, containerd scope), as the kubelet and containerd make them. Stage.close() and
KubepodsCgroups.close() remove all of it.
"""

from __future__ import annotations

import copy
import select
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cgroup_staging import KubepodsCgroups
from staging import STAGE_PYTHON, Stage, Staged, StageError

from benchlib.conns import hold_connections, tcp_inuse
from benchlib.daemon import STAGING_THREADS, BenchPod, stage_pod

PODS, SELECTED = 110, 20
PROCESSES = 5_000
IDLE_FDS = 500_000
POD_SOCKETS = 100_000  # established sockets, both ends of each loopback connection
# The hard RLIMIT_NOFILE here is 20,000 and CAP_SYS_RESOURCE is not in the bounding set,
# so the fds are spread over holders below it.
FDS_PER_IDLE_HOLDER = 18_500
OTHER_LABELS = {"app.kubernetes.io/name": "unrelated-app"}

# An idle process holding N fds (dups of /dev/null: one open file, N table entries).
FD_HOLDER_CODE = r"""
import os, signal, sys
fd = os.open("/dev/null", os.O_RDONLY)
for _ in range(int(sys.argv[1]) - 1):
    os.dup(fd)
print("ready", flush=True)
while True:
    signal.pause()
"""
# N sleeping processes as children of one shell (busybox is static: ~100 KiB each).
SLEEPERS_SCRIPT = ('i=0; while [ "$i" -lt "$1" ]; do busybox sleep 2147483647 & '
                   'i=$((i+1)); done; echo ready; wait')


@dataclass(frozen=True)
class BusyNode:
    selected: list[BenchPod]
    others: list[BenchPod]
    busy: BenchPod  # selected; its netns holds the established sockets
    processes: int  # staged processes, all kinds
    idle_fds: int  # open fds in processes that are not targets
    established: int  # TCP sockets in use in the busy pod's netns (sockstat)


def stage_node(stage: Stage, cgroups: KubepodsCgroups,
               log: Callable[[str], None] = print) -> BusyNode:
    lock = threading.Lock()
    started = time.monotonic()
    with ThreadPoolExecutor(STAGING_THREADS) as pool:
        pods = list(pool.map(lambda n: stage_pod(stage, cgroups, lock, f"node-pod-{n}"),
                             range(PODS)))
    selected, others = pods[:SELECTED], [unselected(p) for p in pods[SELECTED:]]
    log(f"bench: {PODS} pods staged in {time.monotonic() - started:.1f}s")

    busy = selected[0]
    started = time.monotonic()
    holders = hold_connections(stage, busy.netns, POD_SOCKETS // 2)
    for holder in holders:  # the pod's own workers hold its connections
        cgroups.place_v2(holder.pid, busy.scope)
    established = tcp_inuse(busy.netns)
    log(f"bench: {established:,} TCP sockets in {busy.netns} in "
        f"{time.monotonic() - started:.1f}s")

    started = time.monotonic()
    idle_holders = [spawn_fd_holder(stage, others[i % len(others)], n)
                    for i, n in enumerate(shares(IDLE_FDS, FDS_PER_IDLE_HOLDER))]
    for holder, pod in zip(idle_holders, others, strict=False):
        cgroups.place_v2(holder.pid, pod.scope)
    idle_fds = sum(count_fds(h.pid) for h in idle_holders)
    log(f"bench: {idle_fds:,} fds in {len(idle_holders)} idle processes in "
        f"{time.monotonic() - started:.1f}s")

    started = time.monotonic()
    staged_so_far = PODS + len(holders) + len(idle_holders) + 1  # + the sleepers' shell
    sleepers = spawn_sleepers(stage, PROCESSES - staged_so_far)
    for n, pid in enumerate(sleepers):
        cgroups.place_v2(pid, others[n % len(others)].scope)
    log(f"bench: {len(sleepers):,} sleeping processes in {len(others)} pods in "
        f"{time.monotonic() - started:.1f}s")
    return BusyNode(selected, others, busy, staged_so_far + len(sleepers), idle_fds,
                    established)


def unselected(pod: BenchPod) -> BenchPod:
    manifest = copy.deepcopy(pod.manifest)
    manifest["metadata"]["labels"] = dict(OTHER_LABELS)
    manifest["metadata"]["name"] = manifest["metadata"]["name"].replace("node-pod", "other")
    return BenchPod(manifest, pod.pid, pod.netns, pod.scope)


def shares(total: int, most: int) -> list[int]:
    count = -(-total // most)
    return [total // count + (1 if i < total % count else 0) for i in range(count)]


def spawn_fd_holder(stage: Stage, pod: BenchPod, fds: int) -> Staged:
    popen = subprocess.Popen(
        ["ip", "netns", "exec", pod.netns, STAGE_PYTHON, "-c", FD_HOLDER_CODE, str(fds)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    holder = Staged(pid=popen.pid, popen=popen, netns=pod.netns)
    stage.processes.append(holder)
    await_line(stage, holder, b"ready", 60)
    return holder


def spawn_sleepers(stage: Stage, count: int) -> list[int]:
    popen = subprocess.Popen(["sh", "-c", SLEEPERS_SCRIPT, "sh", str(count)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    shell = Staged(pid=popen.pid, popen=popen)
    stage.processes.append(shell)  # Stage.close() kills the whole process group
    await_line(stage, shell, b"ready", 300)
    children = Path(f"/proc/{shell.pid}/task/{shell.pid}/children").read_text().split()
    if len(children) != count:
        raise StageError(f"the shell started {len(children)} sleepers, not {count}")
    return [int(c) for c in children]


def await_line(stage: Stage, staged: Staged, want: bytes, timeout: float) -> None:
    assert staged.popen.stdout is not None
    ready, _, _ = select.select([staged.popen.stdout], [], [], timeout)
    line = staged.popen.stdout.readline() if ready else b""
    if line.strip() != want:
        stage.kill(staged)
        raise StageError(f"process {staged.pid} did not start: {line!r} {staged.stderr_text}")


def count_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))
