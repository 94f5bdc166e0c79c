"""RunsAsRoot, RunAsUserMismatch, RunAsGroupMismatch, HomeDirectoryUnusable."""

from __future__ import annotations

import dataclasses

from rules.rule_snapshots import declared, ids, missing, observed, profile_for, readonly, with_paths

from agent.model import GENERIC_PROFILE, Gap, Identity, Severity
from agent.rules.identity import (
    home_directory_unusable,
    run_as_group_mismatch,
    run_as_user_mismatch,
    runs_as_root,
)
from agent.rules.profiles import SPARK_OPERATOR_CONTROLLER


def who(uid: int, gid: int | None = None, home: str | None = "/tmp", user: str | None = "spark"
        ) -> Identity:
    return Identity(uid=ids(uid), gid=ids(uid if gid is None else gid), groups=(),
                    user=user, home=home, env_home=home)


def test_runs_as_root_fires_for_uid_0() -> None:
    [f] = runs_as_root(observed(identity=who(0)), declared(), SPARK_OPERATOR_CONTROLLER)
    assert f.rule == "RunsAsRoot" and f.severity is Severity.HIGH
    assert "uid 0" in f.message and "runAsNonRoot: true is declared" in f.message
    assert "runAsUser: 185" in f.remediation
    assert "controller:\n  securityContext:\n    runAsNonRoot: true" in f.remediation


def test_runs_as_root_near_miss_uid_185_and_unknown() -> None:
    assert list(runs_as_root(observed(), None, GENERIC_PROFILE)) == []
    unknown = observed(identity=Identity(None, None, None, None, None, None))
    assert list(runs_as_root(unknown, None, GENERIC_PROFILE)) == []


def test_run_as_user_mismatch_against_declared() -> None:
    [f] = run_as_user_mismatch(observed(identity=who(1000)), declared(), GENERIC_PROFILE)
    assert "runs as uid 1000" in f.message and "runAsUser is declared as 185" in f.message


def test_run_as_user_mismatch_falls_back_to_profile_uid() -> None:
    decl = declared("spark-operator-controller.yaml")  # no runAsUser: the image's 185 applies
    assert decl.run_as_user is None
    [f] = run_as_user_mismatch(observed(identity=who(1000)), decl, SPARK_OPERATOR_CONTROLLER)
    assert "spark-operator-controller profile expects uid 185" in f.message


def test_run_as_user_near_misses() -> None:
    assert list(run_as_user_mismatch(observed(), declared(), SPARK_OPERATOR_CONTROLLER)) == []
    # Without a declared side nothing was declared: silent even with a profile uid.
    assert list(run_as_user_mismatch(observed(identity=who(7)), None,
                                     SPARK_OPERATOR_CONTROLLER)) == []
    decl = declared("spark-operator-controller.yaml")
    assert list(run_as_user_mismatch(observed(identity=who(7)), decl, GENERIC_PROFILE)) == []


def test_run_as_group_mismatch() -> None:
    [f] = run_as_group_mismatch(observed(identity=who(185, gid=0)), declared(), GENERIC_PROFILE)
    assert f.severity is Severity.MEDIUM
    assert "gid 0" in f.message and "runAsGroup is declared as 185" in f.message
    assert list(run_as_group_mismatch(observed(), declared(), GENERIC_PROFILE)) == []
    assert list(run_as_group_mismatch(observed(identity=who(185, gid=0)),
                                      declared("spark-operator-controller.yaml"),
                                      GENERIC_PROFILE)) == []


def test_home_on_writable_tmp_is_fine() -> None:
    assert list(home_directory_unusable(observed(), declared(), SPARK_OPERATOR_CONTROLLER)) == []


def test_home_missing_on_spark_without_ivy_gives_the_ivy_fix() -> None:
    snap = observed(identity=who(185, home="/nonexistent"), environ=())
    decl = declared("spark-operator-controller.yaml")
    [f] = home_directory_unusable(snap, decl, profile_for(decl))
    assert f.severity is Severity.MEDIUM
    assert "/nonexistent" in f.message and "does not exist" in f.message
    assert "ivy" in f.message.lower()
    assert "-Divy.cache.dir=/tmp/ivy2/cache -Divy.home=/tmp/ivy2" in f.remediation
    assert "controller:\n  env:" in f.remediation


def test_home_on_readonly_root_with_ivy_redirected_is_low_and_says_so() -> None:
    snap = with_paths(observed(identity=who(185, home="/home/spark")), readonly("/home/spark"))
    decl = declared()
    [f] = home_directory_unusable(snap, decl, profile_for(decl))
    assert f.severity is Severity.LOW
    assert "/home/spark" in f.message and "read-only" in f.message
    assert "already pointed at writable /tmp/ivy2" in f.message
    assert "-Divy.home=/tmp/ivy2" in f.remediation


def test_home_env_differs_from_passwd() -> None:
    ident = dataclasses.replace(who(185, home="/tmp"), env_home="/nonexistent")
    [f] = home_directory_unusable(observed(identity=ident), None, GENERIC_PROFILE)
    assert "$HOME /nonexistent does not exist" in f.message
    assert "SPARK_SUBMIT_OPTS" in f.remediation  # spark-operator cmdline: still spark


def test_no_passwd_entry() -> None:
    snap = observed(identity=Identity(ids(5000), ids(5000), (), None, None, None), environ=(),
                    cmdline=("/app",))
    [f] = home_directory_unusable(snap, None, GENERIC_PROFILE)
    assert "uid 5000 has no entry in the container's /etc/passwd" in f.message
    assert "SPARK_SUBMIT_OPTS" not in f.remediation


def test_home_unknown_is_silent_not_a_pass() -> None:
    # passwd unreadable: recorded as a gap, so the rule cannot judge and stays silent.
    snap = observed(identity=Identity(ids(5000), ids(5000), (), None, None, None), environ=(),
                    incomplete=(Gap("identity.passwd", "permission denied"),))
    assert list(home_directory_unusable(snap, None, GENERIC_PROFILE)) == []
    # Home never probed: unknown, silent.
    snap = observed(identity=who(185, home="/var/lib/x"))
    assert list(home_directory_unusable(snap, None, GENERIC_PROFILE)) == []
    assert missing("/x").writable is None
