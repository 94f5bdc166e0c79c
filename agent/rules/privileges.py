"""Capabilities, no_new_privs and seccomp as the kernel holds them, against the declared ones."""

from __future__ import annotations

from collections.abc import Iterator

from agent.model import (
    DeclaredContainer,
    Fact,
    Finding,
    NetnsFacts,
    ObservedProcess,
    Profile,
    Severity,
    capability_bit,
    capability_summary,
    mask_names,
)
from agent.rules.entry import FixSite, Rule
from agent.rules.fixes import sysctl_fix
from agent.rules.reach import own_listeners, owner_pids

NET_BIND_SERVICE_BIT = 10
DROP_ALL = "capabilities:\n  drop: [ALL]"
DROP_ALL_ADD = DROP_ALL + "{add}"
CONTAINER = FixSite.CONTAINER_SECURITY_CONTEXT


def _who(observed: ObservedProcess) -> str:
    return f"{observed.comm} (pid {observed.pid})"


def privileged_container(observed: ObservedProcess, declared: DeclaredContainer | None,
                         profile: Profile) -> Iterator[Finding]:
    caps = observed.capabilities
    full = caps is not None and caps.bounding & caps.full_mask == caps.full_mask
    said = declared is not None and declared.privileged is True
    if not (full or said):
        return
    seen = (f"its bounding set holds every capability up to cap_last_cap ({caps.last_cap})"
            if full and caps is not None else "")
    decl = "privileged: true is declared" if said else ""
    what = " and ".join(x for x in (decl, seen) if x)
    message = (f"{_who(observed)} runs privileged: {what}. A privileged container has all "
               "capabilities and the host's devices; it can take over the node.")
    yield PRIVILEGED_CONTAINER.finding(message, profile=profile, observed=seen or None,
                                       declared=decl or None)


PRIVILEGED_CONTAINER = Rule(
    "PrivilegedContainer", Severity.CRITICAL,
    "declared privileged: true, or the bounding set holds every capability",
    "a privileged container can take over the node",
    "privileged: false and capabilities.drop: [ALL]", privileged_container,
    facts=(Fact.CAPABILITIES,), remediation=f"privileged: false\n{DROP_ALL}", site=CONTAINER)


def privilege_escalation_allowed(observed: ObservedProcess, declared: DeclaredContainer | None,
                                 profile: Profile) -> Iterator[Finding]:
    if observed.no_new_privs is not False:
        return
    message = (f"{_who(observed)} has NoNewPrivs 0: a setuid binary or file capability can "
               "raise its privileges.")
    if declared is not None and declared.allow_privilege_escalation is False:
        # The kubelet asks for no_new_privs whenever the field is false, whatever the
        # capabilities (pkg/securitycontext/util.go AddNoNewPrivileges); the API refuses
        # false only with privileged: true or an add spelled "CAP_SYS_ADMIN"
        # (pkg/apis/core/validation), so an added SYS_ADMIN still gets no_new_privs.
        message += (" This is drift: allowPrivilegeEscalation: false is declared, so the "
                    "runtime should have set no_new_privs (the kubelet asks for it whenever "
                    "the field is false, added capabilities or not).")
    elif declared is not None:
        message += (" allowPrivilegeEscalation is not set to false, and the kubelet sets "
                    "no_new_privs only when it is explicitly false.")
    said = (None if declared is None or declared.allow_privilege_escalation is None
            else f"allowPrivilegeEscalation: {str(declared.allow_privilege_escalation).lower()}")
    yield PRIVILEGE_ESCALATION_ALLOWED.finding(message, profile=profile, observed="NoNewPrivs: 0",
                                               declared=said)


PRIVILEGE_ESCALATION_ALLOWED = Rule(
    "PrivilegeEscalationAllowed", Severity.HIGH,
    "NoNewPrivs is 0 (drift when allowPrivilegeEscalation: false was declared)",
    "setuid binaries and file capabilities can raise the process's privileges",
    "allowPrivilegeEscalation: false", privilege_escalation_allowed,
    facts=(Fact.NO_NEW_PRIVS,), remediation="allowPrivilegeEscalation: false", site=CONTAINER)


