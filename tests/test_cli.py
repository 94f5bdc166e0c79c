"""The command line as a user runs it: real processes, real output, exit codes (README)."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest
from cli_run import capsh, opaudit
from staging import Sock, Stage

ROOT = Path(__file__).resolve().parents[1]


def last_cap() -> int:
    return int(Path("/proc/sys/kernel/cap_last_cap").read_text())


def test_caps_decode_is_byte_for_byte_capsh() -> None:
    rng = random.Random(7)
    masks = ["0", "0x0", "ffffffffffffffff", f"{(1 << (last_cap() + 1)) - 1:x}",
             f"{1 << (last_cap() + 1):016x}", "0000000000000400", "0x30", "DEADBEEF"]
    masks += [f"{rng.getrandbits(64):016x}" for _ in range(20)]
    for mask in masks:
        ours, theirs = opaudit("caps", "decode", mask), capsh(mask)
        assert (ours.stdout, ours.returncode) == (theirs.stdout, theirs.returncode), mask


def test_missing_pid_is_one_line_and_exit_2() -> None:
    result = opaudit("diagnose", "--pid", "999999999")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "999999999" in result.stderr and "Traceback" not in result.stderr


def test_usage_error_is_one_line_and_exit_2() -> None:
    result = opaudit("diagnose")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_diagnose_json_shows_the_staged_facts(stage: Stage) -> None:
    netns = stage.netns()
    proc = stage.spawn([Sock("tcp", 6, "::", 8080, v6only=0)], netns=netns, uid=185,
                       bounding=["NET_BIND_SERVICE"], ambient=["NET_BIND_SERVICE"],
                       no_new_privs=True, seccomp=True, readonly_root=True, tmpfs=["/tmp"])
    result = opaudit("diagnose", "--pid", str(proc.pid), "-o", "json", "--fail-on", "critical")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == "opaudit.report/v1"
    (target,) = doc["targets"]
    assert target["identity"]["uid"] == {"real": 185, "effective": 185, "saved": 185, "fs": 185}
    caps = target["capabilities"]
    for which in ("effective", "permitted", "bounding", "ambient"):
        assert caps[which] == ["NET_BIND_SERVICE"], which
    assert caps["inheritable"] == ["NET_BIND_SERVICE"]
    assert target["no_new_privs"] is True
    assert target["seccomp"] == "filter"
    assert target["filesystem"]["root_readonly"] is True
    assert "/tmp" in target["filesystem"]["writable_mounts"]
    assert target["network"]["netns"] == os.stat(f"/proc/{proc.pid}/ns/net").st_ino
    assert target["network"]["listeners"] == [
        {"protocol": "tcp", "address": "::", "port": 8080, "v6only": False, "pids": [proc.pid]}]
    assert {f["pid"] for f in doc["findings"]} == {proc.pid}
    rules = {f["rule"] for f in doc["findings"]}
    assert "NetBindServiceUnneeded" in rules  # the capability is held; 8080 needs none
    assert not rules & {"RunsAsRoot", "PrivilegeEscalationAllowed", "SeccompUnconfined"}


def test_pid_that_exits_mid_scan_is_incomplete_not_a_traceback(stage: Stage) -> None:
    proc = stage.spawn([], uid=185)
    stage.kill(proc)
    result = opaudit("diagnose", "--pid", str(proc.pid), "-o", "json")
    # Either refused up front (exit 2, one line) or reported as InspectionIncomplete.
    assert "Traceback" not in result.stderr
    if result.returncode == 2:
        assert len(result.stderr.strip().splitlines()) == 1
    else:
        rules = [f["rule"] for f in json.loads(result.stdout)["findings"]]
        assert "InspectionIncomplete" in rules


def test_sockets_json_equals_ss(stage: Stage) -> None:
    netns = stage.netns(sysctls={"net.ipv6.bindv6only": 1})
    socks = [Sock("tcp", 4, "0.0.0.0", 8080), Sock("tcp", 4, "127.0.0.1", 8081),
             Sock("tcp", 6, "::", 8082, v6only=0), Sock("tcp", 6, "::", 8083),
             Sock("tcp", 6, "2001:db8::10", 8084, v6only=1), Sock("udp", 4, "192.0.2.10", 5353),
             Sock("udp", 6, "::1", 5354), Sock("udp", 6, "::", 5355, v6only=0)]
    proc = stage.spawn(socks, netns=netns)
    result = opaudit("sockets", "--pid", str(proc.pid), "-o", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    ours = {(x["protocol"], x["address"], x["port"]) for x in doc["listeners"]}
    ss = subprocess.run(["ip", "netns", "exec", netns, "ss", "-tulnH"], capture_output=True,
                        text=True, check=True).stdout
    assert ours == parse_ss(ss)
    v6only = {x["port"]: x["v6only"] for x in doc["listeners"]}
    assert v6only[8082] is False and v6only[8083] is True and v6only[8084] is True
    assert v6only[5355] is False and v6only[8080] is None
    assert all(x["pids"] == [proc.pid] for x in doc["listeners"])
    assert doc["incomplete"] == []


def parse_ss(text: str) -> set[tuple[str, str, int]]:
    """(protocol, address, port) from `ss -tulnH`; ss prints a dual-stack `::` as `*`."""
    out = set()
    for line in text.splitlines():
        netid, _state, _rq, _sq, local, *_ = line.split()
        host, _, port = local.rpartition(":")
        host = host.split("%")[0]
        if host == "*":
            host = "::"
        out.add((netid, host.strip("[]"), int(port)))
    return out


@pytest.mark.parametrize("output", ["table", "yaml"])
def test_other_outputs_render(stage: Stage, output: str) -> None:
    proc = stage.spawn([Sock("tcp", 4, "0.0.0.0", 8090)], netns=stage.netns(), uid=185)
    result = opaudit("diagnose", "--pid", str(proc.pid), "-o", output, "--fail-on", "critical")
    assert result.returncode == 0, result.stderr
    assert str(proc.pid) in result.stdout
