"""The result table scripts/bench prints: markdown-friendly, one figure per row."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    target: str = ""
    met: bool | None = None  # None: a reference figure, no target

    @property
    def status(self) -> str:
        return "" if self.met is None else ("met" if self.met else "NOT MET")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def render(title: str, rows: list[Row]) -> str:
    header = ("figure", "value", "target", "status")
    cells = [header] + [(r.figure, r.value, r.target, r.status) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = [f"### {title}", ""]
    for n, cell in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True))
                     + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"
