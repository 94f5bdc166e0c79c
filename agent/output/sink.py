"""The one interface every output implements (NPD's exporters): an audit result goes in,
and a sink that writes to something slow (the API) is given time to deliver between cycles.

Table, JSON/YAML (`diagnose`, `run --sink stdout`), Kubernetes Events, metrics and policy
reports are sinks; a new sink never changes a rule or another sink.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal, Protocol, TextIO, TypeVar

from agent.model import AuditResult

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class Sink(Protocol):
    def publish(self, audit_result: AuditResult) -> None:
        """Take one audit result; never blocks on a network, never raises."""

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

    def publish(self, audit_result: AuditResult) -> None:
        from agent.output.table import render_table

        self.stream.write(render_table(audit_result, colour=self.colour, width=self.width))
        self.stream.flush()


DocumentFormat = Literal["json", "yaml", "json-lines"]


class DocumentSink(WrittenSink):
    """The `opaudit.report/v1` document: indented JSON, YAML, or one JSON line per audit result
    (`run --sink stdout`)."""

    def __init__(self, stream: TextIO, document_format: DocumentFormat) -> None:
        self.stream = stream
        self.format = document_format

    def publish(self, audit_result: AuditResult) -> None:
        from agent.output.document import document_dict, render_json, render_yaml

        if self.format == "json":
            text = render_json(audit_result)
        elif self.format == "yaml":
            text = render_yaml(audit_result)
        else:
            text = json.dumps(document_dict(audit_result), separators=(",", ":")) + "\n"
        self.stream.write(text)
        self.stream.flush()


class FanOut:
    """Several sinks as one: each gets every audit result; `flush` shares its time among
    them.

    A sink that raises (a bug: sinks promise not to) costs only its own delivery: it is
    logged and counted (`on_error`, with the sink's class name), and the others still get
    the audit result.
    """

    def __init__(self, sinks: Sequence[Sink],
                 on_error: Callable[[str], None] = lambda sink: None) -> None:
        self.sinks = tuple(sinks)
        self.on_error = on_error

    def publish(self, audit_result: AuditResult) -> None:
        for sink in self.sinks:
            self._guarded(sink, "publish", partial(sink.publish, audit_result))

    def pump(self, deadline: float) -> None:
        for sink in self.sinks:
            self._guarded(sink, "pump", partial(sink.pump, deadline))

    def flush(self, timeout: float) -> bool:
        import time

        deadline = time.monotonic() + timeout
        delivered = True
        for sink in self.sinks:
            left = max(0.0, deadline - time.monotonic())
            delivered = self._guarded(sink, "flush", partial(sink.flush, left)) is True \
                and delivered
        return delivered

    def abandon(self) -> int:
        return sum(self._guarded(sink, "abandon", sink.abandon) or 0 for sink in self.sinks)

    def _guarded(self, sink: Sink, step: str, call: Callable[[], _T]) -> _T | None:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - one sink's bug must not starve the others
            name = type(sink).__name__
            log.error("a sink failed; the other sinks carry on", exc_info=True, extra={
                "sink": name, "step": step, "error": f"{type(exc).__name__}: {exc}"})
            self.on_error(name)
            return None
