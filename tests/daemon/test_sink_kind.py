"""`--sink` is a typed kind: an unknown value is one clear line (exit 2 on the command line,
a ValueError for an embedding caller) and never falls through to another sink."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_run import opaudit

from agent.arguments import RUN_SINKS, build_parser
from agent.daemon import RunOptions, SinkKind, make_sink
from agent.output.metrics import AgentMetrics
from agent.output.sink import FanOut


def sinks_built(metrics: AgentMetrics) -> set[str]:
    """The sinks make_sink built: each one's error counter reads 0 from the start."""
    return {sample.labels["sink"] for family in metrics.registry.collect()
            if family.name == "opaudit_sink_errors" for sample in family.samples
            if sample.name == "opaudit_sink_errors_total"}


def test_the_command_line_offers_exactly_the_sink_kinds() -> None:
    assert tuple(kind.value for kind in SinkKind) == RUN_SINKS
    args = build_parser().parse_args(["run", "--sink", "reports", "--sink", "events"])
    assert RunOptions(sinks=tuple(args.sink)).sinks == (SinkKind.REPORTS, SinkKind.EVENTS)


def test_an_unknown_sink_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # A kubeconfig that does not exist: a late check would fail on it instead.
    result = opaudit("run", "--once", "--node", "n", "--kubeconfig", str(tmp_path / "none"),
                     "--sink", "events", "--sink", "evnts")
    assert result.returncode == 2, result
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "--sink" in line and "'evnts'" in line and "Traceback" not in line


def test_run_options_parse_the_given_strings_into_kinds() -> None:
    options = RunOptions(sinks=("stdout", "reports"))  # type: ignore[arg-type]
    assert options.sinks == (SinkKind.STDOUT, SinkKind.REPORTS)
    assert all(type(kind) is SinkKind for kind in options.sinks)
    assert RunOptions().sinks == (SinkKind.EVENTS,)


@pytest.mark.parametrize(("sinks", "message"), [
    (("evnts",), "unknown sink 'evnts': one of events, reports, stdout"),
    (("events", "Events"), "unknown sink 'Events': one of events, reports, stdout"),
    (("",), "unknown sink '': one of events, reports, stdout"),
    ((), "no sink: give at least one of events, reports, stdout"),
])
def test_run_options_refuse_an_unknown_sink_in_one_line(sinks: tuple[str, ...],
                                                        message: str) -> None:
    with pytest.raises(ValueError) as refused:
        RunOptions(sinks=sinks)  # type: ignore[arg-type]
    assert str(refused.value) == message


def test_make_sink_refuses_an_unknown_kind_before_building_any(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.daemon.sinks as sinks_module

    built: list[object] = []
    monkeypatch.setattr(sinks_module, "DocumentSink", lambda *args: built.append(args))
    metrics = AgentMetrics()
    with pytest.raises(ValueError, match="unknown sink 'evnts'"):
        make_sink(("stdout", "evnts"), None, "n", metrics)
    assert built == []  # "stdout" came first, and still no sink was made for it
    assert sinks_built(metrics) == set()


def test_make_sink_builds_each_named_kind_once() -> None:
    metrics = AgentMetrics()
    sink = make_sink(("stdout", SinkKind.STDOUT), None, "n", metrics)
    assert isinstance(sink, FanOut)
    assert [type(s).__name__ for s in sink.sinks] == ["MetricsSink", "DocumentSink"]
    assert sinks_built(metrics) == {"MetricsSink", "DocumentSink"}
