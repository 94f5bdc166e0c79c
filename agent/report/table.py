"""Terminal report: one block per pod/container, facts first, then findings by severity.

Colour only when writing to a terminal; every string from a process was sanitised in collect.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

from agent.model import (
    Finding,
    Listener,
    ObservedProcess,
    Report,
    Severity,
    TargetReport,
    mask_names,
)

COLOURS = {
    Severity.CRITICAL: "\033[1;35m", Severity.HIGH: "\033[1;31m", Severity.MEDIUM: "\033[33m",
    Severity.LOW: "\033[36m", Severity.INFO: "\033[2m",
}
BOLD, RESET = "\033[1m", "\033[0m"
WIDTH = 96


class Style:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def bold(self, text: str) -> str:
        return f"{BOLD}{text}{RESET}" if self.colour else text

    def severity(self, severity: Severity) -> str:
        label = severity.value.upper().ljust(8)
        return f"{COLOURS[severity]}{label}{RESET}" if self.colour else label


def render_table(report: Report, colour: bool = False) -> str:
    style = Style(colour)
    blocks = [target_block(t, style) for t in report.targets]
    summary = summary_line(report.findings)
    return "\n\n".join([*blocks, summary]) + "\n"


def target_block(target: TargetReport, style: Style) -> str:
    lines = [style.bold(heading(target))]
    lines += fact_lines(target.observed)
    lines.append("  findings")
    if not target.findings:
        lines.append("    none")
    ordered = sorted(target.findings, key=lambda f: (-f.severity.rank, f.rule))
    for finding in ordered:
        lines += finding_lines(finding, style)
    return "\n".join(lines)


def heading(target: TargetReport) -> str:
    obs = target.observed
    proc = f"pid {obs.pid} ({obs.comm})" if obs.comm else f"pid {obs.pid}"
    if target.declared is None:
        return f"{proc} · profile {target.profile.name}"
    d = target.declared
    return f"{d.pod.namespace}/{d.pod.name} · container {d.container_name} · {proc}"


def fact_lines(obs: ObservedProcess) -> list[str]:
    out: list[str] = []
    ident = obs.identity
    if ident.uid is not None and ident.gid is not None:
        user = f" ({ident.user})" if ident.user else " (no passwd entry)"
        groups = ",".join(map(str, ident.groups or ())) or "-"
        home = f" · home {ident.home}" if ident.home else ""
        env_home = f" · $HOME {ident.env_home}" if ident.env_home else ""
        out.append(_row("identity", f"uid {ident.uid.effective}{user} gid {ident.gid.effective}"
                                    f" groups {groups}{home}{env_home}"))
    caps = obs.capabilities
    if caps is not None:
        out.append(_row("capabilities", "  ".join(
            f"{name}: {_names(getattr(caps, name))}"
            for name in ("effective", "permitted", "bounding", "ambient"))))
    nnp = {True: "yes", False: "no", None: "?"}[obs.no_new_privs]
    out.append(_row("hardening", f"no_new_privs {nnp} · seccomp {obs.seccomp or '?'}"))
    fs = obs.filesystem
    if fs is not None:
        root = {True: "read-only", False: "writable", None: "?"}[fs.root_readonly]
        out.append(_row("filesystem",
                        f"root {root} · writable mounts: {', '.join(fs.writable_mounts) or '-'}"))
    net = obs.network
    if net is not None:
        s = net.sysctls
        host = " (host network)" if net.host_network else ""
        start = _v(s.ip_unprivileged_port_start)
        out.append(_row("network", f"netns {net.inode}{host} · bindv6only {_v(s.bindv6only)}"
                                   f" · disable_ipv6 {_v(s.disable_ipv6)}"
                                   f" · ip_unprivileged_port_start {start}"))
        globals_ = [a.address for a in net.addresses if a.scope == "global"]
        out.append(_row("", f"addresses {' '.join(globals_) or '-'}"))
        for listener in net.listeners:
            out.append(_row("listeners" if listener is net.listeners[0] else "",
                            listener_text(listener)))
    for gap in obs.incomplete:
        out.append(_row("incomplete", f"{gap.fact}: {gap.reason}"))
    return out


def listener_text(listener: Listener) -> str:
    v6 = "" if listener.v6only is None else f"  v6only {'yes' if listener.v6only else 'no'}"
    pids = ",".join(map(str, listener.pids)) or "?"
    return f"{listener.protocol:<4}{endpoint(listener):<26}{v6}  pid {pids}"


def endpoint(listener: Listener) -> str:
    host = f"[{listener.address}]" if listener.family == 6 else listener.address
    dev = f"%{listener.interface}" if listener.interface else ""
    return f"{host}{dev}:{listener.port}"


def finding_lines(finding: Finding, style: Style) -> list[str]:
    lines = [f"    {style.severity(finding.severity)}{style.bold(finding.rule)}"]
    lines += _wrap(finding.message, 14)
    if finding.remediation:
        lines.append(f"{'':12}fix:")
        lines += [f"{'':14}{ln}" for ln in finding.remediation.rstrip().splitlines()]
    return lines


def summary_line(findings: Iterable[Finding]) -> str:
    counts: dict[Severity, int] = {}
    for f in findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    if not counts:
        return "summary: no findings"
    parts = [f"{counts[s]} {s.value}" for s in sorted(counts, key=lambda s: -s.rank)]
    return "summary: " + ", ".join(parts)


def _row(label: str, text: str) -> str:
    return f"  {label:<13}{text}"


def _names(mask: int) -> str:
    return ",".join(mask_names(mask)) or "-"


def _v(value: int | None) -> str:
    return "?" if value is None else str(value)


def _wrap(text: str, indent: int) -> list[str]:
    return textwrap.wrap(text, WIDTH - indent, initial_indent=" " * indent,
                         subsequent_indent=" " * indent) or [" " * indent]
