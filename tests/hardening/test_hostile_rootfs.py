"""A container that fights back: its root and its process names are hostile (README).

opaudit reads a container's files only through openat2(RESOLVE_IN_ROOT), never follows
a link out of the root, never blocks on a FIFO or reads past a size cap, says what it
could not read, and never lets a control character from a process name reach a
terminal, the JSON or an Event note. Each host file a link points at holds a unique
marker; the marker must never appear in anything opaudit prints.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import unicodedata
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from staging import STAGE_PYTHON, Stage

from agent.audit import AuditRequest, audit
from agent.model import DeclaredContainer, PodRef
from agent.output.events import EventKey, event_body

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0  # seconds any one opaudit run may take; a FIFO read would block forever
APP_UID = 185
UNSAFE = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})


def opaudit(pid: int, output: str = "json") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "diagnose", "--pid", str(pid), "-o", output,
         "--fail-on", "critical"],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO,
        errors="surrogateescape",
    )


def report_of(pid: int) -> tuple[dict[str, Any], str]:
    result = opaudit(pid)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc["targets"][0], result.stdout + result.stderr


@pytest.fixture
def marker(tmp_path: Path) -> tuple[str, Path]:
    """A host-only passwd-shaped file naming uid 185: if opaudit read it, the user would show."""
    token = f"HOSTMARKER{uuid.uuid4().hex}"
    path = tmp_path / "host-only" / "passwd"
    path.parent.mkdir()
    path.write_text(f"{token}:x:{APP_UID}:{APP_UID}:{token}:/{token}:/bin/sh\n")
    return token, path


def start(stage: Stage, root: Path) -> int:
    return stage.spawn([], uid=APP_UID, root=root, env={"HOME": "/home/app"}).pid


def plant_passwd_link(root: Path, target: str) -> None:
    passwd = root / "etc" / "passwd"
    passwd.unlink(missing_ok=True)
    passwd.symlink_to(target)


def gap_reasons(target: dict[str, Any], fact: str) -> list[str]:
    return [g["reason"] for g in target["incomplete"] if g["fact"] == fact]


# --- links out of the root --------------------------------------------------------------


def test_absolute_passwd_link_to_a_host_file_is_not_followed(
    stage: Stage, marker: tuple[str, Path]
) -> None:
    token, host_file = marker
    root = stage.rootfs()
    plant_passwd_link(root, str(host_file))
    target, output = report_of(start(stage, root))
    # Resolved inside the root the link dangles: the container itself has no passwd entry.
    assert token not in output
    assert target["identity"]["user"] is None


def test_dotdot_passwd_link_to_a_host_file_is_not_followed(
    stage: Stage, marker: tuple[str, Path]
) -> None:
    token, host_file = marker
    root = stage.rootfs()
    escape = "../" * 12 + str(host_file).lstrip("/")  # more `..` than the root is deep
    plant_passwd_link(root, escape)
    assert (root / "etc" / "passwd").resolve() == host_file  # the host would follow it
    target, output = report_of(start(stage, root))
    assert token not in output
    assert target["identity"]["user"] is None


def test_etc_directory_link_out_of_the_root_is_not_followed(
    stage: Stage, marker: tuple[str, Path]
) -> None:
    token, host_file = marker
    root = stage.rootfs()
    (root / "etc").rmdir()
    (root / "etc").symlink_to("../" * 12 + str(host_file.parent).lstrip("/"))
    target, output = report_of(start(stage, root))
    assert token not in output
    assert target["identity"]["user"] is None


def test_home_linked_to_host_root_is_judged_inside_the_container(stage: Stage) -> None:
    # Host /root exists (and root could write it); inside the container it does not.
    assert Path("/root").is_dir()
    root = stage.rootfs({"etc/passwd": f"app:x:{APP_UID}:{APP_UID}::/home/app:/bin/sh\n"})
    (root / "home" / "app").symlink_to("/root")
    (root / "home" / "other").symlink_to("../../../../../../../../root")
    target, _ = report_of(start(stage, root))
    assert target["identity"]["user"] == "app"
    assert target["identity"]["home"] == "/home/app"
    home = [p for p in target["paths"] if p["path"] == "/home/app"]
    assert home, target["paths"]
    assert home[0]["exists"] is not True  # host /root would exist
    assert home[0]["writable"] is not True


def test_home_field_with_dotdot_is_judged_inside_the_container(stage: Stage) -> None:
    escape = "/" + "../" * 12 + "root"
    root = stage.rootfs({"etc/passwd": f"app:x:{APP_UID}:{APP_UID}::{escape}:/bin/sh\n"})
    pid = stage.spawn([], uid=APP_UID, root=root, env={"HOME": escape}).pid
    target, _ = report_of(pid)
    probes = [p for p in target["paths"] if "root" in p["path"]]
    assert probes, target["paths"]
    assert all(p["exists"] is not True and p["writable"] is not True for p in probes)


# --- files that would block or flood ---------------------------------------------------


def test_fifo_at_etc_passwd_does_not_block(stage: Stage) -> None:
    root = stage.rootfs()
    pid = start(stage, root)  # planted after start: setpriv itself would block on it
    os.mkfifo(root / "etc" / "passwd")
    target, _ = report_of(pid)  # TIMEOUT bounds it: a blocked read fails here
    assert target["identity"]["user"] is None
    assert any("regular file" in r for r in gap_reasons(target, "identity.user"))


def test_100mb_passwd_is_read_only_up_to_the_cap(stage: Stage) -> None:
    root = stage.rootfs()
    line = f"far:x:{APP_UID}:{APP_UID}::/home/far:/bin/sh\n".encode()
    with open(root / "etc" / "passwd", "wb") as passwd:  # sparse: 100 MB of NULs, then the line
        passwd.truncate(100 * 1024 * 1024 - len(line))
        passwd.seek(0, os.SEEK_END)
        passwd.write(line)
    target, output = report_of(start(stage, root))
    assert target["identity"]["user"] is None  # the entry lies past the cap: not read
    assert "/home/far" not in output
    assert any("larger than" in r for r in gap_reasons(target, "identity.user"))


def test_100mb_passwd_with_the_entry_up_front_still_resolves(stage: Stage) -> None:
    root = stage.rootfs()
    with open(root / "etc" / "passwd", "wb") as passwd:
        passwd.write(f"app:x:{APP_UID}:{APP_UID}::/home/app:/bin/sh\n".encode())
        passwd.truncate(100 * 1024 * 1024)
    target, _ = report_of(start(stage, root))
    assert target["identity"]["user"] == "app"


# --- names and arguments with terminal escapes ------------------------------------------

HOSTILE_COMM = "\x1b[31mred\nX"  # 10 bytes: fits comm's 15
HOSTILE_ARGS = ["\x1b]0;pwned\x07", "\nFAKE-LINE: all clear", "\u202eevil", "bell\x07\x08\x08",
                "\x9b31m"]
RENAME_THEN_WAIT = (
    "import ctypes, signal, sys\n"
    "ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)\n"
    "print('ready', flush=True)\n"
    "signal.pause()\n"
)


def hostile_process(stage: Stage) -> int:
    proc = stage.spawn(argv=[STAGE_PYTHON, "-c", RENAME_THEN_WAIT, HOSTILE_COMM, *HOSTILE_ARGS],
                       uid=APP_UID)
    assert proc.popen.stdout is not None
    ready, _, _ = select.select([proc.popen.stdout], [], [], 10)
    assert ready and proc.popen.stdout.readline().strip() == b"ready"
    assert Path(f"/proc/{proc.pid}/comm").read_bytes().startswith(b"\x1b[31m")
    return proc.pid


def raw_controls(text: str) -> list[str]:
    """Control characters a terminal would act on (the newline between lines excepted)."""
    return [c for c in text if unicodedata.category(c) in UNSAFE and c != "\n"]


def test_escapes_in_comm_and_cmdline_never_reach_table_or_json(stage: Stage) -> None:
    pid = hostile_process(stage)
    table = opaudit(pid, "table")
    assert table.returncode == 0, table.stderr
    assert raw_controls(table.stdout) == []
    assert not any(line.startswith("FAKE-LINE") for line in table.stdout.splitlines())
    raw_json = opaudit(pid, "json")
    assert raw_controls(raw_json.stdout) == []
    target = json.loads(raw_json.stdout)["targets"][0]
    for text in (target["comm"], *target["cmdline"]):
        assert raw_controls(text) == [] and "\n" not in text
    assert "\\x1b" in target["comm"]  # shown escaped, not dropped silently
    assert any("FAKE-LINE" in arg for arg in target["cmdline"])


def test_escapes_never_reach_an_event_note(stage: Stage) -> None:
    pid = hostile_process(stage)
    pod = PodRef(namespace="default", name="hostile", uid=str(uuid.uuid4()))
    declared = DeclaredContainer(
        pod=pod, container_name="app", container_id=None, labels=(), run_as_user=0,
        run_as_group=None, run_as_non_root=None, privileged=None,
        allow_privilege_escalation=False, capabilities_add=("NET_ADMIN",),
        capabilities_drop=(), seccomp_profile=None, read_only_root_filesystem=True,
        ports=(), probes=(), volume_mounts=(), pod_ips=())
    report = audit([AuditRequest(pid=pid, declared=declared)])
    assert report.findings, "the mismatching declaration must give findings to post"
    for finding in report.findings:
        body = event_body(pod, EventKey(pod.uid, "app", finding.rule), [finding], "node-1",
                          datetime.now(UTC))
        note: str = body["note"]
        assert raw_controls(note) == [] and "\n" not in note
        assert len(note.encode()) <= 1024
