"""`node_name`: `--node`, else NODE_NAME (the downward API's spec.nodeName), else none."""

from __future__ import annotations

import pytest

from agent.targets.node import node_name


def test_the_option_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "from-env")
    assert node_name("given") == "given"
    assert node_name(None) == "from-env"


@pytest.mark.parametrize("value", [None, ""])
def test_no_option_and_no_or_an_empty_node_name_is_none(
    monkeypatch: pytest.MonkeyPatch, value: str | None,
) -> None:
    if value is None:
        monkeypatch.delenv("NODE_NAME", raising=False)
    else:
        monkeypatch.setenv("NODE_NAME", value)
    assert node_name(None) is None
    assert node_name("") is None
