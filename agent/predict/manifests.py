"""The inputs of `opaudit lint`: files, directories and stdin holding manifests as `helm
template` or `kubectl kustomize` print them, down to each container of each pod template.

Every file is read through the bounded reader `--pod-spec` uses; a problem is one line
naming the file (and the line), raised as ManifestError.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.model import ManifestObject
from agent.predict.yamldoc import Document, ManifestSyntaxError, iter_documents
from agent.userfile import STDIN, InputFileError, read_user_file

# One rendered chart or kustomization; a 1,000-workload file is about 2 MiB.
FILE_LIMIT = 32 << 20
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# Where each kind keeps its pod template (core/v1, apps/v1, batch/v1).
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class ManifestError(ValueError):
    """An input that cannot be linted; `str()` is one line naming the file and line."""


@dataclass(frozen=True, slots=True)
class PodTemplate:
    """A workload's pod template as a Pod (what `declared_from_pod` reads), with where each
    of its containers is written."""

    pod: Mapping[str, Any]
    kind: str
    file: str
    containers: tuple[tuple[str, bool, int], ...]  # (name, init, line)

    def source(self, line: int) -> ManifestObject:
        meta = self.pod.get("metadata") or {}
        return ManifestObject(kind=self.kind, namespace=str(meta.get("namespace") or ""),
                              name=str(meta.get("name") or ""), file=self.file, line=line)


@dataclass(frozen=True, slots=True)
class Inputs:
    templates: tuple[PodTemplate, ...]
    skipped: tuple[tuple[str, int], ...]  # kinds without a pod template, counted


def manifest_files(paths: Sequence[str]) -> list[str]:
    """The files to read: each path as given, a directory's manifests sorted, recursively."""
    found: list[str] = []
    for path in paths:
        if path == STDIN:
            found.append(path)
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise ManifestError(f"manifest {path}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(mode):
            found.append(path)
            continue
        for top, dirs, files in os.walk(path):
            dirs.sort()
            found += [os.path.join(top, f) for f in sorted(files)
                      if f.endswith(MANIFEST_SUFFIXES) and not f.startswith(".")]
    return found


def read_inputs(paths: Sequence[str]) -> Inputs:
    templates: list[PodTemplate] = []
    skipped: Counter[str] = Counter()
    if list(paths).count(STDIN) > 1:
        raise ManifestError("stdin (-) can be read only once")
    for path in manifest_files(paths or [STDIN]):
        shown = "stdin" if path == STDIN else path
        try:
            text = read_user_file(path, "manifest", FILE_LIMIT)
        except InputFileError as exc:
            raise ManifestError(str(exc)) from None
        found = parse_manifests(text, shown)
        templates += found.templates
        skipped.update(dict(found.skipped))
    return Inputs(tuple(templates), tuple(sorted(skipped.items())))


def parse_manifests(text: str, shown: str) -> Inputs:
    """The pod templates of one file's text (`shown` names it in errors and findings)."""
    templates: list[PodTemplate] = []
    skipped: Counter[str] = Counter()
    try:
        for document in iter_documents(text):
            for obj in _objects(document.data, document, shown):
                template = _template(obj, document, shown)
                if template is None:
                    skipped[str(obj.get("kind") or "(no kind)")] += 1
                else:
                    templates.append(template)
    except ManifestSyntaxError as exc:
        where = f"{shown}:{exc.line}" if exc.line else shown
        raise ManifestError(f"manifest {where}: {exc.problem}") from None
    return Inputs(tuple(templates), tuple(sorted(skipped.items())))


def _objects(data: Any, document: Document, path: str) -> Iterator[Mapping[str, Any]]:
    """The objects of a document: itself, or the items of a `List` kind (v1 List,
    PodList, ...), nested Lists included, in order (a loop: no recursion per level)."""
    pending: list[Any] = [data]
    while pending:
        item = pending.pop()
        if item is None:
            continue  # an empty document (helm prints `---` between templates)
        if not isinstance(item, dict):
            raise ManifestError(f"manifest {path}: a document is a {type(item).__name__}, "
                                "not a Kubernetes object")
        kind = str(item.get("kind") or "")
        if kind.endswith("List") and isinstance(item.get("items"), list):
            pending.extend(reversed(item["items"]))
            continue
        yield item


def _dig(obj: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    value: Any = obj
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _template(obj: Mapping[str, Any], document: Document, path: str) -> PodTemplate | None:
    kind = str(obj.get("kind") or "")
    if kind not in TEMPLATE_PATHS:
        return None
    keys = TEMPLATE_PATHS[kind]
    template = obj if not keys else _dig(obj, keys)
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    if not isinstance(meta, dict):
        meta = {}
    name = str(meta.get("name") or "")
    line = document.line_of(obj)
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        raise ManifestError(f"manifest {path}:{line}: {kind} {name!r} has no pod template "
                            f"({'.'.join(keys + ('spec',))})")
    spec = template["spec"]
    tmeta: Mapping[str, Any] = template.get("metadata") or {}
    if not isinstance(tmeta, dict):
        tmeta = {}
    # The pod carries the template's labels (profiles match on them) and the object's name.
    pod = {"metadata": {"namespace": meta.get("namespace"), "name": name,
                        "labels": tmeta.get("labels") or meta.get("labels") or {}},
           "spec": spec}
    containers: list[tuple[str, bool, int]] = []
    for field, init in (("initContainers", True), ("containers", False)):
        entries = spec.get(field) or []
        if not isinstance(entries, list):
            raise ManifestError(f"manifest {path}:{line}: {kind} {name!r}: spec.{field} "
                                "is not a list")
        for entry in entries:
            if not isinstance(entry, dict) or not entry.get("name"):
                raise ManifestError(f"manifest {path}:{document.line_of(entry, line)}: {kind} "
                                    f"{name!r}: a container of spec.{field} has no name")
            containers.append((str(entry["name"]), init, document.line_of(entry, line)))
    if not any(not init for _, init, _ in containers):
        raise ManifestError(f"manifest {path}:{line}: {kind} {name!r} has no containers")
    return PodTemplate(pod=pod, kind=kind, file=path, containers=tuple(containers))