def capabilities_not_dropped(observed: ObservedProcess, declared: DeclaredContainer | None,
                             profile: Profile) -> Iterator[Finding]:
    caps = observed.capabilities
    if caps is None:
        return
    extra = caps.bounding & ~(1 << NET_BIND_SERVICE_BIT)
    if not extra:
        return
    names = ", ".join(mask_names(extra))
    declared_drop = ", ".join(declared.capabilities_drop) if declared else ""
    said = f" (declared drop: [{declared_drop}])" if declared_drop else ""
    many = bin(extra).count("1") * 2 > caps.last_cap + 1  # root's 40: `all 41 but ...`
    kept = capability_summary(caps.bounding, caps.last_cap) if many else names
    message = (f"{_who(observed)} keeps {kept} in its bounding set{said}; any of them can "
               "be regained by exec of a file with capabilities or by a root process, and "
               "NET_BIND_SERVICE is the only one a hardened workload may keep.")
    yield CAPABILITIES_NOT_DROPPED.finding(message, profile=profile, observed=f"bounding: {names}",
                                           declared=f"drop: [{declared_drop}]" if said else None)


CAPABILITIES_NOT_DROPPED = Rule(
    "CapabilitiesNotDropped", Severity.HIGH,
    "the bounding set holds anything besides NET_BIND_SERVICE",
    "capabilities left in the bounding set can be regained",
    "capabilities.drop: [ALL], add back only what is proven needed", capabilities_not_dropped,
    facts=(Fact.CAPABILITIES,), remediation=DROP_ALL, site=CONTAINER)


def capability_added_but_ineffective(observed: ObservedProcess,
                                     declared: DeclaredContainer | None,
                                     profile: Profile) -> Iterator[Finding]:
    caps = observed.capabilities
    if caps is None or declared is None:
        return
    idle = []
    for name in declared.capabilities_add:
        bit = capability_bit(name)
        if bit is not None and caps.bounding >> bit & 1 and not caps.effective >> bit & 1:
            idle.append(mask_names(1 << bit)[0])
    uid = observed.identity.uid
    who = f"{observed.comm} (pid {observed.pid}, uid {uid.effective if uid else 'unknown'})"
    effective = ", ".join(mask_names(caps.effective)) or "none"
    # One finding per capability: the engine drops one that another process of the
    # container holds effective (a root parent binding :80 for its non-root workers).
    for name in sorted(set(idle)):
        message = (f"capabilities.add declares {name}, but {who} holds it only in its bounding "
                   "set, not as effective: Kubernetes sets no ambient capabilities, so a "
                   "non-root process gets no capability from `add` without ambient or file "
                   "capabilities, and adding it does nothing.")
        kept = [c for c in declared.capabilities_add
                if capability_bit(c) != capability_bit(name) and c != "ALL"]
        fix = CAPABILITY_ADDED_BUT_INEFFECTIVE.render_fix(profile, add=_add_back(kept))
        if capability_bit(name) == NET_BIND_SERVICE_BIT:
            fix += ("\n# If a port below 1024 is really needed, lower the netns threshold "
                    "instead:\n" + sysctl_fix(profile, Fact.UNPRIVILEGED_PORT_START, 0))
        yield CAPABILITY_ADDED_BUT_INEFFECTIVE.finding(
            message, fix, observed=f"effective: {effective}",
            declared=f"add: [{', '.join(declared.capabilities_add)}]", subject=name)


CAPABILITY_ADDED_BUT_INEFFECTIVE = Rule(
    "CapabilityAddedButIneffective", Severity.LOW,
    "a capability in capabilities.add is in the bounding set but not effective",
    "a non-root process gets nothing from `add` without ambient or file caps",
    "remove it from capabilities.add (or lower ip_unprivileged_port_start)",
    capability_added_but_ineffective, facts=(Fact.CAPABILITIES, Fact.POD_SPEC),
    remediation=DROP_ALL_ADD, site=CONTAINER)


def _add_back(kept: list[str]) -> str:
    """The `add:` line of DROP_ALL_ADD for the capabilities still needed, if any."""
    return f"\n  add: [{', '.join(kept)}]" if kept else ""


