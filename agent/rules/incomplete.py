"""InspectionIncomplete: facts that could not be read, so some verdicts are unknown."""

from __future__ import annotations

from collections.abc import Iterator

from agent.model import (
    NO_PROCESS,
    DeclaredContainer,
    Finding,
    Gap,
    ObservedProcess,
    Profile,
    Severity,
)
from agent.rules.entry import Rule


def gaps_of(observed: ObservedProcess) -> tuple[Gap, ...]:
    gaps = [*observed.incomplete, *(observed.network.gaps if observed.network else ())]
    return tuple(dict.fromkeys(gaps))


def inspection_incomplete(observed: ObservedProcess, declared: DeclaredContainer | None,
                          profile: Profile) -> Iterator[Finding]:
    gaps = gaps_of(observed)
    if not gaps:
        return
    facts_by_reason: dict[str, list[str]] = {}
    for gap in gaps:  # a zombie's seven facts share one reason: say it once
        facts_by_reason.setdefault(gap.reason, []).append(gap.fact)
    listed = "; ".join(f"{', '.join(facts)} ({reason})"
                       for reason, facts in facts_by_reason.items())
    about = ("the container (it has no process here)" if observed.pid == NO_PROCESS
             else f"{observed.comm} (pid {observed.pid})")
    message = (f"Some facts about {about} could not be read: "
               f"{listed}. Rules that need them report nothing, which is not a pass.")
    fix = ("# Run opaudit as the DaemonSet ships it (hostPID; SYS_PTRACE, DAC_READ_SEARCH,\n"
           "# SYS_ADMIN), or re-run while the process is alive.")
    yield INSPECTION_INCOMPLETE.finding(message, fix, observed=listed)


INSPECTION_INCOMPLETE = Rule(
    "InspectionIncomplete", Severity.INFO,
    "some facts could not be read (which, and why: missing privilege, process gone)",
    "a rule without its facts says nothing; silence is not a pass",
    "give the agent the capabilities its DaemonSet declares", inspection_incomplete)

RULES = (INSPECTION_INCOMPLETE,)
