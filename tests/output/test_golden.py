"""Golden files: the reviewed terminal table (at 80 columns) and JSON report of staged
scenarios. A change of wording shows up as a diff of tests/fixtures/golden/.

    OPAUDIT_UPDATE_GOLDEN=1 scripts/test -k golden     # rewrite them, then read the diff

Values that differ on every run are replaced before rendering, so the table wraps the
same way every time: pids by fixed numbers (4242, 4243, ...), netns inodes by one number;
link-local addresses in the JSON afterwards. Everything else is compared byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixture_data import FIXTURES, pod_fixture
from output.console import FORKING_SERVER, root_bounding
from staging import STAGE_PYTHON, Sock, Stage, spawn_zombie

from agent.audit import AuditRequest, audit
from agent.kube.podspec import declared_from_pod, load_pod_manifest
from agent.model import AuditResult, NetnsFacts
from agent.output.jsonreport import render_json
from agent.output.table import render_table

GOLDEN = FIXTURES / "golden"
UPDATE = os.environ.get("OPAUDIT_UPDATE_GOLDEN") == "1"
PASSWD = "spark:x:185:185:spark:/tmp:/bin/sh\n"
ROOT_PASSWD = "root:x:0:0:root:/root:/bin/sh\n"


STABLE_NETNS = 4026530000
PID_FIELDS = ("pid", "ppid", "pids", "container_pids")


@dataclass
class Scenario:
    report: AuditResult
    names: dict[str, str]  # volatile text -> stable text, replaced after rendering
    pids: dict[int, int]  # this run's pid -> the golden file's


def renumbered(value: Any, pids: dict[int, int], field_name: str = "") -> Any:
    """`value` with every pid (as a field, or as a word in text) and netns inode made
    stable, before rendering: the table must wrap as in the golden file."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: renumbered(getattr(value, f.name), pids, f.name)
                   for f in dataclasses.fields(value)}
        if isinstance(value, NetnsFacts):
            changes["inode"] = STABLE_NETNS
        return dataclasses.replace(value, **changes)
    if isinstance(value, tuple):
        return tuple(renumbered(item, pids, field_name) for item in value)
    if isinstance(value, str):
        return PID_TEXT.sub(lambda m: _renumber_words(m.group(0), pids), value)
    if isinstance(value, int) and not isinstance(value, bool) and field_name in PID_FIELDS:
        return pids.get(value, value)
    return value


# Where text names pids: "pid 4242", "pids 4242, 4243 and 4244", "process 4243", ss's "pid=4242",
# "/proc/4242". Only there: a staged pid may equal a port or a sysctl's value (1024).
PID_TEXT = re.compile(r"\b(?:pids?|process) \d+(?:(?:, | and )\d+)*|\bpid=\d+|/proc/\d+")


def _renumber_words(text: str, pids: dict[int, int]) -> str:
    return re.sub(r"\d+", lambda m: str(pids.get(int(m.group(0)), m.group(0))), text)


def stable(text: str, names: dict[str, str]) -> str:
    text = re.sub(r"fe80::[0-9a-f:]+", "fe80::<from the veth's random MAC>", text)
    for value, name in sorted(names.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(value, name)
    return text


def last_cap_names() -> dict[str, str]:
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    return {f"all {last + 1}": "all <caps>", f"cap_last_cap ({last})": "cap_last_cap (<last>)"}


def hardened_controller(stage: Stage) -> Scenario:
    staged = stage.spawn(
        [Sock("tcp", 6, "::", 8080, v6only=0), Sock("tcp", 6, "::", 8081, v6only=0)],
        netns=stage.netns(), uid=185, gid=185, groups=[185], bounding=[], no_new_privs=True,
        seccomp=True, readonly_root=True, tmpfs=["/tmp"],
        root=stage.rootfs({"etc/passwd": PASSWD}), comm="spark-operator",
        env={"HOME": "/tmp"})
    manifest = load_pod_manifest(str(pod_fixture("spark-operator-controller-hardened.yaml")))
    report = audit([AuditRequest(staged.pid, declared_from_pod(manifest))])
    return Scenario(report, {}, {staged.pid: 4242})


def forked_root_server(stage: Stage) -> Scenario:
    staged = stage.spawn(netns=stage.netns(), bounding=root_bounding(),
                         root=stage.rootfs({"etc/passwd": ROOT_PASSWD}),
                         argv=[STAGE_PYTHON, "-c", FORKING_SERVER])
    assert staged.popen.stdout is not None
    child = int(staged.popen.stdout.readline())
    manifest = load_pod_manifest(str(pod_fixture("spark-operator-controller.yaml")))
    declared = declared_from_pod(manifest)
    report = audit([AuditRequest(staged.pid, declared), AuditRequest(child, declared)])
    return Scenario(report, last_cap_names(), {staged.pid: 4242, child: 4243})


def zombie(stage: Stage) -> Scenario:
    staged, pid = spawn_zombie(stage, netns=stage.netns(), bounding=root_bounding(),
                               root=stage.rootfs({"etc/passwd": ROOT_PASSWD}))
    report = audit([AuditRequest(pid)])
    return Scenario(report, last_cap_names(), {staged.pid: 4242, pid: 4243})


SCENARIOS = {"hardened-controller": hardened_controller,
             "forked-root-server": forked_root_server, "zombie": zombie}


@pytest.fixture(params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest, stage: Stage) -> Iterator[tuple[str, Scenario]]:
    yield request.param, SCENARIOS[request.param](stage)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"{path} is missing: run OPAUDIT_UPDATE_GOLDEN=1 scripts/test -k golden"
    expected = path.read_text()
    if text != expected:
        diff = subprocess.run(["diff", "-u", str(path), "-"], input=text, text=True,
                              capture_output=True).stdout
        sys.stderr.write(diff)
    assert text == expected, f"{name} differs from its golden file (diff above)"


def test_golden_table_at_80_columns(scenario: tuple[str, Scenario]) -> None:
    name, found = scenario
    rendered = render_table(renumbered(found.report, found.pids), width=80)
    assert max(len(line) for line in rendered.splitlines()) <= 80
    text = stable(rendered, found.names)
    check_golden(f"{name}.table.txt", text)


def test_golden_json(scenario: tuple[str, Scenario]) -> None:
    name, found = scenario
    rendered = render_json(renumbered(found.report, found.pids))
    json.loads(rendered)
    text = stable(rendered, found.names)
    check_golden(f"{name}.json", text)
