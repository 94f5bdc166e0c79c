"""What a user sees: the table's width and colour, unknown
facts, findings merged per container in every output, and short Event notes.

Every scenario is a real process staged on the real kernel, read by `opaudit` run as a
program (a pipe, or a real pseudo-terminal from `pty`), and the Events go through the
test API server.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter

from fixture_data import pod_fixture
from kube.apiserver import ApiServer
from output import console
from output.console import opaudit, root_server
from staging import Sock, Stage

from agent.audit import AuditRequest, audit
from agent.kube.client import Api
from agent.kube.events import EventClient
from agent.kube.podspec import declared_from_pod, load_pod_manifest
from agent.output.events.body import NOTE_LIMIT_BYTES
from agent.output.events.sink import EventSink

CONTROLLER = "spark-operator-controller.yaml"
HARDENED = "spark-operator-controller-hardened.yaml"


def on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """opaudit's stdout when it is a real tty (a pty of 200 columns)."""
    return console.on_a_terminal(args, env)[0]


def test_the_table_fits_80_columns_off_a_terminal_and_honours_columns(stage: Stage) -> None:
    parent, _ = root_server(stage)
    piped = opaudit("diagnose", "--pid", str(parent))
    assert piped.returncode == 1, piped.stderr
    # A line of one token (another container's mount path on this host) is never split.
    widths = [len(line) for line in piped.stdout.splitlines() if " " in line.strip()]
    assert max(widths) <= 80 and max(widths) > 70  # wraps at 80, not at 60 or 96
    assert "all " in piped.stdout and " but SYS_MODULE, SYS_RESOURCE" in piped.stdout
    assert "CRITICAL" not in piped.stdout or "CRITICAL  " in piped.stdout
    assert "    HIGH      RunsAsRoot" in piped.stdout  # a space between severity and rule

    narrow = opaudit("diagnose", "--pid", str(parent), env={"COLUMNS": "60"})
    assert max(len(line) for line in narrow.stdout.splitlines() if " " in line.strip()) <= 60


def test_listener_columns_line_up_for_ipv4_and_ipv6(stage: Stage) -> None:
    parent, child = root_server(stage)
    text = opaudit("diagnose", "--pid", str(parent)).stdout
    rows = [line for line in text.splitlines() if ":8080 " in line or ":9000 " in line
            or "local address:port" in line]
    assert len(rows) == 3, text
    cells = [row.split()[-2] for row in rows]  # v6only, then 0 ([::] with V6ONLY 0) and -
    assert cells == ["v6only", "0", "-"], rows
    starts = {row.rindex(f" {cell} ") + 1 for row, cell in zip(rows, cells, strict=True)}
    assert len(starts) == 1, rows  # v6only in one column, `-` for IPv4
    pids = {row.rindex(str(parent)) for row in rows[1:]} | {rows[0].index("pids")}
    assert len(pids) == 1, rows


def test_colour_on_a_terminal_unless_no_color_has_a_value_or_term_is_dumb(
        stage: Stage) -> None:
    parent, _ = root_server(stage)
    args = ["diagnose", "--pid", str(parent)]
    assert "\x1b[" in on_a_terminal(args, {"TERM": "xterm"})
    assert "\x1b[" in on_a_terminal(args, {"TERM": "xterm", "NO_COLOR": ""})  # set but empty
    assert "\x1b[" not in on_a_terminal(args, {"TERM": "xterm", "NO_COLOR": "1"})
    assert "\x1b[" not in on_a_terminal(args, {"TERM": "dumb"})
    wide = on_a_terminal(args, {"TERM": "dumb"})
    assert max(len(line) for line in wide.splitlines()) > 80  # the tty's 200 columns


def test_findings_are_merged_per_container_in_table_json_yaml_and_events(
        stage: Stage, server: ApiServer, api: Api) -> None:
    parent, child = root_server(stage)
    spec = str(pod_fixture(CONTROLLER))
    both = ["--pid", str(parent), "--pid", str(child), "--pod-spec", spec]
    doc = json.loads(opaudit("diagnose", *both, "-o", "json").stdout)
    rules = Counter(f["rule"] for f in doc["findings"])
    assert rules and max(rules.values()) == 1, rules
    assert all(f["pids"] == sorted([parent, child]) for f in doc["findings"])
    naming = [f for f in doc["findings"] if "pid" in f["message"]]
    assert naming and all(f"pids {min(parent, child)}, {max(parent, child)}" in f["message"]
                          for f in naming)
    assert len(doc["targets"]) == 2  # the facts stay per process

    yaml_text = opaudit("diagnose", *both, "-o", "yaml").stdout
    assert yaml_text.count("- rule: ") == len(doc["findings"])

    table = opaudit("diagnose", *both).stdout
    for rule in rules:
        assert sum(line.split()[1:2] == [rule] for line in table.splitlines()) == 1, rule
    summary = table.strip().splitlines()[-1]
    assert sum(int(part.split()[0]) for part in summary[9:].split(", ")) == len(rules)

    declared = declared_from_pod(load_pod_manifest(spec))
    sink = EventSink(EventClient(api), "worker-1")
    sink.publish(audit([AuditRequest(parent, declared), AuditRequest(child, declared)]))
    assert sink.flush(10)
    notes = {e["reason"]: e["note"] for e in server.events()}
    assert notes.keys() == rules.keys()
    assert f"pids {min(parent, child)}, {max(parent, child)}" in notes["RunsAsRoot"]


def test_an_event_note_is_the_finding_one_fix_line_and_where_the_full_fix_is(
        stage: Stage, server: ApiServer, api: Api) -> None:
    ports = range(8082, 8093)  # 11 listeners no containerPort declares
    staged = stage.spawn([Sock("tcp", 4, "0.0.0.0", p) for p in ports], netns=stage.netns(),
                         uid=185, comm="spark-operator")
    declared = declared_from_pod(load_pod_manifest(str(pod_fixture(HARDENED))))
    report = audit([AuditRequest(staged.pid, declared)])
    undeclared = [f for f in report.findings if f.rule == "UndeclaredListener"]
    assert len(undeclared) == len(ports)

    sink = EventSink(EventClient(api), "worker-1")
    sink.publish(report)
    assert sink.flush(10)
    notes = {e["reason"]: e["note"] for e in server.events()}
    note = notes["UndeclaredListener"]
    assert len(note.encode()) <= NOTE_LIMIT_BYTES
    assert f"{len(ports)} UndeclaredListener findings" in note  # counted, not cut mid-list
    for port in ports:  # and every listener named (ss -tln in the netns is the oracle)
        assert f"tcp 0.0.0.0:{port}" in note
    listening = subprocess.run(["ip", "netns", "exec", str(staged.netns), "ss", "-Htln"],
                               capture_output=True, text=True, check=True).stdout
    assert all(f"0.0.0.0:{port} " in listening for port in ports)
    assert "Fix: declare the port, or disable / loopback-bind the listener." in note
    pod = f"{declared.pod.namespace}/{declared.pod.name}"
    assert note.endswith(f"Full fix: opaudit diagnose --pod {pod}")
    assert "containerPort:" not in note and "…" not in note
    for reason, text in notes.items():
        assert text.endswith(f"Full fix: opaudit diagnose --pod {pod}"), reason
