"""The rule catalogue (SPEC §3) in order, and the README table generated from it.

`python -m agent.rules.catalogue` prints the table that sits between the README's
`<!-- rules:begin -->` and `<!-- rules:end -->` markers.
"""

from __future__ import annotations

from agent.rules import filesystem, identity, incomplete, listeners, network, privileges
from agent.rules.entry import Rule

CATALOGUE: tuple[Rule, ...] = (
    *identity.RULES, *privileges.RULES, *filesystem.RULES, *network.RULES, *listeners.RULES,
    *incomplete.RULES,
)
RULE_IDS: frozenset[str] = frozenset(rule.id for rule in CATALOGUE)


def rule_by_id(rule_id: str) -> Rule | None:
    return next((rule for rule in CATALOGUE if rule.id == rule_id), None)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def catalogue_markdown() -> str:
    """The README's rule table: one row per rule, from the entries the code runs."""
    lines = ["| rule | severity | fires when | why it matters | fix |",
             "|---|---|---|---|---|"]
    for rule in CATALOGUE:
        cells = (f"`{rule.id}`", rule.severity.value, rule.title, rule.why, rule.fix)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(catalogue_markdown(), end="")
