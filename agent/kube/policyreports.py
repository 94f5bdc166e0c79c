"""The policy-report CRDs as the API server serves them: discovery and one resource's CRUD.

`served_group_versions` answers which group versions `/apis` lists (the report sink picks
openreports.io/v1alpha1, else wgpolicyk8s.io/v1alpha2); `ReportClient` reads, creates and
replaces the namespaced reports of one of them; `PolicyReportsApi` is both, as the report
sink takes them (`agent.output.policyreports.sink.ReportsApi`). Failures raise `KubeError`.
"""

from __future__ import annotations

from typing import Any

from agent.kube.client import Api, quote_segment


def served_group_versions(api: Api, *, timeout: float | None = None) -> set[str]:
    """Every `group/version` the API server lists under /apis."""
    groups = api.get_json("/apis", timeout=timeout).get("groups") or []
    return {str(version.get("groupVersion")) for group in groups
            for version in group.get("versions") or []}


class ReportClient:
    """Namespaced objects of `group/version` `plural` (the report sink's `ReportWriter`)."""

    def __init__(self, api: Api, group: str, version: str, plural: str) -> None:
        self.api = api
        self.prefix = f"/apis/{group}/{version}"
        self.plural = plural

    def _collection(self, namespace: str) -> str:
        return f"{self.prefix}/namespaces/{quote_segment(namespace)}/{self.plural}"

    def _object(self, namespace: str, name: str) -> str:
        return f"{self._collection(namespace)}/{quote_segment(name)}"

    def get(self, namespace: str, name: str, *, timeout: float) -> dict[str, Any] | None:
        return self.api.get_object(self._object(namespace, name), timeout=timeout)

    def create(self, namespace: str, body: dict[str, Any], *, timeout: float
               ) -> dict[str, Any]:
        return self.api.create_object(self._collection(namespace), body, timeout=timeout)

    def replace(self, namespace: str, name: str, body: dict[str, Any], *, timeout: float
                ) -> dict[str, Any]:
        return self.api.replace_object(self._object(namespace, name), body, timeout=timeout)

    def list(self, label_selector: str, *, timeout: float) -> list[dict[str, Any]]:
        """The objects with these labels, in every namespace."""
        answer = self.api.get_json(f"{self.prefix}/{self.plural}",
                                   query=[("labelSelector", label_selector)], timeout=timeout)
        return list(answer.get("items") or [])

    def delete(self, namespace: str, name: str, *, timeout: float) -> None:
        self.api.delete_object(self._object(namespace, name), timeout=timeout)


class PolicyReportsApi:
    """What the report sink asks of the API: which group versions it serves, then one
    report resource's client."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def served_group_versions(self) -> set[str]:
        return served_group_versions(self.api)

    def resource(self, group: str, version: str, plural: str) -> ReportClient:
        return ReportClient(self.api, group, version, plural)
