"""`--config FILE` (YAML): extra profiles, waivers and severity overrides.

    profiles:
    - name: my-api
      selector: {app.kubernetes.io/name: my-api}   # or "key=value,key2=value2"
      writablePaths: [/data]
      tmpMatters: true                              # optional: it writes $TMPDIR or /tmp
      homeMatters: false                            # optional: nothing under HOME
      ports: [9090]
      uid: 1000
      helmValuesPrefix: api                         # optional
    waivers:
    - rule: UndeclaredListener
      reason: "pprof is reviewed and firewalled"    # mandatory
      namespace: spark-operator                     # namespace and/or selector
      selector: {app.kubernetes.io/component: controller}
    severityOverrides:
      EmptyDirWithoutSizeLimit: medium

Every error is one line that names the field: `config: waivers[0].reason: required`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.model import AuditConfig, Profile, Severity, Waiver
from agent.rules.catalogue import RULE_IDS
from agent.userfile import InputFileError, load_user_yaml

TOP_LEVEL = ("profiles", "waivers", "severityOverrides")
PROFILE_FIELDS = ("name", "selector", "writablePaths", "tmpMatters", "homeMatters", "ports",
                  "uid", "helmValuesPrefix")
WAIVER_FIELDS = ("rule", "reason", "namespace", "selector")
CONFIG_LIMIT = 1 << 20  # a hand-written file of profiles and waivers


class ConfigError(ValueError):
    """A bad --config; `str()` is one line naming the field."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"config: {where}: {problem}" if where else f"config: {problem}")


def _no_unknown(value: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in value:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"{prefix}{key}", f"unknown field (known: {', '.join(allowed)})")


def _text(value: Any, where: str, required: bool = True) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ConfigError(where, "required")
        return None
    if not isinstance(value, str):
        raise ConfigError(where, f"must be a string, got {type(value).__name__}")
    return value.strip()


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(where, f"must be a list, got {type(value).__name__}")
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(where, f"must be a mapping, got {type(value).__name__}")
    return value


def _selector(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """A matchLabels mapping, or `key=value,key2=value2` as `kubectl -l` takes it."""
    if value is None:
        return ()
    if isinstance(value, str):
        pairs = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            key, sep, val = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(where, f"{part!r} is not key=value")
            pairs.append((key.strip(), val.strip().lstrip("=").strip()))
        return tuple(sorted(pairs))
    labels = _mapping(value, where)
    for key, val in labels.items():
        if not isinstance(val, str | int | float) or isinstance(val, bool):
            raise ConfigError(f"{where}.{key}", "label value must be a string")
    return tuple(sorted((str(k), str(v)) for k, v in labels.items()))


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(where, f"must be a port number 1-65535, got {value!r}")
    return value


def _path(value: Any, where: str) -> str:
    text = _text(value, where)
    if text is None or not text.startswith("/"):
        raise ConfigError(where, f"must be an absolute path, got {value!r}")
    return text


def _flag(value: Any, where: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ConfigError(where, f"must be true or false, got {value!r}")
    return value


def _profile(raw: Any, where: str) -> Profile:
    entry = _mapping(raw, where)
    _no_unknown(entry, PROFILE_FIELDS, where)
    name = _text(entry.get("name"), f"{where}.name")
    selector = _selector(entry.get("selector"), f"{where}.selector")
    if not selector:
        raise ConfigError(f"{where}.selector", "required (a profile must select pods by label)")
    uid = entry.get("uid")
    if uid is not None and (isinstance(uid, bool) or not isinstance(uid, int) or uid < 0):
        raise ConfigError(f"{where}.uid", f"must be a non-negative integer, got {uid!r}")
    paths = _list(entry.get("writablePaths"), f"{where}.writablePaths")
    ports = _list(entry.get("ports"), f"{where}.ports")
    return Profile(
        name=name or "",
        selector=selector,
        writable_paths=tuple(_path(p, f"{where}.writablePaths[{i}]") for i, p in enumerate(paths)),
        ports=tuple(_port(p, f"{where}.ports[{i}]") for i, p in enumerate(ports)),
        expected_uid=uid,
        helm_values_prefix=_text(entry.get("helmValuesPrefix"), f"{where}.helmValuesPrefix",
                                 required=False),
        temp_matters=_flag(entry.get("tmpMatters"), f"{where}.tmpMatters"),
        home_matters=_flag(entry.get("homeMatters"), f"{where}.homeMatters"),
    )


def _rule_id(value: Any, where: str) -> str:
    rule = _text(value, where) or ""
    if rule not in RULE_IDS:
        raise ConfigError(where, f"unknown rule {rule!r}")
    return rule


def _waiver(raw: Any, where: str) -> Waiver:
    entry = _mapping(raw, where)
    _no_unknown(entry, WAIVER_FIELDS, where)
    rule = _rule_id(entry.get("rule"), f"{where}.rule")
    reason = _text(entry.get("reason"), f"{where}.reason") or ""
    namespace = _text(entry.get("namespace"), f"{where}.namespace", required=False)
    selector = _selector(entry.get("selector"), f"{where}.selector")
    if namespace is None and not selector:
        raise ConfigError(where, "needs a namespace and/or a selector")
    return Waiver(rule=rule, reason=reason, namespace=namespace, selector=selector)


def _overrides(raw: Any, where: str) -> tuple[tuple[str, Severity], ...]:
    if raw is None:
        return ()
    found = []
    for rule, text in _mapping(raw, where).items():
        rule_id = _rule_id(rule, f"{where}.{rule}")
        try:
            found.append((rule_id, Severity.parse(str(text))))
        except ValueError as exc:
            raise ConfigError(f"{where}.{rule}", str(exc)) from None
    return tuple(found)


def parse_config(raw: Any) -> AuditConfig:
    """An AuditConfig from already-loaded YAML; ConfigError names the first bad field."""
    if raw is None:
        return AuditConfig()
    top = _mapping(raw, "")
    _no_unknown(top, TOP_LEVEL, "")
    profiles = _list(top.get("profiles"), "profiles")
    waivers = _list(top.get("waivers"), "waivers")
    return AuditConfig(
        profiles=tuple(_profile(p, f"profiles[{i}]") for i, p in enumerate(profiles)),
        waivers=tuple(_waiver(w, f"waivers[{i}]") for i, w in enumerate(waivers)),
        severity_overrides=_overrides(top.get("severityOverrides"), "severityOverrides"),
    )


def load_config(path: str) -> AuditConfig:
    try:
        raw = load_user_yaml(path, "config", CONFIG_LIMIT)
    except InputFileError as exc:
        raise ConfigError("", str(exc).removeprefix("config ")) from None
    return parse_config(raw)
