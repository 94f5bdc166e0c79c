"""Staging for the rule tests on the real kernel: the chart's webhook as a runtime starts it
(uid 185, passwd home /nonexistent, read-only root, a tmpfs on the cert dir, Go's dual-stack
listeners), the engine's findings for a pid, and the oracle for a writable path (a real
write as the uid in the process's own root and mount namespace)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from rules.rule_snapshots import CERTS
from staging import Sock, Stage

from agent.audit import AuditRequest, audit
from agent.model import DeclaredContainer, Finding

# The webhook's root: the image's passwd, and the cert dir its emptyDir is mounted on.
WEBHOOK_ROOT_FILES = {"etc/passwd": "spark:x:185:185:spark:/nonexistent:/bin/sh\n",
                      f"{CERTS}/.keep": ""}
GO_SOCKETS = (Sock("tcp", 6, "::", 8080, v6only=0), Sock("tcp", 6, "::", 8081, v6only=0))
WEBHOOK_SOCKETS = (Sock("tcp", 6, "::", 9443, v6only=0), *GO_SOCKETS)
UNPRIVILEGED = {"uid": 185, "gid": 185, "groups": [185], "bounding": [], "no_new_privs": True,
                "seccomp": True, "readonly_root": True, "tmpfs": (CERTS,)}


def findings(pid: int, decl: DeclaredContainer | None) -> tuple[Finding, ...]:
    [target] = audit([AuditRequest(pid, decl)]).targets
    return target.findings


def can_write_as(pid: int, uid: int, directory: str) -> bool:
    """Oracle: create a file as `uid` inside the process's root and mount namespace."""
    probe = f"{directory}/.opaudit-oracle"
    result = subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "-r", "setpriv", f"--reuid={uid}", f"--regid={uid}",
         "--clear-groups", "sh", "-c", f"echo x > {probe} && rm {probe}"],
        capture_output=True, text=True, timeout=30)
    return result.returncode == 0


def spawn_webhook(stage: Stage, env: dict[str, str] | None = None,
                  argv: Sequence[str] | None = None, root: Path | None = None) -> int:
    staged = stage.spawn(WEBHOOK_SOCKETS if argv is None else (), netns=stage.netns(),
                         root=root or stage.rootfs(WEBHOOK_ROOT_FILES), comm="spark-operator",
                         env=env if env is not None else {"HOME": "/nonexistent"},
                         argv=argv, **UNPRIVILEGED)  # type: ignore[arg-type]
    return staged.pid
