"""What the README shows a user must keep working."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from agent.config import parse_config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_config_example_loads() -> None:
    block = re.search(r"```yaml\n(profiles:.*?)```", README, flags=re.S)
    assert block is not None
    config = parse_config(yaml.safe_load(block.group(1)))
    assert [p.name for p in config.profiles] == ["my-api"]
    assert config.waivers[0].reason


def test_first_screen_shows_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:40])
    assert "scripts/demo" in first_screen and "scripts/test" in first_screen
