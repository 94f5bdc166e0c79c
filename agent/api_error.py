"""The one error type a Kubernetes API writer raises, shared by `kube` (which raises it) and
`output` (whose Events and policy-report sinks retry on it, `output/delivery.py`), so
neither layer imports the other."""

from __future__ import annotations


class ApiError(Exception):
    """An API call failed. `status` is the HTTP status, None when no answer came back."""

    def __init__(
        self,
        status: int | None,
        reason: str,
        message: str,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = " ".join(message.split())
        self.retry_after = retry_after
        code = f"{status} {reason}" if status is not None else reason
        super().__init__(f"Kubernetes API: {code}: {self.message}")

    @property
    def code(self) -> str:
        """Metric label: the HTTP status, `connection` when nothing answered, else the reason."""
        if self.status is not None:
            return str(self.status)
        return "connection" if self.reason == "Unreachable" else self.reason.lower()

    @property
    def retryable(self) -> bool:
        """Worth retrying: no answer, throttled, server trouble, token or RBAC not yet fixed."""
        return self.status is None or self.status in (401, 403, 408, 429) or self.status >= 500
