"""findings(): isolation of rules, stamping, waivers, severity overrides, InspectionIncomplete,
and profile matching."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from rules.rule_snapshots import declared, observed, rule_ids

from agent.model import (
    DEFAULT_CONFIG,
    GENERIC_PROFILE,
    AuditConfig,
    DeclaredContainer,
    Finding,
    Gap,
    ObservedProcess,
    Profile,
    Severity,
    Waiver,
)
from agent.rules.catalogue import CATALOGUE
from agent.rules.entry import Rule
from agent.rules.evaluate import evaluate, findings_of
from agent.rules.profiles import (
    SPARK_OPERATOR_CONTROLLER,
    SPARK_OPERATOR_WEBHOOK,
    match_profile,
)

ROOT_SNAPSHOT = dict(seccomp="disabled", no_new_privs=False)


def findings(observed: ObservedProcess, declared: DeclaredContainer | None, profile: Profile,
             config: AuditConfig = DEFAULT_CONFIG, rules: tuple[Rule, ...] = CATALOGUE
             ) -> tuple[Finding, ...]:
    return findings_of(evaluate(observed, declared, profile, config, rules))


def explode(observed: ObservedProcess, declared: DeclaredContainer | None, profile: Profile
            ) -> Iterator[Finding]:
    raise KeyError("boom")


BROKEN = Rule("Broken", Severity.HIGH, "t", "w", "f", explode)


def test_a_raising_rule_becomes_an_entry_and_others_still_run() -> None:
    found = findings(observed(**ROOT_SNAPSHOT), None, GENERIC_PROFILE,
                     rules=(BROKEN, *CATALOGUE))
    assert "SeccompUnconfined" in rule_ids(found)
    [error] = [f for f in found if "Broken" in f.message]
    assert error.rule == "InspectionIncomplete" and error.severity is Severity.INFO
    assert "KeyError" in error.message and "boom" in error.message


def test_findings_are_stamped_and_sorted() -> None:
    decl = declared()
    found = findings(observed(**ROOT_SNAPSHOT, incomplete=(Gap("environ", "gone"),)), decl,
                     GENERIC_PROFILE)
    assert {f.pid for f in found} == {4242}
    assert {f.pod for f in found} == {"spark-operator/spark-operator-controller-7b48f5d9c6-mv2jd"}
    assert {f.container for f in found} == {"spark-operator-controller"}
    ranks = [f.severity.rank for f in found]
    assert ranks == sorted(ranks, reverse=True)
    assert found[-1].rule == "InspectionIncomplete" and "environ (gone)" in found[-1].message


def test_network_gaps_are_reported_too() -> None:
    snap = observed()
    net = snap.network
    assert net is not None
    import dataclasses
    snap = dataclasses.replace(snap, network=dataclasses.replace(
        net, gaps=(Gap("network.sockets", "needs CAP_SYS_ADMIN"),)))
    [f] = findings(snap, None, GENERIC_PROFILE)
    assert f.rule == "InspectionIncomplete" and "needs CAP_SYS_ADMIN" in f.message


def test_waiver_by_namespace_and_selector() -> None:
    decl = declared()
    snap = observed(**ROOT_SNAPSHOT)
    by_ns = AuditConfig(waivers=(Waiver("SeccompUnconfined", "r", namespace="spark-operator"),))
    assert "SeccompUnconfined" not in rule_ids(findings(snap, decl, GENERIC_PROFILE, by_ns))
    by_label = AuditConfig(waivers=(Waiver("SeccompUnconfined", "r",
                                           selector=(("app.kubernetes.io/component",
                                                      "controller"),)),))
    assert "SeccompUnconfined" not in rule_ids(findings(snap, decl, GENERIC_PROFILE, by_label))


def test_waiver_near_misses() -> None:
    decl = declared()
    snap = observed(**ROOT_SNAPSHOT)
    for waiver in (Waiver("SeccompUnconfined", "r", namespace="other"),
                   Waiver("SeccompUnconfined", "r", namespace="spark-operator",
                          selector=(("app.kubernetes.io/component", "webhook"),)),
                   Waiver("RunsAsRoot", "r", namespace="spark-operator")):
        found = findings(snap, decl, GENERIC_PROFILE, AuditConfig(waivers=(waiver,)))
        assert "SeccompUnconfined" in rule_ids(found), waiver
    # no declared side: no namespace or labels to match, nothing is waived
    found = findings(snap, None, GENERIC_PROFILE, AuditConfig(
        waivers=(Waiver("SeccompUnconfined", "r", namespace="spark-operator"),)))
    assert "SeccompUnconfined" in rule_ids(found)


def test_severity_override() -> None:
    config = AuditConfig(severity_overrides=(("SeccompUnconfined", Severity.CRITICAL),))
    found = findings(observed(**ROOT_SNAPSHOT), None, GENERIC_PROFILE, config)
    assert found[0].rule == "SeccompUnconfined" and found[0].severity is Severity.CRITICAL
    plain = findings(observed(**ROOT_SNAPSHOT), None, GENERIC_PROFILE)
    assert next(f for f in plain if f.rule == "SeccompUnconfined").severity is Severity.HIGH


def test_builtin_profiles_match_by_labels() -> None:
    assert match_profile(declared(), AuditConfig()) is SPARK_OPERATOR_CONTROLLER
    webhook = declared("spark-operator-webhook.yaml")
    assert match_profile(webhook, AuditConfig()) is SPARK_OPERATOR_WEBHOOK
    assert match_profile(None, AuditConfig()) is GENERIC_PROFILE
    assert match_profile(declared(labels=(("app", "x"),)), AuditConfig()) is GENERIC_PROFILE


def test_config_profiles_come_first() -> None:
    mine = Profile(name="mine", selector=(("app.kubernetes.io/name", "spark-operator"),),
                   writable_paths=("/data",))
    assert match_profile(declared(), AuditConfig(profiles=(mine,))) is mine
    catch_all = Profile(name="all")
    assert match_profile(declared(), AuditConfig(profiles=(catch_all,))) is \
        SPARK_OPERATOR_CONTROLLER


def test_config_profile_writable_path_is_checked() -> None:
    mine = Profile(name="mine", selector=(("app.kubernetes.io/name", "spark-operator"),),
                   writable_paths=("/opt/spark",))
    found = findings(observed(), declared(), match_profile(declared(),
                                                           AuditConfig(profiles=(mine,))))
    [f] = [f for f in found if f.rule == "WritablePathMissing"]
    assert "/opt/spark" in f.message and "mine profile" in f.message


def test_catalogue_is_spec_section_3() -> None:
    assert len(CATALOGUE) == 22  # PrivilegedPortNotBindable made it 22
    assert len({r.id for r in CATALOGUE}) == 22


def test_rules_import_only_the_model() -> None:
    rules_dir = Path(__file__).resolve().parents[2] / "agent" / "rules"
    for module in rules_dir.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.startswith("agent"):
                    assert name == "agent.model" or name.startswith("agent.rules"), \
                        f"{module.name} imports {name}"
                else:
                    assert name.split(".")[0] in {
                        "__future__", "collections", "dataclasses", "enum", "ipaddress",
                        "posixpath", "shlex", "typing"}, f"{module.name} imports {name}"
