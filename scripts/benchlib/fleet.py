"""`scripts/bench --fleet N`: N real `opaudit run` agents against one test API server.

Each agent is the real program, with its own NODE_NAME, as the DaemonSet starts it on its
node. The server (tests/kube/apiserver.py, on loopback) holds N nodes x 110 pods, 20 of them
selected on each node, sends bookmarks every 60 s as kube-apiserver does, and records every
request's query and arrival time. What this measures is the agents' traffic to the API
server: the pods' containers do not run on this host (their pods are Pending), so each
agent has nothing to audit and writes no Event: audit cost and Event writes are the `--node`
bench's part.

Phases: a simultaneous start without start-up jitter (each agent's first minute after its
own start-up, then stopped); a simultaneous start with it (the same, then a steady window);
an API server restart
(stopped, then started again with its watch history gone and the cluster's resourceVersion
moved on past the agents' last bookmark, as a restarted kube-apiserver's fresh watch cache
leaves them: every resumed watch gets 410 Gone and lists again).
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kube.apiserver import ApiServer, RequestRecord
from pod_staging import pod_manifest

from benchlib.daemon import LABELS, OPAUDIT, SELECTOR
from benchlib.nodestage import OTHER_LABELS, PODS, SELECTED

WRITES = ("POST", "PUT", "PATCH", "DELETE")
STARTUP_TIMEOUT = 900.0  # for every agent's first LIST, however loaded the machine
_NODE = re.compile(r"^spec\.nodeName=(fleet-\d+)$")


@dataclass(frozen=True)
class FleetOptions:
    agents: int
    jitter: float = 10.0  # --startup-jitter of the second start
    window: float = 60.0  # "the first minute" after each start
    steady: float = 180.0  # the steady window, after the jittered start's first minute
    downtime: float = 5.0  # the API server's restart takes this long
    after_restart: float = 60.0
    interval: float = 60.0  # the agents' --interval (the DaemonSet's)


@dataclass
class Phase:
    """What the server saw from the fleet in [start, end), and the agents' own log lines.
    A start phase counts each agent's requests in the `window` after its own start-up
    (`ready`: when its list-and-watch began, from its log and its first LIST)."""

    name: str
    agents: int
    records: list[RequestRecord]
    start: float
    end: float
    failures: int = 0  # the agents' "pod list/watch failed" log lines in the phase
    ready: dict[str, float] = field(default_factory=dict)  # node -> monotonic
    window: float = 0.0

    def _counted(self, record: RequestRecord) -> bool:
        if not self.ready:
            return True
        ready = self.ready.get(_node(record))
        return ready is not None and ready <= record.at < ready + self.window

    def of(self, kind: str) -> list[RequestRecord]:
        return [r for r in self.records if _kind(r) == kind and self._counted(r)]

    def per_agent(self, kind: str | None = None) -> tuple[float, int]:
        """(mean, max) requests per agent, of one kind or all."""
        counts = Counter(_node(r) for r in self.records
                         if (kind is None or _kind(r) == kind) and self._counted(r))
        values = [counts.get(node_name(i), 0) for i in range(self.agents)]
        return statistics.fmean(values), max(values)

    def peak_lists_per_second(self) -> int:
        return peak_per_second([r.at for r in self.of("list")])

    def aligned_peak_lists_per_second(self) -> int:
        """As if every agent had been up at the same instant (as on nodes of their own):
        each agent's LIST times less its own start-up."""
        return peak_per_second([r.at - self.ready[_node(r)] for r in self.of("list")])


@dataclass
class FleetResult:
    options: FleetOptions
    setup_seconds: float
    phases: dict[str, Phase] = field(default_factory=dict)
    up_after_spawn: dict[str, list[float]] = field(default_factory=dict)  # per start phase
    watch_timeouts: list[int] = field(default_factory=list)
    bookmarks_in_steady: int = 0
    rss_mib: float = 0.0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    records: list[RequestRecord] = field(default_factory=list)


def node_name(i: int) -> str:
    return f"fleet-{i:04d}"


def _node(record: RequestRecord) -> str:
    m = _NODE.match(record.params.get("fieldSelector", ""))
    return m[1] if m else ""


