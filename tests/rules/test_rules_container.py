"""agent.rules.container: a container's processes' findings as one per rule and subject (the
real-process proofs are in tests/test_container_judgement.py; these pin the merging)."""

from __future__ import annotations

from rules.rule_snapshots import caps, declared, observed

from agent.model import GENERIC_PROFILE, Finding, Outcome, Severity, TargetResult, Verdict
from agent.rules.container import combine, judge_container, merge_by_subject

NBS = 1 << 10


def finding(pid: int, comm: str, message: str, *, rule: str = "RunsAsRoot", subject: str = "",
            severity: Severity = Severity.HIGH, container: str | None = "app") -> Finding:
    return Finding(rule, severity, message, "fix", pid=pid, pod="ns/pod", container=container,
                   pids=(pid,), comms=(comm,), subject=subject)


def test_messages_that_differ_only_in_who_name_every_comm_and_pid() -> None:
    merged = combine([finding(12, "nc", "nc (pid 12) runs as root."),
                      finding(10, "httpd", "httpd (pid 10) runs as root.")])
    assert merged.message == "Each of nc, httpd (pids 10, 12) runs as root."
    assert merged.pids == (10, 12) and merged.pid == 10 and merged.comms == ("nc", "httpd")


def test_other_messages_are_each_kept_and_the_most_severe_leads() -> None:
    low = finding(10, "a", "a (pid 10) says one thing.", severity=Severity.LOW)
    high = finding(11, "b", "b (pid 11) says another, uid 5.", severity=Severity.HIGH)
    merged = combine([low, high])
    assert merged.severity is Severity.HIGH
    assert merged.message == "b (pid 11) says another, uid 5. a (pid 10) says one thing."


def test_subjects_and_containers_keep_findings_apart_and_no_container_is_per_pid() -> None:
    found = merge_by_subject([
        finding(10, "a", "x", rule="UndeclaredListener", subject="tcp/5000"),
        finding(11, "b", "x", rule="UndeclaredListener", subject="tcp/5000"),
        finding(10, "a", "y", rule="UndeclaredListener", subject="tcp/5001"),
        finding(10, "a", "z", container="sidecar"),
        finding(20, "c", "w", container=None), finding(21, "d", "w", container=None)])
    assert [(f.subject, f.container, f.pids) for f in found] == [
        ("tcp/5000", "app", (10, 11)), ("tcp/5001", "app", (10,)), ("", "sidecar", (10,)),
        ("", None, (20,)), ("", None, (21,))]


def test_a_capability_another_process_holds_effective_is_not_ineffective() -> None:
    rule = "CapabilityAddedButIneffective"
    idle = finding(12, "nc", "nc idle", rule=rule, subject="NET_BIND_SERVICE",
                   severity=Severity.LOW)
    decl = declared()
    parent = TargetResult(observed(pid=10, capabilities=caps(effective=NBS, bounding=NBS)),
                          decl, GENERIC_PROFILE, verdicts=(Verdict(rule, Outcome.PASSED),))
    child = TargetResult(observed(pid=12, capabilities=caps(bounding=NBS)), decl,
                         GENERIC_PROFILE, findings=(idle,),
                         verdicts=(Verdict(rule, Outcome.FIRED, (idle,)),))
    first, second = judge_container([parent, child])
    assert first.findings == () and second.findings == ()
    assert second.verdicts[0].outcome is Outcome.PASSED
    # Alone, the child's finding stands, on the first (only) target of its container.
    (alone,) = judge_container([child])
    assert [f.subject for f in alone.findings] == ["NET_BIND_SERVICE"]


def test_a_privileged_port_another_process_can_bind_is_bindable_by_the_container() -> None:
    rule = "PrivilegedPortNotBindable"
    unbindable = finding(12, "worker", "worker cannot bind", rule=rule, subject="tcp/443")
    decl = declared()
    parent = TargetResult(observed(pid=10, capabilities=caps(effective=NBS, bounding=NBS)),
                          decl, GENERIC_PROFILE, verdicts=(Verdict(rule, Outcome.PASSED),))
    worker = TargetResult(observed(pid=12, capabilities=caps()), decl, GENERIC_PROFILE,
                          findings=(unbindable,),
                          verdicts=(Verdict(rule, Outcome.FIRED, (unbindable,)),))
    assert [t.findings for t in judge_container([parent, worker])] == [(), ()]
    assert [f.subject for f in judge_container([worker])[0].findings] == ["tcp/443"]
