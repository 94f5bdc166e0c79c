"""The one interface every output implements (NPD's exporters): a report goes in, and a sink
that writes to something slow (the API) is given time to deliver between cycles.

Table, JSON/YAML (`diagnose`, `run --sink stdout`), Kubernetes Events, metrics and policy
reports are sinks; a new sink never changes a rule or another sink.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal, Protocol, TextIO

from agent.model import Report


class Sink(Protocol):
    def publish(self, report: Report) -> None:
        """Take one report; never blocks on a network, never raises."""

    def pump(self, deadline: float) -> None:
        """Deliver what is owed until `deadline` (time.monotonic()); never raises."""

    def flush(self, timeout: float) -> bool:
        """Deliver for at most `timeout` seconds; True when nothing is owed."""

    def abandon(self) -> int:
        """At exit: give up what is still owed, count it as dropped, and say how much."""


class WrittenSink:
    """A sink that writes whole documents at once: nothing is ever owed."""

    def pump(self, deadline: float) -> None:
        pass

    def flush(self, timeout: float) -> bool:
        return True

    def abandon(self) -> int:
        return 0


class TableSink(WrittenSink):
    """The terminal report, `width` columns wide (`table.terminal_width`)."""

    def __init__(self, stream: TextIO, *, colour: bool = False, width: int = 80) -> None:
        self.stream = stream
        self.colour = colour
        self.width = width

    def publish(self, report: Report) -> None:
        from agent.report.table import render_table

        self.stream.write(render_table(report, colour=self.colour, width=self.width))
        self.stream.flush()


DocumentFormat = Literal["json", "yaml", "json-lines"]


class DocumentSink(WrittenSink):
    """The `opaudit.report/v1` document: indented JSON, YAML, or one JSON line per report
    (`run --sink stdout`)."""

    def __init__(self, stream: TextIO, document_format: DocumentFormat) -> None:
        self.stream = stream
        self.format = document_format

    def publish(self, report: Report) -> None:
        from agent.report.jsonreport import render_json, render_yaml, report_dict

        if self.format == "json":
            text = render_json(report)
        elif self.format == "yaml":
            text = render_yaml(report)
        else:
            text = json.dumps(report_dict(report), separators=(",", ":")) + "\n"
        self.stream.write(text)
        self.stream.flush()


class FanOut:
    """Several sinks as one: each gets every report; `flush` shares its time among them."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = tuple(sinks)

    def publish(self, report: Report) -> None:
        for sink in self.sinks:
            sink.publish(report)

    def pump(self, deadline: float) -> None:
        for sink in self.sinks:
            sink.pump(deadline)

    def flush(self, timeout: float) -> bool:
        import time

        deadline = time.monotonic() + timeout
        delivered = True
        for sink in self.sinks:
            delivered = sink.flush(max(0.0, deadline - time.monotonic())) and delivered
        return delivered

    def abandon(self) -> int:
        return sum(sink.abandon() for sink in self.sinks)
