"""RootFilesystemWritable, WritablePathMissing, EmptyDirWithoutSizeLimit, and required_paths."""

from __future__ import annotations

import dataclasses

from rules.rule_snapshots import CERTS, declared, missing, observed, readonly, with_paths, writable

from agent.model import GENERIC_PROFILE, DeclaredVolumeMount, Filesystem, PathAccess, Severity
from agent.rules.filesystem import (
    empty_dir_without_size_limit,
    root_filesystem_writable,
    writable_path_missing,
)
from agent.rules.paths import ivy_dirs, judge_writable, required_paths
from agent.rules.profiles import SPARK_OPERATOR_CONTROLLER, SPARK_OPERATOR_WEBHOOK

RW_ROOT = Filesystem(root_readonly=False, writable_mounts=("/",), mounts=())


def test_root_writable_is_high_when_declared_readonly() -> None:
    [f] = root_filesystem_writable(observed(filesystem=RW_ROOT), declared(), GENERIC_PROFILE)
    assert f.severity is Severity.HIGH and "drift" in f.message


def test_root_writable_is_medium_otherwise() -> None:
    decl = declared(read_only_root_filesystem=None)
    [f] = root_filesystem_writable(observed(filesystem=RW_ROOT), decl, GENERIC_PROFILE)
    assert f.severity is Severity.MEDIUM and "readOnlyRootFilesystem: true" in f.remediation


def test_root_readonly_or_unknown_is_silent() -> None:
    assert list(root_filesystem_writable(observed(), declared(), GENERIC_PROFILE)) == []
    assert list(root_filesystem_writable(observed(filesystem=None), None, GENERIC_PROFILE)) == []


def test_webhook_without_writable_cert_dir_names_the_path() -> None:
    [f] = writable_path_missing(observed(), declared("spark-operator-webhook.yaml"),
                                SPARK_OPERATOR_WEBHOOK)
    assert f.rule == "WritablePathMissing" and f.severity is Severity.HIGH
    assert f"cannot write {CERTS}" in f.message and "tls.crt" in f.message
    assert "a volume is declared there" in f.message
    assert f"mountPath: {CERTS}" in f.remediation and "webhook:\n  volumeMounts:" in f.remediation


def test_webhook_with_writable_cert_dir_is_a_near_miss() -> None:
    snap = with_paths(observed(), writable(CERTS))
    assert list(writable_path_missing(snap, declared("spark-operator-webhook.yaml"),
                                      SPARK_OPERATOR_WEBHOOK)) == []


def test_tmp_on_readonly_root_without_emptydir() -> None:
    snap = with_paths(observed(), readonly("/tmp"))
    found = list(writable_path_missing(snap, None, GENERIC_PROFILE))
    assert any("cannot write /tmp:" in f.message and "read-only" in f.message for f in found)


def test_tmpdir_replaces_tmp() -> None:
    snap = with_paths(observed(environ=(("TMPDIR", "/scratch"),)), readonly("/scratch"),
                      readonly("/tmp"))
    [f] = writable_path_missing(snap, None, GENERIC_PROFILE)
    assert "cannot write /scratch" in f.message


def test_tmp_not_required_on_writable_root() -> None:
    snap = with_paths(observed(filesystem=RW_ROOT, environ=()), readonly("/tmp"))
    assert list(writable_path_missing(snap, None, GENERIC_PROFILE)) == []


def test_ivy_dir_missing_but_creatable_under_tmp_is_fine() -> None:
    assert list(writable_path_missing(observed(), declared(), SPARK_OPERATOR_CONTROLLER)) == []


def test_ivy_dir_on_readonly_root() -> None:
    opts = "-Divy.home=/opt/spark/ivy"
    snap = with_paths(observed(environ=(("SPARK_SUBMIT_OPTS", opts),)), missing("/opt/spark/ivy"))
    [f] = writable_path_missing(snap, None, SPARK_OPERATOR_CONTROLLER)
    assert "/opt/spark/ivy" in f.message and "cannot be created" in f.message
    assert "Ivy" in f.message


def test_unprobed_path_is_unknown_not_missing() -> None:
    snap = observed(paths=())
    assert judge_writable(snap, "/tmp").writable is None
    assert list(writable_path_missing(snap, None, SPARK_OPERATOR_WEBHOOK)) == []


def test_ivy_dirs_from_cmdline_and_env() -> None:
    snap = observed(cmdline=("spark-submit", "--conf", "spark.jars.ivy=/data/ivy", "x.jar"),
                    environ=(("SPARK_SUBMIT_OPTS", "-Divy.cache.dir=/c -Divy.home=/h/"),
                             ("JAVA_TOOL_OPTIONS", "-Dspark.jars.ivy=relative")))
    assert ivy_dirs(snap, None) == ("/data/ivy", "/c", "/h")


def test_ivy_dirs_fall_back_to_declared_env_when_environ_unread() -> None:
    assert ivy_dirs(observed(environ=()), declared()) == ("/tmp/ivy2/cache", "/tmp/ivy2")
    assert ivy_dirs(observed(environ=(("X", "1"),)), declared()) == ()


def test_required_paths_cover_home_tmp_profile_ivy_and_parents() -> None:
    paths = required_paths(observed(identity=dataclasses.replace(
        observed().identity, home="/nonexistent")), declared(), SPARK_OPERATOR_WEBHOOK)
    for expected in ("/nonexistent", "/tmp", CERTS, "/etc/k8s-webhook-server", "/etc", "/",
                     "/tmp/ivy2", "/tmp/ivy2/cache"):
        assert expected in paths
    assert len(paths) == len(set(paths))


def test_judge_writable_reasons() -> None:
    snap = with_paths(observed(), PathAccess("/x", True, True, False, False),
                      PathAccess("/y", True, True, None, None, error="EACCES"))
    assert judge_writable(snap, "/x").detail == "/x is not writable by the process (mode/owner)"
    assert judge_writable(snap, "/y").writable is None and "EACCES" in judge_writable(
        snap, "/y").detail


def test_empty_dir_without_size_limit() -> None:
    mount = DeclaredVolumeMount("scratch", "/scratch", False, None, "emptyDir", None, "Memory")
    decl = declared(volume_mounts=(mount,))
    [f] = empty_dir_without_size_limit(observed(), decl, GENERIC_PROFILE)
    assert f.severity is Severity.LOW and "'scratch'" in f.message and "memory" in f.message
    assert "sizeLimit:" in f.remediation


def test_fixture_emptydirs_have_limits() -> None:
    for name in ("spark-operator-controller.yaml", "spark-operator-webhook.yaml",
                 "spark-operator-webhook-hardened.yaml"):
        assert list(empty_dir_without_size_limit(observed(), declared(name),
                                                 GENERIC_PROFILE)) == []
    assert list(empty_dir_without_size_limit(observed(), None, GENERIC_PROFILE)) == []


def test_missing_path_judged_by_the_collector_from_its_parent() -> None:
    # agent.collect.rootfs judges a missing path by its nearest existing parent.
    gone = PathAccess("/opt/ivy", exists=False, is_dir=None, on_readonly_mount=True,
                      writable=False, error="does not exist yet; judged by its parent /opt")
    verdict = judge_writable(with_paths(observed(), gone), "/opt/ivy")
    assert verdict.writable is False and "read-only" in verdict.detail
    ok = dataclasses.replace(gone, on_readonly_mount=False, writable=True)
    assert judge_writable(with_paths(observed(), ok), "/opt/ivy").writable is True
