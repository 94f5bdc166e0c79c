"""Every file a user names (--pod-spec, --config, --kubeconfig) is read bounded: a regular
file or stdin, under a size limit, one line and exit 2 for anything else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cli_run
import pytest
from fixture_data import pod_fixture

from agent.config import CONFIG_LIMIT
from agent.kube.apiconfig import KUBECONFIG_LIMIT
from agent.kube.podspec import POD_SPEC_LIMIT
from agent.userfile import load_user_yaml, read_user_file

ROOT = Path(__file__).resolve().parents[1]
# Far above what a bounded read of the largest limit (16 MiB) needs, far below 1.5 GB.
RSS_CEILING_MIB = 200


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mib: float


def opaudit(*args: str, stdin_text: str | None = None) -> Run:
    """The CLI as a program; no API configuration but what the arguments give."""
    started = time.monotonic()
    result = cli_run.opaudit(*args, stdin_text=stdin_text,
                             env={**os.environ, "KUBECONFIG": os.devnull})
    return Run(result.returncode, result.stdout, result.stderr, time.monotonic() - started, 0.0)


# The child's ru_maxrss would include the RSS of the process it was forked from (Linux keeps
# the hiwater mark across exec): pytest's, hundreds of MiB late in a run. A fresh interpreter
# forks opaudit instead and reports its children's peak.
PEAK_RSS_OF_CHILD = """
import resource, subprocess, sys
with open(sys.argv[2], "rb") as stdin:
    code = subprocess.call(sys.argv[3:], stdin=stdin)
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def measured(*args: str, stdin_path: str, tmp_path: Path) -> Run:
    """Like opaudit(), with the peak RSS of the opaudit process alone."""
    started = time.monotonic()
    peak = tmp_path / "peak-rss-kib"
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_OF_CHILD, str(peak), stdin_path,
         sys.executable, "-m", "agent.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    return Run(result.returncode, result.stdout, result.stderr, time.monotonic() - started,
               int(peak.read_text()) / 1024)


def assert_one_line_exit_2(run: Run, *words: str) -> None:
    assert run.returncode == 2, run
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, run.stderr
    for word in words:
        assert word in run.stderr, run.stderr


# Each option with the arguments that make it read its file first.
FILE_OPTIONS = {
    "pod spec": ["diagnose", "--self", "--pod-spec"],
    "config": ["diagnose", "--self", "--config"],
    "kubeconfig": ["diagnose", "-l", "app=x", "--kubeconfig"],
}


@pytest.mark.parametrize("what", FILE_OPTIONS)
def test_dev_zero_is_refused_without_reading_it(what: str, tmp_path: Path) -> None:
    run = measured(*FILE_OPTIONS[what], "/dev/zero", stdin_path=os.devnull, tmp_path=tmp_path)
    assert_one_line_exit_2(run, what, "/dev/zero: not a regular file (a character device)")
    assert run.max_rss_mib < RSS_CEILING_MIB


@pytest.mark.parametrize("what", FILE_OPTIONS)
def test_a_directory_and_a_fifo_are_refused(what: str, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened for reading without a writer: must not wait for one
    assert_one_line_exit_2(opaudit(*FILE_OPTIONS[what], str(fifo)), "not a regular file (a pipe)")
    assert_one_line_exit_2(opaudit(*FILE_OPTIONS[what], str(tmp_path)), "(a directory)")


def test_pod_spec_from_endless_stdin_stops_at_the_limit(tmp_path: Path) -> None:
    run = measured("diagnose", "--self", "--pod-spec", "-", stdin_path="/dev/zero",
                   tmp_path=tmp_path)
    assert_one_line_exit_2(run, f"pod spec stdin: larger than {POD_SPEC_LIMIT >> 20} MiB")
    assert run.max_rss_mib < RSS_CEILING_MIB


@pytest.mark.parametrize(("what", "limit"), [("pod spec", POD_SPEC_LIMIT),
                                             ("config", CONFIG_LIMIT),
                                             ("kubeconfig", KUBECONFIG_LIMIT)])
def test_a_file_over_the_limit_is_refused_at_once(what: str, limit: int, tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "w") as handle:  # valid YAML all the way: only its size is wrong
        handle.write("a:\n")
        line = "- " + "x" * 1000 + "\n"
        handle.write(line * (limit // len(line) + 1))
    run = opaudit(*FILE_OPTIONS[what], str(big))
    assert_one_line_exit_2(run, what, f"{big}: larger than {limit >> 20} MiB")
    assert run.seconds < 20


@pytest.mark.parametrize("what", FILE_OPTIONS)
@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_deep_nesting_is_one_line(what: str, opener: str, tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    if opener == "- ":  # block sequences, each level indented one more (723 kB)
        deep.write_text("".join(" " * i + "- \n" for i in range(1200)))
    else:
        deep.write_text(opener * 200_000)
    run = opaudit(*FILE_OPTIONS[what], str(deep))
    assert_one_line_exit_2(run, what, f"{deep}: nested too deeply")


def test_binary_file_names_the_file(tmp_path: Path) -> None:
    binary = tmp_path / "kubeconfig"
    binary.write_bytes(bytes(range(256)) * 4)
    run = opaudit("diagnose", "-l", "app=x", "--kubeconfig", str(binary))
    assert_one_line_exit_2(run, f"kubeconfig {binary}: not UTF-8 text")


def test_pod_spec_from_stdin_is_the_same_pod_as_from_the_file() -> None:
    manifest = pod_fixture("spark-operator-controller.yaml")
    from_file = opaudit("diagnose", "--self", "--pod-spec", str(manifest), "-o", "json",
                        "--fail-on", "critical")
    from_stdin = opaudit("diagnose", "--self", "--pod-spec", "-", "-o", "json",
                         "--fail-on", "critical", stdin_text=manifest.read_text())
    assert from_file.returncode == from_stdin.returncode == 0, from_stdin.stderr
    declared = [json.loads(r.stdout)["targets"][0] for r in (from_file, from_stdin)]
    assert declared[0]["pod"] == declared[1]["pod"] and declared[0]["pod"]["name"]
    assert declared[0]["container"] == declared[1]["container"]


def test_reader_keeps_a_file_at_the_limit(tmp_path: Path) -> None:
    exact = tmp_path / "exact"
    exact.write_text("a" * 1024)
    assert read_user_file(str(exact), "test", 1024) == "a" * 1024
    assert load_user_yaml(str(exact), "test", 1024) == "a" * 1024
