"""The client-side request limit (`agent.kube.ratelimit`) and the agent under a 429 storm.

The bucket's arithmetic is checked on a hand-driven clock; that it holds is checked on the
arrival times the test API server records while every answer is 429 with Retry-After.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest
from kube.apiserver import ApiServer

from agent.arguments import RUN_API_BURST, RUN_API_QPS, RUN_STARTUP_JITTER, build_parser
from agent.kube.client import load_api
from agent.kube.errors import KubeError
from agent.kube.ratelimit import DEFAULT_BURST, DEFAULT_QPS, RequestLimiter
from agent.kube.watch import STARTUP_JITTER, PodWatcher

EVERY = 1_000_000
OPAUDIT = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "opaudit"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))


def test_a_burst_goes_at_once_then_qps_and_waiters_keep_their_turn() -> None:
    clock = Clock()
    limiter = RequestLimiter(qps=2, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.acquire()
    assert clock.sleeps == [0.5, 1.0]  # 3 at once, then one each 0.5 s, in arrival order
    clock.now = 10.0  # idle: the bucket refills, up to the burst only
    for _ in range(4):
        limiter.acquire()
    assert clock.sleeps[2:] == [0.5]
    assert limiter.waited == pytest.approx(2.0)
    with pytest.raises(ValueError):
        RequestLimiter(qps=0, burst=1)


def test_the_limit_holds_under_a_429_storm_whatever_the_callers_do(server: ApiServer) -> None:
    """Four threads ask as fast as they can and ignore Retry-After (a retry loop gone
    wrong); every answer is 429. The server sees no more than the bucket lets through."""
    qps, burst, per_thread = 5.0, 3, 6
    server.inject("GET", r"/pods$", status=429, retry_after=1, count=EVERY)
    api = load_api(configuration=server.configuration(), qps=qps, burst=burst)
    throttled: list[int | None] = []

    def hammer() -> None:
        for _ in range(per_thread):
            try:
                api.list_pods(None, None, None)
            except KubeError as exc:
                throttled.append(exc.status)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    api.close()
    arrivals = sorted(r.at for r in server.request_log)
    assert throttled == [429] * 4 * per_thread and len(arrivals) == 4 * per_thread
    # Requests i..j (j - i + 1 of them) need a burst plus one token per 1/qps s between
    # them. One token of slack: an arrival can lag its send under load.
    for i in range(len(arrivals)):
        for j in range(i + 1, len(arrivals)):
            allowed = burst + qps * (arrivals[j] - arrivals[i]) + 1
            assert j - i + 1 <= allowed, (i, j, arrivals[j] - arrivals[i])


def test_the_pod_watcher_waits_out_retry_after_under_a_429_storm(server: ApiServer) -> None:
    server.inject("GET", r"/pods$", status=429, retry_after=2, count=3)
    stop = threading.Event()
    errors: list[int | None] = []
    watcher = PodWatcher(load_api(configuration=server.configuration()), "n1", None, None,
                         triggers=queue.Queue(), stop=stop, on_api_error=errors.append,
                         watch_seconds=2)
    thread = watcher.start()
    try:
        assert watcher.synced.wait(60), errors
    finally:
        stop.set()
        thread.join(10)
    lists = [r for r in server.request_log if r.path == "/api/v1/pods" and not r.is_watch]
    assert [r.status for r in lists] == [429, 429, 429, 200]
    gaps = [b.at - a.at for a, b in zip(lists, lists[1:], strict=False)]
    assert all(gap >= 2.0 for gap in gaps), gaps  # Retry-After, longer than the backoff
    assert errors == [429, 429, 429]


def test_run_flags_default_to_the_agents_constants_and_refuse_nonsense(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    args = parser.parse_args(["run"])
    assert (args.startup_jitter, args.api_qps, args.api_burst) == (
        RUN_STARTUP_JITTER, RUN_API_QPS, RUN_API_BURST) == (
        STARTUP_JITTER, DEFAULT_QPS, DEFAULT_BURST)
    args = parser.parse_args(["run", "--startup-jitter", "0", "--api-qps", "0.5",
                              "--api-burst", "1"])
    assert (args.startup_jitter, args.api_qps, args.api_burst) == (0.0, 0.5, 1)
    for bad in (["--startup-jitter", "-1"], ["--startup-jitter", "nan"],
                ["--api-qps", "0"], ["--api-qps", "x"], ["--api-burst", "0"]):
        with pytest.raises(SystemExit) as refused:
            parser.parse_args(["run", *bad])
        assert refused.value.code == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert bad[0] in line, line



def test_the_run_flags_reach_the_agents_client(server: ApiServer, tmp_path: Path) -> None:
    """`opaudit run --api-qps 0.25 --api-burst 1`: its watch waits 4 s for a token after
    the list took the only one (a lower bound, with slack for arrival lag)."""
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    agent = subprocess.Popen(
        [str(OPAUDIT), "run", "--node", "n1", "--startup-jitter", "0", "--api-qps", "0.25",
         "--api-burst", "1", "--kubeconfig", kubeconfig],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(r.is_watch for r in server.request_log):
            time.sleep(0.1)
    finally:
        agent.terminate()
        _, err = agent.communicate(timeout=20)
    listed, watched = server.request_log[:2]
    assert not listed.is_watch and watched.is_watch, err[-500:]
    assert watched.at - listed.at >= 3.5  # without the limit: milliseconds
