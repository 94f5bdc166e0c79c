"""The pod cache of the `run` loop: what a list or a watch event changes, and what it
triggers. Its list/watch loop against the API is in test_watch_resume.py."""

from __future__ import annotations

import queue
import threading
from typing import Any

from kube.apiserver import ApiServer

from agent.kube.client import load_api
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


def served(uid: str, *containers: tuple[str, str | None]) -> dict[str, Any]:
    """`pod` as the API server holds it: on node n1, with a spec."""
    manifest = pod(uid, *containers)
    del manifest["metadata"]["resourceVersion"]
    manifest["spec"] = {"nodeName": "n1", "containers": [
        {"name": name, "image": "busybox"} for name, _ in containers]}
    for status in manifest["status"]["containerStatuses"]:
        status.update(image="busybox", imageID="", ready=True, restartCount=0)
    return manifest


def watcher(server: ApiServer) -> tuple[PodWatcher, queue.Queue[str], threading.Event]:
    triggers: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    api = load_api(configuration=server.configuration())
    return PodWatcher(api, "n1", None, None, triggers=triggers, stop=stop), triggers, stop


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


def test_relist_triggers_pods_with_running_containers_only(server: ApiServer) -> None:
    for manifest in (served("a", ("c", "containerd://1")), served("b", ("c", None))):
        server.add_pod(manifest)
    w, triggers, _ = watcher(server)
    assert w.relist() == str(server.resource_version) == w.resource_version
    assert drain(triggers) == ["a"]
    assert sorted(p["metadata"]["uid"] for p in w.pods()) == ["a", "b"]
    w.relist()  # nothing new: no trigger
    assert drain(triggers) == []


def watcher_without_api() -> tuple[PodWatcher, queue.Queue[str], threading.Event]:
    """For `apply`, which never calls the API."""
    triggers: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    return PodWatcher(None, "n1", None, None, triggers=triggers,  # type: ignore[arg-type]
                      stop=stop), triggers, stop


def test_watch_triggers_on_a_new_container_id_not_on_other_updates() -> None:
    w, triggers, _ = watcher_without_api()
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
    w, triggers, _ = watcher_without_api()
    w.apply("ADDED", pod("a", ("c", None)))
    assert drain(triggers) == []
    # It never runs long enough to be seen running: each restart is what calls for an audit.
    w.apply("MODIFIED", crash_looping("a", 1, "containerd://1"))
    assert drain(triggers) == ["a"]
    w.apply("MODIFIED", crash_looping("a", 1, "containerd://1", rv="2"))  # nothing new
    assert drain(triggers) == []
    w.apply("MODIFIED", crash_looping("a", 2, "containerd://2"))
    assert drain(triggers) == ["a"]


def test_a_bookmark_moves_the_version_only() -> None:
    w, triggers, _ = watcher_without_api()
    w.apply("ADDED", pod("a", ("c", "containerd://1"), rv="7"))
    assert w.resource_version == "7" and drain(triggers) == ["a"]
    w.apply("BOOKMARK", {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "42"}})
    assert w.resource_version == "42" and drain(triggers) == []
    assert [p["metadata"]["uid"] for p in w.pods()] == ["a"]
