"""Which policy-report API the API server serves, asked once it answers.

openreports.io/v1alpha1 `Report` (the successor) when served, else wgpolicyk8s.io/v1alpha2
`PolicyReport` (which Kyverno 1.19 still writes), never both; `--report-api` names one.
Discovery runs at the first cycle and, while the API server does not answer, again at
most every `RETRY_DISCOVERY_SECONDS`: an agent started during an API outage still writes
its reports once the API is back. An API server that answers but serves neither report
API is final: one error line, and the other sinks carry on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.api_error import ApiError

log = logging.getLogger(__name__)

RETRY_DISCOVERY_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ReportApi:
    group: str
    version: str
    kind: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


OPENREPORTS = ReportApi("openreports.io", "v1alpha1", "Report", "reports")
WGPOLICY = ReportApi("wgpolicyk8s.io", "v1alpha2", "PolicyReport", "policyreports")
REPORT_APIS = {"openreports": OPENREPORTS, "wgpolicyk8s": WGPOLICY}


def choose_report_api(served: set[str], override: str | None = None) -> ReportApi | None:
    """openreports when served, else wgpolicyk8s, never both; `override` names one.

    Policy Reporter reads both APIs and would count a finding written to each twice.
    """
    if override is not None:
        chosen = REPORT_APIS[override]
        return chosen if chosen.api_version in served else None
    for api in (OPENREPORTS, WGPOLICY):
        if api.api_version in served:
            return api
    return None


class ErrorMetrics(Protocol):
    def api_error(self, code: str) -> None: ...


class Discovery:
    """Asks `served` (every `group/version` under /apis; raises ApiError) until it answers."""

    def __init__(self, served: Callable[[], set[str]], override: str | None,
                 metrics: ErrorMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.served, self.override, self.metrics, self.clock = served, override, metrics, clock
        self.settled = False  # the API server answered: the choice is final
        self.next_try = 0.0

    def poll(self) -> ReportApi | None:
        """The report API, when this call is the one that found it; None otherwise (not
        yet time to ask again, no answer, none served, or found before)."""
        if self.settled or self.clock() < self.next_try:
            return None
        try:
            served = self.served()
        except ApiError as exc:
            self.metrics.api_error(exc.code)
            self.next_try = self.clock() + RETRY_DISCOVERY_SECONDS
            log.error("--sink reports: cannot discover the API groups; retrying",
                      extra={"error": str(exc), "retry_seconds": RETRY_DISCOVERY_SECONDS})
            return None
        self.settled = True
        chosen = choose_report_api(served, self.override)
        if chosen is None:
            wanted = self.override or "openreports.io/v1alpha1 or wgpolicyk8s.io/v1alpha2"
            log.error(f"--sink reports: the API server serves no policy-report API ({wanted}); "
                      "writing no policy reports (install the CRDs: reports.installCRDs=true)")
            return None
        log.info("policy reports", extra={"api": chosen.api_version, "kind": chosen.kind})
        return chosen
