"""`--sink reports` wired to the API: discovery picks the policy-report API, then the sink.

Discovery runs at the first cycle and, while the API server does not answer, again at most
every `RETRY_DISCOVERY_SECONDS`: an agent started during an API outage still writes its
reports once the API is back. An API server that answers but serves neither report API is
final: one error line, and the other sinks carry on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agent.kube.client import Api, KubeError
from agent.model import AuditResult
from agent.output.metrics import AgentMetrics
from agent.output.reportsink import PolicyReportSink

log = logging.getLogger(__name__)

RETRY_DISCOVERY_SECONDS = 30.0


class ReportsSink:
    """The policy-report sink once discovery found its API; nothing before, or without one."""

    def __init__(self, api: Api, metrics: AgentMetrics, override: str | None,
                 max_results: int, clock: Callable[[], float] = time.monotonic,
                 node: str | None = None) -> None:
        self.api, self.metrics, self.override, self.node = api, metrics, override, node
        self.max_results, self.clock = max_results, clock
        self.sink: PolicyReportSink | None = None
        self.settled = False  # discovery answered: `sink` is final
        self.next_try = 0.0

    def publish(self, report: AuditResult) -> None:
        if not self.settled and self.clock() >= self.next_try:
            self._discover()
        if self.sink is not None:
            self.sink.publish(report)

    def pump(self, deadline: float) -> None:
        if self.sink is not None:
            self.sink.pump(deadline)

    def flush(self, timeout: float) -> bool:
        return self.sink.flush(timeout) if self.sink is not None else True

    def abandon(self) -> int:
        return self.sink.abandon() if self.sink is not None else 0

    def _discover(self) -> None:
        from agent.kube.reports import ReportClient, served_group_versions
        from agent.output.policyreport import choose_report_api

        try:
            served = served_group_versions(self.api)
        except KubeError as exc:
            self.metrics.api_error(exc.code)
            self.next_try = self.clock() + RETRY_DISCOVERY_SECONDS
            log.error("--sink reports: cannot discover the API groups; retrying",
                      extra={"error": str(exc), "retry_seconds": RETRY_DISCOVERY_SECONDS})
            return
        self.settled = True
        chosen = choose_report_api(served, self.override)
        if chosen is None:
            wanted = self.override or "openreports.io/v1alpha1 or wgpolicyk8s.io/v1alpha2"
            log.error(f"--sink reports: the API server serves no policy-report API ({wanted}); "
                      "writing no policy reports (install the CRDs: reports.installCRDs=true)")
            return
        log.info("policy reports", extra={"api": chosen.api_version, "kind": chosen.kind})
        writer = ReportClient(self.api, chosen.group, chosen.version, chosen.plural)
        self.sink = PolicyReportSink(writer, chosen, max_results=self.max_results,
                                     metrics=self.metrics, node=self.node)
