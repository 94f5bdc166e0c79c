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
# containers[].securityContext.capabilities.add[]), a CRD's schema 20 to 50; the loop below
# costs no stack per level, so the bound is only against absurd input.
MAX_DEPTH = 512
KNOWN_SCALARS = 65536  # distinct plain scalars remembered per stream
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


_TYPED = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
          "tag:yaml.org,2002:null")


def _scalar(loader: Any, event: yaml.ScalarEvent) -> Any:
    """The scalar as safe_load types it (int, float, bool, null, str); a timestamp stays text.
    The resolver's own table, looked up as yaml.resolver.BaseResolver.resolve does."""
    tag, value = event.tag, event.value
    if tag is None or tag == "!":
        if not event.implicit[0]:
            return value  # quoted: a string
        for candidate, pattern in loader.yaml_implicit_resolvers.get(value[:1], ()):
            if pattern.match(value):
                tag = candidate
                break
        else:
            return value
    if tag in _TYPED:
        return loader.construct_object(yaml.ScalarNode(tag, value, style=event.style))
    return value


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
    # (container, pending key) per open collection; one loop, dispatching on the event class.
    stack: list[list[Any]] = []
    anchors: dict[str, Any] = {}
    lines: dict[int, int] = {}
    root: list[Any] = []
    check_event, get_event = loader.check_event, loader.get_event
    known: dict[str, Any] = {}
    while check_event():
        event = get_event()
        kind = event.__class__
        if kind is yaml.ScalarEvent:
            if event.tag is None and event.implicit[0]:
                # Manifests repeat their plain scalars ("TCP", "true", names): resolve once.
                plain = event.value
                value = known.get(plain, _NO_KEY)
                if value is _NO_KEY:
                    value = _scalar(loader, event)
                    if len(known) < KNOWN_SCALARS:
                        known[plain] = value
            else:
                value = _scalar(loader, event)
            if event.anchor:
                anchors[event.anchor] = value
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            if len(stack) >= MAX_DEPTH:
                raise ManifestSyntaxError(f"nested deeper than {MAX_DEPTH} levels",
                                          _line(event))
            container: Any = {} if kind is yaml.MappingStartEvent else []
            if kind is yaml.MappingStartEvent:
                lines[id(container)] = _line(event)
            if event.anchor:
                anchors[event.anchor] = container
            stack.append([container, _NO_KEY])
            continue
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            value = stack.pop()[0]
        elif kind is yaml.AliasEvent:
            if event.anchor not in anchors:
                raise ManifestSyntaxError(f"unknown alias *{event.anchor}", _line(event))
            value = anchors[event.anchor]
        elif kind is yaml.DocumentStartEvent:
            stack, anchors, lines, root = [], {}, {}, []
            continue
        elif kind is yaml.DocumentEndEvent:
            yield Document(root[0] if root else None, lines)
            continue
        else:
            continue  # stream start and end
        if not stack:
            root.append(value)
            continue
        top = stack[-1]
        parent = top[0]
        if parent.__class__ is list:
            parent.append(value)
        elif top[1] is _NO_KEY:
            top[1] = value if isinstance(value, (str, int, float, bool)) or value is None \
                else str(value)
        else:
            parent[top[1]] = value
            top[1] = _NO_KEY


_NO_KEY = object()


def _line(event: yaml.Event) -> int:
    mark = event.start_mark
    return mark.line + 1 if mark is not None else 0
