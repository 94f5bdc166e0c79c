"""The staging harness itself (tests/staging.py): `Stage.spawn` of a program returns once
the program runs under every wrapper, and says why when it cannot start. The oracle is the
kernel's own view of the process: /proc/PID/exe, comm and status."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from staging import Stage, StageError


def test_spawn_returns_once_the_program_itself_runs(stage: Stage) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    for _ in range(20):  # every time, not most times: readiness is an event
        proc = stage.spawn(argv=["sleep", "600"], netns=stage.netns(), uid=1000,
                           bounding=[], no_new_privs=True, readonly_root=True)
        assert Path(f"/proc/{proc.pid}/exe").resolve() == Path(sleep).resolve()
        assert Path(f"/proc/{proc.pid}/comm").read_text() == "sleep\n"
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert "\nUid:\t1000\t1000\t1000\t1000\n" in status
        assert "\nNoNewPrivs:\t1\n" in status
        stage.kill(proc)


def test_a_program_that_execs_at_once_is_seen_as_it_or_what_it_became(stage: Stage) -> None:
    proc = stage.spawn(argv=["sh", "-c", "exec sleep 600"])
    # Never the wrapper (python3) that staging runs last before the program.
    assert Path(f"/proc/{proc.pid}/comm").read_text() in ("sh\n", "sleep\n")


def test_a_program_that_does_not_exist_is_a_stage_error_that_names_it(stage: Stage) -> None:
    with pytest.raises(StageError, match=r"no-such-program did not start: .*No such file"):
        stage.spawn(argv=["no-such-program"])
    assert all(p.popen.returncode is not None for p in stage.processes)


def test_a_wrapper_that_fails_is_a_stage_error_with_its_message(stage: Stage) -> None:
    with pytest.raises(StageError, match=r"sleep did not start: .*setpriv"):
        stage.spawn(argv=["sleep", "600"], bounding=["NOT_A_CAPABILITY"])
