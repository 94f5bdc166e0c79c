"""opaudit lint on opaudit's own chart (daemonset/chart): the prediction is the privilege set
the README's "The agent's own privileges" declares, and the two findings it accepts."""

from __future__ import annotations

import json
import subprocess
import sys

from cli_run import ROOT
from manifests import CHART_DIR, NAMESPACE, RELEASE, need


def test_the_agent_is_predicted_with_exactly_its_declared_privileges() -> None:
    rendered = subprocess.run([need("helm"), "template", RELEASE, str(CHART_DIR), "--namespace",
                               NAMESPACE], capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    done = subprocess.run([sys.executable, "-m", "agent.cli", "lint", "-", "-o", "json"],
                          input=rendered.stdout, capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 1, done.stderr  # RunsAsRoot and CapabilitiesNotDropped: high
    (agent,) = json.loads(done.stdout)["containers"]
    assert agent["kind"] == "DaemonSet"
    three = ["DAC_READ_SEARCH", "SYS_ADMIN", "SYS_PTRACE"]
    for prediction in agent["predicted"]:  # every runtime alike: drop ALL, add the three
        assert prediction["uid"] == 0 and prediction["condition"] is None
        assert prediction["capabilities"] == {"effective": three, "permitted": three,
                                              "inheritable": [], "bounding": three,
                                              "ambient": []}
        assert prediction["no_new_privs"] is True  # allowPrivilegeEscalation: false
        assert prediction["seccomp"] == "filter" and prediction["root_readonly"] is True
    assert sorted(f["rule"] for f in agent["findings"]) == ["CapabilitiesNotDropped",
                                                            "RunsAsRoot"]
