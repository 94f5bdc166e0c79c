"""PrivilegedPortNotBindable: a promised port the process is not allowed to bind.

The kernel lets a bind below the netns's `net.ipv4.ip_unprivileged_port_start` only with
CAP_NET_BIND_SERVICE effective in the netns's user namespace (inet_port_requires_bind_service,
net/ipv4/af_inet.c); otherwise bind() fails with EACCES, `bind: permission denied`
(kubeflow/spark-operator#2331, `webhook.port=443`).
"""

from __future__ import annotations

from collections.abc import Iterator

from agent.model import DeclaredContainer, Fact, Finding, ObservedProcess, Profile, Severity
from agent.rules.entry import Rule
from agent.rules.fixes import sysctl_fix
from agent.rules.ports import PromisedPort, port_subject, promised_ports
from agent.rules.reach import listeners_on

NET_BIND_SERVICE_BIT = 10
SYSCTL = Fact.UNPRIVILEGED_PORT_START
WEBHOOK_PORT = 9443  # the chart's default webhook.port, which needs no privilege


def _cap_names(names: tuple[str, ...]) -> set[str]:
    return {name.upper().removeprefix("CAP_") for name in names}


def _declared_bind_service(declared: DeclaredContainer) -> tuple[bool | None, str]:
    """Whether a freshly started process of `declared` holds NET_BIND_SERVICE effective,
    judged from the pod spec alone (the container has no live process to read)."""
    uid = declared.run_as_user if declared.run_as_user is not None else declared.status_uid
    source = ("runAsUser" if declared.run_as_user is not None
              else "containerStatuses[].user")
    added = _cap_names(declared.capabilities_add)
    started = ("which Kubernetes starts with no effective capability (it sets no ambient "
               "capabilities)")
    if "NET_BIND_SERVICE" in added:
        started += ("; capabilities.add: [NET_BIND_SERVICE] only puts it in the bounding set, "
                    "where a non-root process cannot use it")
    if uid is None and declared.run_as_non_root:
        return False, f"the container runs as a non-root uid (runAsNonRoot: true), {started}"
    if uid is None:
        return None, ""
    if uid != 0:
        return False, f"the container runs as uid {uid} ({source}), {started}"
    if declared.privileged:
        return True, ""
    # The runtimes' default set (containerd, CRI-O) holds NET_BIND_SERVICE for root.
    dropped = _cap_names(declared.capabilities_drop)
    if dropped & {"ALL", "NET_BIND_SERVICE"} and "NET_BIND_SERVICE" not in added:
        return False, "the container runs as uid 0 but capabilities.drop removes NET_BIND_SERVICE"
    return True, ""


def _observed_bind_service(observed: ObservedProcess) -> tuple[bool | None, str]:
    caps, uid = observed.capabilities, observed.identity.uid
    if caps is None:
        return None, ""
    if caps.effective >> NET_BIND_SERVICE_BIT & 1:
        return True, ""
    who = f"{observed.comm} (pid {observed.pid}, uid {uid.effective if uid else 'unknown'})"
    where = ("only in its bounding set" if caps.bounding >> NET_BIND_SERVICE_BIT & 1
             else "not even in its bounding set")
    return False, f"{who} has no effective NET_BIND_SERVICE ({where})"


def _fix(profile: Profile, promised: PromisedPort, start: int) -> str:
    lines = [f"# Either serve on a port >= {start}: containerPort and the port the process"
             " binds."]
    if profile.helm_values_prefix == "webhook":
        lines += ["# Helm values (spark-operator chart): webhook.port (the chart's default)",
                  f"webhook:\n  port: {WEBHOOK_PORT}"]
    else:
        lines.append(f"ports:\n- containerPort: {max(promised.port + 8000, start)}")
    lines.append(f"# Or let this pod's unprivileged processes bind from {promised.port} up;\n"
                 f"# {SYSCTL} is a safe sysctl (no capability, no kubelet flag):")
    lines.append(sysctl_fix(profile, SYSCTL, promised.port))
    return "\n".join(lines)


def privileged_port_not_bindable(observed: ObservedProcess, declared: DeclaredContainer | None,
                                 profile: Profile) -> Iterator[Finding]:
    network = observed.network
    if network is None or declared is None:
        return
    start = network.sysctls.ip_unprivileged_port_start
    low = [p for p in promised_ports(declared) if start is not None and p.port < start]
    if start is None or not low:
        return
    if observed.via_sandbox:
        can_bind, why = _declared_bind_service(declared)
    else:
        can_bind, why = _observed_bind_service(observed)
    if can_bind is not False:
        return
    for promised in low:
        if listeners_on(network, promised.port, promised.protocol):
            continue  # bound after all (by another process, or before a sysctl change)
        state = ""
        if observed.via_sandbox:
            state = (f"Container {declared.container_name} has no running process (it "
                     f"exited); its pod's network namespace, read through the pod's sandbox "
                     f"(pid {observed.pid}), says why it cannot start. ")
        message = (f"{state}{', '.join(promised.names)} is below {SYSCTL}={start} in the pod's "
                   f"network namespace, and {why}. Binding it fails with `bind: permission "
                   "denied` (EACCES), so the server cannot listen "
                   "(kubeflow/spark-operator#2331).")
        if observed.via_sandbox and "no effective capability" in why:
            message += (" Only a file capability on the image's binary (setcap "
                        "cap_net_bind_service+ep) would allow it.")
        yield PRIVILEGED_PORT_NOT_BINDABLE.finding(
            message, _fix(profile, promised, start), declared=", ".join(promised.names),
            observed=f"{SYSCTL}={start}; no effective NET_BIND_SERVICE",
            subject=port_subject(promised.protocol, promised.port))


PRIVILEGED_PORT_NOT_BINDABLE = Rule(
    "PrivilegedPortNotBindable", Severity.HIGH,
    "a declared containerPort or probe port is below ip_unprivileged_port_start and the "
    "process has no effective NET_BIND_SERVICE (also while the container crash-loops)",
    "bind() fails with permission denied: the server never listens and the container "
    "restarts (spark-operator #2331)",
    "a port >= 1024 (Helm webhook.port: 9443), or the safe sysctl "
    "net.ipv4.ip_unprivileged_port_start in the pod's securityContext.sysctls",
    privileged_port_not_bindable,
    facts=(Fact.POD_SPEC, Fact.UNPRIVILEGED_PORT_START, Fact.LISTENERS, Fact.CAPABILITIES))

RULES = (PRIVILEGED_PORT_NOT_BINDABLE,)
