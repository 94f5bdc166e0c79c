"""`opaudit lint` says what differs between runtimes and what a manifest cannot tell: a
finding merged over runtimes reads true on each of them, its wording says the ports are
predicted (declared), and a hostNetwork pod's threshold and bindable ports are unknown, not
empty. Run as a user runs it (a separate process)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from cli_run import ROOT, opaudit

CONTROLLER = ROOT / "scripts" / "demo-pods" / "controller.yaml"
# Each model's ip_unprivileged_port_start in a pod's own netns, as the README's table of
# runtime models gives it (kernel default 1024; containerd 2.0's enable_unprivileged_ports).
THRESHOLD = {"containerd": 1024, "containerd-2": 0, "cri-o": 1024}
SYSCTL = "net.ipv4.ip_unprivileged_port_start"

HOST_NETWORK = """\
apiVersion: v1
kind: Pod
metadata: {name: node-agent, namespace: ops}
spec:
  hostNetwork: true
  containers:
  - name: agent
    image: example/agent:1
    ports: [{containerPort: 9100}, {containerPort: 80}]
    securityContext:
      runAsUser: 1000
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
"""


def _json(path: Path) -> dict[str, Any]:
    done = opaudit("lint", str(path), "-o", "json")
    assert done.returncode in (0, 1), done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def test_a_finding_merged_over_runtimes_names_each_runtimes_own_threshold() -> None:
    (container,) = _json(CONTROLLER)["containers"]
    unneeded = [f for f in container["findings"] if f["rule"] == "NetBindServiceUnneeded"]
    held_on = [r for f in unneeded for r in f["runtimes"]]
    assert sorted(held_on) == sorted(THRESHOLD)  # each runtime once, none lost
    for finding in unneeded:
        for runtime in finding["runtimes"]:
            assert f"{SYSCTL}={THRESHOLD[runtime]} " in finding["message"], (runtime, finding)
            assert f"ip_unprivileged_port_start={THRESHOLD[runtime]}" in finding["observed"]
    assert len(unneeded) == 2  # containerd 1.x with CRI-O (1024); containerd 2.x (0)


def test_predicted_wording_says_would_listen_on_not_listens_on() -> None:
    (container,) = _json(CONTROLLER)["containers"]
    unneeded = [f for f in container["findings"] if f["rule"] == "NetBindServiceUnneeded"]
    for finding in unneeded:
        assert "every port it would listen on (8080, 8081)" in finding["message"], finding
    messages = " ".join(f["message"] for f in container["findings"])
    assert not re.search(r"\blistens on\b", messages), messages


def test_the_table_shows_each_threshold_on_its_own_runtimes() -> None:
    done = opaudit("lint", str(CONTROLLER), env={**os.environ, "COLUMNS": "400"})
    lines = done.stdout.splitlines()
    heads = [i for i, line in enumerate(lines) if "NetBindServiceUnneeded" in line]
    assert [lines[i].split("[", 1)[1] for i in heads] == [
        "on containerd 1.x, CRI-O; not on containerd 2.x]",
        "on containerd 2.x; not on containerd 1.x, CRI-O]"], done.stdout
    assert f"{SYSCTL}=1024 " in lines[heads[0] + 1]
    assert f"{SYSCTL}=0 " in lines[heads[1] + 1]


def test_host_network_prediction_names_the_unknown_threshold_and_ports(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(HOST_NETWORK)
    (container,) = _json(path)["containers"]
    assert {p["runtime"] for p in container["predicted"]} == set(THRESHOLD)
    for prediction in container["predicted"]:
        assert prediction["ip_unprivileged_port_start"] is None
        assert prediction["bindable_ports"] is None  # unknown, not "none bindable"
        gaps = {g["fact"]: g["reason"] for g in prediction["incomplete"]}
        assert "node's own sysctl" in gaps[SYSCTL] and "manifest cannot tell" in gaps[SYSCTL]
    assert "PrivilegedPortNotBindable" in {u["rule"] for u in container["unknown"]}
    table = opaudit("lint", str(path), env={**os.environ, "COLUMNS": "400"}).stdout
    assert f"{SYSCTL}: hostNetwork: the pod shares the node's network namespace" in table
    sarif = json.loads(opaudit("lint", str(path), "-o", "sarif").stdout)
    assert all("PrivilegedPortNotBindable" not in r.get("ruleId", "")
               for run in sarif["runs"] for r in run["results"])


def test_own_netns_prediction_still_lists_bindable_ports(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(HOST_NETWORK.replace("hostNetwork: true", "hostNetwork: false"))
    (container,) = _json(path)["containers"]
    ports = {p["runtime"]: p["bindable_ports"] for p in container["predicted"]}
    assert ports == {"containerd": ["tcp/9100"], "containerd-2": ["tcp/80", "tcp/9100"],
                     "cri-o": ["tcp/9100"]}
    assert all(SYSCTL not in {g["fact"] for g in p["incomplete"]}
               for p in container["predicted"])


def test_sarif_keeps_one_alert_per_rule_and_subject_naming_each_threshold() -> None:
    sarif = json.loads(opaudit("lint", str(CONTROLLER), "-o", "sarif").stdout)
    results = [r for r in sarif["runs"][0]["results"]
               if r["ruleId"] == "NetBindServiceUnneeded"]
    assert len(results) == 1  # one fingerprint, one alert
    text = results[0]["message"]["text"]
    assert "[on containerd 1.x, CRI-O] " in text and f"{SYSCTL}=1024 " in text
    assert "[on containerd 2.x] " in text and f"{SYSCTL}=0 " in text
    assert results[0]["properties"]["runtimes"] == ["containerd", "containerd-2", "cri-o"]
    prints = [r["partialFingerprints"]["opauditFinding/v1"] for r in sarif["runs"][0]["results"]]
    assert len(set(prints)) == len(prints)
    values = opaudit("lint", str(CONTROLLER), "-o", "helm-values").stdout
    assert values.count(": NetBindServiceUnneeded") == 1
