"""The names of facts, and `Gap`: a fact that could not be read, and why.

A collector (or the lint predictor) records a `Gap` naming the fact it could not read; a
rule names the facts it needs (`Rule.facts`), and `agent.rules.facts` tells from a snapshot
whether each was read, explaining a missing one by the gap that names it. Both sides use
`Fact`, so a gap always explains the fact a rule asks for.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Fact(enum.StrEnum):
    """Every fact a snapshot may lack. A dotted name is a part of the one before the dot:
    a gap on `network` explains `network.listeners`, one on `process` explains them all."""

    PROCESS = "process"  # the process as a whole: exited, or the container has none live
    AUDIT = "audit"  # the audit of a target failed as a whole
    POD_SPEC = "pod.spec"  # audited by pid alone: no declared side
    START_TIME = "start_time"
    COMM = "comm"
    CMDLINE = "cmdline"
    EXE = "exe"
    ENVIRON = "environ"
    UID = "identity.uid"
    DECLARED_UID = "identity.uid.declared"  # the uid a pod says its container starts as
    GID = "identity.gid"
    GROUPS = "identity.groups"
    USER = "identity.user"
    HOME = "identity.home"
    CAPABILITIES = "capabilities"
    NO_NEW_PRIVS = "no_new_privs"
    SECCOMP = "seccomp"
    FILESYSTEM = "filesystem"
    PATHS = "paths"  # each path is its own gap: `paths./tmp` (`path_fact`)
    NETWORK = "network"
    HOST_NETWORK = "network.host_network"
    ADDRESSES = "network.addresses"
    LISTENERS = "network.listeners"
    LISTENERS_TCP = "network.listeners.tcp"  # one socket table's dump
    LISTENERS_TCP6 = "network.listeners.tcp6"
    LISTENERS_UDP = "network.listeners.udp"
    LISTENERS_UDP6 = "network.listeners.udp6"
    OWNERS = "network.listeners.owners"
    # The netns sysctls, by their dotted names (sysctl(8)).
    BINDV6ONLY = "net.ipv6.bindv6only"
    DISABLE_IPV6 = "net.ipv6.conf.all.disable_ipv6"
    UNPRIVILEGED_PORT_START = "net.ipv4.ip_unprivileged_port_start"


def path_fact(path: str) -> str:
    """`paths./tmp`: the writability of one path, which a rule needs as part of `paths`."""
    return f"{Fact.PATHS}.{path}"


FACT_NAMES = frozenset(fact.value for fact in Fact)


def is_known_fact(name: str) -> bool:
    """Whether `name` is a `Fact`, or the fact of one path (`paths./tmp`)."""
    return name in FACT_NAMES or name.startswith(f"{Fact.PATHS}.")


@dataclass(frozen=True, slots=True)
class Gap:
    """A fact that could not be read, and why (named in the report's `incomplete`)."""

    fact: str  # a `Fact`, or `path_fact(path)`; kept as a plain str
    reason: str

    def __post_init__(self) -> None:
        if type(self.fact) is not str:  # a Fact: outputs and comparisons see only its text
            object.__setattr__(self, "fact", str(self.fact))
