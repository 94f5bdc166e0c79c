"""Values checked when the command line is parsed (README): one line, exit 2, nothing run."""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import time
from pathlib import Path

import pytest
from cli_run import capsh, opaudit

from agent.arguments import build_parser

ROOT = Path(__file__).resolve().parents[1]


def assert_usage_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    for word in words:
        assert word in result.stderr


# capsh takes each of these without complaint (exit 0): most as 0, some saturated to 64
# ones; the README's command line allows 1-16 hex digits with an optional 0x, nothing else.
NOT_A_MASK = ["zzz", "", "-1", "+1", " 1", "1 ", "0x", "0xg", "1" * 17, "0x" + "f" * 17,
              "00000000000000001", "１"]


@pytest.mark.parametrize("text", NOT_A_MASK)
def test_caps_decode_refuses_what_capsh_silently_misreads(text: str) -> None:
    assert capsh(text).returncode == 0  # the oracle accepts it...
    assert_usage_error(opaudit("caps", "decode", text), repr(text))  # ...we don't


@pytest.mark.parametrize("text", ["0", "1", "0x1", "0X30", "DEADBEEF", "f" * 16, "0x" + "0" * 16,
                                  "000000000000040a"])
def test_caps_decode_of_valid_masks_stays_byte_identical_to_capsh(text: str) -> None:
    ours, theirs = opaudit("caps", "decode", text), capsh(text)
    assert (ours.stdout, ours.stderr, ours.returncode) == (theirs.stdout, "", 0)


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "-inf", "1e308", "0.5", "86401",
                                   "sixty", ""])
def test_run_interval_is_checked_at_parse_time(value: str, tmp_path: Path) -> None:
    # A kubeconfig that does not exist: a late check would fail on it, or start cycling.
    started = time.monotonic()
    result = opaudit("run", "--once", "--node", "n", "--kubeconfig", str(tmp_path / "none"),
                     f"--interval={value}")
    assert_usage_error(result, "--interval", repr(value))
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("value", ["70000", "-1", "0", "65536", "http", "80.5"])
def test_run_metrics_port_is_checked_at_parse_time(value: str, tmp_path: Path) -> None:
    result = opaudit("run", "--once", "--node", "n", "--kubeconfig", str(tmp_path / "none"),
                     f"--metrics-port={value}")
    assert_usage_error(result, "--metrics-port", repr(value))


def test_run_accepts_the_ends_of_each_range() -> None:
    parser = build_parser()
    low = parser.parse_args(["run", "--interval", "1", "--metrics-port", "1"])
    high = parser.parse_args(["run", "--interval", "86400", "--metrics-port", "65535"])
    assert (low.interval, low.metrics_port, high.interval, high.metrics_port) == (
        1.0, 1, 86400.0, 65535)
    assert parser.parse_args(["run"]).interval == 60.0


@pytest.mark.parametrize("args", [["diagnose", "--pid", "0"], ["diagnose", "--pid", "-3"],
                                  ["diagnose", "--pid", "x"], ["sockets", "--pid", "0"]])
def test_a_pid_is_a_positive_integer(args: list[str]) -> None:
    assert_usage_error(opaudit(*args), "--pid")


def test_version_is_the_installed_distribution_version() -> None:
    result = opaudit("--version")
    assert result.returncode == 0
    assert result.stdout == f"opaudit {importlib.metadata.version('opaudit')}\n"


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser, by its prog: `opaudit`, `opaudit caps decode`, ..."""
    found: dict[str, argparse.ArgumentParser] = {}
    pending = [build_parser()]
    while pending:
        parser = pending.pop()
        found[parser.prog] = parser
        for action in parser._actions:  # argparse keeps no public list of subparsers
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
    return found


def test_every_option_and_argument_has_help() -> None:
    missing = [f"{prog} {'/'.join(action.option_strings) or action.dest}"
               for prog, parser in subcommand_parsers().items()
               for action in parser._actions
               if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert missing == []


def test_help_shows_defaults_repetition_and_exit_codes() -> None:
    run_help = opaudit("run", "--help").stdout
    assert "(default: 60)" in run_help and "9090" in run_help
    diagnose_help = " ".join(opaudit("diagnose", "--help").stdout.split())
    assert "--pid PID process to audit; repeat for several" in diagnose_help
    assert "--pod NS/NAME a pod whose containers run on this node (needs the API); repeatable" \
        in diagnose_help
    for prog in ("diagnose", "run", "sockets"):
        text = opaudit(prog, "--help").stdout
        assert "exit status:" in text and "\n  2  " in text, prog
    assert "\n  1  a finding at or above --fail-on" in opaudit("diagnose", "--help").stdout
    assert "-n NAMESPACE, --namespace NAMESPACE" in run_help
