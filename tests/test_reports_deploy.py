"""Deploying `--sink reports`: the Kustomize components and the chart grant exactly the
verbs on the one report resource in use (and nothing without it), pass arguments the agent
accepts, ship the CRDs only when asked, and ship the Grafana dashboard as a ConfigMap."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from manifests import CHART_DIR, DAEMONSET_DIR, by_kind, documents, helm_template, kustomize, need

from agent.cli import build_parser

REPORT_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]
APIS = {"openreports": ("openreports.io", "reports", "openreports.io_reports.yaml"),
        "wgpolicyk8s": ("wgpolicyk8s.io", "policyreports", "wgpolicyk8s.io_policyreports.yaml")}
DASHBOARD = DAEMONSET_DIR / "grafana" / "opaudit.json"


def overlay(tmp_path: Path, api: str) -> list[dict[str, Any]]:
    """The base with the reports component, as a user's overlay would use it."""
    base = os.path.relpath(DAEMONSET_DIR, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [base], "components": [f"{base}/components/reports-{api}"]}))
    result = subprocess.run([need("kubectl"), "kustomize", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def report_rules(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = by_kind(rendered, "ClusterRole")["rules"]
    return [r for r in rules if r["apiGroups"] != [""] and r["apiGroups"] != ["events.k8s.io"]]


def agent_args(rendered: list[dict[str, Any]]) -> list[str]:
    (container,) = by_kind(rendered, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    return args


def test_without_reports_nothing_is_granted() -> None:
    assert report_rules(kustomize()) == []
    assert report_rules(helm_template()) == []
    assert not any("--sink" in a for a in agent_args(helm_template()))


@pytest.mark.parametrize("api", sorted(APIS))
def test_reports_grant_exactly_the_one_resource_in_kustomize_and_the_chart(
    tmp_path: Path, api: str
) -> None:
    group, resource, _ = APIS[api]
    expected = [{"apiGroups": [group], "resources": [resource], "verbs": REPORT_VERBS}]
    kustomized = overlay(tmp_path, api)
    charted = helm_template("--set", "reports.enabled=true", "--set", f"reports.api={api}")
    for rendered in (kustomized, charted):
        assert report_rules(rendered) == expected
        args = agent_args(rendered)
        assert args[-4:] == ["--sink=events", "--sink=reports", f"--report-api={api}",
                             "--report-max-results=100"]
        parsed = build_parser().parse_args(args)  # the agent's own parser takes them
        assert (parsed.sink, parsed.report_api) == (["events", "reports"], api)
    # the two ways of deploying agree on what is granted and run
    assert by_kind(kustomized, "ClusterRole")["rules"] == by_kind(charted, "ClusterRole")["rules"]


def crds(*settings: str) -> list[dict[str, Any]]:
    args = [arg for setting in settings for arg in ("--set", setting)]
    return [d for d in helm_template(*args) if d["kind"] == "CustomResourceDefinition"]


@pytest.mark.parametrize("api", sorted(APIS))
def test_the_chart_installs_the_crd_of_its_api_only_when_asked(api: str) -> None:
    assert not crds("reports.enabled=true", f"reports.api={api}")
    # Reports off: no CRD, whatever installCRDs says (and a CRD a release installed stays:
    # keep, below).
    assert not crds(f"reports.api={api}", "reports.installCRDs=true")
    (crd,) = crds("reports.enabled=true", f"reports.api={api}", "reports.installCRDs=true")
    group, resource, filename = APIS[api]
    assert crd["metadata"]["name"] == f"{resource}.{group}"
    shipped = yaml.safe_load((CHART_DIR / "files" / "crds" / filename).read_text())
    metadata = crd["metadata"]
    assert {k: v for k, v in crd.items() if k != "metadata"} == {
        k: v for k, v in shipped.items() if k != "metadata"}
    assert metadata == {**shipped["metadata"], "labels": metadata["labels"],
                        "annotations": {"helm.sh/resource-policy": "keep"}}


def test_helm_uninstall_never_deletes_the_crd() -> None:
    """Deleting a CRD deletes every object of its kind, other tools' Reports included. Helm
    skips a rendered object annotated `helm.sh/resource-policy: keep` when an uninstall,
    upgrade or rollback would delete it; crds/ would install both CRDs on every install."""
    assert not (CHART_DIR / "crds").exists()
    for api in APIS:
        (crd,) = crds("reports.enabled=true", f"reports.api={api}", "reports.installCRDs=true")
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        # Helm's object, labelled as Helm labels it: not the agent's (opaudit labels the
        # reports it writes, never the CRD).
        labels = crd["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels == by_kind(helm_template(), "ServiceAccount")["metadata"]["labels"]
    for filename in {f for _, _, f in APIS.values()}:
        shipped = yaml.safe_load((CHART_DIR / "files" / "crds" / filename).read_text())
        assert "labels" not in shipped["metadata"], filename  # `kubectl apply -f` it: yours


def test_the_chart_ships_the_dashboard_and_monitors_when_asked() -> None:
    assert not [d for d in helm_template() if d["kind"] in ("ConfigMap", "PodMonitor")]
    for monitor, kind in (("podMonitor", "PodMonitor"), ("serviceMonitor", "ServiceMonitor")):
        rendered = helm_template("--set", "grafana.dashboard.enabled=true",
                                 "--set", f"{monitor}.enabled=true")
        (configmap,) = [d for d in rendered if d["kind"] == "ConfigMap"]
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(configmap["data"]["opaudit.json"]) == json.loads(DASHBOARD.read_text())
        pod_labels = by_kind(rendered, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
        selector = by_kind(rendered, kind)["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