def net_bind_service_unneeded(observed: ObservedProcess, declared: DeclaredContainer | None,
                              profile: Profile) -> Iterator[Finding]:
    caps, network = observed.capabilities, observed.network
    if caps is None or network is None:
        return
    start = network.sysctls.ip_unprivileged_port_start
    held = caps.effective | caps.bounding
    if start is None or not held >> NET_BIND_SERVICE_BIT & 1:
        return
    ports = sorted({s.port for s in own_listeners(observed, network)})
    if any(p < start for p in ports):
        return
    where = "as effective" if caps.effective >> NET_BIND_SERVICE_BIT & 1 else "in its bounding set"
    added = declared is not None and NET_BIND_SERVICE_BIT in {
        capability_bit(c) for c in declared.capabilities_add}
    if added:
        where += " (declared in capabilities.add)"
    message = (f"{_who(observed)} holds NET_BIND_SERVICE {where}, yet "
               f"{_ports_it_listens_on(observed, network, ports, start)}.")
    keep = [c for c in (declared.capabilities_add if declared else ())
            if capability_bit(c) != NET_BIND_SERVICE_BIT and c != "ALL"]
    yield NET_BIND_SERVICE_UNNEEDED.finding(
        message, profile=profile, add=_add_back(keep), subject="NET_BIND_SERVICE",
        observed=f"NET_BIND_SERVICE {where}; ports {', '.join(map(str, ports)) or 'none'}; "
                 f"ip_unprivileged_port_start={start}",
        declared=(f"capabilities.add: [{', '.join(declared.capabilities_add)}]"
                  if added and declared is not None else None))


def _ports_it_listens_on(observed: ObservedProcess, network: NetnsFacts, ports: list[int],
                         start: int) -> str:
    """Only sockets its container holds are its ports (the capability and its fix are the
    container's); an unowned one may be anybody's."""
    mine = owner_pids(observed)
    held = sorted({s.port for s in network.listeners if mine.intersection(s.pids)})
    unowned = sorted(set(ports) - set(held))
    threshold = f"net.ipv4.ip_unprivileged_port_start={start} in its network namespace"
    it = "its container" if observed.container_pids else "it"
    if not held and not unowned:
        return f"{it} listens on no port ({threshold}), so the capability is not used"
    if held:
        text = f"every port {it} listens on ({', '.join(map(str, held))})"
        if unowned:
            text += f" and every port of unknown owner ({', '.join(map(str, unowned))})"
    else:
        text = ("it listens on no port of its own, and every port whose owner could not be "
                f"read ({', '.join(map(str, unowned))})")
    return f"{text} is >= {threshold}, so no capability is involved in binding them"


NET_BIND_SERVICE_UNNEEDED = Rule(
    "NetBindServiceUnneeded", Severity.MEDIUM,
    "NET_BIND_SERVICE is held, yet no listener port is below ip_unprivileged_port_start",
    "an unused capability is attack surface with no benefit",
    "drop NET_BIND_SERVICE from capabilities.add", net_bind_service_unneeded,
    facts=(Fact.CAPABILITIES, Fact.UNPRIVILEGED_PORT_START, Fact.LISTENERS,
           Fact.OWNERS), remediation=DROP_ALL_ADD, site=CONTAINER)


def seccomp_unconfined(observed: ObservedProcess, declared: DeclaredContainer | None,
                       profile: Profile) -> Iterator[Finding]:
    if observed.seccomp != "disabled":
        return
    said = ""
    if declared is not None and declared.seccomp_profile:
        said = f" although seccompProfile {declared.seccomp_profile} is declared"
    message = (f"{_who(observed)} runs with seccomp mode 0 (no filter){said}; every syscall, "
               "including rarely used ones with kernel bugs, is open to it.")
    yield SECCOMP_UNCONFINED.finding(
        message, profile=profile, observed="Seccomp: 0",
        declared=f"seccompProfile: {declared.seccomp_profile}" if said and declared else None)


SECCOMP_UNCONFINED = Rule(
    "SeccompUnconfined", Severity.HIGH,
    "Seccomp mode is 0",
    "without a filter every syscall is reachable",
    "seccompProfile.type: RuntimeDefault", seccomp_unconfined, facts=(Fact.SECCOMP,),
    remediation="seccompProfile:\n  type: RuntimeDefault", site=CONTAINER)

RULES = (PRIVILEGED_CONTAINER, PRIVILEGE_ESCALATION_ALLOWED, CAPABILITIES_NOT_DROPPED,
         CAPABILITY_ADDED_BUT_INEFFECTIVE, NET_BIND_SERVICE_UNNEEDED, SECCOMP_UNCONFINED)
