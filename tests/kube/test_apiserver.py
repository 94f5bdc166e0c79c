"""The test API server itself: it must reject what kube-apiserver rejects, and fault as asked."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import pytest
from kube import apischema
from kube.apiserver import ApiServer, forbidden_message, merge_patch
from kube.selector_match import field_matcher, label_matcher

from agent.kube.client import Api, load_api
from agent.kube.errors import KubeError
from agent.kube.events import EventClient

VALID_EVENT: dict[str, Any] = {
    "apiVersion": "events.k8s.io/v1",
    "kind": "Event",
    "metadata": {"name": "ctl.0123456789abcdef", "namespace": "spark-operator"},
    "eventTime": "2026-01-01T00:00:00.000000Z",
    "reportingController": "opaudit",
    "reportingInstance": "worker-1",
    "action": "Audit",
    "reason": "RunsAsRoot",
    "type": "Warning",
    "note": "effective uid 0",
    "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": "spark-operator",
                  "name": "ctl", "uid": "0b7b1c5e-1111-4222-8333-944455556666"},
}


def changed(path: str, value: Any) -> dict[str, Any]:
    event = copy.deepcopy(VALID_EVENT)
    *parents, last = path.split(".")
    target = event
    for part in parents:
        target = target.setdefault(part, {})
    if value is None:
        target.pop(last, None)
    else:
        target[last] = value
    return event


def test_a_valid_event_is_created_once(api: Api, server: ApiServer) -> None:
    created = EventClient(api).create_event("spark-operator", VALID_EVENT)
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    with pytest.raises(KubeError) as again:
        EventClient(api).create_event("spark-operator", VALID_EVENT)
    assert again.value.status == 409
    assert str(again.value) == ('Kubernetes API: 409 AlreadyExists: events.events.k8s.io '
                                '"ctl.0123456789abcdef" already exists')
    assert len(server.events()) == 1


@pytest.mark.parametrize(("path", "value", "field"), [
    ("eventTime", "2026-01-01T00:00:00Z", "eventTime"),  # no microseconds
    ("eventTime", "2026-01-01T00:00:00.000Z", "eventTime"),  # milliseconds
    ("eventTime", None, "eventTime"),
    ("series", {"count": 1, "lastObservedTime": "2026-01-01T00:00:00.000000Z"}, "series.count"),
    ("series", {"count": 2}, "series"),
    ("reportingController", "op audit!", "reportingController"),
    ("reportingController", None, "reportingController"),
    ("reportingInstance", "n" * 129, "reportingInstance"),
    ("action", None, "action"),
    ("reason", None, "reason"),
    ("type", "Error", "type"),
    ("note", "é" * 513, "note"),  # 1026 bytes, 513 characters
    ("deprecatedCount", 3, "deprecatedCount"),
    ("regarding.namespace", "elsewhere", "regarding.namespace"),
    ("regarding.bogus", "x", "regarding"),  # strict schema: unknown field
    ("metadata.name", "Not_A_DNS_Name", "metadata.name"),
])
def test_invalid_events_are_rejected_with_422(api: Api, path: str, value: Any, field: str) -> None:
    with pytest.raises(KubeError) as invalid:
        EventClient(api).create_event("spark-operator", changed(path, value))
    assert invalid.value.status == 422 and invalid.value.reason == "Invalid"
    assert field in invalid.value.message


def test_patch_merges_and_validates_the_result(api: Api, server: ApiServer) -> None:
    EventClient(api).create_event("spark-operator", VALID_EVENT)
    name = VALID_EVENT["metadata"]["name"]
    series = {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}
    patched = EventClient(api).patch_event("spark-operator", name, {"series": series})
    assert patched["series"] == series and patched["note"] == VALID_EVENT["note"]
    for bad in ({"series": {"count": 1}}, {"note": "rewritten"}, {"type": "Normal"},
                {"series": {"lastObservedTime": "2026-01-01T00:01:00Z"}}):
        with pytest.raises(KubeError) as invalid:
            EventClient(api).patch_event("spark-operator", name, bad)
        assert invalid.value.status == 422
    assert server.events()[0]["series"] == series  # rejected patches changed nothing
    cleared = EventClient(api).patch_event("spark-operator", name, {"series": None})
    assert cleared.get("series") is None
    with pytest.raises(KubeError) as missing:
        EventClient(api).patch_event("spark-operator", "nope", {"series": series})
    assert missing.value.status == 404


def test_both_event_apis_see_one_object(api: Api, server: ApiServer) -> None:
    EventClient(api).create_event("spark-operator", VALID_EVENT)
    from kubernetes import client

    core = client.CoreV1Api(api.api_client)
    raw = core.read_namespaced_event(VALID_EVENT["metadata"]["name"], "spark-operator",
                                     _preload_content=False)
    import json

    as_core = json.loads(raw.data)
    assert as_core["apiVersion"] == "v1"
    assert as_core["involvedObject"]["uid"] == VALID_EVENT["regarding"]["uid"]
    assert as_core["message"] == VALID_EVENT["note"]
    assert as_core["reportingComponent"] == "opaudit"


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch(target, {"c": ["x"]}) == {"a": "b", "c": ["x"]}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}}  # not mutated


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "db"}, False),
    ("app!=web", {}, True),
    ("tier in (a, b),app", {"tier": "b", "app": "x"}, True),
    ("tier notin (a,b)", {"tier": "a"}, False),
    ("!canary", {"canary": "1"}, False),
    ("", {"x": "y"}, True),
    ("tier notin (a)", {}, True),
    ("tier in ()", {"tier": ""}, True),  # apimachinery reads `()` as the empty value
    ("x in (foo,,baz),y", {"x": "", "y": "1"}, True),
    ("release>5,release<10", {"release": "7"}, True),
    ("release>5", {"release": "x"}, False),
    ("in in (in)", {"in": "in"}, True),  # a keyword is a key or value where one is expected
])
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert label_matcher(selector)(labels) is expected


@pytest.mark.parametrize("selector", [
    "a in (b", "a in (b,,)", "a=b,", "!a=b", "a=-b", "a>x", "-a", "a/b/c", "x" * 64])
def test_bad_label_selectors_raise(selector: str) -> None:
    with pytest.raises(ValueError):
        label_matcher(selector)


def test_bad_selectors_raise() -> None:
    with pytest.raises(ValueError, match="not supported"):
        field_matcher("spec.hostname=x")
    assert field_matcher("spec.nodeName!=a")({"spec": {"nodeName": "b"}})


def test_add_pod_validates_against_the_schema(server: ApiServer) -> None:
    with pytest.raises(ValueError, match="invalid Pod"):
        server.add_pod({"metadata": {"name": "x"}, "spec": {"containers": "not a list"}})
    assert apischema.schema_errors({"apiVersion": "v1", "kind": "Pod",
                                    "metadata": {"name": "x"}}) == []


def test_faults_are_consumed_in_order(api: Api, server: ApiServer) -> None:
    server.inject("GET", r"/pods$", status=500, count=2)
    for _ in range(2):
        with pytest.raises(KubeError) as failed:
            api.list_pods(None, None, None)
        assert failed.value.status == 500
    assert api.list_pods(None, None, None)[0] == []
    assert [r.status for r in server.request_log] == [500, 500, 200]


def test_forbidden_message_matches_kube_apiserver() -> None:
    assert forbidden_message("PATCH", "/apis/events.k8s.io/v1/namespaces/x/events/e1", {}) == (
        'events.events.k8s.io "e1" is forbidden: User "system:serviceaccount:opaudit:opaudit" '
        'cannot patch resource "events" in API group "events.k8s.io" in the namespace "x"')
    assert "cannot watch resource" in forbidden_message("GET", "/api/v1/pods", {"watch": "true"})


def test_stop_ends_hung_connections_and_leaves_no_threads() -> None:
    before = set(threading.enumerate())
    server = ApiServer().start()
    api = load_api(configuration=server.configuration(), read_timeout=0.3)
    server.inject("GET", r"/pods$", hang_seconds=600)
    with pytest.raises(KubeError):
        api.list_pods(None, None, None)
    watcher = threading.Thread(target=lambda: list(api.watch_pods(None, None, None, None, 600)))
    watcher.start()
    time.sleep(0.2)
    started = time.monotonic()
    server.stop()
    watcher.join(10)
    assert time.monotonic() - started < 5
    api.close()
    assert set(threading.enumerate()) - before == set()


def test_a_selector_watch_sees_a_pod_leave_and_enter_as_kube_apiserver_shows_it(
    api: Api, server: ApiServer
) -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "a"}},
           "spec": {"containers": [{"name": "c", "image": "i"}]}}
    server.add_pod(pod)
    _, version = api.list_pods(None, "app=a", None)
    for labels in ({"app": "b"}, {"app": "a"}, {"app": "a", "x": "y"}):
        server.update_pod({**pod, "metadata": {**pod["metadata"], "labels": labels}})
    server.delete_pod("ns", "p")
    seen = [kind for kind, _ in api.watch_pods(None, "app=a", None, version, 1)]
    assert seen == ["DELETED", "ADDED", "MODIFIED", "DELETED"]


def test_a_watch_gets_bookmarks_only_when_it_asks_and_the_query_is_recorded(
    api: Api, server: ApiServer
) -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"},
           "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}
    server.add_pod(pod)
    _, version = api.list_pods("n1", None, None, resource_version="0")
    server.add_pod({**pod, "metadata": {"name": "q", "namespace": "other"},
                    "spec": {**pod["spec"], "nodeName": "n2"}})  # not this watch's
    server.bookmark_seconds = 0.4
    seen = list(api.watch_pods("n1", None, None, version, 3))  # asks for bookmarks
    assert seen and {kind for kind, _ in seen} == {"BOOKMARK"}
    # As kube-apiserver: the object is the kind with only the newest version in its metadata.
    assert seen[-1][1] == {"kind": "Pod", "apiVersion": "v1",
                           "metadata": {"resourceVersion": str(server.resource_version)}}
    path = "/api/v1/pods"
    query = [("fieldSelector", "spec.nodeName=n1"), ("resourceVersion", version),
             ("timeoutSeconds", "1"), ("watch", "true")]  # without allowWatchBookmarks
    raw = api.api_client.call_api(*api.api_client.param_serialize(
        method="GET", resource_path=path, query_params=query), _request_timeout=10)
    assert raw.read() == b""  # nothing for a watch that did not ask

    listed, watched, plain = [r for r in server.request_log if r.path == path]
    assert listed.params == {"fieldSelector": "spec.nodeName=n1", "resourceVersion": "0"}
    assert not listed.is_watch and watched.is_watch and plain.is_watch
    assert watched.params["allowWatchBookmarks"] == "true"
    assert watched.params["resourceVersion"] == version
    assert "allowWatchBookmarks" not in plain.params
    assert listed.at <= watched.at <= plain.at  # arrival, monotonic
