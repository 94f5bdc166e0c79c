"""IP versions and protocols: as the socket tables name them, and as a pod spec does."""

from __future__ import annotations

from typing import Literal

IpVersion = Literal[4, 6]  # an IP version; the AF_INET/AF_INET6 numbers are `address_family`
ListenerProtocol = Literal["tcp", "udp"]  # the socket tables, as ss names them
PortProtocol = Literal["TCP", "UDP", "SCTP"]  # core/v1 Protocol, as a pod spec spells it
PORT_PROTOCOLS: tuple[PortProtocol, ...] = ("TCP", "UDP", "SCTP")


def listener_protocol(declared: PortProtocol) -> ListenerProtocol | None:
    """The socket table that serves a declared port's protocol; None for SCTP, which opaudit
    does not dump."""
    if declared == "TCP":
        return "tcp"
    return "udp" if declared == "UDP" else None
