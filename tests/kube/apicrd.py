"""Custom resources for the test API server: the policy-report CRDs opaudit ships.

Each served CRD (from `daemonset/crds/`) brings its discovery entry, its REST paths
(namespaced get/create/update/delete, list in a namespace and across all), validation of
every received object against the CRD's `openAPIV3Schema` (stricter than kube-apiserver,
which prunes unknown fields: here they are errors, so a typo cannot pass unseen) plus the
ObjectMeta rules the schema leaves to the server, optimistic concurrency on update
(resourceVersion, 409 Conflict), and `kubectl get`'s Table view from the CRD's
`additionalPrinterColumns`.
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kube.selector_match import label_matcher

CRD_DIR = Path(__file__).resolve().parents[2] / "daemonset" / "chart" / "files" / "crds"
CRD_FILES = {"openreports.io/v1alpha1": "openreports.io_reports.yaml",
             "wgpolicyk8s.io/v1alpha2": "wgpolicyk8s.io_policyreports.yaml"}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class CrdError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def load_crd(group_version: str) -> dict[str, Any]:
    with open(CRD_DIR / CRD_FILES[group_version]) as f:
        crd: dict[str, Any] = yaml.safe_load(f)
    return crd


def strict(schema: Any) -> Any:
    """The schema with unknown properties forbidden wherever properties are listed."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and out.get("type") == "object":
        out["additionalProperties"] = False
    return out


@dataclass
class CustomResource:
    """One served CRD version and its objects."""

    crd: dict[str, Any]
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = self.crd["spec"]
        self.group, self.names = spec["group"], spec["names"]
        version = spec["versions"][0]
        self.version = version["name"]
        self.columns = version.get("additionalPrinterColumns") or []
        schema = strict(version["schema"]["openAPIV3Schema"])
        schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked below
        self.validator = jsonschema.Draft202012Validator(schema)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def plural(self) -> str:
        return str(self.names["plural"])

    def discovery(self) -> dict[str, Any]:
        resource = {"name": self.plural, "singularName": self.names["singular"],
                    "namespaced": True, "kind": self.names["kind"],
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                    "shortNames": self.names.get("shortNames", [])}
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": self.api_version,
                "resources": [resource]}

    def errors(self, obj: Any, namespace: str) -> list[str]:
        """Schema violations and ObjectMeta rules, as `field: message` lines."""
        if not isinstance(obj, dict):
            return ["<root>: must be an object"]
        found = [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                 for e in self.validator.iter_errors(obj)]
        if (obj.get("apiVersion"), obj.get("kind")) != (self.api_version, self.names["kind"]):
            found.append(f"apiVersion/kind: expected {self.api_version} {self.names['kind']}")
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name or len(name) > 253 or not DNS_SUBDOMAIN.match(name):
            found.append(f"metadata.name: Invalid value: {name!r}: must be a DNS subdomain")
        if meta.get("namespace") not in (None, namespace):
            found.append("metadata.namespace: does not match the request's namespace")
        for key, value in (meta.get("labels") or {}).items():
            if not isinstance(value, str) or len(value) > 63:
                found.append(f"metadata.labels.{key}: Invalid value")
        for index, owner in enumerate(meta.get("ownerReferences") or []):
            for required in ("apiVersion", "kind", "name", "uid"):
                if not owner.get(required):
                    found.append(f"metadata.ownerReferences[{index}].{required}: Required value")
        return sorted(found)


