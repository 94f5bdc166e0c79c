"""Profile precision on the real kernel: the chart's default webhook as a runtime starts it.

uid 185 with passwd home /nonexistent and HOME=/nonexistent (runc sets HOME from passwd), a
read-only root with no /tmp emptyDir, a tmpfs on the cert dir, Go's dual-stack listeners.
Oracle for /tmp: a real write as uid 185 in the process's own root fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from rules.rule_snapshots import CERTS, declared
from rules.rule_staging import WEBHOOK_ROOT_FILES, can_write_as, findings, spawn_webhook
from staging import STAGE_PYTHON, Stage

from agent.model import DeclaredContainer, Finding, Severity


def webhook_decl() -> DeclaredContainer:
    # The staged netns's veth0 address is the pod IP (staging.Stage.netns).
    return declared("spark-operator-webhook.yaml", pod_ips=("192.0.2.10",))


def by_rule(found: Sequence[Finding], rule: str) -> list[Severity]:
    return [f.severity for f in found if f.rule == rule]


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
    root = stage.rootfs(WEBHOOK_ROOT_FILES)
    java = root / "opt/jdk/bin/java"
    java.parent.mkdir(parents=True)
    shutil.copy2(Path(STAGE_PYTHON).resolve(), java)
    pid = spawn_webhook(stage, argv=["/opt/jdk/bin/java", "-c", "import signal; signal.pause()"],
                        root=root)
    assert Path(f"/proc/{pid}/exe").resolve().name == "java"
    found = findings(pid, None)
    assert by_rule(found, "WritablePathMissing") == [Severity.HIGH]
    assert by_rule(found, "HomeDirectoryUnusable") == [Severity.MEDIUM]
