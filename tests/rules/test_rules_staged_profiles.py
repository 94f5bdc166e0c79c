"""Profile precision on the real kernel: the chart's default webhook as a runtime starts it.

uid 185 with passwd home /nonexistent and HOME=/nonexistent (runc sets HOME from passwd), a
read-only root with no /tmp emptyDir, a tmpfs on the cert dir, Go's dual-stack listeners.
Oracle for /tmp: a real write as uid 185 in the process's own root fails.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from rule_snapshots import declared
from staging import STAGE_PYTHON, Sock, Stage

from agent.audit import AuditRequest, audit
from agent.model import DeclaredContainer, Finding, Severity

CERTS = "/etc/k8s-webhook-server/serving-certs"
PASSWD = {"etc/passwd": "spark:x:185:185:spark:/nonexistent:/bin/sh\n", f"{CERTS}/.keep": ""}
WEBHOOK_SOCKETS = (Sock("tcp", 6, "::", 9443, v6only=0), Sock("tcp", 6, "::", 8080, v6only=0),
                   Sock("tcp", 6, "::", 8081, v6only=0))
UNPRIVILEGED = {"uid": 185, "gid": 185, "groups": [185], "bounding": [], "no_new_privs": True,
                "seccomp": True, "readonly_root": True, "tmpfs": (CERTS,)}


def webhook_decl() -> DeclaredContainer:
    # The staged netns's veth0 address is the pod IP (staging.Stage.netns).
    return declared("spark-operator-webhook.yaml", pod_ips=("192.0.2.10",))


def findings(pid: int, decl: DeclaredContainer | None) -> tuple[Finding, ...]:
    [target] = audit([AuditRequest(pid, decl)]).targets
    return target.findings


def by_rule(found: Sequence[Finding], rule: str) -> list[Severity]:
    return [f.severity for f in found if f.rule == rule]


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
                         root=root or stage.rootfs(PASSWD), comm="spark-operator",
                         env=env if env is not None else {"HOME": "/nonexistent"},
                         argv=argv, **UNPRIVILEGED)  # type: ignore[arg-type]
    return staged.pid


def test_default_webhook_is_clean_at_low_and_above(stage: Stage) -> None:
    pid = spawn_webhook(stage)
    assert not can_write_as(pid, 185, "/tmp") and can_write_as(pid, 185, CERTS)
    found = findings(pid, webhook_decl())
    assert [f for f in found if f.severity.rank >= Severity.LOW.rank] == [], found
    assert by_rule(found, "HomeDirectoryUnusable") == [Severity.INFO]
    assert by_rule(found, "WritablePathMissing") == []


def test_same_process_without_a_profile_is_low(stage: Stage) -> None:
    pid = spawn_webhook(stage)
    found = findings(pid, None)
    assert by_rule(found, "WritablePathMissing") == [Severity.LOW]
    assert by_rule(found, "HomeDirectoryUnusable") == [Severity.LOW]


def test_without_a_profile_explicit_tmpdir_is_high(stage: Stage) -> None:
    pid = spawn_webhook(stage, env={"HOME": "/nonexistent", "TMPDIR": "/tmp"})
    assert by_rule(findings(pid, None), "WritablePathMissing") == [Severity.HIGH]


def test_without_a_profile_a_jvm_is_high(stage: Stage) -> None:
    # A process whose exe is named `java` (a copy of the interpreter that stages listeners).
    root = stage.rootfs(PASSWD)
    java = root / "opt/jdk/bin/java"
    java.parent.mkdir(parents=True)
    shutil.copy2(Path(STAGE_PYTHON).resolve(), java)
    pid = spawn_webhook(stage, argv=["/opt/jdk/bin/java", "-c", "import signal; signal.pause()"],
                        root=root)
    assert Path(f"/proc/{pid}/exe").resolve().name == "java"
    found = findings(pid, None)
    assert by_rule(found, "WritablePathMissing") == [Severity.HIGH]
    assert by_rule(found, "HomeDirectoryUnusable") == [Severity.MEDIUM]