class CustomStore:
    """The objects of the served CRDs; thread-safe; resourceVersions from the server."""

    def __init__(self, served: tuple[str, ...], next_rv: Any) -> None:
        self.resources = {gv: CustomResource(load_crd(gv)) for gv in served}
        self.next_rv = next_rv
        self.lock = threading.Lock()

    def resource(self, group: str, version: str, plural: str) -> CustomResource:
        res = self.resources.get(f"{group}/{version}")
        if res is None or res.plural != plural:
            raise CrdError(404, "NotFound", "the server could not find the requested resource")
        return res

    def create(self, res: CustomResource, namespace: str, body: Any) -> dict[str, Any]:
        errors = res.errors(body, namespace)
        name = str(((body or {}).get("metadata") or {}).get("name") or "")
        if errors:
            raise _invalid(res, name, errors)
        with self.lock:
            if (namespace, name) in res.objects:
                raise CrdError(409, "AlreadyExists",
                               f'{res.plural}.{res.group} "{name}" already exists')
            obj = copy.deepcopy(body)
            obj["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), generation=1,
                                   resourceVersion=str(self.next_rv()),
                                   creationTimestamp=_now())
            res.objects[(namespace, name)] = obj
            return copy.deepcopy(obj)

    def replace(self, res: CustomResource, namespace: str, name: str, body: Any
                ) -> dict[str, Any]:
        errors = res.errors(body, namespace)
        if errors:
            raise _invalid(res, name, errors)
        with self.lock:
            old = self.get(res, namespace, name)
            sent = str(body["metadata"].get("resourceVersion") or "")
            if sent != old["metadata"]["resourceVersion"]:
                raise CrdError(409, "Conflict", f'Operation cannot be fulfilled on {res.plural}.'
                               f'{res.group} "{name}": the object has been modified; please '
                               "apply your changes to the latest version and try again")
            obj = copy.deepcopy(body)
            keep = ("uid", "creationTimestamp", "namespace")
            obj["metadata"].update({k: old["metadata"][k] for k in keep})
            obj["metadata"]["generation"] = old["metadata"]["generation"] + 1
            obj["metadata"]["resourceVersion"] = str(self.next_rv())
            res.objects[(namespace, name)] = obj
            return copy.deepcopy(obj)

    def get(self, res: CustomResource, namespace: str, name: str) -> dict[str, Any]:
        obj = res.objects.get((namespace, name))
        if obj is None:
            raise CrdError(404, "NotFound", f'{res.plural}.{res.group} "{name}" not found')
        return copy.deepcopy(obj)

    def delete(self, res: CustomResource, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            self.get(res, namespace, name)
            del res.objects[(namespace, name)]
        return {"kind": "Status", "apiVersion": "v1", "status": "Success"}

    def list(self, res: CustomResource, namespace: str | None, table: bool,
             label_selector: str | None = None) -> dict[str, Any]:
        try:
            matches = label_matcher(label_selector or "")
        except ValueError as exc:
            raise CrdError(400, "BadRequest", str(exc)) from None
        with self.lock:
            items = [copy.deepcopy(o) for (ns, _), o in sorted(res.objects.items())
                     if (namespace is None or ns == namespace)
                     and matches((o.get("metadata") or {}).get("labels") or {})]
        if table:
            return table_of(res, items)
        return {"kind": f"{res.names['kind']}List", "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(self.next_rv(peek=True))}, "items": items}


def table_of(res: CustomResource, items: list[dict[str, Any]]) -> dict[str, Any]:
    """meta.k8s.io/v1 Table, as kube-apiserver renders a CRD's additionalPrinterColumns."""
    columns = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
                "description": "Name of the object"}]
    columns += [{"name": c["name"], "type": c["type"], "format": c.get("format", ""),
                 "priority": c.get("priority", 0), "description": c.get("description", "")}
                for c in res.columns]
    rows = [{"cells": [item["metadata"]["name"],
                       *(_cell(item, c) for c in res.columns)],
             "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": item["metadata"]}} for item in items]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
            "columnDefinitions": columns, "rows": rows}


def _cell(item: dict[str, Any], column: dict[str, Any]) -> Any:
    value: Any = item
    for key in column["jsonPath"].lstrip(".").split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if column["type"] == "date" and isinstance(value, str):
        return _age(value)
    return value


def _age(stamp: str) -> str:
    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - then).total_seconds()))
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"


def _invalid(res: CustomResource, name: str, errors: list[str]) -> CrdError:
    return CrdError(422, "Invalid",
                    f'{res.names["kind"]}.{res.group} "{name}" is invalid: [{", ".join(errors)}]')


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
