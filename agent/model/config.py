"""The configuration a user gives (--config): profiles, waivers, severities."""

from __future__ import annotations

from dataclasses import dataclass

from agent.model.declared import Profile
from agent.model.findings import Severity


@dataclass(frozen=True, slots=True)
class Waiver:
    """Silence `rule` for pods matching namespace and labels; the reason is mandatory."""

    rule: str
    reason: str
    namespace: str | None = None
    selector: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AuditConfig:
    profiles: tuple[Profile, ...] = ()
    waivers: tuple[Waiver, ...] = ()
    severity_overrides: tuple[tuple[str, Severity], ...] = ()  # (rule id, severity)


DEFAULT_CONFIG = AuditConfig()
