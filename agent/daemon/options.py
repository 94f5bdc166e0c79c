"""What `opaudit run` is told: its command line (`RunOptions`), and what the process around
the loop provides (`RunContext`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent.kube.ratelimit import DEFAULT_BURST, DEFAULT_QPS
from agent.model import DEFAULT_CONFIG, AuditConfig
from agent.privilege import PrivilegeState


class SinkKind(StrEnum):
    """Where `--sink` (repeatable) sends findings; the metrics sink is always there."""

    EVENTS = "events"  # Kubernetes Events on the audited pods
    REPORTS = "reports"  # one policy report per audited pod
    STDOUT = "stdout"  # one JSON report per cycle, as a line on stdout

    @classmethod
    def parse(cls, text: str) -> SinkKind:
        """The kind `text` names; any other text is a ValueError in one line, never another
        sink."""
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown sink {text!r}: one of {cls.choices()}") from None

    @classmethod
    def choices(cls) -> str:
        return ", ".join(kind.value for kind in cls)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What `opaudit run` is told on its command line."""

    node: str | None = None  # default: NODE_NAME (`agent.targets.node.node_name`)
    selector: str | None = None
    namespace: str | None = None
    once: bool = False
    interval: float = 60.0
    # `--sink events --sink reports`; an embedding caller may give the strings.
    sinks: tuple[SinkKind, ...] = (SinkKind.EVENTS,)
    report_api: str | None = None  # "openreports" | "wgpolicyk8s": no discovery
    report_max_results: int = 100
    metrics_port: int | None = None
    kubeconfig: str | None = None
    config: AuditConfig = DEFAULT_CONFIG
    # The API server at fleet scale (README): the CLI's defaults are STARTUP_JITTER and the
    # kubelet's QPS; an embedding caller (tests, the bench) lists at once unless it asks.
    startup_jitter: float = 0.0
    api_qps: float = DEFAULT_QPS
    api_burst: int = DEFAULT_BURST

    def __post_init__(self) -> None:
        """Checked here, so an unknown sink is a ValueError where it is named."""
        if not self.sinks:
            raise ValueError(f"no sink: give at least one of {SinkKind.choices()}")
        # Frozen: the parsed kinds replace the given strings once, before anyone reads them.
        object.__setattr__(self, "sinks", tuple(SinkKind.parse(k) for k in self.sinks))


@dataclass(frozen=True, slots=True)
class RunContext:
    """What the process around the loop provides: the command line's defaults, or an
    embedding caller's (tests, the bench) own API server, /proc tree and capabilities."""

    configuration: Any = None  # a kubernetes.client.Configuration, instead of kubeconfig
    proc_root: str | None = None  # default: HOST_PROC, else /proc
    metrics_host: str | None = None  # None: dual-stack `::` (0.0.0.0 where IPv6 is off)
    restrict_privileges: bool = True  # drop our own capabilities + no_new_privs first
    # What `agent.privilege.restrict_self` already did (the CLI calls it before anything
    # else): logged, not done again.
    privileges: PrivilegeState | None = None
    log_level: str = "INFO"
    event_queue_size: int = 1000
