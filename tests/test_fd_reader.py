"""Which reader found the socket owners, as a user and an operator see it: `sockets` and
`diagnose -o json` say it and why the other was not used, an unknown OPAUDIT_FD_READER is
one line and exit 2, and the agent logs its first fallback once and labels a metric."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from agent_run import AgentProcess, assert_json_lines, free_port, http_get, loop_argv, wait_for
from cgroup_staging import KubepodsCgroups
from cli_run import ROOT, opaudit
from kube.apiserver import ApiServer
from pod_staging import NODE, stage_pod
from seccomp_shim import DENY_BPF, SYS_BPF
from staging import STAGE_PYTHON, Sock, Stage

from agent.collect.btf import VMLINUX_BTF
from agent.collect.sockets import READER_SETTINGS

needs_bpf = pytest.mark.skipif(SYS_BPF is None or not os.path.exists(VMLINUX_BTF),
                               reason="no bpf(2) number for this machine, or no kernel BTF")
FALLBACK_LOG = "the BPF fd iterator cannot run: socket owners are read from /proc"


def env_with(reader: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPAUDIT_FD_READER"}
    return env if reader is None else {**env, "OPAUDIT_FD_READER": reader}


def without_bpf(*args: str, reader: str) -> subprocess.CompletedProcess[str]:
    """`opaudit ARGS` under a seccomp filter that says EPERM to bpf(2), CAP_SYS_ADMIN held."""
    return subprocess.run([STAGE_PYTHON, "-c", DENY_BPF, sys.executable, "-m", "agent.cli",
                           *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=env_with(reader))


@needs_bpf
def test_sockets_and_diagnose_say_which_reader_found_the_owners(stage: Stage) -> None:
    server = stage.spawn([Sock("tcp", 4, "0.0.0.0", 7311)], netns=stage.netns())
    pid = str(server.pid)

    def sockets(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        assert run.returncode == 0, run.stderr
        doc: dict[str, Any] = json.loads(run.stdout)
        assert [x["pids"] for x in doc["listeners"]] == [[server.pid]]  # found either way
        return doc

    auto = sockets(opaudit("sockets", "--pid", pid, "-o", "json", env=env_with(None)))
    assert auto["owner_reader"] == {
        "reader": "proc", "fallback": None,
        "why": "fewer than 10,000 fds in these processes: cheaper than loading the BPF "
               "iterator"}
    forced = sockets(opaudit("sockets", "--pid", pid, "-o", "json", env=env_with("bpf")))
    assert forced["owner_reader"] == {"reader": "bpf", "why": "OPAUDIT_FD_READER=bpf",
                                      "fallback": None}
    never = sockets(opaudit("sockets", "--pid", pid, "-o", "json", env=env_with("proc")))
    assert never["owner_reader"]["why"] == "OPAUDIT_FD_READER=proc"
    refused = sockets(without_bpf("sockets", "--pid", pid, "-o", "json", reader="bpf"))
    assert refused["owner_reader"]["reader"] == "proc"
    assert refused["owner_reader"]["fallback"] == "refused"
    assert "seccomp filter" in refused["owner_reader"]["why"]

    run = without_bpf("diagnose", "--pid", pid, "-o", "json", reader="bpf")
    assert run.returncode in (0, 1), run.stderr
    (target,) = json.loads(run.stdout)["targets"]
    assert target["network"]["owner_reader"] == refused["owner_reader"]
    assert [x["pids"] for x in target["network"]["listeners"]] == [[server.pid]]


@pytest.mark.parametrize("command", [["sockets", "--pid", "1"], ["diagnose", "--self"],
                                     ["run", "--once", "--node", NODE]])
def test_an_unknown_fd_reader_is_one_line_and_exit_2(command: list[str]) -> None:
    run = opaudit(*command, env=env_with("ebpf"))
    assert run.returncode == 2, run
    assert run.stderr.splitlines() == [
        "opaudit: OPAUDIT_FD_READER='ebpf' is not one of auto, proc, bpf"]
    assert run.stdout == ""


@needs_bpf
def test_the_agent_logs_its_first_fallback_once_and_labels_a_metric(
        stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: Path) -> None:
    server.add_pod(stage_pod(stage, cgroups, "so-controller-fd").manifest)
    port = free_port()
    argv = [STAGE_PYTHON, "-c", DENY_BPF, *loop_argv(kubeconfig, port, 1, "--sink", "stdout")]
    label = 'opaudit_fd_reader{fallback="refused",reader="proc"} 1.0'

    def cycles() -> float:
        text = http_get(port, "/metrics")[1]
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("opaudit_cycles_total{"))

    with AgentProcess(argv, env=env_with("bpf")) as agent:
        assert wait_for(lambda: label in http_get(port, "/metrics")[1], 60), \
            http_get(port, "/metrics")[1]
        assert wait_for(lambda: cycles() >= 3, 60)  # fell back in each of them
        assert 'opaudit_fd_reader{fallback="",reader="bpf"}' not in http_get(port, "/metrics")[1]
        assert agent.terminate(timeout=10) == 0
    reports = assert_json_lines(agent.out)
    assert len(reports) >= 3
    for report in reports:
        for target in report["targets"]:
            assert target["network"]["owner_reader"]["fallback"] == "refused"
    (logged,) = [line for line in assert_json_lines(agent.err) if line["msg"] == FALLBACK_LOG]
    assert logged["fallback"] == "refused" and "seccomp filter" in logged["reason"]


def test_the_charts_fd_reader_values_are_the_agents() -> None:
    """The chart's `fdReader` (OPAUDIT_FD_READER in the DaemonSet) accepts exactly what the
    agent accepts: a value the agent refused would make every agent pod exit 2 at start."""
    chart = ROOT / "daemonset" / "chart"
    schema = json.loads((chart / "values.schema.json").read_text())
    assert schema["properties"]["fdReader"]["enum"] == list(READER_SETTINGS)
    assert yaml.safe_load((chart / "values.yaml").read_text())["fdReader"] == "auto"
