"""The JSON report lists, per target, the rules that passed and those that could not be
evaluated, with the missing facts and why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from staging import Sock, Stage

from agent.model import Fact
from agent.rules.catalogue import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]


def test_diagnose_json_names_the_rules_it_could_not_evaluate(stage: Stage) -> None:
    proc = stage.spawn([Sock("tcp", 4, "0.0.0.0", 8080)], netns=stage.netns(), uid=185,
                       no_new_privs=True, seccomp=False, readonly_root=True, tmpfs=["/tmp"])
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "diagnose", "--pid", str(proc.pid), "-o", "json",
         "--fail-on", "critical"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    (target,) = doc["targets"]
    unevaluated = {u["rule"]: u["missing"] for u in target["unevaluated"]}
    # audited by pid alone: every rule that needs the pod spec says so, and nothing else
    # keeps it from a verdict (we run as root, in a netns of our own)
    needs_spec = {r.id for r in CATALOGUE if Fact.POD_SPEC in r.facts}
    assert set(unevaluated) == needs_spec
    for missing in unevaluated.values():
        assert [m["fact"] for m in missing] == [Fact.POD_SPEC]
        assert "--pod-spec" in missing[0]["reason"]
    fired = {f["rule"] for f in doc["findings"]}
    assert set(target["passed"]).isdisjoint(fired | set(unevaluated))
    assert set(target["passed"]) | fired | set(unevaluated) == {r.id for r in CATALOGUE}
    assert target["waived"] == []
    assert "RunsAsRoot" in target["passed"]
    # staged without a seccomp filter; every finding says what was observed, none what was
    # declared (there is no pod spec)
    assert "SeccompUnconfined" in fired
    for finding in doc["findings"]:
        assert finding["declared"] is None, finding
        assert finding["observed"], finding
