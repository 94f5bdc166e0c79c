"""The declared view, built from the real Spark Operator pod fixtures (chart 2.5.2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixture_data import pod_fixture
from hypothesis import given
from hypothesis import strategies as st

from agent.kube.podspec import PodSpecError, declared_from_pod, load_pod_manifest
from agent.model import DeclaredProbe


def fixture(name: str) -> Path:
    return pod_fixture(name)


def load(name: str) -> dict[str, object]:
    return load_pod_manifest(str(fixture(name)))


def test_default_controller_as_the_chart_renders_it() -> None:
    d = declared_from_pod(load("spark-operator-controller.yaml"))
    assert d.container_name == "spark-operator-controller"
    assert d.pod.namespace == "spark-operator"
    assert d.pod.name == "spark-operator-controller-6f9d4c8b57-x2kqp"
    assert d.pod.uid == "fc3e2e3e-d85c-4560-a879-b492b5935c3a"
    assert d.container_id == ("containerd://96c0d5f3dda2f7a733d4a74124c0a6e3"
                              "12303c8c2f1193a847437270c7d6842f")
    # No runAsUser anywhere: the image's USER 185:185 applies.
    assert d.run_as_user is None and d.run_as_group is None
    assert d.run_as_non_root is True
    assert d.privileged is False and d.allow_privilege_escalation is False
    assert d.capabilities_drop == ("ALL",) and d.capabilities_add == ()
    assert d.seccomp_profile == "RuntimeDefault"
    assert d.read_only_root_filesystem is True
    assert [(p.port, p.protocol, p.name) for p in d.ports] == [(8080, "TCP", "metrics")]
    # The probe port 8081 is not a declared containerPort.
    assert d.probes == (DeclaredProbe("liveness", "httpGet", 8081),
                        DeclaredProbe("readiness", "httpGet", 8081))
    assert 8081 not in {p.port for p in d.ports}
    assert d.pod_ips == ("192.0.2.37", "2001:db8::25")
    assert d.label("app.kubernetes.io/component") == "controller"
    assert d.env == ()


def test_controller_tmp_emptydir_and_projected_token() -> None:
    d = declared_from_pod(load("spark-operator-controller.yaml"))
    tmp, token = d.volume_mounts
    assert (tmp.mount_path, tmp.volume_type, tmp.size_limit, tmp.read_only) == (
        "/tmp", "emptyDir", "1Gi", False)
    assert token.volume_type == "projected" and token.read_only is True
    assert token.mount_path == "/var/run/secrets/kubernetes.io/serviceaccount"


def test_hardened_controller_pins_uid_and_sets_ivy_env() -> None:
    d = declared_from_pod(load("spark-operator-controller-hardened.yaml"))
    assert (d.run_as_user, d.run_as_group) == (185, 185)
    assert d.env == (("SPARK_SUBMIT_OPTS", "-Divy.cache.dir=/tmp/ivy2/cache -Divy.home=/tmp/ivy2"),)
    assert d.pod_ips == ("192.0.2.41", "2001:db8::29")


def test_netbind_controller_adds_net_bind_service() -> None:
    d = declared_from_pod(load("spark-operator-controller-netbind.yaml"))
    assert d.capabilities_add == ("NET_BIND_SERVICE",)
    assert d.capabilities_drop == ("ALL",)
    assert d.run_as_user is None


def test_webhook_cert_dir_is_an_emptydir_with_subpath() -> None:
    d = declared_from_pod(load("spark-operator-webhook.yaml"))
    assert d.container_name == "spark-operator-webhook"
    certs = next(m for m in d.volume_mounts if m.name == "serving-certs")
    assert certs.mount_path == "/etc/k8s-webhook-server/serving-certs"
    assert certs.sub_path == "serving-certs"
    assert (certs.volume_type, certs.size_limit) == ("emptyDir", "500Mi")
    assert [(p.name, p.port) for p in d.ports] == [("webhook", 9443), ("metrics", 8080)]
    assert {p.port for p in d.probes} == {8081}
    assert "/tmp" not in {m.mount_path for m in d.volume_mounts}


def test_hardened_webhook_has_tmp_and_pod_level_uid() -> None:
    d = declared_from_pod(load("spark-operator-webhook-hardened.yaml"))
    tmp = next(m for m in d.volume_mounts if m.mount_path == "/tmp")
    assert (tmp.volume_type, tmp.size_limit) == ("emptyDir", "100Mi")
    assert d.run_as_user == 185


POD = {
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "x"}},
    "spec": {
        "hostNetwork": True,
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "runAsNonRoot": True,
                            "seccompProfile": {"type": "Unconfined"}},
        "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}},
                    {"name": "cfg", "configMap": {"name": "c"}}],
        "initContainers": [{"name": "init", "image": "i"}],
        "containers": [
            {"name": "first", "image": "a"},
            {"name": "app", "image": "b",
             "securityContext": {"runAsUser": 2000, "seccompProfile": {"type": "Localhost"},
                                 "capabilities": {"add": ["NET_ADMIN"]}, "privileged": True},
             "ports": [{"containerPort": 8443, "name": "https"},
                       {"containerPort": 53, "protocol": "UDP", "name": "dns"}],
             "livenessProbe": {"tcpSocket": {"port": "https"}},
             "readinessProbe": {"httpGet": {"port": "missing", "host": "10.0.0.1"}},
             "startupProbe": {"grpc": {"port": 9000}},
             "env": [{"name": "A", "value": "1"}, {"name": "EMPTY"},
                     {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
             "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"},
                              {"name": "cfg", "mountPath": "/cfg", "readOnly": True},
                              {"name": "ghost", "mountPath": "/ghost"}]},
        ],
    },
    "status": {"podIP": "2001:db8::5",
               "containerStatuses": [{"name": "app", "containerID": "cri-o://abc"}]},
}


def test_container_level_wins_over_pod_level() -> None:
    d = declared_from_pod(POD, "app")
    assert d.run_as_user == 2000  # container
    assert d.run_as_group == 3000  # pod
    assert d.run_as_non_root is True
    assert d.seccomp_profile == "Localhost"
    assert d.privileged is True
    assert d.allow_privilege_escalation is None  # unset: the kubelet leaves nnp off
    assert d.capabilities_add == ("NET_ADMIN",)
    assert d.container_id == "cri-o://abc"
    assert d.pod_ips == ("2001:db8::5",)  # from podIP when podIPs is absent


def test_pod_level_applies_to_a_container_without_its_own() -> None:
    d = declared_from_pod(POD)  # the first container
    assert d.container_name == "first"
    assert (d.run_as_user, d.seccomp_profile) == (1000, "Unconfined")
    assert d.container_id is None


def test_probes_named_ports_and_handlers() -> None:
    d = declared_from_pod(POD, "app")
    assert d.probes == (
        DeclaredProbe("liveness", "tcpSocket", 8443, port_name="https"),
        DeclaredProbe("readiness", "httpGet", None, port_name="missing", host="10.0.0.1"),
        DeclaredProbe("startup", "grpc", 9000),
    )
    assert [(p.port, p.protocol) for p in d.ports] == [(8443, "TCP"), (53, "UDP")]


def test_env_and_volumes() -> None:
    d = declared_from_pod(POD, "app")
    assert d.env == (("A", "1"), ("EMPTY", ""))
    scratch, cfg, ghost = d.volume_mounts
    assert (scratch.volume_type, scratch.size_limit, scratch.medium) == ("emptyDir", None, "Memory")
    assert (cfg.volume_type, cfg.read_only) == ("configMap", True)
    assert ghost.volume_type is None


def test_init_container_selectable_and_unknown_name_is_one_line() -> None:
    assert declared_from_pod(POD, "init").container_name == "init"
    with pytest.raises(PodSpecError) as err:
        declared_from_pod(POD, "nope")
    assert str(err.value) == "pod spec: no container named 'nope' (containers: first, app, init)"


def test_json_manifest_loads(tmp_path: Path) -> None:
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(POD))
    assert declared_from_pod(load_pod_manifest(str(path)), "app").run_as_user == 2000


@pytest.mark.parametrize(("text", "expected"), [
    ("kind: Deployment\nspec: {}\n", "kind is 'Deployment', expected 'Pod'"),
    ("- a\n- b\n", "expected a Pod object, got list"),
    ("kind: Pod\nspec: {containers: []}\n", "spec.containers is missing or empty"),
    ("kind: Pod\nspec: [\n", "not valid YAML/JSON at line"),
])
def test_bad_manifests_give_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text(text)
    with pytest.raises(PodSpecError) as err:
        load_pod_manifest(str(path))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PodSpecError, match="No such file"):
        load_pod_manifest(str(tmp_path / "absent.yaml"))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["name", "ports", "containerPort", "port", "httpGet", "grpc", "emptyDir",
                         "securityContext", "runAsUser", "capabilities", "add", "volumeMounts",
                         "mountPath", "env", "value", "podIPs", "ip", "labels", "x"]),
        inner, max_size=5),
    max_leaves=25)


@given(spec=JSONISH, status=JSONISH, meta=JSONISH)
def test_any_manifest_shape_gives_a_declared_view_or_pod_spec_error(
        spec: object, status: object, meta: object) -> None:
    pod = {"kind": "Pod", "metadata": meta, "spec": spec, "status": status}
    try:
        d = declared_from_pod(pod)
    except PodSpecError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(isinstance(p.port, int) for p in d.ports)
