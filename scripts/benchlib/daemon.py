"""Daemon footprint: `opaudit run` against the test API server with many staged pods.

Each pod is a real listener in its own netns and its own kubepods cgroup (as the kubelet
and containerd make them), so the agent maps pods to processes the way it does on a node.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cgroup_staging import KubepodsCgroups, systemd_scope, unavailable_reason
from kube.apiserver import ApiServer
from pod_staging import pod_manifest as staged_pod_manifest
from staging import Sock, Stage

from benchlib.table import Row, ms, render

ROOT = Path(__file__).resolve().parents[2]
OPAUDIT = str(ROOT / ".venv" / "bin" / "opaudit")
NODE = "bench-node"
NAMESPACE = "spark-operator"
LABELS = {"app.kubernetes.io/name": "spark-operator", "app.kubernetes.io/component": "controller"}
SELECTOR = "app.kubernetes.io/name=spark-operator"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STAGING_THREADS = 4


@dataclass(frozen=True)
class BenchPod:
    manifest: dict[str, Any]
    pid: int
    netns: str = ""
    scope: str = ""  # its container's cgroup v2 path below the staged kubepods tree

    @property
    def uid(self) -> str:
        return str(self.manifest["metadata"]["uid"])


@dataclass(frozen=True)
class CycleSample:
    at: float  # monotonic, when the agent's "audit cycle" log line was read
    trigger: str
    cycle_seconds: float  # as the agent logged it
    cpu_seconds: float  # the agent's utime + stime so far
    rss_kib: int
    requests: int  # API requests the server has answered so far
    events: int  # Event objects on the server so far
    pods: int = 0  # pods the cycle audited


def pod_manifest(name: str, uid: str, container_id: str) -> dict[str, Any]:
    return staged_pod_manifest(name, uid, container_id, LABELS, node=NODE)


def stage_pod(stage: Stage, cgroups: KubepodsCgroups, lock: threading.Lock,
              name: str) -> BenchPod:
    """A listener with drift from its manifest (uid 1000 but NET_BIND_SERVICE kept, no
    no_new_privs, no seccomp), in its own netns and containerd scope (systemd driver)."""
    netns = stage.netns()
    staged = stage.spawn([Sock("tcp", 4, "0.0.0.0", 8080)], netns=netns, uid=1000,
                         bounding=["NET_BIND_SERVICE"], comm="spark-operator")
    uid, container_id = str(uuid.uuid4()), os.urandom(32).hex()
    scope = systemd_scope(uid, container_id)
    with lock:  # KubepodsCgroups keeps plain lists of what it made
        cgroups.place_v2(staged.pid, scope)
    return BenchPod(pod_manifest(name, uid, f"containerd://{container_id}"), staged.pid,
                    netns, scope)


def stage_pods(stage: Stage, cgroups: KubepodsCgroups, count: int) -> list[BenchPod]:
    lock = threading.Lock()
    with ThreadPoolExecutor(STAGING_THREADS) as pool:
        return list(pool.map(lambda n: stage_pod(stage, cgroups, lock, f"so-bench-{n}"),
                             range(count)))


# --- the agent process -------------------------------------------------------------------


class Agent:
    """`opaudit run` as a subprocess; its JSON log lines are read on a thread."""

    def __init__(self, kubeconfig: str, interval: float, server: ApiServer) -> None:
        self.server = server
        self.popen = subprocess.Popen(
            [OPAUDIT, "run", "--node", NODE, "-l", SELECTOR, "--interval", str(interval),
             "--startup-jitter", "0", "--kubeconfig", kubeconfig],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.cycles: queue.Queue[CycleSample] = queue.Queue()
        self.errors: list[str] = []
        self.reader = threading.Thread(target=self._read_logs, daemon=True)
        self.reader.start()

    def _read_logs(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                self.errors.append(line.strip())
                continue
            if record.get("level") in ("error", "critical"):
                self.errors.append(str(record.get("msg")))
            if record.get("msg") == "audit cycle":
                cpu, rss = self.usage()
                self.cycles.put(CycleSample(
                    time.monotonic(), str(record.get("trigger")), float(record["seconds"]),
                    cpu, rss, len(self.server.request_log), self.server.event_count(),
                    int(record.get("pods", 0))))

    def usage(self) -> tuple[float, int]:
        """(utime + stime seconds, VmRSS KiB) of the agent now."""
        with open(f"/proc/{self.popen.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # stat fields 14, 15
        rss = 0
        with open(f"/proc/{self.popen.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        return cpu, rss

    def next_cycle(self, timeout: float) -> CycleSample:
        try:
            return self.cycles.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no audit cycle within {timeout:.0f}s; agent errors: "
                               f"{self.errors[-3:]}") from None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.reader.join(timeout=5)


# --- the measurement ---------------------------------------------------------------------


def settle(agent: Agent, server: ApiServer, quiet: float, timeout: float) -> float:
    """Wait until the server saw no request for `quiet` s (the first cycle's Events are
    all written); returns how long that took. Cycles seen meanwhile are dropped."""
    started = time.monotonic()
    last_count, last_change = len(server.request_log), started
    while time.monotonic() - last_change < quiet:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the agent kept talking to the API for {timeout:.0f}s")
        time.sleep(0.2)
        count = len(server.request_log)
        if count != last_count:
            last_count, last_change = count, time.monotonic()
    while not agent.cycles.empty():
        agent.cycles.get_nowait()
    return last_change - started


def footprint(kubeconfig: str, server: ApiServer, cycles: int,
              interval: float) -> tuple[list[CycleSample], float, int]:
    """`cycles` + 1 consecutive steady cycles, how long the first cycle's Events took to
    write, and how many Event objects the first cycle made."""
    agent = Agent(kubeconfig, interval, server)
    try:
        agent.next_cycle(180)
        drained = settle(agent, server, quiet=interval + 1, timeout=300)
        first_events = len(server.events())
        return [agent.next_cycle(60 + interval) for _ in range(cycles + 1)], drained, first_events
    finally:
        agent.stop()


def idle_cpu_rate(kubeconfig: str, server: ApiServer, seconds: float) -> tuple[float, Agent]:
    """CPU seconds per second of a settled agent between cycles (interval far away)."""
    agent = Agent(kubeconfig, 3600, server)
    try:
        agent.next_cycle(180)
        settle(agent, server, quiet=3, timeout=300)
        cpu_before, _ = agent.usage()
        time.sleep(seconds)
        cpu_after, _ = agent.usage()
    except BaseException:
        agent.stop()
        raise
    return (cpu_after - cpu_before) / seconds, agent


def watch_latency(agent: Agent, stage: Stage, cgroups: KubepodsCgroups,
                  server: ApiServer) -> float:
    """Seconds from a new selected pod entering the watch to its first Event on the server."""
    pod = stage_pod(stage, cgroups, threading.Lock(), "so-bench-late")
    added = time.monotonic()
    server.add_pod(pod.manifest)
    deadline = added + 60
    while time.monotonic() < deadline:
        if any(e["regarding"].get("uid") == pod.uid for e in server.events()):
            return time.monotonic() - added
        time.sleep(0.01)
    raise RuntimeError("the new pod got no Event within 60 s")


@contextmanager
def staged_node() -> Iterator[tuple[Stage, KubepodsCgroups]]:
    """A Stage and kubepods cgroups, closed in that order: a cgroup with tasks cannot be
    removed, so the processes go first."""
    stage, cgroups = Stage(), KubepodsCgroups()
    try:
        yield stage, cgroups
    finally:
        try:
            stage.close()
        finally:
            cgroups.close()


def daemon_bench(targets: int, cycles: int = 10, interval: float = 3.0) -> str:
    reason = unavailable_reason()
    if reason is not None:
        return f"### daemon: skipped ({reason})\n"
    with staged_node() as (stage, cgroups), ApiServer() as server, \
            tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        pods = stage_pods(stage, cgroups, targets)
        for pod in pods:
            server.add_pod(pod.manifest)
        print(f"bench: {targets} pods staged in {time.monotonic() - started:.1f}s")
        kubeconfig = server.write_kubeconfig(os.path.join(tmp, "kubeconfig"))
        samples, drained, first_events = footprint(kubeconfig, server, cycles, interval)
        idle_rate, agent = idle_cpu_rate(kubeconfig, server, 10.0)
        try:
            latency = watch_latency(agent, stage, cgroups, server)
        finally:
            agent.stop()
    return render(f"daemon: `opaudit run` with {targets} pods, {cycles} cycles at "
                  f"--interval {interval:g} after the first cycle's Events were written",
                  footprint_rows(samples, targets, interval, idle_rate, latency, drained,
                                 first_events))


def footprint_rows(samples: list[CycleSample], targets: int, interval: float,
                   idle_rate: float, latency: float, drained: float,
                   first_events: int) -> list[Row]:
    spans = list(zip(samples, samples[1:], strict=False))
    n = max(1, len(spans))
    cpu_per_cycle = sum(b.cpu_seconds - a.cpu_seconds for a, b in spans) / n
    requests = sum(b.requests - a.requests for a, b in spans) / n
    new_events = sum(b.events - a.events for a, b in spans) / n
    work = sorted(s.cycle_seconds for s in samples[1:])
    rss_mib = max(s.rss_kib for s in samples) / 1024
    per_target_ms = cpu_per_cycle / targets * 1000
    at_60 = (cpu_per_cycle + idle_rate * max(0.0, 60 - interval)) / 60 * 100
    return [
        Row("peak RSS over the steady cycles", f"{rss_mib:.1f} MiB", "< 64 MiB",
            rss_mib < 64),
        Row(f"CPU per steady cycle (with {interval:g} s idle)", ms(cpu_per_cycle)),
        Row("CPU per target per cycle", f"{per_target_ms:.2f} ms", "< 10 ms",
            per_target_ms < 10),
        Row("CPU while idle between cycles",
            f"{idle_rate * 1000:.1f} ms/s" if idle_rate else "< 1 ms/s (under a clock tick)"),
        Row("one core used at --interval 60 (projected)", f"{at_60:.2f}%", "< 1%", at_60 < 1),
        Row("cycle wall time (median, as logged)", ms(work[len(work) // 2])),
        Row("API requests per steady cycle", f"{requests:.1f}"),
        Row("new Event objects per steady cycle", f"{new_events:.1f}", "0", new_events == 0),
        Row("Event objects made by the first cycle", str(first_events)),
        Row("time to write the first cycle's Events", f"{drained:.1f} s"),
        Row("new pod in watch -> its first Event (interval 3600 s)", ms(latency), "< 2 s",
            latency < 2),
    ]
