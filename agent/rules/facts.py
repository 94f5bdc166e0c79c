"""The facts a rule may need, each with how to tell from a snapshot that it was read.

A `Rule` names its facts (`Rule.facts`); `evaluate` calls a rule whose facts are all
there, and gives a rule with a missing fact the verdict UNKNOWN, naming the fact and the
collector's reason (the snapshot's `Gap`), instead of a silent pass. Rules and collectors
name facts with the one `agent.model.Fact` (`Fact.UID`, `Fact.LISTENERS`, a sysctl's
dotted path), so a gap explains its fact.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.model import DeclaredContainer, Fact, Gap, ObservedProcess
from agent.rules.ports import promised_ports
from agent.rules.reach import listeners_on

Present = Callable[[ObservedProcess, DeclaredContainer | None], bool]


def _gaps(observed: ObservedProcess) -> tuple[Gap, ...]:
    network_gaps = observed.network.gaps if observed.network is not None else ()
    return (*observed.incomplete, *network_gaps)


def _network_read(observed: ObservedProcess, fact: Fact) -> bool:
    """The netns was read and the collector recorded no gap for `fact` itself (a gap in a
    part of it, such as the listeners' owners, is that part's own fact)."""
    if observed.network is None:
        return False
    return not any(g.fact == fact for g in _gaps(observed))


def _declared_uid(observed: ObservedProcess, declared: DeclaredContainer | None) -> bool:
    """For a container with no live process: whether its pod says which uid it starts as
    (runAsUser, the status's user, or runAsNonRoot), where that matters: a promised port
    below ip_unprivileged_port_start that nothing holds. Otherwise the image's USER decides,
    which nothing here can read."""
    if not observed.via_sandbox or declared is None or observed.network is None:
        return True
    if (declared.run_as_user is not None or declared.status_uid is not None
            or declared.run_as_non_root):
        return True
    start = observed.network.sysctls.ip_unprivileged_port_start
    return start is None or not any(
        p.port < start and not listeners_on(observed.network, p.port, p.protocol)
        for p in promised_ports(declared))


FACTS: dict[Fact, Present] = {
    Fact.POD_SPEC: lambda o, d: d is not None,
    Fact.UID: lambda o, d: o.identity.uid is not None,
    Fact.GID: lambda o, d: o.identity.gid is not None,
    Fact.DECLARED_UID: _declared_uid,
    # The passwd entry: absent from a readable /etc/passwd is a fact; unreadable is a gap.
    Fact.HOME: lambda o, d: not any(g.fact == Fact.HOME for g in o.incomplete),
    Fact.CAPABILITIES: lambda o, d: o.capabilities is not None,
    Fact.NO_NEW_PRIVS: lambda o, d: o.no_new_privs is not None,
    Fact.SECCOMP: lambda o, d: o.seccomp is not None,
    Fact.FILESYSTEM: lambda o, d: (o.filesystem is not None
                                   and o.filesystem.root_readonly is not None),
    # Writability of the paths the workload must write, probed through the process's root:
    # the collector names each path it could not judge as a `paths.<path>` gap. A process
    # that could not be read at all (no start time) had no path probed.
    Fact.PATHS: lambda o, d: o.start_time is not None and not any(
        g.fact.startswith(f"{Fact.PATHS}.") for g in o.incomplete),
    Fact.ADDRESSES: lambda o, d: _network_read(o, Fact.ADDRESSES),
    Fact.LISTENERS: lambda o, d: _network_read(o, Fact.LISTENERS),
    Fact.OWNERS: lambda o, d: _network_read(o, Fact.OWNERS),
    Fact.UNPRIVILEGED_PORT_START: lambda o, d: (
        o.network is not None and o.network.sysctls.ip_unprivileged_port_start is not None),
    Fact.DISABLE_IPV6: lambda o, d: (
        o.network is not None and o.network.sysctls.disable_ipv6 is not None),
    Fact.BINDV6ONLY: lambda o, d: (
        o.network is not None and o.network.sysctls.bindv6only is not None),
}

_NO_REASON = {
    Fact.POD_SPEC: "no pod spec: audited by pid alone (give --pod, -l or --pod-spec)",
    Fact.PATHS: "the writability of a path could not be judged",
}
# Facts no collector reads, so no gap explains them (not even the sandbox's `process` gap,
# which says only that the container has no process): the reason is always this.
_OWN_REASON = {
    Fact.DECLARED_UID: "the container has no live process, and its pod names no runAsUser, no "
                       "runAsNonRoot and no status user: the image's USER decides, unread here",
}


def missing_facts(facts: tuple[Fact, ...], observed: ObservedProcess,
                  declared: DeclaredContainer | None) -> tuple[Gap, ...]:
    """The facts of `facts` the snapshot lacks, each with the collector's reason."""
    missing: list[Gap] = []
    for fact in facts:
        if FACTS[fact](observed, declared):
            continue
        if fact in _OWN_REASON:
            missing.append(Gap(fact, _OWN_REASON[fact]))
            continue
        reasons = [g for g in _gaps(observed) if _explains(g.fact, fact)]
        if reasons:
            missing.append(Gap(fact, "; ".join(dict.fromkeys(
                g.reason if g.fact == fact else f"{g.fact}: {g.reason}" for g in reasons))))
        else:
            missing.append(Gap(fact, _NO_REASON.get(fact, "not read")))
    return tuple(missing)


def _explains(gap_fact: str, fact: Fact) -> bool:
    """A gap on the fact, on a path under it (`paths./tmp`), or on what contains it."""
    if gap_fact.startswith(fact + "."):
        return fact == Fact.PATHS
    return (gap_fact == fact or fact.startswith(gap_fact + ".")
            or gap_fact == Fact.PROCESS
            or (gap_fact == Fact.NETWORK and fact.startswith("net")))
