"""A sink for the node loop that keeps what it published, to assert on each cycle."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.model import Report


@dataclass
class RecordingSink:
    reports: list[Report] = field(default_factory=list)

    def publish(self, report: Report) -> None:
        self.reports.append(report)

    def pump(self, deadline: float) -> None:
        pass

    def flush(self, timeout: float) -> bool:
        return True

    def abandon(self) -> int:
        return 0
