"""Whether the ports the pod promises can be reached on the pod's IP, family by family."""

from __future__ import annotations

from collections.abc import Iterator

from agent.model import (
    GENERIC_PROFILE,
    DeclaredContainer,
    Fact,
    Finding,
    Listener,
    NetnsFacts,
    ObservedProcess,
    Profile,
    Severity,
)
from agent.rules.entry import Rule
from agent.rules.fixes import sysctl_fix
from agent.rules.ports import PROBE_HANDLERS, listed, port_subject, promised_ports
from agent.rules.reach import (
    describe,
    families_serving,
    ipv6_disabled,
    is_loopback,
    listeners_on,
    pod_addresses,
    pod_families,
    primary_family,
    v6only_of,
)

FAMILY = {4: "IPv4", 6: "IPv6"}
BINDV6ONLY_SYSCTL = Fact.BINDV6ONLY
DISABLE_IPV6_SYSCTL = Fact.DISABLE_IPV6


def probe_port_not_listening(observed: ObservedProcess, declared: DeclaredContainer | None,
                             profile: Profile) -> Iterator[Finding]:
    network = observed.network
    if network is None or declared is None:
        return
    for probe in declared.probes:
        if probe.handler in PROBE_HANDLERS and probe.port is None:
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
            message, _probe_fix(declared, promised.port),
            observed=f"no TCP listener on {promised.port}", declared=", ".join(promised.names),
            subject=port_subject("tcp", promised.port))


def _probe_fix(declared: DeclaredContainer, port: int) -> str:
    """The snippet of the probe as declared: its kind and handler (grpc, tcpSocket, httpGet);
    `grpc.port` must be a number, the others take a name too (core/v1 Probe)."""
    probe = next(p for p in declared.probes if p.port == port and p.handler in PROBE_HANDLERS)
    return PROBE_PORT_NOT_LISTENING.render_fix(GENERIC_PROFILE, port=port, kind=probe.kind,
                                               handler=probe.handler)


