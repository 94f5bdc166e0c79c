"""What the README shows a user must keep working."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from agent import __version__
from agent.config import parse_config

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_the_config_example_loads() -> None:
    block = re.search(r"```yaml\n(profiles:.*?)```", README, flags=re.S)
    assert block is not None
    config = parse_config(yaml.safe_load(block.group(1)))
    assert [p.name for p in config.profiles] == ["my-api"]
    assert config.waivers[0].reason


def test_first_screen_shows_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:40])
    assert "scripts/demo" in first_screen and "scripts/test" in first_screen


def sh_block_after(text: str) -> str:
    match = re.search(re.escape(text) + r".*?```sh\n(.*?)```", README, flags=re.S)
    assert match is not None, text
    return match.group(1)


def test_the_first_commands_run_as_written() -> None:
    """Each line of the no-cluster block, run from the repository root with the .venv the
    scripts made: every command works, with the exit status the README gives."""
    lines = [line for line in sh_block_after("`opaudit` is `.venv/bin/opaudit`").splitlines()
             if line.strip()]
    script = "\n".join(f'{line}\necho "@@exit=$?"' for line in lines)
    result = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    outputs = result.stdout.split("@@exit=")
    statuses = [int(part.split("\n", 1)[0]) for part in outputs[1:]]
    assert statuses == [0, 0, 0, 0, 1], result.stderr
    version, sockets, decode, diagnose = outputs[1:5]
    assert version.split("\n", 1)[1] == f"opaudit {__version__}\n"
    assert sockets.split("\n", 1)[1].startswith("Netid  State")
    capsh = subprocess.run(["capsh", "--decode=0000000000000400"], capture_output=True,
                           text=True, check=True).stdout
    assert decode.split("\n", 1)[1] == capsh
    assert "RunsAsRoot" in diagnose and "spark-operator-controller" in diagnose
