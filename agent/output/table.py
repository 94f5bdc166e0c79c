"""The terminal table: one block per container (per process without a pod), facts first, then
the container's findings by severity, merged across its processes.

Lines fit the terminal: `COLUMNS` when set, else the tty's width, else 80. A tty that reports
0 columns (`script -qc`, `podman run -t` from a non-tty: `stty size` says `0 0`) has no width,
so it gets 80 too. Wrapping breaks only between words: a path or any other token longer than
the line goes on a line of its own, whole, so it still pastes. Colour only on a terminal,
unless NO_COLOR is set to something or TERM is dumb (no-color.org). Every string from a
process was sanitised in collect.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import TextIO

from agent.model import NO_PROCESS, AuditResult, Outcome, Severity, TargetResult
from agent.output.merge import MergedFinding, container_groups, merge_findings, pid_phrase
from agent.output.table_facts import Row, endpoint, fact_rows

__all__ = ["colour_wanted", "endpoint", "render_table", "terminal_width"]

COLOURS = {
    Severity.CRITICAL: "\033[1;35m", Severity.HIGH: "\033[1;31m", Severity.MEDIUM: "\033[33m",
    Severity.LOW: "\033[36m", Severity.INFO: "\033[2m",
}
BOLD, RESET = "\033[1m", "\033[0m"
DEFAULT_WIDTH = 80  # not a terminal (or one that reports 0 columns), and no COLUMNS
MIN_WIDTH = 40
LABEL = 14  # "  capabilities" plus two spaces
FINDING_INDENT = 14  # under the rule name, past "    CRITICAL  "
WAIVED = "WAIVED"  # in the severity column: a rule that fired but a --config waiver silences


def terminal_width(environ: Mapping[str, str], stream: TextIO) -> int:
    """COLUMNS when it is a positive number, else the terminal's width when it is not 0, else
    80. A pty whose size was never set (TIOCGWINSZ gives 0 x 0) is a terminal of no width."""
    columns = environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return max(MIN_WIDTH, int(columns))
    try:
        tty_columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return DEFAULT_WIDTH
    return max(MIN_WIDTH, tty_columns) if tty_columns > 0 else DEFAULT_WIDTH


def colour_wanted(environ: Mapping[str, str], stream: TextIO) -> bool:
    """A terminal that can show colour, and no NO_COLOR with a value (no-color.org)."""
    if environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


class Style:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def bold(self, text: str) -> str:
        return f"{BOLD}{text}{RESET}" if self.colour else text

    def severity(self, severity: Severity) -> str:
        label = severity.value.upper().ljust(8)
        return f"{COLOURS[severity]}{label}{RESET}" if self.colour else label


def render_table(audit_result: AuditResult, colour: bool = False, width: int = DEFAULT_WIDTH
                 ) -> str:
    style = Style(colour)
    width = max(MIN_WIDTH, width)
    groups = container_groups(audit_result)
    blocks = [container_block(group, style, width) for group in groups]
    merged = merge_findings(f for group in groups for t in group for f in t.findings)
    return "\n\n".join([*blocks, summary_line(merged)]) + "\n"


def container_block(targets: Sequence[TargetResult], style: Style, width: int) -> str:
    lines = [style.bold(line) for line in _wrap(heading(targets), width, 0, 2)]
    for label, text in merged_rows(targets):
        lines += _row(label, text, width)
    lines.append("  findings")
    merged = merge_findings(f for t in targets for f in t.findings)
    waivers = waived_rules(targets)
    if not merged and not waivers:
        lines.append("    none")
    for entry in sorted(merged, key=lambda m: -m.finding.severity.rank):
        lines += finding_lines(entry, style, width)
    for rule, reason in waivers.items():
        text = f"{WAIVED:<8}  {rule}" + (f"  reason: {reason}" if reason else "")
        lines += _wrap(text, width, 4, FINDING_INDENT - 4)
    return "\n".join(lines)


def waived_rules(targets: Sequence[TargetResult]) -> dict[str, str]:
    """Each rule a --config waiver silenced in the container, once, with the waiver's reason:
    the finding is hidden, the waiver is not."""
    found: dict[str, str] = {}
    for target in targets:
        for verdict in target.verdicts:
            if verdict.outcome is Outcome.WAIVED:
                found.setdefault(verdict.rule, verdict.reason)
    return found


def heading(targets: Sequence[TargetResult]) -> str:
    pids = tuple(t.observed.pid for t in targets if t.observed.pid != NO_PROCESS)
    comms = list(dict.fromkeys(t.observed.comm for t in targets if t.observed.comm))
    procs = (pid_phrase(pids) if pids else "no process") + (
        f" ({', '.join(comms)})" if comms else "")
    first = targets[0]
    if first.declared is None:
        return f"{procs} · profile {first.profile.name}"
    d = first.declared
    return f"{d.pod.namespace}/{d.pod.name} · container {d.container_name} · {procs}"


def merged_rows(targets: Sequence[TargetResult]) -> list[Row]:
    """Each process's fact rows; a row all of them share is shown once, the others say
    whose they are (`pid 4243: uid 0 ...`), after the last row of the same section."""
    rows: list[tuple[str, str, str, list[int]]] = []  # label, text, section, pids
    for target in targets:
        section = ""
        for label, text in fact_rows(target.observed):
            section = label or section
            found = next((r for r in rows if r[:3] == (label, text, section)), None)
            if found is not None:
                found[3].append(target.observed.pid)
                continue
            at = max((i + 1 for i, r in enumerate(rows) if r[2] == section), default=len(rows))
            rows.insert(at, (label, text, section, [target.observed.pid]))
    everyone = len(targets)
    return [(label, text if len(pids) == everyone else f"{pid_phrase(tuple(pids))}: {text}")
            for label, text, _, pids in rows]


def finding_lines(entry: MergedFinding, style: Style, width: int) -> list[str]:
    finding = entry.finding
    lines = [f"    {style.severity(finding.severity)}  {style.bold(finding.rule)}"]
    lines += _wrap(finding.message, width, FINDING_INDENT)
    if finding.remediation:
        lines.append(f"{'':{FINDING_INDENT}}fix:")
        lines += fix_lines(finding.remediation, width, FINDING_INDENT + 2)
    return lines


def fix_lines(remediation: str, width: int, indent: int) -> list[str]:
    """YAML lines stay whole, so they paste as they are. Comments wrap as comments: a run of
    advice as one paragraph; a `# Pod spec:` / `# Helm values` label stays its own line."""
    out: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph and any(indent + len(line) > width for line in paragraph):
            stripped = paragraph[0].lstrip()
            prefix = " " * (indent + len(paragraph[0]) - len(stripped)) + "# "
            text = " ".join(line.strip().lstrip("#").strip() for line in paragraph)
            out.extend(_wrap(text, max(len(prefix) + 20, width), prefix=prefix))
        else:
            out.extend(" " * indent + line for line in paragraph)
        paragraph.clear()

    for line in remediation.rstrip().splitlines():
        comment = line.lstrip()
        if not comment.startswith("#"):
            flush()
            out.append(" " * indent + line)
            continue
        if comment.lstrip("# ").startswith(("Pod spec", "Helm values")):
            flush()
            paragraph.append(line)
            flush()
        else:
            paragraph.append(line)
    flush()
    return out


def summary_line(merged: Iterable[MergedFinding]) -> str:
    counts: dict[Severity, int] = {}
    for entry in merged:
        counts[entry.finding.severity] = counts.get(entry.finding.severity, 0) + 1
    if not counts:
        return "summary: no findings"
    parts = [f"{counts[s]} {s.value}" for s in sorted(counts, key=lambda s: -s.rank)]
    return "summary: " + ", ".join(parts)


def _row(label: str, text: str, width: int) -> list[str]:
    lines = _pack(text.split(" · "), width - LABEL - 2)
    return [f"  {(label if i == 0 else ''):<{LABEL}}{line}" for i, line in enumerate(lines)]


def _pack(segments: list[str], width: int) -> list[str]:
    """Join `a · b · c` greedily; break between segments, and between the words of a segment
    only when it is too long for a line."""
    lines: list[str] = []
    for segment in segments:
        if lines and len(lines[-1]) + 3 + len(segment) <= width:
            lines[-1] += " · " + segment
        else:
            lines += _wrap(segment, width, hanging=2)
    return lines


def _wrap(text: str, width: int, indent: int = 0, hanging: int = 0, prefix: str = "") -> list[str]:
    """Break between words only: never inside a path, a hyphenated name or any other token
    (a token longer than the line gets a line of its own, whole)."""
    first = prefix or " " * indent
    return textwrap.wrap(text, width, initial_indent=first,
                         subsequent_indent=prefix or " " * (indent + hanging),
                         break_long_words=False, break_on_hyphens=False) or [first]
