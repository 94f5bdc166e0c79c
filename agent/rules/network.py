"""Whether the ports the pod promises can be reached on the pod's IP, family by family."""

from __future__ import annotations

from collections.abc import Iterator

from agent.model import DeclaredContainer, Finding, ObservedProcess, Profile, Severity
from agent.rules.entry import Rule
from agent.rules.facts import DISABLE_IPV6, POD_SPEC
from agent.rules.fixes import sysctl_fix
from agent.rules.ports import listed, port_subject, promised_ports
from agent.rules.reach import (
    describe,
    families_serving,
    ipv6_disabled,
    is_loopback,
    listeners_on,
    pod_addresses,
    pod_families,
    primary_family,
)

FAMILY = {4: "IPv4", 6: "IPv6"}


def probe_port_not_listening(observed: ObservedProcess, declared: DeclaredContainer | None,
                             profile: Profile) -> Iterator[Finding]:
    network = observed.network
    if network is None or declared is None:
        return
    for probe in declared.probes:
        if probe.handler in ("httpGet", "tcpSocket", "grpc") and probe.port is None:
            message = (f"The {probe.kind} probe ({probe.handler}) names port "
                       f"{probe.port_name!r}, which no containerPort of "
                       f"{declared.container_name} defines; the kubelet cannot probe it.")
            fix = f"ports:\n- name: {probe.port_name}\n  containerPort: <port>\n  protocol: TCP"
            yield PROBE_PORT_NOT_LISTENING.finding(
                message, "# Pod spec: containers[]\n" + fix,
                declared=f"{probe.kind} probe port {probe.port_name}",
                subject=f"tcp/{probe.port_name}")
    for promised in promised_ports(declared):
        if not promised.probe or listeners_on(network, promised.port, "tcp"):
            continue
        verb = "targets" if len(promised.names) == 1 else "target"
        message = (f"The {listed(promised.names)} {verb} TCP port {promised.port}, but "
                   "nothing in the pod's network namespace listens there: the probe fails and "
                   "the kubelet restarts the container or keeps it out of the Service.")
        yield PROBE_PORT_NOT_LISTENING.finding(
            message, port=promised.port, observed=f"no TCP listener on {promised.port}",
            declared=", ".join(promised.names), subject=port_subject("tcp", promised.port))


PROBE_PORT_NOT_LISTENING = Rule(
    "ProbePortNotListening", Severity.HIGH,
    "a liveness/readiness/startup probe targets a port with no TCP listener",
    "failing probes restart the container or keep it out of its Service",
    "point the probe at the port the process really listens on", probe_port_not_listening,
    facts=("network.listeners", POD_SPEC),
    remediation="# Point the probe at the port the process serves its health endpoint on,\n"
                "# or make it listen on {port}:\nlivenessProbe:\n  httpGet:\n"
                "    port: <port the process listens on>")


def listener_loopback_only(observed: ObservedProcess, declared: DeclaredContainer | None,
                           profile: Profile) -> Iterator[Finding]:
    network = observed.network
    if network is None:
        return
    for promised in promised_ports(declared):
        sockets = listeners_on(network, promised.port, promised.protocol)
        if not sockets or not all(is_loopback(s) for s in sockets):
            continue
        bound = ", ".join(describe(s, network) for s in sockets)
        message = (f"{', '.join(promised.names)} is bound only to loopback ({bound}): the "
                   "kubelet's probes and other pods connect to the pod IP and are refused.")
        yield LISTENER_LOOPBACK_ONLY.finding(message, port=promised.port, observed=bound,
                                             declared=", ".join(promised.names),
                                             subject=port_subject(promised.protocol,
                                                                  promised.port))


LISTENER_LOOPBACK_ONLY = Rule(
    "ListenerLoopbackOnly", Severity.HIGH,
    "a probe or declared containerPort is bound only to loopback addresses",
    "nothing outside the pod (kubelet, Services) can reach it",
    "bind 0.0.0.0 / [::] instead of 127.0.0.1 / ::1", listener_loopback_only,
    facts=("network.listeners", POD_SPEC),
    remediation="# Bind the listener to all addresses: 0.0.0.0:{port} (IPv4), or [::]:{port}\n"
                "# with IPV6_V6ONLY=0 for both families (Go: \":{port}\")")


