"""The pod cache of the `run` loop: list + watch, triggers, re-list on 410 and errors."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from agent.kube.client import KubeError, WatchExpired
from agent.kube.containers import running_containers
from agent.kube.watch import PodWatcher


def pod(uid: str, *containers: tuple[str, str | None], phase: str = "Running",
        rv: str = "1") -> dict[str, Any]:
    return {
        "metadata": {"uid": uid, "name": f"pod-{uid}", "namespace": "ns", "resourceVersion": rv},
        "status": {"phase": phase, "containerStatuses": [
            {"name": name, "containerID": cid,
             "state": {"running": {}} if cid else {"waiting": {"reason": "ContainerCreating"}}}
            for name, cid in containers]},
    }


class FakePodApi:
    """Lists `pods`; each watch replays one script of (type, pod) or an exception."""

    def __init__(self, pods: list[dict[str, Any]], watches: list[list[Any]]) -> None:
        self.pods = pods
        self.watches = watches
        self.lists = 0
        self.watch_versions: list[str] = []
        self.exhausted = threading.Event()

    def list_pods(self, node: str, selector: str | None, namespace: str | None
                  ) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        return list(self.pods), f"rv{self.lists}"

    def watch_pods(self, node: str, selector: str | None, namespace: str | None,
                   resource_version: str, timeout_seconds: int
                   ) -> Iterator[tuple[str, dict[str, Any]]]:
        self.watch_versions.append(resource_version)
        if not self.watches:
            self.exhausted.set()
            threading.Event().wait(5)
            return
        for step in self.watches.pop(0):
            if isinstance(step, Exception):
                raise step
            yield step


def watcher(api: FakePodApi, errors: list[int | None] | None = None
            ) -> tuple[PodWatcher, queue.Queue[str], threading.Event]:
    triggers: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    sink = errors if errors is not None else []
    return (PodWatcher(api, "n1", None, None, triggers=triggers, stop=stop,
                       on_api_error=sink.append), triggers, stop)


def drain(triggers: queue.Queue[str]) -> list[str]:
    found = []
    while not triggers.empty():
        found.append(triggers.get_nowait())
    return found


def test_running_containers_needs_running_state_and_container_id() -> None:
    assert running_containers(pod("u", ("a", "containerd://1"), ("b", None))) == (
        ("a", "containerd://1"),)
    assert running_containers(pod("u", ("a", "containerd://1"), phase="Pending")) == ()
    assert running_containers({"metadata": {"uid": "u"}}) == ()


def test_relist_triggers_pods_with_running_containers_only() -> None:
    api = FakePodApi([pod("a", ("c", "containerd://1")), pod("b", ("c", None))], [])
    w, triggers, _ = watcher(api)
    assert w.relist() == "rv1"
    assert drain(triggers) == ["a"]
    assert sorted(p["metadata"]["uid"] for p in w.pods()) == ["a", "b"]
    w.relist()  # nothing new: no trigger
    assert drain(triggers) == []


def test_watch_triggers_on_a_new_container_id_not_on_other_updates() -> None:
    w, triggers, _ = watcher(FakePodApi([], []))
    w.apply("ADDED", pod("a", ("c", None)))
    assert drain(triggers) == []  # created, not running yet
    w.apply("MODIFIED", pod("a", ("c", "containerd://1")))
    assert drain(triggers) == ["a"]
    w.apply("MODIFIED", pod("a", ("c", "containerd://1"), rv="2"))  # e.g. a label change
    assert drain(triggers) == []
    w.apply("MODIFIED", pod("a", ("c", "containerd://2")))  # the container restarted
    assert drain(triggers) == ["a"]
    w.apply("DELETED", pod("a", ("c", "containerd://2")))
    assert w.pods() == []


def crash_looping(uid: str, restarts: int, cid: str, rv: str = "1") -> dict[str, Any]:
    """A container that died `restarts` times and waits in CrashLoopBackOff."""
    looping = pod(uid, ("c", cid), rv=rv)
    looping["status"]["containerStatuses"][0].update(
        restartCount=restarts, state={"waiting": {"reason": "CrashLoopBackOff"}},
        lastState={"terminated": {"exitCode": 1, "containerID": cid}})
    return looping


def test_watch_triggers_on_each_restart_of_a_crash_looping_container() -> None:
    w, triggers, _ = watcher(FakePodApi([], []))
    w.apply("ADDED", pod("a", ("c", None)))
    assert drain(triggers) == []
    # It never runs long enough to be seen running: each restart is what calls for an audit.
    w.apply("MODIFIED", crash_looping("a", 1, "containerd://1"))
    assert drain(triggers) == ["a"]
    w.apply("MODIFIED", crash_looping("a", 1, "containerd://1", rv="2"))  # nothing new
    assert drain(triggers) == []
    w.apply("MODIFIED", crash_looping("a", 2, "containerd://2"))
    assert drain(triggers) == ["a"]


def test_run_relists_after_410_and_keeps_going_after_errors() -> None:
    api = FakePodApi([pod("a", ("c", "containerd://1"))], [
        [("ADDED", pod("b", ("c", "containerd://9"))), WatchExpired(410, "Expired", "too old")],
        [KubeError(500, "InternalError", "boom")],
        [],
    ])
    errors: list[int | None] = []
    w, triggers, stop = watcher(api, errors)
    w.start()
    assert api.exhausted.wait(10)
    stop.set()
    assert api.lists == 4  # first list, after 410, after the 500 (backoff), after watch end
    assert api.watch_versions == ["rv1", "rv2", "rv3", "rv4"]
    assert errors == [500]
    assert sorted(p["metadata"]["uid"] for p in w.pods()) == ["a"]  # b was not re-listed
    assert drain(triggers)[:2] == ["a", "b"]
