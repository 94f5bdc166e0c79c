"""agent.kube.client against the in-process API server over real HTTP."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kube.apiserver import ApiServer

from agent.kube.client import Api, load_api
from agent.kube.errors import KubeError, WatchExpired
from agent.kube.events import EventClient

REPO = Path(__file__).resolve().parents[2]


def pod(name: str, node: str = "worker-1", namespace: str = "spark-operator",
        **labels: str) -> dict[str, object]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
    }


def names(pods: list[dict[str, object]]) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods)  # type: ignore[index]


def test_list_pods_by_node_label_and_namespace(server: ApiServer, api: Api) -> None:
    server.add_pod(pod("ctl", **{"app.kubernetes.io/name": "spark-operator",
                                 "app.kubernetes.io/component": "controller"}))
    server.add_pod(pod("hook", **{"app.kubernetes.io/name": "spark-operator",
                                  "app.kubernetes.io/component": "webhook"}))
    server.add_pod(pod("elsewhere", node="worker-2",
                       **{"app.kubernetes.io/name": "spark-operator"}))
    server.add_pod(pod("other", namespace="default", app="web"))

    items, version = api.list_pods("worker-1", None, None)
    assert names(items) == ["ctl", "hook", "other"] and version.isdigit()
    assert names(api.list_pods("worker-1", "app.kubernetes.io/name=spark-operator", None)[0]) == [
        "ctl", "hook"]
    assert names(api.list_pods(None, "app.kubernetes.io/component in (webhook,x)", None)[0]) == [
        "hook"]
    assert names(api.list_pods("worker-1", "app.kubernetes.io/component!=webhook", None)[0]) == [
        "ctl", "other"]
    assert names(api.list_pods(None, "app", None)[0]) == ["other"]
    assert names(api.list_pods(None, None, "default")[0]) == ["other"]
    assert api.get_pod("default", "other")["metadata"]["labels"] == {"app": "web"}
    query = server.request_log[0].query
    assert "fieldSelector=spec.nodeName%3Dworker-1" in query


def test_missing_pod_and_bad_selector_are_kube_errors(api: Api) -> None:
    with pytest.raises(KubeError) as missing:
        api.get_pod("default", "nope")
    assert missing.value.status == 404 and 'pods "nope" not found' in str(missing.value)
    with pytest.raises(KubeError) as bad:
        api.list_pods(None, "a in (b", None)
    assert bad.value.status == 400


def test_watch_streams_changes_after_the_listed_version(server: ApiServer, api: Api) -> None:
    server.add_pod(pod("before"))
    _, version = api.list_pods("worker-1", None, None)

    def change() -> None:
        time.sleep(0.3)
        server.add_pod(pod("new"))
        server.add_pod(pod("not-mine", node="worker-2"))
        updated = pod("new")
        updated["metadata"]["labels"] = {"restarted": "yes"}  # type: ignore[index]
        server.update_pod(updated)
        server.delete_pod("spark-operator", "new")

    changer = threading.Thread(target=change)
    changer.start()
    seen = [(kind, obj["metadata"]["name"]) for kind, obj in
            api.watch_pods("worker-1", None, None, version, timeout_seconds=2)]
    changer.join()
    assert seen == [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "new")]


def test_watch_without_version_starts_with_current_pods(server: ApiServer, api: Api) -> None:
    server.add_pod(pod("a"))
    seen = list(api.watch_pods("worker-1", None, "spark-operator", None, timeout_seconds=1))
    assert [(k, o["metadata"]["name"]) for k, o in seen] == [("ADDED", "a")]


def test_watch_on_a_compacted_version_raises_watch_expired(server: ApiServer, api: Api) -> None:
    server.add_pod(pod("a"))
    _, version = api.list_pods("worker-1", None, None)
    server.add_pod(pod("b"))
    server.compact()
    with pytest.raises(WatchExpired) as expired:
        list(api.watch_pods("worker-1", None, None, version, timeout_seconds=5))
    assert expired.value.status == 410
    # The caller's recovery: re-list, then watch from the new version.
    items, fresh = api.list_pods("worker-1", None, None)
    assert names(items) == ["a", "b"]
    assert list(api.watch_pods("worker-1", None, None, fresh, timeout_seconds=1)) == []


def test_injected_410_on_watch_is_an_error_event(server: ApiServer, api: Api) -> None:
    server.inject("GET", r"/pods$", status=410)
    with pytest.raises(WatchExpired):
        list(api.watch_pods("worker-1", None, None, "5", timeout_seconds=5))
    assert server.request_log[-1].status == 200  # as kube-apiserver: 200, then ERROR


def test_typed_client_cannot_list_kubelet_events_but_ours_can(server: ApiServer, api: Api) -> None:
    from kubernetes import client

    kubelet_event = client.CoreV1Event(  # as the kubelet writes them: core/v1, no eventTime
        metadata=client.V1ObjectMeta(name="ctl.17a"),
        involved_object=client.V1ObjectReference(kind="Pod", name="ctl", namespace="default"),
        reason="Pulled", message="Container image pulled", type="Normal",
        source=client.V1EventSource(component="kubelet", host="worker-1"), count=1,
    )
    client.CoreV1Api(api.api_client).create_namespaced_event("default", kubelet_event)
    with pytest.raises(ValueError, match="eventTime"):  # pydantic's ValidationError
        client.EventsV1Api(api.api_client).list_namespaced_event("default")
    listed = EventClient(api).get_event("default", "ctl.17a")
    assert listed is not None and listed["reason"] == "Pulled" and "eventTime" not in listed
    assert listed["regarding"]["name"] == "ctl" and listed["note"] == "Container image pulled"


EVENT = {
    "metadata": {"name": "ctl.abc"}, "eventTime": "2026-01-01T00:00:00.000000Z",
    "reportingController": "opaudit", "reportingInstance": "worker-1", "action": "Audit",
    "reason": "RunsAsRoot", "type": "Warning", "note": "uid 0",
    "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": "default", "name": "ctl"},
}


def test_event_create_get_patch(api: Api) -> None:
    events, body = EventClient(api), EVENT
    created = events.create_event("default", body)
    assert created["eventTime"] == body["eventTime"]  # six digits survived the client
    with pytest.raises(KubeError) as conflict:
        events.create_event("default", body)
    assert conflict.value.status == 409 and conflict.value.reason == "AlreadyExists"
    assert events.get_event("default", "missing") is None
    series = {"count": 2, "lastObservedTime": "2026-01-01T00:05:00.000000Z"}
    patched = events.patch_event("default", "ctl.abc", {"series": series})
    assert patched["series"] == series
    assert events.get_event("default", "ctl.abc")["series"] == series  # type: ignore[index]


def test_an_event_name_is_one_path_segment_in_every_event_call(
        server: ApiServer, api: Api) -> None:
    """A name with `/..` must not reach another object: unquoted, urllib3 removes the dot
    segments and `x/../ctl.abc` becomes ctl.abc."""
    events = EventClient(api)
    events.create_event("default", EVENT)
    sneaky = "x/../ctl.abc"
    assert events.get_event("default", sneaky) is None
    with pytest.raises(KubeError) as missing:
        events.patch_event("default", sneaky, {"series": {"count": 9}})
    assert missing.value.status == 404
    quoted = "/apis/events.k8s.io/v1/namespaces/default/events/x%2F..%2Fctl.abc"
    assert [(r.method, r.path) for r in server.request_log[-2:]] == [("GET", quoted),
                                                                   ("PATCH", quoted)]
    assert "series" not in server.events()[0]  # ctl.abc itself untouched


def test_errors_are_one_line_with_retry_after(server: ApiServer, api: Api) -> None:
    server.inject("GET", r"/pods$", status=429, retry_after=3)
    with pytest.raises(KubeError) as throttled:
        api.list_pods(None, None, None)
    assert throttled.value.status == 429 and throttled.value.retry_after == 3.0
    server.inject("GET", r"/pods$", status=403)
    with pytest.raises(KubeError) as forbidden:
        api.list_pods(None, None, None)
    assert str(forbidden.value) == (
        'Kubernetes API: 403 Forbidden: pods is forbidden: User '
        '"system:serviceaccount:opaudit:opaudit" cannot list resource "pods" in API group "" '
        "at the cluster scope")


@pytest.mark.parametrize("fault", [{"drop_connection": True}, {"reset_connection": True}])
def test_dropped_or_reset_connection_is_unreachable(server: ApiServer, api: Api,
                                                    fault: dict[str, bool]) -> None:
    server.inject("GET", r"/pods$", status=None, **fault)
    with pytest.raises(KubeError) as dropped:
        api.list_pods(None, None, None)
    assert dropped.value.status is None and dropped.value.code == "connection"
    assert "\n" not in str(dropped.value)
    assert api.list_pods(None, None, None)[0] == []  # the next request works again


def test_hung_server_times_out(server: ApiServer) -> None:
    api = load_api(configuration=server.configuration(), read_timeout=0.5)
    server.inject("GET", r"/pods$", hang_seconds=60)
    started = time.monotonic()
    with pytest.raises(KubeError) as hung:
        api.list_pods(None, None, None)
    assert time.monotonic() - started < 10  # bounded by the read timeout, not by the server
    assert "read timeout" in str(hung.value)
    api.close()


def test_server_down_is_unreachable(server: ApiServer, api: Api) -> None:
    server.stop()
    with pytest.raises(KubeError) as down:
        api.list_pods(None, None, None)
    assert down.value.status is None and "\n" not in str(down.value)


def test_load_api_from_kubeconfig(server: ApiServer, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: test, cluster: {{server: "{server.url}"}}}}]
users: [{{name: test, user: {{token: abc}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test}}}}]
current-context: test
""")
    server.add_pod(pod("a"))
    assert names(load_api(str(kubeconfig)).list_pods(None, None, None)[0]) == ["a"]
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert names(load_api().list_pods(None, None, None)[0]) == ["a"]