def _kind(record: RequestRecord) -> str:
    if record.method in WRITES:
        return "write"
    if record.path.endswith("/pods"):
        return "watch" if record.is_watch else "list"
    return "other"


def peak_per_second(times: list[float]) -> int:
    """The most arrivals within any one-second span."""
    ordered, best, low = sorted(times), 0, 0
    for high, at in enumerate(ordered):
        while at - ordered[low] >= 1.0:
            low += 1
        best = max(best, high - low + 1)
    return best


def stage_fleet(server: ApiServer, agents: int) -> None:
    """N nodes x PODS pods, SELECTED of them matching the agents' selector on each node.

    Scheduled, their containers not started yet (Pending, ContainerCreating): a Running
    container without a process on this host is an InspectionIncomplete finding, whose
    Events would be writes that only this one-host bench causes."""
    for i in range(agents):
        for n in range(PODS):
            labels = LABELS if n < SELECTED else OTHER_LABELS
            server.add_pod(_not_started(pod_manifest(
                f"{node_name(i)}-{n:03d}", str(uuid.uuid4()), "", labels, node=node_name(i))))


def _not_started(manifest: dict[str, Any]) -> dict[str, Any]:
    status = manifest["status"]
    status["phase"] = "Pending"
    for container in status["containerStatuses"]:
        container.pop("containerID", None)
        container.update(ready=False, state={"waiting": {"reason": "ContainerCreating"}})
    return manifest


