"""`scripts/bench --node`: `opaudit run` on a busy node against the test API server.

Reports a full cycle's CPU and wall time, RSS, API requests and writes per steady cycle, and
watch -> Event latency while selected pods churn (5 added and 5 deleted per second, each a
real process moved into a fresh kubepods cgroup), against the README's targets (Performance).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from cgroup_staging import KubepodsCgroups, systemd_scope, unavailable_reason
from kube.apiserver import ApiServer
from staging import STAGE_PYTHON, Stage, Staged

from benchlib.daemon import (
    NAMESPACE,
    OPAUDIT,
    STAGING_THREADS,
    Agent,
    BenchPod,
    CycleSample,
    pod_manifest,
    settle,
    staged_node,
)
from benchlib.nodestage import PODS, SELECTED, BusyNode, stage_node
from benchlib.table import Row, ms, render

INTERVAL = 10.0  # between full cycles while the steady state is sampled
CHURN_INTERVAL = 60.0  # the agent's default, while pods churn
STEADY_CYCLES = 5
CHURN_RATE, CHURN_SECONDS, POD_LIFETIME = 5.0, 60.0, 10.0
CHURN_POOL = 60  # listeners reused by the churning pods: 5/s living 10 s, with room
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def node_bench() -> str:
    reason = unavailable_reason()
    if reason is not None:
        return f"### node: skipped ({reason})\n"
    with staged_node() as (stage, cgroups), ApiServer() as server, \
            tempfile.TemporaryDirectory() as tmp:
        node = stage_node(stage, cgroups)
        with ThreadPoolExecutor(STAGING_THREADS) as threads:
            pool = list(threads.map(lambda _: ChurnSlot(stage), range(CHURN_POOL)))
        for pod in node.selected + node.others:
            server.add_pod(pod.manifest)
        sockets_cpu = (owner_scan_cpu(node.busy.pid), owner_scan_cpu(node.selected[1].pid))
        kubeconfig = server.write_kubeconfig(os.path.join(tmp, "kubeconfig"))
        agent = Agent(kubeconfig, INTERVAL, server)
        try:
            agent.next_cycle(300)
            drained = settle(agent, server, quiet=3, timeout=300)
            agent.next_cycle(INTERVAL + 120)  # repeats update each Event's series once
            samples = steady_cycles(agent, server)
        finally:
            agent.stop()
        agent = Agent(kubeconfig, CHURN_INTERVAL, server)
        try:
            agent.next_cycle(300)
            settle(agent, server, quiet=3, timeout=300)
            latencies, churned = churn(server, cgroups, pool)
            watch_cycles = drain(agent)
        finally:
            agent.stop()
    title = (f"node: `opaudit run` with {PODS} pods ({SELECTED} selected), "
             f"{node.processes:,} processes, {node.idle_fds:,} fds in non-targets, "
             f"{node.established:,} TCP sockets in one target netns")
    rows = node_rows(node, samples, latencies, churned, drained, sockets_cpu)
    return render(title, rows + churn_rows(watch_cycles, churned))


def drain(agent: Agent) -> list[CycleSample]:
    cycles = []
    while not agent.cycles.empty():
        cycles.append(agent.cycles.get_nowait())
    return cycles


def churn_rows(cycles: list[CycleSample], churned: int) -> list[Row]:
    """Where the churn latency goes: how the agent batched the watch's pods."""
    watch = [c for c in cycles if c.trigger == "watch"] or cycles
    if not watch:
        return [Row("cycles during churn", "none logged")]
    spans = list(zip(watch, watch[1:], strict=False))
    cpu = sum(b.cpu_seconds - a.cpu_seconds for a, b in spans)
    return [
        Row("cycles during churn (watch-triggered)", f"{len(watch)} for {churned} pods"),
        Row("pods per watch cycle (median)", f"{statistics.median(c.pods for c in watch):g}"),
        Row("watch cycle wall time (median, as logged)",
            ms(statistics.median(c.cycle_seconds for c in watch))),
        Row("agent CPU per second while pods churn",
            f"{cpu / max(1e-9, watch[-1].at - watch[0].at) * 1000:.0f} ms/s"),
    ]


# One per pool slot, in its own netns as uid 1000: each line on stdin forks a new process
# that listens on 8080 and prints its pid once it does. A new pod is then a new process (a
# fresh pid, as a runtime would start), not an old one moved into another pod's cgroup.
FORKER = r"""
import os, signal, socket, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the killed children
for _ in sys.stdin:
    ready, told = os.pipe()
    child = os.fork()
    if child == 0:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 8080))
        s.listen()
        os.write(told, b"1")
        while True:
            signal.pause()
    os.close(told)
    os.read(ready, 1)
    os.close(ready)
    print(child, flush=True)
"""


