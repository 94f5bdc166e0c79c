"""daemonset/chart/: linted and rendered by a real helm, every rendered object strictly valid
against the Kubernetes schemas, equal by default to the Kustomize base (drift), a wrong value
rejected by values.schema.json, and nothing checkov fails that is not fixed or skipped with
a reason."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixture_data import FIXTURES
from manifests import (
    CHART_DIR,
    K8S_VERSION,
    NAMESPACE,
    by_kind,
    checkov,
    helm,
    helm_template,
    kustomize,
)

ALL_VALUES = FIXTURES / "chart" / "all-values.yaml"
# Labels Helm charts conventionally add to record the release; the Kustomize base has none.
RELEASE_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance",
                  "app.kubernetes.io/version"}
# What the chart and the base must render alike (kinds the base holds, less its Namespace:
# `helm install --create-namespace` makes that).
DRIFT_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet",
               "NetworkPolicy")
# Prometheus Operator kinds: kubernetes-validate ships no schema for CRDs.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "PodMonitor"),
                ("monitoring.coreos.com/v1", "ServiceMonitor")}
# Each check skipped in the manifests, with its reason in a checkov.io/skip annotation.
# Every one is inherent to a node agent except the digest, which no release publishes yet.
SKIPPED_CHECKS = {"CKV_K8S_17", "CKV_K8S_23", "CKV_K8S_40", "CKV_K8S_25", "CKV_K8S_39",
                  "CKV_K8S_38", "CKV_K8S_43"}


@pytest.fixture(scope="module")
def defaults() -> list[dict[str, Any]]:
    return helm_template()


@pytest.fixture(scope="module")
def all_keys() -> list[dict[str, Any]]:
    return helm_template("--values", str(ALL_VALUES))


def with_pod_monitor() -> list[dict[str, Any]]:
    """Every key, with the PodMonitor instead of the ServiceMonitor (never both)."""
    return helm_template("--values", str(ALL_VALUES), "--set", "podMonitor.enabled=true",
                         "--set", "serviceMonitor.enabled=false")


def validate_strictly(rendered: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    for doc in rendered:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# --- helm lint, template, schema ---------------------------------------------------------


@pytest.mark.parametrize("values", [None, ALL_VALUES], ids=["defaults", "all-keys"])
def test_helm_lint_strict(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART_DIR), "--namespace", NAMESPACE]
    if values is not None:
        args += ["--values", str(values)]
    result = helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_defaults_render_valid_objects(defaults: list[dict[str, Any]]) -> None:
    assert sorted(d["kind"] for d in defaults) == sorted(DRIFT_KINDS)
    validate_strictly(defaults)


def test_all_keys_render_valid_objects(all_keys: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in all_keys}
    assert kinds == {*DRIFT_KINDS, "ConfigMap", "Service", "ServiceMonitor",
                     "CustomResourceDefinition"}
    validate_strictly(all_keys)
    assert "PodMonitor" in {d["kind"] for d in with_pod_monitor()}


def leaf_keys(values: Any, prefix: str = "") -> set[str]:
    if not isinstance(values, dict) or not values:
        return {prefix}
    keys: set[str] = set()
    for key, value in values.items():
        keys |= leaf_keys(value, f"{prefix}.{key}" if prefix else key)
    return keys


def test_the_all_keys_file_sets_every_value() -> None:
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    every = yaml.safe_load(ALL_VALUES.read_text())
    # An empty map in values.yaml ({}) is a leaf there and a subtree in the file.
    missing = {k for k in leaf_keys(defaults)
               if not any(e == k or e.startswith(k + ".") for e in leaf_keys(every))}
    assert not missing


def test_all_keys_reach_the_objects(all_keys: list[dict[str, Any]]) -> None:
    from agent.config import parse_config

    every = yaml.safe_load(ALL_VALUES.read_text())
    daemonset = by_kind(all_keys, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == (f"{every['image']['repository']}:{every['image']['tag']}"
                                  f"@{every['image']['digest']}")
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert pod["imagePullSecrets"] == every["imagePullSecrets"]
    assert pod["serviceAccountName"] == "opaudit-sa"
    assert pod["nodeSelector"] == every["nodeSelector"]
    assert pod["tolerations"] == every["tolerations"]
    assert pod["affinity"] == every["affinity"]
    assert pod["priorityClassName"] == every["priorityClassName"]
    assert container["resources"] == every["resources"]
    args = container["args"]
    assert args[:1] == ["run"] and "--metrics-port=9191" in args and "--interval=30" in args
    assert {"--startup-jitter=20", "--api-qps=5", "--api-burst=10"} <= set(args)
    assert args[args.index("-l") + 1] == every["selector"]
    assert "--namespace=spark-operator" in args and "--config=/etc/opaudit/config.yaml" in args
    assert {"name": "TZ", "value": "UTC"} in container["env"]
    assert {"name": "OPAUDIT_FD_READER", "value": "proc"} in container["env"]
    # The ConfigMap holds a config the agent itself accepts, mounted where --config points.
    (configmap,) = [d for d in all_keys if d["kind"] == "ConfigMap"
                    and "config.yaml" in d["data"]]  # the other one: the Grafana dashboard
    parsed = parse_config(yaml.safe_load(configmap["data"]["config.yaml"]))
    assert [w.rule for w in parsed.waivers] == ["UndeclaredListener"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/opaudit" and mount["readOnly"] is True
    # Monitors and the NetworkPolicy select the agent's pods on the metrics port.
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    for kind, rendered in (("PodMonitor", with_pod_monitor()), ("ServiceMonitor", all_keys)):
        monitor = by_kind(rendered, kind)
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    policy = by_kind(all_keys, "NetworkPolicy")
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9191}],
                                          "from": every["networkPolicy"]["from"]}]
    assert by_kind(all_keys, "Service")["spec"]["ports"][0]["port"] == 9191


@pytest.mark.parametrize(("setting", "message"), [
    ("interval=-1", "/interval"),
    ("fdReader=ebpf", "/fdReader"),
    ("startupJitter=-1", "/startupJitter"),
    ("apiQPS=0", "/apiQPS"),
    ("apiBurst=0.5", "/apiBurst"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ("metrics.port=70000", "/metrics/port"),
    ("imagee.tag=0.1.0", "'imagee' not allowed"),
    ("securityContext.capabilities.add={sys_admin}", "/securityContext/capabilities/add/0"),
    ("image.digest=latest", "/image/digest"),
    ("config.waivers[0].rule=UndeclaredListener", "/config/waivers/0"),  # reason is required
])
def test_a_wrong_value_is_rejected_by_the_schema(setting: str, message: str) -> None:
    result = helm("template", "opaudit", str(CHART_DIR), "--set", setting)
    assert result.returncode != 0, setting
    assert message in result.stderr, result.stderr


# --- drift: the chart's defaults are the Kustomize base ----------------------------------


def without_release_labels(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)

    def strip(labels: dict[str, str] | None) -> None:
        for key in RELEASE_LABELS & set(labels or {}):
            del labels[key]  # type: ignore[union-attr]

    strip(doc["metadata"].get("labels"))
    spec = doc.get("spec", {})
    if doc["kind"] == "DaemonSet":
        strip(spec["selector"]["matchLabels"])
        strip(spec["template"]["metadata"]["labels"])
    if doc["kind"] == "NetworkPolicy":
        strip(spec["podSelector"]["matchLabels"])
    return doc


def test_chart_defaults_render_the_kustomize_base(defaults: list[dict[str, Any]]) -> None:
    base = kustomize()
    for kind in DRIFT_KINDS:
        assert without_release_labels(by_kind(defaults, kind)) == by_kind(base, kind), kind


# --- checkov -----------------------------------------------------------------------------


def test_checkov_fails_nothing_that_is_not_fixed_or_skipped_with_a_reason(
    tmp_path: Path, defaults: list[dict[str, Any]], all_keys: list[dict[str, Any]],
) -> None:
    renders = {"chart-defaults": defaults, "chart-all-keys": all_keys, "kustomize": kustomize()}
    # A control: the same scan must fail a privileged agent, or it is not looking.
    privileged = helm_template("--set", "securityContext.privileged=true")
    files = []
    for name, docs in [*renders.items(), ("privileged", privileged)]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        files.append(path)
    results = checkov(files)
    for path in files[:-1]:
        outcome = results[str(path)]
        assert outcome["failed"] == [], [(c["check_id"], c["resource"]) for c in
                                         outcome["failed"]]
        skipped = {c["check_id"] for c in outcome["skipped"]}
        expected = SKIPPED_CHECKS - ({"CKV_K8S_43"} if path.stem == "chart-all-keys" else set())
        assert skipped == expected, path.stem
        for check in outcome["skipped"]:
            reason = check["check_result"].get("suppress_comment", "")
            assert len(reason) > 20, (check["check_id"], reason)
        assert len(outcome["passed"]) > 80
    assert "CKV_K8S_16" in {c["check_id"] for c in results[str(files[-1])]["failed"]}
