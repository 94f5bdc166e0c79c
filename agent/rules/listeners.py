"""Sockets against the declaration: declared ports nobody serves, listeners nobody declared."""

from __future__ import annotations

from collections.abc import Iterator

from agent.model import (
    DeclaredContainer,
    Fact,
    Finding,
    ListenerProtocol,
    ObservedProcess,
    Profile,
    Severity,
    listener_protocol,
)
from agent.rules.entry import Rule
from agent.rules.ports import declared_port_keys, port_subject, probe_ports
from agent.rules.reach import (
    describe,
    ipv6_disabled,
    is_loopback,
    listeners_on,
    own_listeners,
    owners_phrase,
    v6only_of,
)

# spark-operator flags that bind its Go listeners (cmd/operator/*/start.go, chart 2.5.2).
SPARK_OPERATOR_BIND_FLAGS = {8080: "--metrics-bind-address", 8081: "--health-probe-bind-address"}


def ipv6_listener_with_ipv6_disabled(observed: ObservedProcess,
                                     declared: DeclaredContainer | None,
                                     profile: Profile) -> Iterator[Finding]:
    network = observed.network
    if network is None or not ipv6_disabled(network):
        return
    for listener in own_listeners(observed, network):
        if listener.family != 6 or listener.address != "::":
            continue
        if v6only_of(listener, network):
            serves = "it is v6only, so it serves nothing at all"
        else:
            serves = "it serves IPv4 only, through IPv4-mapped addresses"
        message = (f"{describe(listener, network)} is bound to :: while IPv6 is disabled in the "
                   f"pod's network namespace: {serves}. No capability is involved; binding "
                   "0.0.0.0 says what is meant.")
        fix = IPV6_LISTENER_WITH_IPV6_DISABLED.render_fix(profile, port=listener.port)
        flag = SPARK_OPERATOR_BIND_FLAGS.get(listener.port)
        if profile.helm_values_prefix and flag:
            fix += f"\n# spark-operator: pass {flag}=0.0.0.0:{listener.port}"
        yield IPV6_LISTENER_WITH_IPV6_DISABLED.finding(
            message, fix, observed=f"{describe(listener, network)}; disable_ipv6=1",
            subject=port_subject(listener.protocol, listener.port), holders=listener.owners)


IPV6_LISTENER_WITH_IPV6_DISABLED = Rule(
    "IPv6ListenerWithIPv6Disabled", Severity.INFO,
    "a socket is bound to :: while IPv6 is disabled in the netns",
    "it serves IPv4 only through mapped addresses; the bind hides what is meant",
    "bind 0.0.0.0", ipv6_listener_with_ipv6_disabled,
    facts=(Fact.DISABLE_IPV6, Fact.LISTENERS),
    remediation="# Bind 0.0.0.0:{port} instead of [::]:{port}.")


def declared_port_not_listening(observed: ObservedProcess, declared: DeclaredContainer | None,
                                profile: Profile) -> Iterator[Finding]:
    network = observed.network
    if network is None or declared is None:
        return
    for port in declared.ports:
        proto = listener_protocol(port.protocol)
        if proto is None or listeners_on(network, port.port, proto):
            continue
        other: ListenerProtocol = "udp" if proto == "tcp" else "tcp"
        hint = (f" (there is a {other.upper()} listener on it: check `protocol`)"
                if listeners_on(network, port.port, other) else "")
        name = f" {port.name!r}" if port.name else ""
        message = (f"containerPort{name} {port.port}/{port.protocol} is declared, but nothing "
                   f"in the pod's network namespace listens on {proto.upper()} {port.port}"
                   f"{hint}; Services and NetworkPolicies built on it point at nothing.")
        yield DECLARED_PORT_NOT_LISTENING.finding(
            message, name=port.name or "<name>", protocol=port.protocol,
            observed=f"no {proto.upper()} listener on {port.port}",
            declared=f"containerPort{name} {port.port}/{port.protocol}",
            subject=port_subject(proto, port.port))


DECLARED_PORT_NOT_LISTENING = Rule(
    "DeclaredPortNotListening", Severity.MEDIUM,
    "a declared containerPort (TCP or UDP) has no listener of that protocol",
    "Services and NetworkPolicies built on the port reach nothing",
    "remove the port or correct its number/protocol", declared_port_not_listening,
    facts=(Fact.LISTENERS, Fact.POD_SPEC),
    remediation="# Remove the stale port, or fix its number/protocol to what the process serves:\n"
                "ports:\n- containerPort: <port>\n  name: {name}\n  protocol: {protocol}")


def undeclared_listener(observed: ObservedProcess, declared: DeclaredContainer | None,
                        profile: Profile) -> Iterator[Finding]:
    network = observed.network
    if network is None or declared is None:
        return
    known = declared_port_keys(declared)
    probes = probe_ports(declared)
    seen: set[tuple[int, str]] = set()
    for listener in own_listeners(observed, network, include_unowned=False):
        key = (listener.port, listener.protocol)
        if (is_loopback(listener) or key in known or key in seen
                or (listener.protocol == "tcp" and listener.port in probes)
                or listener.port in profile.ports):
            continue
        seen.add(key)
        message = (f"{owners_phrase(listener)} listens on {describe(listener, network)}"
                   " on a non-loopback address, but no containerPort or probe names it: "
                   "reviews and NetworkPolicies miss what the pod really exposes.")
        yield UNDECLARED_LISTENER.finding(message, port=listener.port,
                                          protocol=listener.protocol.upper(),
                                          observed=describe(listener, network),
                                          subject=port_subject(listener.protocol, listener.port),
                                          holders=listener.owners)


UNDECLARED_LISTENER = Rule(
    "UndeclaredListener", Severity.LOW,
    "a non-loopback listener of the target is neither a declared containerPort nor a probe port",
    "the pod exposes more than reviews and NetworkPolicies account for",
    "declare the port, or disable / loopback-bind the listener", undeclared_listener,
    facts=(Fact.LISTENERS, Fact.OWNERS, Fact.POD_SPEC),
    remediation="# Declare it, or turn the listener off / bind it to 127.0.0.1:\n"
                "ports:\n- containerPort: {port}\n  name: <name>\n  protocol: {protocol}")

RULES = (IPV6_LISTENER_WITH_IPV6_DISABLED, DECLARED_PORT_NOT_LISTENING, UNDECLARED_LISTENER)
