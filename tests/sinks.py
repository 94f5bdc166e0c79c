"""A sink for the node loop that keeps what it published, to assert on each cycle."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.model import Report
from agent.report.sink import WrittenSink


@dataclass
class RecordingSink(WrittenSink):
    reports: list[Report] = field(default_factory=list)

    def publish(self, report: Report) -> None:
        self.reports.append(report)