def _family_fix(profile: Profile, primary: int, port: int) -> str:
    if primary == 4:
        return (f"# Make the socket accept IPv4: bind 0.0.0.0:{port}, or [::]:{port} with the\n"
                f"# socket option IPV6_V6ONLY=0 (Go's \":{port}\" does this).\n"
                "# Or restore the kernel default for sockets that do not set it:\n"
                + sysctl_fix(profile, "net.ipv6.bindv6only", 0,
                             "net.ipv6.bindv6only is not a safe sysctl: the kubelet must allow "
                             "it (--allowed-unsafe-sysctls)"))
    return (f"# Make the socket accept IPv6: bind [::]:{port} (IPV6_V6ONLY=0 keeps IPv4 too),\n"
            "# and make sure IPv6 is enabled in the pod (net.ipv6.conf.all.disable_ipv6=0).")


def listener_family_mismatch(observed: ObservedProcess, declared: DeclaredContainer | None,
                             profile: Profile) -> Iterator[Finding]:
    network = observed.network
    if network is None:
        return
    primary = primary_family(declared, network)
    if primary is None:
        return
    addresses = pod_addresses(declared, network)
    for promised in promised_ports(declared):
        sockets = listeners_on(network, promised.port, promised.protocol)
        if not sockets or all(is_loopback(s) for s in sockets):
            continue
        if primary in families_serving(sockets, network, addresses):
            continue
        bound = ", ".join(describe(s, network) for s in sockets)
        disabled = " and IPv6 is disabled in the netns" if ipv6_disabled(network) else ""
        message = (f"{', '.join(promised.names)} listens ({bound}{disabled}), but no socket "
                   f"accepts {FAMILY[primary]}, the pod's primary family: connections to the "
                   "pod IP are refused.")
        yield LISTENER_FAMILY_MISMATCH.finding(
            message, _family_fix(profile, primary, promised.port), observed=bound + disabled,
            declared=f"{', '.join(promised.names)} on an {FAMILY[primary]} pod",
            subject=port_subject(promised.protocol, promised.port))


LISTENER_FAMILY_MISMATCH = Rule(
    "ListenerFamilyMismatch", Severity.HIGH,
    "a probe or declared port has listeners, but none accepts the pod's primary IP family",
    "the kubelet and Services connect to the pod's primary IP and are refused",
    "bind 0.0.0.0, or [::] with IPV6_V6ONLY=0", listener_family_mismatch,
    facts=("network.listeners", "network.addresses", DISABLE_IPV6, POD_SPEC))


def dual_stack_listener_gap(observed: ObservedProcess, declared: DeclaredContainer | None,
                            profile: Profile) -> Iterator[Finding]:
    network = observed.network
    if network is None:
        return
    # With IPv6 disabled in the netns no socket can serve it: that is not a listener's gap.
    families = [f for f in pod_families(declared, network)
                if not (f == 6 and ipv6_disabled(network))]
    primary = primary_family(declared, network)
    if set(families) != {4, 6} or primary is None:
        return
    addresses = pod_addresses(declared, network)
    for promised in promised_ports(declared):
        sockets = listeners_on(network, promised.port, promised.protocol)
        served = families_serving(sockets, network, addresses)
        if primary not in served or served == {4, 6}:
            continue
        missing = 6 if 4 in served else 4
        bound = ", ".join(describe(s, network) for s in sockets)
        message = (f"The pod is dual-stack, but {', '.join(promised.names)} serves only "
                   f"{FAMILY[primary]} ({bound}): clients that reach it over "
                   f"{FAMILY[missing]} (a dual-stack Service, IPv6-preferring resolvers) are "
                   "refused.")
        yield DUAL_STACK_LISTENER_GAP.finding(message, port=promised.port,
                                              family=FAMILY[missing], observed=bound,
                                              declared=", ".join(promised.names),
                                              subject=port_subject(promised.protocol,
                                                                   promised.port))


DUAL_STACK_LISTENER_GAP = Rule(
    "DualStackListenerGap", Severity.MEDIUM,
    "the pod has IPv4 and IPv6 addresses and a probe/declared port serves only one family",
    "dual-stack clients using the other family are refused",
    "one [::] socket with IPV6_V6ONLY=0, or a socket per family", dual_stack_listener_gap,
    facts=("network.listeners", "network.addresses", DISABLE_IPV6, POD_SPEC),
    remediation="# Serve both families: one [::]:{port} socket with IPV6_V6ONLY=0 "
                "(Go: \":{port}\"), or a second socket for {family}.")

RULES = (PROBE_PORT_NOT_LISTENING, LISTENER_LOOPBACK_ONLY, LISTENER_FAMILY_MISMATCH,
         DUAL_STACK_LISTENER_GAP)
