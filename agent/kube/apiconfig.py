"""The kubeconfig files `load_api` hands to the official loader, each read first as a
bounded regular file, so a mistake is one line naming the file (`kubernetes.config` would
name none, or read a FIFO forever)."""

from __future__ import annotations

import os
from typing import Any

from agent.collect.userfile import InputFileError, load_user_yaml

# A kubeconfig with inline certificates for many clusters is still far below this.
KUBECONFIG_LIMIT = 16 << 20


def kubeconfig_files(explicit: str | None) -> list[str]:
    """--kubeconfig, else the files of $KUBECONFIG (a path list), else ~/.kube/config."""
    if explicit is not None:
        return [explicit]
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return listed or [os.path.expanduser("~/.kube/config")]


def read_kubeconfig(path: str) -> dict[str, Any]:
    """The kubeconfig at `path`, read as a bounded regular file; InputFileError otherwise."""
    doc = load_user_yaml(path, "kubeconfig", KUBECONFIG_LIMIT)
    if not isinstance(doc, dict):
        problem = "empty" if doc is None else f"not a kubeconfig (a {type(doc).__name__})"
        raise InputFileError("kubeconfig", path, problem)
    return doc