def test_load_api_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KubeError) as missing:
        load_api(str(tmp_path / "nope"))
    assert str(missing.value) == f"kubeconfig {tmp_path / 'nope'}: No such file or directory"
    assert "\n" not in str(missing.value)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # in a pod, but no token mounted
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(KubeError):
        load_api()


def test_importing_the_client_does_not_import_kubernetes() -> None:
    code = ("import sys, agent.kube.client, agent.kube.events, agent.kube.policyreports, "
            "agent.output.events.sink, agent.output.policyreports.sink; "
            "print('kubernetes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_a_silent_watch_is_given_up_within_twice_its_timeout(server: ApiServer, api: Api) -> None:
    """A half-open connection: the server answered, then nothing, and no FIN. Before, each
    read waited timeoutSeconds + 30 s after the last byte: 31 s here, ~5 min on a node."""
    server.inject("GET", r"/pods$", silent_seconds=120)
    outcome: list[BaseException] = []

    def watch() -> None:
        try:
            list(api.watch_pods("worker-1", None, None, "1", timeout_seconds=1))
        except KubeError as exc:
            outcome.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    watcher.join(20)  # given up at 2 s; the bound only tells 2 s from 31 s
    assert not watcher.is_alive() and len(outcome) == 1
    (error,) = outcome
    assert isinstance(error, KubeError) and error.status is None and error.code == "connection"
    assert "did not end within 2 s of its request (timeoutSeconds=1)" in str(error)
    assert server.request_log[-1].status == 200  # it was answered, then went quiet
    assert api.list_pods("worker-1", None, None)[0] == []  # the client works on


def test_list_pods_asks_for_the_version_given(server: ApiServer, api: Api) -> None:
    api.list_pods("worker-1", None, None, resource_version="0")
    api.list_pods("worker-1", None, None, resource_version="12")
    api.list_pods("worker-1", None, None)  # a consistent read: no version at all
    assert [r.params.get("resourceVersion") for r in server.request_log] == ["0", "12", None]
