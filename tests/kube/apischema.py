"""What the test API server checks on every object it receives, as a real API server would.

1. The OpenAPI schema shipped by `kubernetes-validate` (newest version, strict: unknown
   fields are errors).
2. The Event rules the schema cannot express, from kube-apiserver's
   pkg/apis/core/validation/events.go: MicroTime with six fractional digits, series.count
   at least 2, reportingController a qualified name, note at most 1024 bytes, immutable
   fields on update, and the deprecated core fields left unset on events.k8s.io/v1.
Errors are `field: message` strings; an empty list means valid.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv
from referencing import Registry, Resource

K8S_VERSION = kv.latest_version()

MICRO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

# events.k8s.io/v1 field <-> core/v1 field; both are views of one stored object.
EVENT_FIELDS_TO_CORE = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "reportingController": "reportingComponent",
}
IMMUTABLE_EVENT_FIELDS = (
    "regarding", "reason", "note", "eventTime", "action", "related",
    "reportingController", "reportingInstance", "type", "deprecatedSource",
)  # fmt: skip


@functools.lru_cache(maxsize=32)
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    directory = f"kubernetes-json-schema/v{K8S_VERSION}-local-strict"
    schema = kv.schema_contents(f"{directory}/{kind.lower()}-{group_version}.json", K8S_VERSION)
    definitions = kv.schema_contents(f"{directory}/_definitions.json", K8S_VERSION)
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """Violations of the Kubernetes OpenAPI schema for obj's apiVersion and kind."""
    try:
        validator = _validator(str(obj["apiVersion"]), str(obj["kind"]))
    except (KeyError, FileNotFoundError, kv.SchemaNotFoundError):
        return [f"apiVersion/kind: no schema for {obj.get('apiVersion')}/{obj.get('kind')}"]
    errors = []
    for error in validator.iter_errors(obj):
        path = ".".join(str(p) for p in error.absolute_path) or "<root>"
        errors.append(f"{path}: {error.message}")
    return sorted(errors)


def qualified_name_errors(field: str, value: str) -> list[str]:
    prefix, _, name = value.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return [f"{field}: Invalid value: {value!r}: prefix part must be a DNS subdomain"]
    if not name or len(name) > 63 or not QUALIFIED_NAME_PART.match(name):
        return [f"{field}: Invalid value: {value!r}: name part must consist of alphanumeric "
                "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                "character (max 63)"]
    return []


def _micro_time_errors(field: str, value: Any) -> list[str]:
    if not isinstance(value, str) or not MICRO_TIME.match(value):
        return [f"{field}: Invalid value: {value!r}: must be a MicroTime "
                "(RFC 3339 with exactly six fractional digits)"]
    return []


def _series_errors(series: Any) -> list[str]:
    if series is None:
        return []
    errors = []
    if not isinstance(series.get("count"), int) or series["count"] < 2:
        errors.append(f"series.count: Invalid value: {series.get('count')!r}: should be at least 2")
    if not series.get("lastObservedTime"):
        errors.append("series.lastObservedTime: Required value")
    else:
        errors += _micro_time_errors("series.lastObservedTime", series["lastObservedTime"])
    return errors


def _required_short(event: dict[str, Any], field: str, limit: int) -> list[str]:
    value = event.get(field)
    if not value:
        return [f"{field}: Required value"]
    if len(str(value)) > limit:
        return [f"{field}: Invalid value: can have at most {limit} characters"]
    return []


def event_errors(event: dict[str, Any], namespace: str) -> list[str]:
    """An events.k8s.io/v1 Event as kube-apiserver validates a create (strict v1 rules)."""
    errors = schema_errors(event)
    name = str((event.get("metadata") or {}).get("name") or "")
    if not name:
        errors.append("metadata.name: Required value")
    elif len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        errors.append(f"metadata.name: Invalid value: {name!r}: must be a DNS subdomain")
    if not event.get("eventTime"):
        errors.append("eventTime: Required value")
    else:
        errors += _micro_time_errors("eventTime", event["eventTime"])
    errors += _series_errors(event.get("series"))
    if event.get("type") not in ("Normal", "Warning"):
        errors.append(f"type: Invalid value: {event.get('type')!r}: has invalid value")
    for deprecated in ("deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount"):
        if event.get(deprecated):
            errors.append(f"{deprecated}: Invalid value: needs to be unset")
    if any((event.get("deprecatedSource") or {}).values()):
        errors.append("deprecatedSource: Invalid value: needs to be unset")
    errors += _required_short(event, "reportingController", 253)
    errors += qualified_name_errors("reportingController", str(event.get("reportingController")))
    errors += _required_short(event, "reportingInstance", 128)
    errors += _required_short(event, "action", 128)
    errors += _required_short(event, "reason", 128)
    if len(str(event.get("note") or "").encode()) > 1024:
        errors.append("note: Invalid value: can have at most 1024 characters")
    regarding_ns = (event.get("regarding") or {}).get("namespace")
    if regarding_ns and regarding_ns != namespace:
        errors.append(f"regarding.namespace: Invalid value: {regarding_ns!r}: "
                      "does not match event.namespace")
    return errors


def event_update_errors(new: dict[str, Any], old: dict[str, Any], namespace: str) -> list[str]:
    """A patched Event: valid as a whole, and nothing immutable changed."""
    errors = [e for e in event_errors(new, namespace) if not e.startswith("series")]
    if new.get("series") != old.get("series"):
        errors += _series_errors(new.get("series"))
    for field in IMMUTABLE_EVENT_FIELDS:
        if new.get(field) != old.get(field):
            errors.append(f"{field}: Invalid value: field is immutable")
    return errors


def core_event_errors(event: dict[str, Any], namespace: str) -> list[str]:
    """A core/v1 Event (kubelet style): the legacy rules, stricter once eventTime is set."""
    errors = schema_errors(event)
    if not (event.get("metadata") or {}).get("name"):
        errors.append("metadata.name: Required value")
    involved_ns = (event.get("involvedObject") or {}).get("namespace")
    if involved_ns and involved_ns != namespace:
        errors.append(f"involvedObject.namespace: Invalid value: {involved_ns!r}: "
                      "does not match event.namespace")
    if event.get("eventTime"):
        errors += _micro_time_errors("eventTime", event["eventTime"])
        errors += qualified_name_errors("reportingComponent", str(event.get("reportingComponent")))
        errors += _required_short(event, "reportingInstance", 128)
        errors += _required_short(event, "action", 128)
        errors += _required_short(event, "reason", 128)
    return errors


def core_to_events(core: dict[str, Any]) -> dict[str, Any]:
    """A core/v1 Event in its events.k8s.io/v1 shape (how both APIs see one object)."""
    back = {v: k for k, v in EVENT_FIELDS_TO_CORE.items()}
    out = {back.get(k, k): v for k, v in core.items()}
    out["apiVersion"], out["kind"] = "events.k8s.io/v1", "Event"
    return out


def events_to_core(event: dict[str, Any]) -> dict[str, Any]:
    out = {EVENT_FIELDS_TO_CORE.get(k, k): v for k, v in event.items()}
    out["apiVersion"], out["kind"] = "v1", "Event"
    out.setdefault("involvedObject", {})
    return out
