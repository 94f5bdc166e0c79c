"""--config: profiles, waivers, severity overrides; one-line errors naming the field."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.model import Filesystem, Profile, Severity, Waiver

GOOD = """
profiles:
- name: my-api
  selector: {app.kubernetes.io/name: my-api}
  writablePaths: [/data, /var/cache/app]
  ports: [9090]
  uid: 1000
waivers:
- rule: UndeclaredListener
  reason: pprof is reviewed and firewalled
  namespace: spark-operator
- rule: RootFilesystemWritable
  reason: legacy
  selector: "tier=legacy, team=data"
severityOverrides:
  EmptyDirWithoutSizeLimit: MEDIUM
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "opaudit.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_good_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.profiles == (Profile(
        name="my-api", selector=(("app.kubernetes.io/name", "my-api"),),
        writable_paths=("/data", "/var/cache/app"), ports=(9090,), expected_uid=1000),)
    assert config.waivers == (
        Waiver("UndeclaredListener", "pprof is reviewed and firewalled", "spark-operator"),
        Waiver("RootFilesystemWritable", "legacy", None, (("team", "data"), ("tier", "legacy"))),
    )
    assert config.severity_overrides == (("EmptyDirWithoutSizeLimit", Severity.MEDIUM),)


def test_empty_config_is_the_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "# nothing\n"))
    assert (config.profiles, config.waivers, config.severity_overrides) == ((), (), ())


@pytest.mark.parametrize(("text", "message"), [
    ("waivers:\n- rule: RunsAsRoot\n  namespace: x\n", "config: waivers[0].reason: required"),
    ("waivers:\n- rule: RunsAsRoot\n  reason: ''\n  namespace: x\n",
     "config: waivers[0].reason: required"),
    ("waivers:\n- rule: RunAsRoot\n  reason: r\n  namespace: x\n",
     "config: waivers[0].rule: unknown rule 'RunAsRoot'"),
    ("waivers:\n- rule: RunsAsRoot\n  reason: r\n",
     "config: waivers[0]: needs a namespace and/or a selector"),
    ("waivers:\n- rule: RunsAsRoot\n  reason: r\n  selector: notapair\n",
     "config: waivers[0].selector: 'notapair' is not key=value"),
    ("waivers: {rule: x}\n", "config: waivers: must be a list, got dict"),
    ("severityOverrides:\n  RunsAsRoot: urgent\n",
     "config: severityOverrides.RunsAsRoot: unknown severity 'urgent'"),
    ("severityOverrides:\n  Nope: low\n", "config: severityOverrides.Nope: unknown rule 'Nope'"),
    ("profiles:\n- name: p\n  selector: {a: b}\n  ports: [70000]\n",
     "config: profiles[0].ports[0]: must be a port number 1-65535, got 70000"),
    ("profiles:\n- name: p\n  selector: {a: b}\n  writablePaths: [data]\n",
     "config: profiles[0].writablePaths[0]: must be an absolute path, got 'data'"),
    ("profiles:\n- name: p\n  writablePaths: [/data]\n",
     "config: profiles[0].selector: required"),
    ("profiles:\n- selector: {a: b}\n", "config: profiles[0].name: required"),
    ("profiles:\n- name: p\n  selector: {a: b}\n  uid: -1\n",
     "config: profiles[0].uid: must be a non-negative integer, got -1"),
    ("profiles:\n- name: p\n  selector: {a: b}\n  writable: [/x]\n",
     "config: profiles[0].writable: unknown field"),
    ("profiles:\n- name: p\n  selector: {a: b}\n  homeMatters: 'no'\n",
     "config: profiles[0].homeMatters: must be true or false, got 'no'"),
    ("waiver: []\n", "config: waiver: unknown field"),
    ("- a\n", "config: must be a mapping, got list"),
])
def test_bad_configs_name_the_field_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "waivers:\n  - rule: [\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"config: {path}:") and "not valid YAML" in str(err.value)
    assert "\n" not in str(err.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absent.yaml: No such file or directory"):
        load_config(str(tmp_path / "absent.yaml"))


def test_loaded_config_drives_evaluation(tmp_path: Path) -> None:
    from rules.rule_snapshots import declared, observed, readonly, with_paths

    from agent.rules.evaluate import evaluate, findings_of
    from agent.rules.profiles import match_profile

    config = load_config(write(tmp_path, """
        profiles:
        - name: spark-data
          selector: app.kubernetes.io/name=spark-operator
          writablePaths: [/opt/spark/work-dir]
        waivers:
        - rule: SeccompUnconfined
          reason: profiling build
          selector: {app.kubernetes.io/component: controller}
        severityOverrides:
          PrivilegeEscalationAllowed: critical
        """))
    decl = declared()
    profile = match_profile(decl, config)
    assert profile.name == "spark-data"
    snap = with_paths(observed(seccomp="disabled", no_new_privs=False),
                      readonly("/opt/spark/work-dir"))
    found = findings_of(evaluate(snap, decl, profile, config))
    rules = {f.rule: f for f in found}
    assert "SeccompUnconfined" not in rules
    assert rules["PrivilegeEscalationAllowed"].severity is Severity.CRITICAL
    assert "/opt/spark/work-dir" in rules["WritablePathMissing"].message


def test_a_config_profile_says_whether_tmp_and_home_matter(tmp_path: Path) -> None:
    from rules.rule_snapshots import declared, missing, observed, readonly, with_paths

    from agent.rules.evaluate import evaluate, findings_of
    from agent.rules.profiles import match_profile

    text = """
        profiles:
        - name: quiet-go
          selector: app.kubernetes.io/name=spark-operator
          tmpMatters: {tmp}
          homeMatters: {home}
        """
    ident = dataclasses.replace(observed().identity, home="/nonexistent", env_home=None)
    snap = with_paths(observed(identity=ident, environ=(), filesystem=Filesystem(True, (), ())),
                      readonly("/tmp"), missing("/nonexistent"))
    decl = declared(env=())  # no SPARK_SUBMIT_OPTS: no Ivy dir to write
    severities = {}
    for tmp, home in (("true", "true"), ("false", "false")):
        config = load_config(write(tmp_path, text.format(tmp=tmp, home=home)))
        profile = match_profile(decl, config)
        assert (profile.temp_matters, profile.home_matters) == (tmp == "true", home == "true")
        found = {f.rule: f.severity for f in findings_of(evaluate(snap, decl, profile, config))}
        severities[tmp] = (found.get("WritablePathMissing"), found.get("HomeDirectoryUnusable"))
    assert severities == {"true": (Severity.HIGH, Severity.MEDIUM),
                          "false": (None, Severity.INFO)}
