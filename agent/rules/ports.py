"""The ports a pod promises: probe ports and declared containerPorts, with how they were named."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.model import DeclaredContainer, ListenerProtocol, listener_protocol

PROBE_HANDLERS = ("httpGet", "tcpSocket", "grpc")


@dataclass(frozen=True, slots=True)
class PromisedPort:
    port: int
    protocol: ListenerProtocol
    names: tuple[str, ...]  # "readiness probe httpGet", "containerPort metrics/TCP"
    probe: bool


def port_subject(protocol: ListenerProtocol, port: int | str) -> str:
    """A finding's subject for a port: `tcp/8081`, `udp/53` (a probe's unresolved port
    name stands in for its number)."""
    return f"{protocol}/{port}"


def listed(names: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def probe_ports(declared: DeclaredContainer | None) -> dict[int, list[str]]:
    """TCP ports the kubelet probes (exec probes have none), each with the probes using it."""
    found: dict[int, list[str]] = {}
    for probe in declared.probes if declared else ():
        if probe.handler in PROBE_HANDLERS and probe.port is not None:
            found.setdefault(probe.port, []).append(f"{probe.kind} probe ({probe.handler})")
    return found


def promised_ports(declared: DeclaredContainer | None) -> tuple[PromisedPort, ...]:
    """Probe ports first, then declared TCP/UDP containerPorts (SCTP has no listener table)."""
    if declared is None:
        return ()
    merged: dict[tuple[int, ListenerProtocol], tuple[list[str], bool]] = {}
    for port, names in probe_ports(declared).items():
        merged[(port, "tcp")] = (list(names), True)
    for decl in declared.ports:
        proto = listener_protocol(decl.protocol)
        if proto is None:
            continue
        label = f"containerPort {decl.name + ' ' if decl.name else ''}{decl.port}/{decl.protocol}"
        names, probe = merged.get((decl.port, proto), ([], False))
        merged[(decl.port, proto)] = ([*names, label], probe)
    return tuple(PromisedPort(port, proto, tuple(names), probe)
                 for (port, proto), (names, probe) in merged.items())


def declared_port_keys(declared: DeclaredContainer | None) -> set[tuple[int, str]]:
    return {(p.port, proto) for p in (declared.ports if declared else ())
            if (proto := listener_protocol(p.protocol)) is not None}
