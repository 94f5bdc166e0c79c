"""The facts part of the terminal report: one (label, text) row per fact, as plain text.

A fact that could not be read says "unknown" and why, from the snapshot's gaps (the JSON
has it as null plus an `incomplete` entry). Long capability sets are summarised.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.model import Capabilities, Fact, Gap, Listener, ObservedProcess, capability_summary

Row = tuple[str, str]  # (label, text); the label is empty on a continuation row


class Facts:
    """Rows for one process, remembering which gaps a row already explained."""

    def __init__(self, obs: ObservedProcess) -> None:
        network_gaps = obs.network.gaps if obs.network is not None else ()
        self.gaps: tuple[Gap, ...] = tuple(dict.fromkeys((*obs.incomplete, *network_gaps)))
        self.explained: set[str] = set()

    def unknown(self, *facts: str) -> str:
        """`unknown: <why>` from the first gap naming one of `facts` (or under it)."""
        named = [g for g in self.gaps
                 if any(g.fact == f or g.fact.startswith(f + ".") for f in facts)]
        if not named:
            return "unknown"
        self.explained.update(g.fact for g in named)
        return f"unknown: {named[0].reason}"

    def remaining(self) -> list[Row]:
        """The gaps no row explained, one row per reason."""
        facts_by_reason: dict[str, list[str]] = {}
        for gap in self.gaps:
            if gap.fact not in self.explained:
                facts_by_reason.setdefault(gap.reason, []).append(gap.fact)
        return [("incomplete", f"{', '.join(facts)}: {reason}")
                for reason, facts in facts_by_reason.items()]


def fact_rows(obs: ObservedProcess) -> list[Row]:
    facts = Facts(obs)
    rows = [("identity", identity_text(obs, facts))]
    rows += capability_rows(obs.capabilities, facts)
    nnp = {True: "yes", False: "no", None: facts.unknown(Fact.NO_NEW_PRIVS)}[obs.no_new_privs]
    seccomp = obs.seccomp or facts.unknown(Fact.SECCOMP)
    rows.append(("hardening", f"no_new_privs {nnp} · seccomp {seccomp}"))
    fs = obs.filesystem
    if fs is None:
        rows.append(("filesystem", facts.unknown(Fact.FILESYSTEM)))
    else:
        root = {True: "read-only", False: "writable", None: "unknown"}[fs.root_readonly]
        mounts = ", ".join(fs.writable_mounts) or "-"
        rows.append(("filesystem", f"root {root} · writable mounts: {mounts}"))
    rows += network_rows(obs, facts)
    return rows + facts.remaining()


def identity_text(obs: ObservedProcess, facts: Facts) -> str:
    ident = obs.identity
    if ident.uid is None:
        uid = f"uid {facts.unknown(Fact.UID)}"
    elif ident.user is not None:
        uid = f"uid {ident.uid.effective} ({ident.user})"
    elif any(g.fact == Fact.USER for g in facts.gaps):
        uid = f"uid {ident.uid.effective} (user {facts.unknown(Fact.USER)})"
    else:
        uid = f"uid {ident.uid.effective} (no passwd entry)"
    gid = f"gid {ident.gid.effective}" if ident.gid is not None else "gid unknown"
    groups = ("groups " + (",".join(map(str, ident.groups)) or "-")
              if ident.groups is not None else "groups unknown")
    parts = [uid, gid, groups]
    if ident.home:
        parts.append(f"home {ident.home}")
    if ident.env_home:
        parts.append(f"$HOME {ident.env_home}")
    return " · ".join(parts)


def capability_rows(caps: Capabilities | None, facts: Facts) -> list[Row]:
    if caps is None:
        return [("capabilities", facts.unknown(Fact.CAPABILITIES))]
    sets = ("effective", "permitted", "bounding", "ambient")
    return [("capabilities" if i == 0 else "", f"{name:<10} {summarise(getattr(caps, name), caps)}")
            for i, name in enumerate(sets)]


def summarise(mask: int, caps: Capabilities) -> str:
    return capability_summary(mask, caps.last_cap)


def network_rows(obs: ObservedProcess, facts: Facts) -> list[Row]:
    net = obs.network
    if net is None:
        return [("network", facts.unknown(Fact.NETWORK))]
    s = net.sysctls
    host = " (host network)" if net.host_network else ""

    def sysctl(value: int | None, name: str) -> str:
        return str(value) if value is not None else facts.unknown(name)

    start = sysctl(s.ip_unprivileged_port_start, Fact.UNPRIVILEGED_PORT_START)
    rows: list[Row] = [
        ("network", f"netns {net.inode}{host} · "
                    f"bindv6only {sysctl(s.bindv6only, Fact.BINDV6ONLY)} · "
                    f"disable_ipv6 {sysctl(s.disable_ipv6, Fact.DISABLE_IPV6)} · "
                    f"ip_unprivileged_port_start {start}"),
        ("", "addresses " + (" ".join(a.address for a in net.addresses if a.scope == "global")
                             or "-")),
    ]
    if not net.listeners:
        return [*rows, ("listeners", "none")]
    return rows + [("listeners" if i == 0 else "", line)
                   for i, line in enumerate(listener_lines(net.listeners))]


def endpoint(listener: Listener) -> str:
    host = f"[{listener.address}]" if listener.family == 6 else listener.address
    dev = f"%{listener.interface}" if listener.interface else ""
    return f"{host}{dev}:{listener.port}"


def listener_lines(listeners: Sequence[Listener]) -> list[str]:
    """An aligned table: proto, local address:port, v6only (`-` for IPv4), owning pids."""
    cells = [("proto", "local address:port", "v6only", "pids")]
    for listener in listeners:
        # 1/0 as `sockets`, ss (`v6only:1`) and the bindv6only sysctl spell it.
        v6only = "-" if listener.v6only is None else ("1" if listener.v6only else "0")
        cells.append((listener.protocol, endpoint(listener), v6only,
                      ",".join(map(str, listener.pids)) or "?"))
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    return [f"{p:<{widths[0]}}  {a:<{widths[1]}}  {v:<{widths[2]}}  {pids}"
            for p, a, v, pids in cells]
