"""Every log line is one JSON object (README: Deployment)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from agent.logs import setup_json_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    setup_json_logging("DEBUG", stream=out)
    try:
        yield out
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_extra_fields_become_keys(stream: io.StringIO) -> None:
    logging.getLogger("agent.daemon.loop").info("audit cycle", extra={"pods": 3, "node": "n1"})
    (line,) = lines(stream)
    assert line["msg"] == "audit cycle" and line["level"] == "info"
    assert line["pods"] == 3 and line["node"] == "n1" and line["logger"] == "agent.daemon.loop"
    assert str(line["ts"]).endswith("Z")


def test_a_traceback_stays_inside_one_line(stream: io.StringIO) -> None:
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        logging.getLogger("x").exception("failed with\ncontrol \x1b[31m chars")
    text = stream.getvalue()
    assert text.count("\n") == 1
    (line,) = lines(stream)
    assert "RuntimeError: boom" in str(line["exc"]) and "\x1b" in str(line["msg"])
    assert "\x1b" not in text  # escaped by the JSON encoder, never raw on a terminal


def test_non_json_values_are_stringified(stream: io.StringIO) -> None:
    logging.getLogger("x").warning("odd", extra={"value": {1, 2}.__class__})
    assert lines(stream)[0]["value"] == "<class 'set'>"
