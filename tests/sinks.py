"""A sink for the node loop that keeps what it published, to assert on each cycle."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.model import AuditResult
from agent.output.sink import WrittenSink


@dataclass
class RecordingSink(WrittenSink):
    reports: list[AuditResult] = field(default_factory=list)

    def publish(self, report: AuditResult) -> None:
        self.reports.append(report)