class ChurnSlot:
    """A netns and the forker that starts each churning pod's process in it."""

    def __init__(self, stage: Stage) -> None:
        netns = stage.netns()
        self.popen = subprocess.Popen(
            ["ip", "netns", "exec", netns, "setpriv", "--reuid=1000", "--regid=1000",
             "--clear-groups", "--", STAGE_PYTHON, "-c", FORKER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            start_new_session=True)  # Stage.close kills the group: forker and children
        stage.processes.append(Staged(pid=self.popen.pid, popen=self.popen, netns=netns))
        self.child: int | None = None

    def start(self) -> int:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write(b"\n")
        self.popen.stdin.flush()
        self.child = int(self.popen.stdout.readline())
        return self.child

    def stop(self) -> None:
        if self.child is not None:
            os.kill(self.child, signal.SIGKILL)
            self.child = None


def owner_scan_cpu(pid: int) -> float:
    """CPU seconds of one `opaudit sockets --pid` on the busy pod (the owner scan alone)."""
    before = os.times()
    subprocess.run([OPAUDIT, "sockets", "--pid", str(pid), "-o", "json"], check=True,
                   stdout=subprocess.DEVNULL)
    after = os.times()
    return (after.children_user - before.children_user) + (
        after.children_system - before.children_system)


def steady_cycles(agent: Agent, server: ApiServer) -> list[tuple[CycleSample, int]]:
    """STEADY_CYCLES + 1 full cycles, each with the count of write requests so far."""
    samples = []
    while len(samples) <= STEADY_CYCLES:
        sample = agent.next_cycle(INTERVAL + 120)
        if sample.trigger == "interval":
            samples.append((sample, writes(server)))
    return samples


def writes(server: ApiServer) -> int:
    return sum(1 for r in list(server.request_log) if r.method in WRITES)


def churn(server: ApiServer, cgroups: KubepodsCgroups,
          pool: list[ChurnSlot]) -> tuple[list[float], int]:
    """Add and delete selected pods at CHURN_RATE for CHURN_SECONDS; seconds from each add
    to the first Event about that pod (pods still without one at the end count as lost)."""
    added: dict[str, float] = {}  # pod uid -> when it was added
    latency: dict[str, float] = {}
    live: list[tuple[float, str, ChurnSlot]] = []  # (added at, name, its slot)
    free = list(pool)
    stop = threading.Event()
    watcher = threading.Thread(target=watch_events, args=(server, added, latency, stop),
                               daemon=True)
    watcher.start()
    started, n = time.monotonic(), 0
    while time.monotonic() - started < CHURN_SECONDS:
        now = time.monotonic()
        while live and now - live[0][0] >= POD_LIFETIME:
            _, name, slot = live.pop(0)
            server.delete_pod(NAMESPACE, name)
            slot.stop()
            free.append(slot)
        slot = free.pop(0)
        pod = new_pod(cgroups, slot.start(), f"churn-{n}")
        added[pod.uid] = time.monotonic()
        server.add_pod(pod.manifest)
        live.append((added[pod.uid], pod.manifest["metadata"]["name"], slot))
        n += 1
        time.sleep(max(0.0, started + n / CHURN_RATE - time.monotonic()))
    time.sleep(5)  # the last pods' Events
    stop.set()
    watcher.join()
    return [latency[uid] for uid in added if uid in latency], len(added)


def new_pod(cgroups: KubepodsCgroups, pid: int, name: str) -> BenchPod:
    """A new pod (uid, container id, cgroup) around a process just started by a slot."""
    uid, container_id = str(uuid.uuid4()), os.urandom(32).hex()
    scope = systemd_scope(uid, container_id)
    cgroups.place_v2(pid, scope)
    return BenchPod(pod_manifest(name, uid, f"containerd://{container_id}"), pid, "", scope)


def watch_events(server: ApiServer, added: dict[str, float], latency: dict[str, float],
                 stop: threading.Event) -> None:
    while not stop.is_set():
        now = time.monotonic()
        for uid in server.regarding_uids():
            if uid in added and uid not in latency:
                latency[uid] = now - added[uid]
        time.sleep(0.01)


def node_rows(node: BusyNode, samples: list[tuple[CycleSample, int]], latencies: list[float],
              churned: int, drained: float, sockets_cpu: tuple[float, float]) -> list[Row]:
    spans = list(zip(samples, samples[1:], strict=False))
    cpu = statistics.median(b.cpu_seconds - a.cpu_seconds for (a, _), (b, _) in spans)
    wall = statistics.median(s.cycle_seconds for s, _ in samples[1:])
    requests = statistics.median(b.requests - a.requests for (a, _), (b, _) in spans)
    steady_writes = max(wb - wa for (_, wa), (_, wb) in spans)
    rss_mib = max(s.rss_kib for s, _ in samples) / 1024
    lat = sorted(latencies)
    p50 = lat[len(lat) // 2] if lat else float("inf")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("inf")
    return [
        Row(f"full cycle CPU (median; with the {INTERVAL:g} s idle between cycles)", ms(cpu),
            "<= 250 ms", cpu <= 0.25),
        Row("full cycle wall time (median, as logged)", ms(wall)),
        Row("peak RSS over the steady cycles", f"{rss_mib:.1f} MiB", "<= 64 MiB",
            rss_mib <= 64),
        Row("API requests per steady cycle (median)", f"{requests:g}"),
        Row("API writes per steady cycle (most)", str(steady_writes), "0", steady_writes == 0),
        Row(f"watch -> Event p50 ({len(lat)} of {churned} pods; {CHURN_RATE:g}/s added and "
            f"deleted for {CHURN_SECONDS:g} s, each living {POD_LIFETIME:g} s; "
            f"--interval {CHURN_INTERVAL:g})", ms(p50)),
        Row("watch -> Event p99", ms(p99), "<= 500 ms", p99 <= 0.5 and len(lat) == churned),
        Row("reference: watch -> Event max (a pod added while a full cycle ran)",
            ms(lat[-1]) if lat else "none"),
        Row("reference: CPU of `opaudit sockets` on the busy pod", ms(sockets_cpu[0])),
        Row("reference: CPU of `opaudit sockets` on another selected pod", ms(sockets_cpu[1])),
        Row("reference: time to write the first cycle's Events", f"{drained:.1f} s"),
    ]
