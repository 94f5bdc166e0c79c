"""The sinks of `opaudit run`: metrics always, and those `--sink` names, as one."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, assert_never

from agent.daemon.options import SinkKind
from agent.output.metrics import AgentMetrics
from agent.output.metrics_sink import MetricsSink
from agent.output.sink import DocumentSink, FanOut, Sink


def make_sink(
    kinds: str | Sequence[str], api: Any, node: str, metrics: AgentMetrics,
    queue_size: int = 1000, *, report_api: str | None = None, report_max_results: int = 100,
) -> Sink:
    """The metrics sink, and the sinks `--sink` names (repeatable), as one. A reports sink
    without a policy-report API is left out with one log line; the others carry on. An
    unknown kind is a ValueError (`SinkKind.parse`)."""
    sinks: list[Sink] = [MetricsSink(metrics)]
    named = [kinds] if isinstance(kinds, str) else kinds
    for kind in dict.fromkeys(SinkKind.parse(k) for k in named):
        if kind is SinkKind.STDOUT:
            sinks.append(DocumentSink(sys.stdout, "json-lines"))
        elif kind is SinkKind.REPORTS:
            from agent.kube.policyreports import PolicyReportsApi
            from agent.output.policyreports.sink import ReportsSink

            sinks.append(ReportsSink(PolicyReportsApi(api), metrics, report_api,
                                     report_max_results, node=node))
        elif kind is SinkKind.EVENTS:
            from agent.kube.events import EventClient
            from agent.output.events.sink import EventSink

            sinks.append(EventSink(EventClient(api), node, metrics=metrics,
                                   queue_size=queue_size))
        else:
            assert_never(kind)
    for sink in sinks:  # each reads 0 from the start, so a dashboard shows 0, not nothing
        metrics.sink_errors.labels(sink=type(sink).__name__)
    return FanOut(sinks, on_error=metrics.sink_failed)
