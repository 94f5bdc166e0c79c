"""Precision by workload profile: whether /tmp and HOME matter comes from the profile.

The snapshot is the chart's default webhook as podman and runc start it: uid 185 with the
base image's home /nonexistent (runc sets HOME from passwd), a read-only root without a /tmp
emptyDir, the serving-certs emptyDir writable, Go's dual-stack listeners.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from rules.rule_snapshots import (
    CERTS,
    declared,
    listener,
    missing,
    network,
    observed,
    profile_for,
    readonly,
    with_paths,
    writable,
)

from agent.model import (
    DEFAULT_CONFIG,
    DeclaredContainer,
    Filesystem,
    Finding,
    ObservedProcess,
    Profile,
    Severity,
)
from agent.rules.evaluate import evaluate, findings_of

WEBHOOK = "spark-operator-webhook.yaml"


def default_webhook(**changes: object) -> ObservedProcess:
    base = observed(
        cmdline=("/usr/bin/spark-operator", "webhook", "start", "--webhook-port=9443"),
        exe="/usr/bin/spark-operator",
        identity=dataclasses.replace(observed().identity, home="/nonexistent",
                                     env_home="/nonexistent"),
        environ=(("HOME", "/nonexistent"),),
        filesystem=Filesystem(root_readonly=True, writable_mounts=(CERTS,), mounts=()),
        network=network(listener(9443), listener(8080), listener(8081), v4="192.0.2.38",
                        v6="2001:db8::26"),
    )
    snap = with_paths(base, readonly("/tmp"), writable(CERTS), missing("/nonexistent"))
    return dataclasses.replace(snap, **changes)


def severities(found: Sequence[Finding], rule: str) -> list[Severity]:
    return [f.severity for f in found if f.rule == rule]


def run(snap: ObservedProcess, decl: DeclaredContainer | None,
        profile: Profile | None = None) -> tuple[Finding, ...]:
    return findings_of(evaluate(snap, decl, profile or profile_for(decl), DEFAULT_CONFIG))


def test_default_webhook_needs_neither_tmp_nor_home() -> None:
    decl = declared(WEBHOOK)
    assert profile_for(decl).name == "spark-operator-webhook"
    found = run(default_webhook(), decl)
    assert [f for f in found if f.severity.rank >= Severity.LOW.rank] == []
    assert severities(found, "WritablePathMissing") == []
    [home] = [f for f in found if f.rule == "HomeDirectoryUnusable"]
    assert home.severity is Severity.INFO
    assert "/nonexistent" in home.message and "only a note" in home.message
    assert "Ivy" not in home.message


def test_webhook_profile_still_needs_its_cert_dir() -> None:
    snap = with_paths(default_webhook(), readonly(CERTS))
    found = run(snap, declared(WEBHOOK))
    [f] = [f for f in found if f.rule == "WritablePathMissing"]
    assert f.severity is Severity.HIGH and CERTS in f.message


def test_webhook_profile_home_stays_info_even_when_home_is_set_explicitly() -> None:
    decl = declared(WEBHOOK, env=(("HOME", "/home/spark"),))
    snap = with_paths(default_webhook(environ=(("HOME", "/home/spark"),)),
                      readonly("/home/spark"))
    assert set(severities(run(snap, decl), "HomeDirectoryUnusable")) == {Severity.INFO}


def test_controller_profile_needs_tmp_and_home() -> None:
    decl = declared("spark-operator-controller.yaml", env=())
    snap = default_webhook(cmdline=("/usr/bin/spark-operator", "controller", "start"))
    found = run(snap, decl)
    assert severities(found, "WritablePathMissing") == [Severity.HIGH]
    assert severities(found, "HomeDirectoryUnusable") == [Severity.MEDIUM]


def test_no_profile_tmp_and_home_are_low() -> None:
    found = run(default_webhook(), None)
    assert severities(found, "WritablePathMissing") == [Severity.LOW]
    assert severities(found, "HomeDirectoryUnusable") == [Severity.LOW]
    [tmp] = [f for f in found if f.rule == "WritablePathMissing"]
    assert "/tmp" in tmp.message and "no JVM" in tmp.message


def test_no_profile_a_jvm_raises_both_to_the_rule_severity() -> None:
    for jvm in (default_webhook(exe="/usr/lib/jvm/java-17-openjdk-amd64/bin/java"),
                default_webhook(exe=None, cmdline=("java", "-jar", "app.jar"))):
        found = run(jvm, None)
        assert severities(found, "WritablePathMissing") == [Severity.HIGH]
        assert severities(found, "HomeDirectoryUnusable") == [Severity.MEDIUM]
    # A wrapper named like java but not java stays low.
    found = run(default_webhook(exe="/usr/bin/javac"), None)
    assert severities(found, "WritablePathMissing") == [Severity.LOW]


def test_no_profile_an_explicit_tmpdir_or_home_raises_its_rule() -> None:
    snap = with_paths(default_webhook(environ=(("HOME", "/nonexistent"), ("TMPDIR", "/scratch"))),
                      missing("/scratch"))
    found = run(snap, None)
    [tmp] = [f for f in found if f.rule == "WritablePathMissing"]
    assert tmp.severity is Severity.HIGH and "/scratch" in tmp.message
    assert severities(found, "HomeDirectoryUnusable") == [Severity.LOW]
    # HOME different from the passwd home was set by someone: runc sets it only when unset.
    moved = with_paths(default_webhook(environ=(("HOME", "/home/app"),),
                                       identity=dataclasses.replace(
                                           default_webhook().identity, env_home="/home/app")),
                       missing("/home/app"))
    assert severities(run(moved, None), "HomeDirectoryUnusable") == [Severity.MEDIUM]


def test_a_writable_root_needs_no_tmp_without_a_profile() -> None:
    snap = default_webhook(filesystem=Filesystem(False, ("/",), ()))
    assert severities(run(snap, None), "WritablePathMissing") == []


# --- the Spark application's pods ----------------------------------------------------------


def test_spark_roles_pick_the_driver_and_executor_profiles() -> None:
    from agent.rules.profiles import SPARK_DRIVER, SPARK_EXECUTOR, match_profile

    for role, profile in (("driver", SPARK_DRIVER), ("executor", SPARK_EXECUTOR)):
        decl = dataclasses.replace(declared(), labels=(("spark-role", role),))
        assert match_profile(decl, DEFAULT_CONFIG) is profile
    assert SPARK_DRIVER.ports == (7078, 7079, 4040) and SPARK_DRIVER.expected_uid == 185


def test_packages_and_spark_local_dirs_are_read_from_cmdline_and_environment() -> None:
    from agent.rules.paths import spark_local_dirs, uses_packages

    plain = observed(cmdline=("java", "-cp", "x", "org.apache.spark.deploy.SparkSubmit"))
    assert not uses_packages(plain, None) and spark_local_dirs(plain, None) == ()
    for cmdline in (("spark-submit", "--packages", "a:b:1"), ("spark-submit", "--conf",
                                                             "spark.jars.packages=a:b:1")):
        assert uses_packages(observed(cmdline=cmdline), None)
    snap = observed(cmdline=("java", "-Dspark.local.dir=/scratch/a,/scratch/b"),
                    environ=(("SPARK_LOCAL_DIRS", "/var/data/spark-1"),))
    assert spark_local_dirs(snap, None) == ("/var/data/spark-1", "/scratch/a", "/scratch/b")
