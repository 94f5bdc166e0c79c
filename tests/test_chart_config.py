"""The chart's `config` value and `opaudit --config` refuse the same configs.

A config the schema lets through but the agent refuses makes every agent pod exit 2 at
start (a crash loop on every node). Each case is given to the real helm twice: with the
schema, for its verdict, and without it (`--skip-schema-validation`), for the ConfigMap the
pods would read, which the agent's own loader then judges. The two verdicts must agree, and
must be the one the case expects.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_run import ROOT, opaudit
from manifests import CHART_DIR, documents, helm

from agent.config import ConfigError, load_config
from agent.model import Severity
from agent.rules.catalogue import CATALOGUE

sys.path.insert(0, str(ROOT / "scripts"))

from chart_schema import catalogue, generated  # noqa: E402

WAIVER = {"rule": "UndeclaredListener", "reason": "pprof is reviewed", "namespace": "apps"}
PROFILE = {"name": "api", "selector": {"app": "api"}}

# Each refused config, named by what is wrong. The first four are those a user hit on the
# chart before it had these rules; the others are every other refusal in agent/config.py.
REFUSED: dict[str, Any] = {
    "waiver without namespace or selector": {"waivers": [
        {"rule": "UndeclaredListener", "reason": "pprof is reviewed"}]},
    "unknown rule": {"waivers": [{**WAIVER, "rule": "NoSuchRule"}]},
    "misspelled severity override key": {"severityOverrides": {"EmptyDirWithoutSizelimit": "low"}},
    "misspelled profile field": {"profiles": [{**PROFILE, "writeablePaths": ["/data"]}]},
    "unknown top-level field": {"waiver": [WAIVER]},
    "config not a mapping": ["waivers"],
    "waivers not a list": {"waivers": WAIVER},
    "waiver not a mapping": {"waivers": ["UndeclaredListener"]},
    "waiver unknown field": {"waivers": [{**WAIVER, "namespaces": "apps"}]},
    "waiver without rule": {"waivers": [{"reason": "r", "namespace": "apps"}]},
    "waiver rule a number": {"waivers": [{**WAIVER, "rule": 7}]},
    "waiver rule in lower case": {"waivers": [{**WAIVER, "rule": "undeclaredlistener"}]},
    "waiver without reason": {"waivers": [{"rule": "UndeclaredListener", "namespace": "apps"}]},
    "waiver blank reason": {"waivers": [{**WAIVER, "reason": " \t"}]},
    "waiver reason of no-break spaces": {"waivers": [{**WAIVER, "reason": "\u00a0\u3000"}]},
    "waiver reason a list": {"waivers": [{**WAIVER, "reason": ["reviewed"]}]},
    "waiver blank namespace, no selector": {"waivers": [{**WAIVER, "namespace": "  "}]},
    "waiver namespace a number": {"waivers": [{**WAIVER, "namespace": 5}]},
    "waiver empty selector text, no namespace": {"waivers": [
        {"rule": "RunsAsRoot", "reason": "r", "selector": " , "}]},
    "waiver empty selector mapping, no namespace": {"waivers": [
        {"rule": "RunsAsRoot", "reason": "r", "selector": {}}]},
    "waiver selector not key=value": {"waivers": [{**WAIVER, "selector": "app"}]},
    "waiver selector part not key=value": {"waivers": [{**WAIVER, "selector": "a=b,c"}]},
    "waiver selector without key": {"waivers": [{**WAIVER, "selector": " =web"}]},
    "waiver selector label true": {"waivers": [{**WAIVER, "selector": {"canary": True}}]},
    "waiver selector label null": {"waivers": [{**WAIVER, "selector": {"canary": None}}]},
    "waiver selector label a list": {"waivers": [{**WAIVER, "selector": {"app": ["a"]}}]},
    "waiver selector a list": {"waivers": [{**WAIVER, "selector": ["app=web"]}]},
    "profiles not a list": {"profiles": PROFILE},
    "profile null": {"profiles": [None]},
    "profile without name": {"profiles": [{"selector": {"app": "api"}}]},
    "profile blank name": {"profiles": [{**PROFILE, "name": "\n"}]},
    "profile name a number": {"profiles": [{**PROFILE, "name": 1}]},
    "profile without selector": {"profiles": [{"name": "api"}]},
    "profile null selector": {"profiles": [{**PROFILE, "selector": None}]},
    "profile empty selector text": {"profiles": [{**PROFILE, "selector": ""}]},
    "profile empty selector mapping": {"profiles": [{**PROFILE, "selector": {}}]},
    "profile selector text without pairs": {"profiles": [{**PROFILE, "selector": ",,"}]},
    "profile selector a number": {"profiles": [{**PROFILE, "selector": 3}]},
    "profile relative writable path": {"profiles": [{**PROFILE, "writablePaths": ["data"]}]},
    "profile null writable path": {"profiles": [{**PROFILE, "writablePaths": [None]}]},
    "profile writable paths not a list": {"profiles": [{**PROFILE, "writablePaths": "/data"}]},
    "profile port 0": {"profiles": [{**PROFILE, "ports": [0]}]},
    "profile port 65536": {"profiles": [{**PROFILE, "ports": [65536]}]},
    "profile port a string": {"profiles": [{**PROFILE, "ports": ["8080"]}]},
    "profile port true": {"profiles": [{**PROFILE, "ports": [True]}]},
    "profile port 80.5": {"profiles": [{**PROFILE, "ports": [80.5]}]},
    "profile ports not a list": {"profiles": [{**PROFILE, "ports": 8080}]},
    "profile negative uid": {"profiles": [{**PROFILE, "uid": -1}]},
    "profile uid a string": {"profiles": [{**PROFILE, "uid": "1000"}]},
    "profile uid true": {"profiles": [{**PROFILE, "uid": True}]},
    "profile uid 1e21 (a float once rendered)": {"profiles": [{**PROFILE, "uid": 10**21}]},
    "profile tmpMatters a string": {"profiles": [{**PROFILE, "tmpMatters": "yes"}]},
    "profile homeMatters a number": {"profiles": [{**PROFILE, "homeMatters": 0}]},
    "profile helmValuesPrefix a number": {"profiles": [{**PROFILE, "helmValuesPrefix": 2}]},
    "unknown severity": {"severityOverrides": {"RunsAsRoot": "urgent"}},
    "severity a number": {"severityOverrides": {"RunsAsRoot": 3}},
    "severity null": {"severityOverrides": {"RunsAsRoot": None}},
    "severity true": {"severityOverrides": {"RunsAsRoot": True}},
    "severity override key of another case": {"severityOverrides": {"runsasroot": "low"}},
    "severityOverrides a list": {"severityOverrides": [{"RunsAsRoot": "low"}]},
}

ACCEPTED: dict[str, Any] = {
    "empty": {},
    "the README's example": {
        "profiles": [{"name": "my-api", "selector": {"app.kubernetes.io/name": "my-api"},
                      "writablePaths": ["/data"], "tmpMatters": True, "homeMatters": False,
                      "ports": [9090], "uid": 1000, "helmValuesPrefix": "api"}],
        "waivers": [{"rule": "UndeclaredListener", "reason": "pprof is reviewed and firewalled",
                     "namespace": "spark-operator",
                     "selector": {"app.kubernetes.io/component": "controller"}}],
        "severityOverrides": {"EmptyDirWithoutSizeLimit": "medium"}},
    "every section null": {"profiles": None, "waivers": None, "severityOverrides": None},
    "waiver with a namespace only": {"waivers": [WAIVER]},
    "waiver with a selector text only": {"waivers": [
        {"rule": "RunsAsRoot", "reason": "r", "selector": "app=web, tier==db"}]},
    "waiver with a selector mapping only": {"waivers": [
        {"rule": "RunsAsRoot", "reason": "r", "selector": {"app": "web", "tier": 2}}]},
    "waiver with a blank namespace and a selector": {"waivers": [
        {"rule": "RunsAsRoot", "reason": "r", "namespace": " ", "selector": {"app": "web"}}]},
    "waiver with a namespace and an empty selector": {"waivers": [
        {**WAIVER, "selector": ""}, {**WAIVER, "selector": {}}, {**WAIVER, "selector": None}]},
    "waiver null namespace and a selector": {"waivers": [
        {"rule": "RunsAsRoot", "reason": "r", "namespace": None, "selector": "a=b"}]},
    # The agent strips blanks around a rule id; a zero-width space is not a blank to it.
    "rule id between blanks": {"waivers": [{**WAIVER, "rule": " UndeclaredListener\t"}]},
    "reason of a zero-width space": {"waivers": [{**WAIVER, "reason": "\u200b"}]},
    "severities in any case": {"severityOverrides": {"RunsAsRoot": "HIGH",
                                                     "SeccompUnconfined": " Info "}},
    "every rule overridden": {"severityOverrides": {r.id: "low" for r in CATALOGUE}},
    "selector text with blank parts": {"profiles": [{**PROFILE, "selector": ",a=b,, c=d ,"}]},
    "selector text with == and !=": {"profiles": [{**PROFILE, "selector": "a==b,c!=d"}]},
    "profile with every optional field null": {"profiles": [
        {**PROFILE, "writablePaths": None, "tmpMatters": None, "homeMatters": None,
         "ports": None, "uid": None, "helmValuesPrefix": None}]},
    "profile bounds": {"profiles": [{**PROFILE, "ports": [1, 65535], "uid": 0,
                                     "writablePaths": [" /data", "/"]}]},
    # Helm renders 80.0 as 80, so the agent reads an integer.
    "profile port written 80.0": {"profiles": [{**PROFILE, "ports": [80.0]}]},
    # Rendered as YAML, U+0085 became a space and PyYAML refused a bare `=` or `<<` (its own
    # tags): the ConfigMap holds JSON.
    "strings YAML would change": {"waivers": [
        {**WAIVER, "reason": "=", "selector": {"a": "<<", "b": "yes", "c": "2024-01-01"}},
        {**WAIVER, "reason": "line\u0085next\u2028para\u00a0end"}]},
}


def test_the_generated_schema_definitions_are_current() -> None:
    """ruleId, configSeverity (from the agent's catalogue) and labelSelector are what
    scripts/chart-schema writes; the enums hold exactly the agent's ids and severities."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    for name, definition in generated(*catalogue()).items():
        assert schema["definitions"][name] == definition, "run scripts/chart-schema"
    assert sorted(schema["definitions"]["ruleId"]["else"]["enum"]) == sorted(
        rule.id for rule in CATALOGUE)
    assert sorted(schema["definitions"]["configSeverity"]["else"]["enum"]) == sorted(
        s.value for s in Severity)


def helm_verdict(values: Path, *args: str) -> tuple[bool, str]:
    result = helm("template", "opaudit", str(CHART_DIR), "--values", str(values), *args)
    return result.returncode == 0, result.stdout if result.returncode == 0 else result.stderr


def mounted_config(rendered: str) -> str | None:
    """config.yaml of the ConfigMap the pods would mount; None without one (no --config)."""
    maps = [d for d in documents(rendered) if d["kind"] == "ConfigMap"]
    return maps[0]["data"]["config.yaml"] if maps else None


def agent_verdict(text: str | None, tmp_path: Path) -> str | None:
    """The agent's error for the mounted config; None when it accepts."""
    if text is None:
        return None
    path = tmp_path / "config.yaml"
    path.write_text(text)
    try:
        load_config(str(path))
    except ConfigError as exc:
        return str(exc)
    return None


def judge(config: Any, tmp_path: Path) -> tuple[tuple[bool, str], str | None, str | None]:
    """helm's verdict, the agent's verdict, and the config the pods would mount."""
    values = tmp_path / "values.json"  # JSON: no YAML 1.1 reading of `n` or `yes` in the way
    values.write_text(json.dumps({"config": config}))
    schema = helm_verdict(values)
    rendered_ok, rendered = helm_verdict(values, "--skip-schema-validation")
    assert rendered_ok, rendered
    mounted = mounted_config(rendered)
    return schema, agent_verdict(mounted, tmp_path), mounted


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_helm_refuses_every_config_the_agent_refuses(case: str, tmp_path: Path) -> None:
    (helm_ok, helm_text), agent_error, _ = judge(REFUSED[case], tmp_path)
    assert agent_error is not None, "the agent accepts it: not a refused case"
    assert not helm_ok, f"helm accepts what the agent refuses: {agent_error}"
    assert "values don't meet the specifications of the schema" in helm_text, helm_text


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_helm_accepts_every_config_the_agent_accepts(case: str, tmp_path: Path) -> None:
    (helm_ok, helm_text), agent_error, mounted = judge(ACCEPTED[case], tmp_path)
    assert agent_error is None, agent_error
    assert helm_ok, helm_text
    # The pods read what was written, character for character (80.0 == 80).
    assert (json.loads(mounted) if mounted is not None else {}) == ACCEPTED[case]


@pytest.mark.parametrize("case", ["waiver without namespace or selector", "unknown rule",
                                  "misspelled severity override key",
                                  "misspelled profile field"])
def test_the_issue_configs_end_the_agent_as_they_end_the_chart(case: str,
                                                                tmp_path: Path) -> None:
    """What a pod with such a ConfigMap runs: `opaudit run --config`, exit 2, one line."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(REFUSED[case]))
    result = opaudit("run", "--once", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("opaudit: config: ") and result.stderr.count("\n") == 1
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": REFUSED[case]}))
    helm_ok, helm_text = helm_verdict(values)
    assert not helm_ok and "values don't meet the specifications of the schema" in helm_text
