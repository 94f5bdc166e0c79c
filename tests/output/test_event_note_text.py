"""An Event note's fix is the remediation on one line: wrapped advice reads as the sentence
it is, and punctuation is not doubled where parts meet."""

from __future__ import annotations

from agent.model import GENERIC_PROFILE, Finding, Gap, Identity, ObservedProcess, PodRef
from agent.output.events.body import compact_fix, finding_note
from agent.rules.incomplete import inspection_incomplete
from agent.rules.listeners import IPV6_LISTENER_WITH_IPV6_DISABLED
from agent.rules.network import PROBE_PORT_NOT_LISTENING
from agent.rules.profiles import SPARK_OPERATOR_CONTROLLER

POD = PodRef("spark-operator", "so-controller-abc", "0b7b1c5e-1111-4222-8333-944455556666")


def incomplete_finding() -> Finding:
    snap = ObservedProcess(
        pid=4242, start_time=1, comm="spark-operator", cmdline=(),
        identity=Identity(None, None, None, None, None, None), capabilities=None,
        no_new_privs=None, seccomp=None, filesystem=None, network=None,
        incomplete=(Gap("environ", "needs CAP_DAC_READ_SEARCH"),))
    (finding,) = inspection_incomplete(snap, None, GENERIC_PROFILE)
    return finding


def test_wrapped_advice_joins_as_one_sentence() -> None:
    finding = incomplete_finding()
    assert finding.remediation.count("\n# ") == 1  # the catalogue wraps it over two lines
    assert compact_fix(finding.remediation) == (
        "Run opaudit as the DaemonSet ships it (hostPID; SYS_PTRACE, DAC_READ_SEARCH, "
        "SYS_ADMIN), or re-run while the process is alive.")


def test_the_event_note_ends_the_fix_sentence_once() -> None:
    note = finding_note(POD, "controller", [incomplete_finding()])
    assert ("Fix: Run opaudit as the DaemonSet ships it (hostPID; SYS_PTRACE, DAC_READ_SEARCH, "
            "SYS_ADMIN), or re-run while the process is alive. Full fix: opaudit diagnose "
            "--pod spark-operator/so-controller-abc") in note
    assert ",;" not in note and ".." not in note


def test_a_flow_list_split_over_comment_lines_stays_one_list() -> None:
    remediation = ("# The DaemonSet adds capabilities: {drop: [ALL], add: [SYS_PTRACE,\n"
                   "#   DAC_READ_SEARCH, SYS_ADMIN]}\n")
    assert compact_fix(remediation) == ("The DaemonSet adds capabilities: {drop: [ALL], add: "
                                        "[SYS_PTRACE, DAC_READ_SEARCH, SYS_ADMIN]}")


def test_advice_ending_in_a_colon_leads_into_its_snippet_without_a_semicolon() -> None:
    fix = PROBE_PORT_NOT_LISTENING.render_fix(GENERIC_PROFILE, port=8080, kind="liveness",
                                              handler="httpGet")
    assert compact_fix(fix) == ("Point the probe at the port the process serves its health "
                                "endpoint on, or make it listen on 8080: livenessProbe: "
                                "httpGet: port: <port the process listens on>")


def test_separate_sentences_and_snippets_stay_apart() -> None:
    fix = IPV6_LISTENER_WITH_IPV6_DISABLED.render_fix(SPARK_OPERATOR_CONTROLLER, port=8080)
    fix += "\n# spark-operator: pass --webhook-bind-address=0.0.0.0:8080"
    assert compact_fix(fix) == ("Bind 0.0.0.0:8080 instead of [::]:8080. spark-operator: pass "
                                "--webhook-bind-address=0.0.0.0:8080")
    sysctl = ("# net.ipv6.bindv6only is 1 here (v6only sockets); restore the kernel default:\n"
              "# Pod spec: spec.securityContext\nsecurityContext:\n  sysctls:\n"
              "  - name: net.ipv6.bindv6only\n    value: \"0\"\n"
              "# net.ipv6.bindv6only is not a safe sysctl\n")
    assert compact_fix(sysctl) == (
        "net.ipv6.bindv6only is 1 here (v6only sockets); restore the kernel default: "
        'spec.securityContext.sysctls=[{"name":"net.ipv6.bindv6only","value":"0"}]; '
        "net.ipv6.bindv6only is not a safe sysctl")
