"""The pod watcher's requests, as the test API server records them (README: "The API server
at fleet scale"): the first list from the watch cache (resourceVersion=0) after the
start-up jitter, watches that ask for bookmarks and resume from the last version seen
(after a normal end, a broken connection, an API server restart, a half-open connection),
and a list again only after 410 Gone, from the version seen.

The watcher runs in its thread against the server over real HTTP; short watches (1-2 s)
keep the tests quick. Waits are generous bounds on what must happen, never timings.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from kube.apiserver import ApiServer, RequestRecord

from agent.kube.client import load_api
from agent.kube.watch import PodWatcher

NODE = "n1"
PODS = r"^/api/v1/pods$"


def manifest(name: str, node: str = NODE) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "ns"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@dataclass
class Running:
    server: ApiServer
    watcher: PodWatcher
    stop: threading.Event
    errors: list[int | None] = field(default_factory=list)

    def pod_requests(self) -> list[RequestRecord]:
        return [r for r in list(self.server.request_log) if r.path == "/api/v1/pods"]

    def lists(self) -> list[RequestRecord]:
        return [r for r in self.pod_requests() if not r.is_watch]

    def watches(self) -> list[RequestRecord]:
        return [r for r in self.pod_requests() if r.is_watch]

    def wait_for_watches(self, count: int, timeout: float = 30) -> list[RequestRecord]:
        assert wait_for(lambda: len(self.watches()) >= count, timeout), (
            f"{len(self.watches())} watches, not {count}; errors {self.errors}")
        return self.watches()


@pytest.fixture
def start(server: ApiServer) -> Iterator[Callable[..., Running]]:
    """Starts a PodWatcher on NODE in its thread; stops it at the end."""
    started: list[tuple[Running, threading.Thread]] = []

    def starter(watch_seconds: int = 2, startup_jitter: float = 0.0) -> Running:
        stop = threading.Event()
        errors: list[int | None] = []
        api = load_api(configuration=server.configuration())
        watcher = PodWatcher(api, NODE, None, None, triggers=queue.Queue(), stop=stop,
                             on_api_error=errors.append, watch_seconds=watch_seconds,
                             startup_jitter=startup_jitter)
        running = Running(server, watcher, stop, errors)
        started.append((running, watcher.start()))
        return running

    yield starter
    for running, _ in started:
        running.stop.set()
    for _, thread in started:
        thread.join(timeout=10)  # at most a watch's deadline (2 x 2 s) away
        assert not thread.is_alive()


def test_first_list_from_the_watch_cache_then_watches_with_bookmarks_resume_from_the_last_version(
    server: ApiServer, start: Callable[..., Running]
) -> None:
    server.add_pod(manifest("mine"))
    server.bookmark_seconds = 0.3
    running = start(watch_seconds=2)
    running.wait_for_watches(1)
    # A change the watch does not see (another node's pod): only a bookmark tells the
    # watcher that the cluster moved on.
    server.add_pod(manifest("elsewhere", node="n2"))
    moved_on = str(server.resource_version)
    assert wait_for(lambda: running.watcher.resource_version == moved_on), (
        running.watcher.resource_version, moved_on)
    resumed = len(running.wait_for_watches(2))
    # History before the bookmarked version is gone now (as after an API server restart,
    # whose watch cache starts afresh): the watcher's version is not, so no 410, no list.
    server.compact()
    watches = running.wait_for_watches(resumed + 2)

    (first_list,) = running.lists()
    assert running.pod_requests()[0] is first_list
    assert first_list.params["resourceVersion"] == "0"  # served from the watch cache
    assert first_list.params["fieldSelector"] == f"spec.nodeName={NODE}"
    assert all(w.params["allowWatchBookmarks"] == "true" for w in watches)
    versions = [int(w.params["resourceVersion"]) for w in watches]
    assert versions == sorted(versions), versions
    assert versions[resumed - 1] >= int(moved_on)  # resumed from the bookmark's version
    assert all(1 <= int(w.params["timeoutSeconds"]) <= 2 for w in watches)
    assert running.errors == []


def test_only_410_gone_lists_again_and_from_the_version_seen(
    server: ApiServer, start: Callable[..., Running]
) -> None:
    server.add_pod(manifest("mine"))
    running = start(watch_seconds=2)
    running.wait_for_watches(1)
    seen = running.watcher.resource_version
    server.inject("GET", PODS, status=410)  # the next watch: an ERROR event carrying 410
    assert wait_for(lambda: len(running.lists()) == 2)
    running.wait_for_watches(3)

    first, again = running.lists()
    assert first.params["resourceVersion"] == "0"
    # At least as new as what the watcher saw: the watch cache serves it, not etcd.
    assert again.params["resourceVersion"] == seen
    expired = [w for w in running.watches() if w.at < again.at]
    assert expired[-1].params["resourceVersion"] == seen
    assert running.errors == []  # a 410 is no API error: the protocol's way to say "list"


@pytest.mark.parametrize("fault", [{"reset_connection": True}, {"drop_connection": True},
                                   {"status": 500}])
def test_a_broken_watch_resumes_from_the_version_seen_without_a_list(
    server: ApiServer, start: Callable[..., Running], fault: dict[str, object]
) -> None:
    server.add_pod(manifest("mine"))
    running = start(watch_seconds=2)
    running.wait_for_watches(1)
    seen = running.watcher.resource_version
    server.inject("GET", PODS, **{"status": None, **fault})  # type: ignore[arg-type]
    watches = running.wait_for_watches(3)
    assert len(running.errors) == 1
    assert len(running.lists()) == 1
    assert {w.params["resourceVersion"] for w in watches} == {seen}


def test_after_an_api_server_restart_the_watch_resumes_without_a_list(
    server: ApiServer, start: Callable[..., Running]
) -> None:
    server.add_pod(manifest("mine"))
    running = start(watch_seconds=2)
    running.wait_for_watches(1)
    server.stop()
    assert wait_for(lambda: len(running.errors) >= 1)  # connection refused, backing off
    server.start()
    before = len(running.watches())
    server.add_pod(manifest("late"))
    assert wait_for(lambda: "late" in {p["metadata"]["name"] for p in running.watcher.pods()})
    assert len(running.watches()) > before
    assert len(running.lists()) == 1


def test_a_half_open_watch_is_given_up_within_twice_its_timeout_and_resumed(
    server: ApiServer, start: Callable[..., Running]
) -> None:
    server.add_pod(manifest("mine"))
    server.inject("GET", PODS, silent_seconds=120)  # the first watch: 200, then nothing
    running = start(watch_seconds=1)
    # Given up at 2 s (1 s timeout + 1 s slack); before, each read waited 31 s. The bound
    # here only tells the two apart: well above 2 s, well below 31 s.
    watches = running.wait_for_watches(2, timeout=20)
    assert running.errors == [None]  # a connection failure, counted
    silent, resumed = watches[:2]
    assert silent.status == 200
    assert resumed.params["resourceVersion"] == silent.params["resourceVersion"]
    assert len(running.lists()) == 1


def test_the_first_list_waits_the_start_up_jitter(
    server: ApiServer, start: Callable[..., Running]
) -> None:
    started = time.monotonic()
    running = start(startup_jitter=1.5)
    delay = running.watcher.first_list_delay
    assert 0.0 <= delay <= 1.5
    assert wait_for(lambda: len(running.lists()) == 1)
    assert running.lists()[0].at - started >= delay
    assert PodWatcher(None, NODE, None, None, triggers=queue.Queue(),  # type: ignore[arg-type]
                      stop=threading.Event()).first_list_delay == 0.0  # no jitter: at once


def test_a_watch_ended_at_once_without_an_event_is_an_error_and_backs_off(
    server: ApiServer, start: Callable[..., Running]
) -> None:
    server.add_pod(manifest("mine"))
    server.inject("GET", PODS, silent_seconds=0.1, count=2)  # 200, then the end, at once
    running = start(watch_seconds=2)
    watches = running.wait_for_watches(3)
    assert running.errors == [None, None]  # "very short watch", counted as a failure
    gaps = [b.at - a.at for a, b in zip(watches, watches[1:3], strict=False)]
    assert all(gap >= 1.0 for gap in gaps), gaps  # backed off, not back-to-back
    assert len(running.lists()) == 1
