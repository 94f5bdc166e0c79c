"""Label and field selectors as kube-apiserver parses them (the subset tests need).

Labels: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma-joined (AND).
Fields: `path=v`, `path==v`, `path!=v` on spec.nodeName, metadata.name, metadata.namespace,
status.phase. A selector that does not parse raises ValueError (the server answers 400).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_SET = re.compile(r"^(?P<key>[A-Za-z0-9./_-]+)\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)$")
_EQ = re.compile(r"^(?P<key>[A-Za-z0-9./_-]+)\s*(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)$")
_KEY = re.compile(r"^(?P<neg>!?)\s*(?P<key>[A-Za-z0-9./_-]+)$")
POD_FIELDS = ("spec.nodeName", "metadata.name", "metadata.namespace", "status.phase")


def split_requirements(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def _label_requirement(text: str) -> Callable[[dict[str, str]], bool]:
    if m := _SET.match(text):
        key, values = m["key"], {v.strip() for v in m["values"].split(",") if v.strip()}
        if m["op"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _EQ.match(text):
        key, value = m["key"], m["value"]
        if m["op"] == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _KEY.match(text):
        key, negated = m["key"], bool(m["neg"])
        return lambda labels: (key in labels) != negated
    raise ValueError(f"unable to parse requirement: {text!r}")


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    requirements = [_label_requirement(r) for r in split_requirements(selector)]
    return lambda labels: all(r(labels) for r in requirements)


def _lookup(obj: Any, path: str) -> str:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return "" if obj is None else str(obj)


def field_matcher(selector: str) -> Callable[[dict[str, Any]], bool]:
    checks = []
    for text in split_requirements(selector):
        m = _EQ.match(text)
        if m is None:
            raise ValueError(f"invalid field selector: {text!r}")
        if m["key"] not in POD_FIELDS:
            raise ValueError(f'field label not supported: {m["key"]}')
        checks.append((m["key"], m["op"] == "!=", m["value"]))
    return lambda obj: all((_lookup(obj, k) == v) != neg for k, neg, v in checks)
