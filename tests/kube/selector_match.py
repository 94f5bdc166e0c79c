"""Label and field selectors as kube-apiserver parses them.

Labels: a port of k8s.io/apimachinery/pkg/labels/selector.go (Parse): `k=v`, `k==v`, `k!=v`,
`k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>1`, `k<1`, comma-joined (AND); keys are
qualified names, values label values (IsQualifiedName, IsValidLabelValue).
Fields: `path=v`, `path==v`, `path!=v` on spec.nodeName, metadata.name, metadata.namespace,
status.phase. A selector that does not parse raises ValueError (the server answers 400).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_EQ = re.compile(r"^(?P<key>[A-Za-z0-9./_-]+)\s*(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)$")
POD_FIELDS = ("spec.nodeName", "metadata.name", "metadata.namespace", "status.phase")
# The lexer: these end an identifier; the operators are their longest match.
_WHITESPACE = " \t\r\n"
_SPECIAL = "=!(),<>"
_OPERATORS = ("!=", "==", "=", "!", "(", ")", ",", ">", "<")
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
Labels = dict[str, str]


def _tokens(selector: str) -> list[str]:
    """Identifiers and operators; "" ends the list (apimachinery's EndOfStringToken)."""
    tokens, i = [], 0
    while i < len(selector):
        char = selector[i]
        if char in _WHITESPACE:
            i += 1
        elif char in _SPECIAL:
            op = next(o for o in _OPERATORS if selector.startswith(o, i))
            tokens.append(op)
            i += len(op)
        else:
            j = i
            while j < len(selector) and selector[j] not in _WHITESPACE + _SPECIAL:
                j += 1
            tokens.append(selector[i:j])
            i = j
    return [*tokens, ""]


def _valid_key(key: str) -> str:
    prefix, slash, name = key.rpartition("/")
    if (len(name) > 63 or not re.fullmatch(_NAME, name)
            or slash and (len(prefix) > 253 or not re.fullmatch(_SUBDOMAIN, prefix))):
        raise ValueError(f"invalid label key {key!r}")
    return key


def _valid_value(value: str) -> str:
    if len(value) > 63 or value and not re.fullmatch(_NAME, value):
        raise ValueError(f"invalid label value {value!r}")
    return value


def _is_identifier(token: str) -> bool:
    """`in` and `notin` are identifiers too, except where an operator is expected."""
    return token != "" and token not in _OPERATORS


def _requirement(tokens: list[str]) -> Callable[[Labels], bool]:
    """One requirement from the front of `tokens` (consumed)."""
    absent = tokens[0] == "!"
    if absent:
        tokens.pop(0)
    key = tokens.pop(0)
    if not _is_identifier(key):
        raise ValueError(f"found {key!r}, expected: identifier")
    _valid_key(key)
    if absent:
        return lambda labels: key not in labels
    if tokens[0] in ("", ","):
        return lambda labels: key in labels
    op = tokens.pop(0)
    if op in ("in", "notin"):
        values = _value_set(tokens)
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if op not in ("=", "==", "!=", ">", "<"):
        raise ValueError(f"found {op!r}, expected: '=', '!=', '==', 'in', notin'")
    value = "" if tokens[0] in ("", ",") else tokens.pop(0)
    if not (value == "" or _is_identifier(value)):
        raise ValueError(f"found {value!r}, expected: identifier")
    _valid_value(value)
    if op in (">", "<"):
        bound = _int64(value)
        if bound is None:
            raise ValueError("for 'Gt', 'Lt' operators, the value must be an integer")
        return lambda labels: _compare(labels.get(key), op, bound)
    if op == "!=":
        return lambda labels: labels.get(key) != value
    return lambda labels: labels.get(key) == value


def _int64(text: str | None) -> int | None:
    """strconv.ParseInt(text, 10, 64), None on error."""
    if text is None or not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    number = int(text)
    return number if -(1 << 63) <= number < 1 << 63 else None


def _compare(label: str | None, op: str, bound: int) -> bool:
    number = _int64(label)
    return number is not None and (number > bound if op == ">" else number < bound)


def _value_set(tokens: list[str]) -> set[str]:
    """`(a,b)`, as apimachinery's parseValues and parseIdentifiersList read it: `()` is the
    empty value; a comma reads the comma after it too, so `(a,,b)` and `(,)` parse and
    `(a,,)` does not."""
    if tokens.pop(0) != "(":
        raise ValueError("expected: '('")
    if tokens[0] == ")":
        tokens.pop(0)
        return {""}
    values: set[str] = set()
    while True:
        token = tokens.pop(0)
        if _is_identifier(token):
            values.add(token)
            if tokens[0] == ")":
                break
            if tokens[0] != ",":
                raise ValueError(f"found {tokens[0]!r}, expected: ',' or ')'")
        elif token == ",":
            if not values:
                values.add("")
            if tokens[0] == ")":
                values.add("")
                break
            if tokens[0] == ",":
                tokens.pop(0)
                values.add("")
        else:
            raise ValueError(f"found {token!r}, expected: ',', or identifier")
    tokens.pop(0)  # the ")"
    for value in values:
        _valid_value(value)
    return values


def label_matcher(selector: str) -> Callable[[Labels], bool]:
    tokens = _tokens(selector)
    requirements: list[Callable[[Labels], bool]] = []
    while tokens[0] != "":
        if not (_is_identifier(tokens[0]) or tokens[0] == "!"):
            raise ValueError(f"found {tokens[0]!r}, expected: !, identifier, or 'end of string'")
        requirements.append(_requirement(tokens))
        separator = tokens.pop(0)
        if separator == "":
            break
        if separator != ",":
            raise ValueError(f"found {separator!r}, expected: ',' or 'end of string'")
        if not (_is_identifier(tokens[0]) or tokens[0] == "!"):
            raise ValueError(f"found {tokens[0]!r}, expected: identifier after ','")
    return lambda labels: all(r(labels) for r in requirements)


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
