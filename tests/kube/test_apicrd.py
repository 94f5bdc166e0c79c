"""The test API server's policy-report CRDs: discovery, schema validation, concurrency."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kube.apiserver import ApiServer

from agent.kube.client import load_api
from agent.kube.errors import KubeError
from agent.kube.policyreports import ReportClient, served_group_versions

OPENREPORTS = "openreports.io/v1alpha1"
WGPOLICY = "wgpolicyk8s.io/v1alpha2"


def report(kind: str = "Report", api_version: str = OPENREPORTS) -> dict[str, Any]:
    return {
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": "opaudit-1", "namespace": "ns",
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p",
                                          "uid": "1"}]},
        "scope": {"apiVersion": "v1", "kind": "Pod", "name": "p", "namespace": "ns", "uid": "1"},
        "summary": {"pass": 0, "fail": 1, "warn": 0, "error": 0, "skip": 0},
        "results": [{"source": "opaudit", "policy": "opaudit", "rule": "RunsAsRoot",
                     "result": "fail", "severity": "high", "category": "identity",
                     "message": "m", "properties": {"pid": "1"},
                     "timestamp": {"seconds": 1, "nanos": 0}}],
    }


@pytest.mark.parametrize("served", [(), (OPENREPORTS,), (WGPOLICY,), (OPENREPORTS, WGPOLICY)])
def test_discovery_lists_exactly_the_served_apis(served: tuple[str, ...]) -> None:
    with ApiServer(report_apis=served) as server:
        api = load_api(configuration=server.configuration())
        assert served_group_versions(api) == {"events.k8s.io/v1", *served}
        for group_version in (OPENREPORTS, WGPOLICY):
            found = api.get_object(f"/apis/{group_version}")
            assert (found is not None) == (group_version in served)


@pytest.mark.parametrize(("change", "error"), [
    (lambda r: r["results"][0].update(result="failed"), "results.0.result"),
    (lambda r: r["results"][0].update(severity="urgent"), "results.0.severity"),
    (lambda r: r["results"][0].pop("policy"), "'policy' is a required property"),
    (lambda r: r["results"][0]["timestamp"].pop("nanos"), "'nanos' is a required property"),
    (lambda r: r["results"][0]["properties"].update(pid=1), "results.0.properties.pid"),
    (lambda r: r.update(sourc="opaudit"), "Additional properties"),
    (lambda r: r["metadata"]["ownerReferences"][0].pop("uid"), "ownerReferences[0].uid"),
    (lambda r: r["metadata"].update(name="Not_DNS"), "metadata.name"),
])
def test_an_invalid_report_is_422(change: Any, error: str) -> None:
    with ApiServer(report_apis=(OPENREPORTS,)) as server:
        client = ReportClient(load_api(configuration=server.configuration()),
                              "openreports.io", "v1alpha1", "reports")
        client.create("ns", report(), timeout=5)  # the valid one is accepted
        bad = report()
        bad["metadata"]["name"] = "opaudit-2"
        change(bad)
        with pytest.raises(KubeError) as raised:
            client.create("ns", bad, timeout=5)
        assert raised.value.status == 422 and error in str(raised.value)


def test_wgpolicyk8s_has_no_top_level_source_and_updates_need_the_resource_version() -> None:
    with ApiServer(report_apis=(WGPOLICY,)) as server:
        client = ReportClient(load_api(configuration=server.configuration()),
                              "wgpolicyk8s.io", "v1alpha2", "policyreports")
        body = report("PolicyReport", WGPOLICY)
        with pytest.raises(KubeError) as raised:
            client.create("ns", {**body, "source": "opaudit"}, timeout=5)
        assert raised.value.status == 422
        stored = client.create("ns", body, timeout=5)
        stale = copy.deepcopy(stored)
        stored["summary"]["fail"] = 0
        updated = client.replace("ns", "opaudit-1", stored, timeout=5)
        assert updated["metadata"]["generation"] == 2
        with pytest.raises(KubeError) as conflict:
            client.replace("ns", "opaudit-1", stale, timeout=5)
        assert conflict.value.status == 409
