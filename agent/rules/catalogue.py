"""The rule catalogue (README: Rule catalogue) in order, and the README table generated from it.

`python -m agent.rules.catalogue` prints the table that sits between the README's
`<!-- rules:begin -->` and `<!-- rules:end -->` markers.
"""

from __future__ import annotations

import dataclasses

from agent.model import Fact
from agent.rules import (
    filesystem,
    identity,
    incomplete,
    listeners,
    network,
    portbind,
    privileges,
)
from agent.rules.entry import Rule


def _in(category: str, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    return tuple(dataclasses.replace(rule, category=category) for rule in rules)


# Categories as a policy report's `category` groups results (Policy Reporter filters on it).
CATALOGUE: tuple[Rule, ...] = (
    *_in("identity", identity.RULES),
    *_in("privileges", privileges.RULES + portbind.RULES),
    *_in("filesystem", filesystem.RULES), *_in("network", network.RULES + listeners.RULES),
    *_in("inspection", incomplete.RULES),
)
RULE_IDS: frozenset[str] = frozenset(rule.id for rule in CATALOGUE)
# A container with no live process (a crash loop) has only its pod's netns, read through the
# sandbox, and its declared side: these rules judge it from those alone (uid and
# capabilities from the pod spec, as the runtime will start it; without a declared uid,
# unknown).
WITHOUT_PROCESS: tuple[Rule, ...] = tuple(
    dataclasses.replace(rule, facts=(Fact.POD_SPEC, Fact.UNPRIVILEGED_PORT_START, Fact.LISTENERS,
                                     Fact.DECLARED_UID))
    for rule in CATALOGUE if rule.id == portbind.PRIVILEGED_PORT_NOT_BINDABLE.id)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def catalogue_markdown() -> str:
    """The README's rule table: one row per rule, from the entries the code runs."""
    lines = ["| rule | severity | fires when | why it matters | fix | needs |",
             "|---|---|---|---|---|---|"]
    for rule in CATALOGUE:
        needs = ", ".join(f"`{fact}`" for fact in rule.facts) or "-"
        cells = (f"`{rule.id}`", rule.severity.value, rule.title, rule.why, rule.fix, needs)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(catalogue_markdown(), end="")