PROBE_PORT_NOT_LISTENING = Rule(
    "ProbePortNotListening", Severity.HIGH,
    "a liveness/readiness/startup probe targets a port with no TCP listener",
    "failing probes restart the container or keep it out of its Service",
    "point the probe at the port the process really listens on", probe_port_not_listening,
    facts=(Fact.LISTENERS, Fact.POD_SPEC),
    remediation="# Point the probe at the port the process serves its health endpoint on,\n"
                "# or make it listen on {port}:\n{kind}Probe:\n  {handler}:\n"
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
        yield LISTENER_LOOPBACK_ONLY.finding(
            message, _loopback_fix(pod_families(declared, network), promised.port),
            observed=bound, declared=", ".join(promised.names),
            subject=port_subject(promised.protocol, promised.port))


def _loopback_fix(families: tuple[int, ...], port: int) -> str:
    """The pod's own families decide which wildcard comes first: 0.0.0.0 serves nothing on
    an IPv6-only pod, and one [::] socket with IPV6_V6ONLY=0 serves a dual-stack pod."""
    if families and 4 not in families:
        return (f"# Bind the listener to all addresses: [::]:{port} (the pod is IPv6-only; "
                f"Go: \":{port}\")")
    if 6 in families:
        return (f"# Bind the listener to all addresses: [::]:{port} with IPV6_V6ONLY=0 serves "
                f"both of the\n# pod's families (Go: \":{port}\"); 0.0.0.0:{port} serves "
                "IPv4 only")
    return LISTENER_LOOPBACK_ONLY.render_fix(GENERIC_PROFILE, port=port)


LISTENER_LOOPBACK_ONLY = Rule(
    "ListenerLoopbackOnly", Severity.HIGH,
    "a probe or declared containerPort is bound only to loopback addresses",
    "nothing outside the pod (kubelet, Services) can reach it",
    "bind 0.0.0.0 / [::] instead of 127.0.0.1 / ::1", listener_loopback_only,
    facts=(Fact.LISTENERS, Fact.POD_SPEC),
    remediation="# Bind the listener to all addresses: 0.0.0.0:{port} (IPv4), or [::]:{port}\n"
                "# with IPV6_V6ONLY=0 for both families (Go: \":{port}\")")


def _family_fix(profile: Profile, declared: DeclaredContainer | None, network: NetnsFacts,
                sockets: tuple[Listener, ...], primary: int, port: int) -> str:
    if primary == 6:
        fix = f"# Make the socket accept IPv6: bind [::]:{port} (IPV6_V6ONLY=0 keeps IPv4 too)."
        if ipv6_disabled(network):
            fix += "\n" + _sysctl_advice(profile, declared, DISABLE_IPV6_SYSCTL,
                                         "IPv6 is disabled in the pod's network namespace")
        return fix
    fix = (f"# Make the socket accept IPv4: bind 0.0.0.0:{port}, or [::]:{port} with the\n"
           f"# socket option IPV6_V6ONLY=0 (Go's \":{port}\" does this).")
    if not any(s.family == 6 and s.address == "::" and v6only_of(s, network) for s in sockets):
        return fix  # no v6only wildcard: the sysctl that defaults IPV6_V6ONLY changes nothing
    if network.sysctls.bindv6only is None:
        return fix + ("\n# If net.ipv6.bindv6only is 1 in the pod (it could not be read), "
                      "set it to 0.")
    if network.sysctls.bindv6only == 0:
        # The netns default is already off, so the program set IPV6_V6ONLY=1 on its socket
        # (setsockopt wins over net.ipv6.bindv6only: Documentation/networking/ip-sysctl.rst).
        return fix + ("\n# The program sets IPV6_V6ONLY=1 on the socket itself "
                      "(net.ipv6.bindv6only is\n# already 0 here, so no sysctl changes it): "
                      "make it stop setting the option,\n# or bind 0.0.0.0 as well.")
    return fix + "\n" + _sysctl_advice(profile, declared, BINDV6ONLY_SYSCTL,
                                       "sockets that do not set IPV6_V6ONLY get v6only")


def _sysctl_advice(profile: Profile, declared: DeclaredContainer | None, name: str,
                   effect: str) -> str:
    """Remove the pod's own setting of `name`, or set the kernel default (0) explicitly."""
    if declared is not None and declared.sysctl(name) not in (None, "0"):
        where = "spec.securityContext.sysctls"
        if profile.helm_values_prefix:
            where += f" (Helm values: {profile.helm_values_prefix}.podSecurityContext.sysctls)"
        return (f"# The pod itself sets {name}={declared.sysctl(name)} ({effect}): remove that "
                f"sysctl from\n# {where}.")
    return (f"# {name} is 1 here ({effect}); restore the kernel default:\n"
            + sysctl_fix(profile, name, 0, f"{name} is not a safe sysctl: the kubelet must "
                                           "allow it (--allowed-unsafe-sysctls)"))


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
            message, _family_fix(profile, declared, network, sockets, primary, promised.port),
            observed=bound + disabled,
            declared=f"{', '.join(promised.names)} on an {FAMILY[primary]} pod",
            subject=port_subject(promised.protocol, promised.port))


LISTENER_FAMILY_MISMATCH = Rule(
    "ListenerFamilyMismatch", Severity.HIGH,
    "a probe or declared port has listeners, but none accepts the pod's primary IP family",
    "the kubelet and Services connect to the pod's primary IP and are refused",
    "bind 0.0.0.0, or [::] with IPV6_V6ONLY=0", listener_family_mismatch,
    facts=(Fact.LISTENERS, Fact.ADDRESSES, Fact.DISABLE_IPV6, Fact.POD_SPEC))


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
    facts=(Fact.LISTENERS, Fact.ADDRESSES, Fact.DISABLE_IPV6, Fact.POD_SPEC),
    remediation="# Serve both families: one [::]:{port} socket with IPV6_V6ONLY=0 "
                "(Go: \":{port}\"), or a second socket for {family}.")

RULES = (PROBE_PORT_NOT_LISTENING, LISTENER_LOOPBACK_ONLY, LISTENER_FAMILY_MISMATCH,
         DUAL_STACK_LISTENER_GAP)