class Fleet:
    """N `opaudit run` processes started together, each logging to its own file."""

    def __init__(self, options: FleetOptions, kubeconfig: str, logs: Path, jitter: float) -> None:
        self.logs = [open(logs / f"{node_name(i)}-jitter{jitter:g}.log", "w+")  # noqa: SIM115
                     for i in range(options.agents)]
        self.spawned = time.monotonic()
        self.popens = [subprocess.Popen(
            [OPAUDIT, "run", "-l", SELECTOR, "--interval", f"{options.interval:g}",
             "--startup-jitter", f"{jitter:g}", "--kubeconfig", kubeconfig],
            env={**os.environ, "NODE_NAME": node_name(i)},
            stdout=subprocess.DEVNULL, stderr=log) for i, log in enumerate(self.logs)]
        self.spawn_seconds = time.monotonic() - self.spawned

    def log_offsets(self) -> list[int]:
        return [os.fstat(log.fileno()).st_size for log in self.logs]

    def failures_since(self, offsets: list[int]) -> int:
        count = 0
        for log, offset in zip(self.logs, offsets, strict=True):
            count += _read_from(log, offset).count('"msg": "pod list/watch failed"')
        return count

    def first_list_delays(self) -> dict[str, float]:
        """node -> the start-up jitter each agent drew, from its "starting" log line."""
        delays = {}
        for i, log in enumerate(self.logs):
            for line in _read_from(log, 0).splitlines():
                if '"pod list and watch starting"' in line:
                    delays[node_name(i)] = float(json.loads(line)["first_list_in_seconds"])
                    break
        return delays

    def rss_mib(self) -> float:
        total = 0
        for popen in self.popens:
            try:
                with open(f"/proc/{popen.pid}/status") as status:
                    total += next(int(line.split()[1]) for line in status
                                  if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                pass
        return total / 1024 / len(self.popens)

    def stop(self) -> None:
        for popen in self.popens:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        for popen in self.popens:
            try:
                popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        for log in self.logs:
            log.close()

    def exited_early(self) -> list[int]:
        return [p.returncode for p in self.popens if p.poll() is not None]


def _read_from(log: IO[str], offset: int) -> str:
    log.flush()
    with open(log.name) as again:
        again.seek(offset)
        return again.read()


def _since(server: ApiServer, start: float, end: float) -> list[RequestRecord]:
    return [r for r in list(server.request_log) if start <= r.at < end]


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _first_lists(server: ApiServer, since: float) -> dict[str, float]:
    """node -> arrival of its first LIST after `since`."""
    first: dict[str, float] = {}
    for r in list(server.request_log):
        if r.at >= since and _kind(r) == "list" and _node(r):
            first.setdefault(_node(r), r.at)
    return first


def _start_phase(server: ApiServer, fleet: Fleet, options: FleetOptions, name: str) -> Phase:
    """Every agent's first `window` after its own start-up. N interpreters starting at once
    on a few shared cores take minutes to get there, and in turn: on nodes of their own they
    would be up together. So each agent is counted from its own start (its first LIST less
    the jitter it drew), and the LIST peak is given both as recorded and so aligned."""
    deadline = fleet.spawned + STARTUP_TIMEOUT
    while time.monotonic() < deadline and len(_first_lists(server, fleet.spawned)) < len(
            fleet.popens):
        time.sleep(0.2)
    firsts = _first_lists(server, fleet.spawned)
    end = max(firsts.values(), default=time.monotonic()) + options.window
    _sleep_until(end)
    delays = fleet.first_list_delays()
    ready = {node: at - delays.get(node, 0.0) for node, at in firsts.items()}
    return Phase(name, options.agents, _since(server, fleet.spawned, end), fleet.spawned, end,
                 fleet.failures_since([0] * options.agents), ready, options.window)


def run_fleet(options: FleetOptions, progress: bool = True) -> FleetResult:
    """Every phase, in order; the agents are stopped and the server closed at the end."""
    say = print if progress else (lambda *a, **k: None)
    with ApiServer() as server, tempfile.TemporaryDirectory(prefix="opaudit-fleet-") as tmp:
        started = time.monotonic()
        stage_fleet(server, options.agents)
        result = FleetResult(options, time.monotonic() - started)
        say(f"bench: fleet of {options.agents} nodes x {PODS} pods staged in "
            f"{result.setup_seconds:.0f}s")
        kubeconfig = server.write_kubeconfig(Path(tmp) / "kubeconfig")
        logs = Path(tmp)

        say(f"bench: {options.agents} agents without start-up jitter, for {options.window:g}s")
        fleet = Fleet(options, kubeconfig, logs, 0.0)
        try:
            result.phases["cold"] = _start_phase(server, fleet, options, "cold")
        finally:
            fleet.stop()
        time.sleep(2)  # the stopped agents' connections close

        say(f"bench: {options.agents} agents with --startup-jitter {options.jitter:g}, "
            f"{options.window:g}s, then {options.steady:g}s of steady state")
        fleet = Fleet(options, kubeconfig, logs, options.jitter)
        try:
            result.phases["jitter"] = _start_phase(server, fleet, options, "jitter")
            end = result.phases["jitter"].end
            bookmarks, offsets = server.bookmarks_sent, fleet.log_offsets()
            steady_end = end + options.steady
            _sleep_until(steady_end)
            result.bookmarks_in_steady = server.bookmarks_sent - bookmarks
            result.phases["steady"] = Phase("steady", options.agents,
                                            _since(server, end, steady_end), end, steady_end,
                                            fleet.failures_since(offsets))
            result.rss_mib = fleet.rss_mib()

            say(f"bench: API server restart ({options.downtime:g}s down), then "
                f"{options.after_restart:g}s")
            offsets = fleet.log_offsets()
            # The cluster moves on past the agents' last bookmark (any write does that:
            # a lease renewal, an Event), then the server restarts without its history.
            server.add_pod(pod_manifest("elsewhere", str(uuid.uuid4()), "", OTHER_LABELS,
                                        node="not-in-the-fleet"))
            down = time.monotonic()
            server.stop()
            time.sleep(options.downtime)
            server.compact()
            server.start()
            restart_end = time.monotonic() + options.after_restart
            _sleep_until(restart_end)
            result.phases["restart"] = Phase("restart", options.agents,
                                             _since(server, down, restart_end), down,
                                             restart_end, fleet.failures_since(offsets))
            early = fleet.exited_early()
            if early:
                raise RuntimeError(f"{len(early)} agents exited during the bench: {early}")
        finally:
            fleet.stop()
        for key in ("cold", "jitter"):
            phase = result.phases[key]
            result.up_after_spawn[key] = sorted(at - phase.start for at in phase.ready.values())
        result.records = list(server.request_log)
        result.watch_timeouts = [int(r.params["timeoutSeconds"]) for r in result.records
                                 if _kind(r) == "watch" and _node(r)]
        result.load = os.getloadavg()
    return result
