"""The table on a terminal that reports 0 columns, wrapping that never splits a token, and
waived rules shown with their reason in the table and the JSON.

Real processes staged on the real kernel, read by `opaudit` run as a program: on a real
pseudo-terminal whose size is 0 x 0 (what `script -qc` and `podman run -t` from a non-tty
give; `stty size` on it is the oracle), or through a pipe.
"""

from __future__ import annotations

import json
from pathlib import Path

from agent_run import run_once
from cgroup_staging import KubepodsCgroups
from fixture_data import pod_fixture
from kube.apiserver import ApiServer
from output import console
from output.console import opaudit, root_server
from pod_staging import NAMESPACE, stage_pod
from staging import Stage

# A path as long as a real overlay layer's, longer than any line of the table.
LONG_HOME = ("/var/lib/containers/storage/overlay/"
             "3f4c2a1b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b/merged/home")
CONTROLLER = "spark-operator-controller.yaml"
WAIVER_REASON = "the chart's root init step is reviewed"


def on_a_terminal(args: list[str], columns: int, rows: int) -> tuple[str, str]:
    """opaudit's stdout on a real tty of `columns` x `rows`, and what `stty size` says there."""
    text, size = console.on_a_terminal(args, {"TERM": "dumb"}, columns=columns, rows=rows)
    return text.replace("\r\n", "\n"), size


def wrapped_widths(text: str) -> list[int]:
    """The widths of the lines wrapping made: a line that is one token (a path longer than
    the line, such as a mount of another container on this host) is as long as it is."""
    return [len(line) for line in text.splitlines() if " " in line.strip()]


def test_a_terminal_of_zero_columns_gets_80(stage: Stage) -> None:
    parent, _ = root_server(stage)
    text, size = on_a_terminal(["diagnose", "--pid", str(parent)], columns=0, rows=0)
    assert size == "0 0"
    assert 70 < max(wrapped_widths(text)) <= 80, text  # not the 40 a width of 0 was clamped to
    # Near miss: a terminal that reports its width keeps it.
    text, size = on_a_terminal(["diagnose", "--pid", str(parent)], columns=100, rows=30)
    assert size == "30 100" and 80 < max(wrapped_widths(text)) <= 100, text


def test_a_path_longer_than_the_line_is_never_split(stage: Stage) -> None:
    pid = stage.spawn((), netns=stage.netns(), readonly_root=True, tmpfs=("/tmp",),
                      env={"HOME": LONG_HOME}, argv=["sleep", "600"]).pid
    for columns in ("80", "60"):
        text = opaudit("diagnose", "--pid", str(pid), env={"COLUMNS": columns}).stdout
        lines = text.splitlines()
        assert sum(LONG_HOME in line for line in lines) >= 2, text  # the identity row, the finding
        # Every line that holds part of the path holds all of it, and only the path.
        assert all(line.strip() == LONG_HOME for line in lines if LONG_HOME[:48] in line), text
        assert max(wrapped_widths(text)) <= int(columns), text


def test_a_waived_rule_is_one_table_line_with_its_reason_and_json_carries_it(
        stage: Stage, tmp_path: Path) -> None:
    parent, child = root_server(stage)
    config = tmp_path / "config.yaml"
    config.write_text(f"waivers:\n- rule: RunsAsRoot\n  reason: \"{WAIVER_REASON}\"\n"
                      "  namespace: spark-operator\n")
    both = ["--pid", str(parent), "--pid", str(child), "--pod-spec", str(pod_fixture(CONTROLLER)),
            "--config", str(config)]
    table = opaudit("diagnose", *both).stdout
    mentions = [line for line in table.splitlines() if "RunsAsRoot" in line]
    assert mentions == [f"    WAIVED    RunsAsRoot  reason: {WAIVER_REASON}"], table
    doc = json.loads(opaudit("diagnose", *both, "-o", "json").stdout)
    assert "RunsAsRoot" not in {f["rule"] for f in doc["findings"]}
    assert [t["waived"] for t in doc["targets"]] == [
        [{"rule": "RunsAsRoot", "reason": WAIVER_REASON}]] * 2
    # Near miss: without the waiver it is a finding again, and no WAIVED line is shown.
    plain = opaudit("diagnose", *both[:-2]).stdout
    assert "WAIVED" not in plain and "    HIGH      RunsAsRoot" in plain


def test_a_policy_report_skip_result_carries_the_waivers_reason(
        stage: Stage, cgroups: KubepodsCgroups, tmp_path: Path) -> None:
    pod = stage_pod(stage, cgroups, "so-waived")  # no_new_privs off: PrivilegeEscalationAllowed
    config = tmp_path / "config.yaml"
    config.write_text(f"waivers:\n- rule: PrivilegeEscalationAllowed\n"
                      f"  reason: \"{WAIVER_REASON}\"\n  namespace: {NAMESPACE}\n")
    with ApiServer(report_apis=("openreports.io/v1alpha1",)) as server:
        server.add_pod(pod.manifest)
        kubeconfig = Path(server.write_kubeconfig(tmp_path / "kubeconfig"))
        result = run_once(kubeconfig, "--sink", "reports", "--config", str(config))
        assert result.returncode == 0, result.stderr
        (report,) = server.custom_objects("openreports.io/v1alpha1")
    (entry,) = [r for r in report["results"] if r["rule"] == "PrivilegeEscalationAllowed"]
    assert entry["result"] == "skip"
    assert entry["message"] == ("PrivilegeEscalationAllowed fired but is waived by --config: "
                                f"{WAIVER_REASON}")
