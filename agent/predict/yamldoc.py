"""YAML streams as `helm template` and `kubectl kustomize` print them, built from parser
events without recursion, with the line of every mapping and a nesting limit.

libyaml's composer (PyYAML's CSafeLoader) recurses once per nesting level in C: a deep
`[[[[...` crashes the process with SIGSEGV instead of raising. The event stream is flat, so
building the documents from it in a loop bounds the depth and costs no stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

# A pod template sits about 12 levels deep (CronJob: spec.jobTemplate.spec.template.spec.
# containers[].securityContext.capabilities.add[]); 64 leaves room for any real manifest.
MAX_DEPTH = 64
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestSyntaxError(ValueError):
    """Not YAML, or nested beyond MAX_DEPTH; `line` is 1-based (0 when unknown)."""

    def __init__(self, problem: str, line: int) -> None:
        self.problem = problem
        self.line = line
        super().__init__(f"{problem} at line {line}" if line else problem)


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a stream, and the 1-based line of each mapping in it (by id)."""

    data: Any
    lines: dict[int, int]

    def line_of(self, mapping: object, default: int = 0) -> int:
        return self.lines.get(id(mapping), default)


def _scalar(loader: Any, event: yaml.ScalarEvent) -> Any:
    """The scalar as safe_load types it (int, float, bool, null, str); a timestamp stays text."""
    tag = event.tag
    if tag is None or tag == "!":
        tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
    node = yaml.ScalarNode(tag, event.value, style=event.style)
    if tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
               "tag:yaml.org,2002:null"):
        return loader.construct_object(node)
    return event.value


def iter_documents(text: str) -> Iterator[Document]:
    """Every document of the stream, in order; ManifestSyntaxError at the first problem."""
    loader = _Loader(text)
    try:
        yield from _documents(loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ManifestSyntaxError(f"not valid YAML: {exc.problem or exc.context or 'syntax'}",
                                  mark.line + 1 if mark is not None else 0) from None
    except yaml.YAMLError as exc:
        raise ManifestSyntaxError(f"not valid YAML: {' '.join(str(exc).split())}", 0) from None
    finally:
        loader.dispose()


def _documents(loader: Any) -> Iterator[Document]:
    stack: list[list[Any]] = []  # [container, pending key or marker] per open collection
    anchors: dict[str, Any] = {}
    lines: dict[int, int] = {}
    root: list[Any] = []
    while loader.check_event():
        event = loader.get_event()
        if isinstance(event, yaml.DocumentStartEvent):
            stack, anchors, lines, root = [], {}, {}, []
            continue
        if isinstance(event, yaml.DocumentEndEvent):
            yield Document(root[0] if root else None, lines)
            continue
        if isinstance(event, (yaml.StreamStartEvent, yaml.StreamEndEvent)):
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            value = stack.pop()[0]
            _place(stack, root, value)
            continue
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise ManifestSyntaxError(f"unknown alias *{event.anchor}",
                                          _line(event))
            _place(stack, root, anchors[event.anchor])
            continue
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(stack) >= MAX_DEPTH:
                raise ManifestSyntaxError(f"nested deeper than {MAX_DEPTH} levels",
                                          _line(event))
            container: Any = {} if isinstance(event, yaml.MappingStartEvent) else []
            if isinstance(container, dict):
                lines[id(container)] = _line(event)
            if event.anchor:
                anchors[event.anchor] = container
            stack.append([container, _NO_KEY])
            continue
        value = _scalar(loader, event)
        if event.anchor:
            anchors[event.anchor] = value
        _place(stack, root, value)


_NO_KEY = object()


def _line(event: yaml.Event) -> int:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else 0


def _place(stack: list[list[Any]], root: list[Any], value: Any) -> None:
    if not stack:
        root.append(value)
        return
    top = stack[-1]
    container = top[0]
    if isinstance(container, list):
        container.append(value)
    elif top[1] is _NO_KEY:
        top[1] = value if isinstance(value, (str, int, float, bool)) or value is None \
            else str(value)
    else:
        container[top[1]] = value
        top[1] = _NO_KEY
