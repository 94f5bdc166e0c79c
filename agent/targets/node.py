"""This host's Kubernetes node name."""

from __future__ import annotations

import os


def node_name(given: str | None = None) -> str | None:
    """`--node` when given, else `NODE_NAME` (the DaemonSet sets it from the downward API's
    spec.nodeName), else None: the caller says what it does without one."""
    return given or os.environ.get("NODE_NAME") or None
