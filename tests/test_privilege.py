"""agent.privilege.restrict_self on the real kernel, always in a child process.

Dropping capabilities cannot be undone, so the pytest process itself never calls it. Each
child prints the PrivilegeState and its own /proc/self/status sets; those are checked
against `capsh --decode`.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from staging import Sock, Stage
from unprivileged import AS_NOBODY, nobody_python, world_readable_copy

from agent.model import CAPABILITY_NAMES, Finding, PodRef, Severity
from agent.output.events.body import finding_note
from agent.privilege import AGENT_CAPABILITIES, KEEP_PRIVILEGES_ENV, restrict_self

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, threading
from agent.privilege import restrict_self
if "--thread-first" in sys.argv:
    threading.Thread(target=threading.Event().wait, daemon=True).start()
state = restrict_self()
sets = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key.startswith("Cap") or key == "NoNewPrivs":
        sets[key] = value.strip()
print(json.dumps({"state": state.log_fields(), "status": sets}))
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changes a root process's capabilities")
AGENT_CAPSH = "cap_dac_read_search,cap_sys_ptrace,cap_sys_admin"  # capsh prints by bit order


def run_child(prefix: list[str], *extra: str, python: str = sys.executable,
              env: dict[str, str] | None = None, cwd: Path = REPO) -> dict[str, Any]:
    result = subprocess.run(
        [*prefix, python, "-c", CHILD, *extra], capture_output=True, text=True, timeout=60,
        cwd=cwd, env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def capsh_names(mask: str) -> str:
    out = subprocess.run(["capsh", f"--decode={mask}"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return out.partition("=")[2]


@needs_root
def test_root_keeps_only_the_agent_capabilities_in_every_set() -> None:
    child = run_child([])
    status, state = child["status"], child["state"]
    for key in ("CapPrm", "CapEff", "CapBnd"):
        assert capsh_names(status[key]) == AGENT_CAPSH, key
    assert int(status["CapInh"], 16) == 0
    assert int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert state["kept"] == sorted(AGENT_CAPABILITIES)
    assert state["bounding"] == sorted(AGENT_CAPABILITIES)
    assert state["not_dropped"] == []
    assert state["problems"] == []
    assert state["no_new_privs"] is True
    # Above python-prctl's name list: the kernel's last bits are dropped too.
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    if last_cap < len(CAPABILITY_NAMES):
        assert CAPABILITY_NAMES[last_cap] in state["dropped_bounding"]


@needs_root
def test_inheritable_and_ambient_are_cleared() -> None:
    setpriv = ["setpriv", "--inh-caps=+net_bind_service,+sys_ptrace",
               "--ambient-caps=+net_bind_service,+sys_ptrace", "--"]
    child = run_child(setpriv)
    assert int(child["status"]["CapInh"], 16) == 0
    assert int(child["status"]["CapAmb"], 16) == 0
    assert capsh_names(child["status"]["CapPrm"]) == AGENT_CAPSH
    assert "NET_BIND_SERVICE" in child["state"]["dropped_permitted"]


@needs_root
def test_without_setpcap_bounding_stays_but_nothing_crashes() -> None:
    # Root without CAP_SETPCAP (a runtime that dropped it) cannot shrink its bounding set.
    child = run_child(["setpriv", "--bounding-set=-setpcap", "--"])
    status, state = child["status"], child["state"]
    assert capsh_names(status["CapPrm"]) == AGENT_CAPSH
    assert capsh_names(status["CapEff"]) == AGENT_CAPSH
    assert "cap_chown" in capsh_names(status["CapBnd"])  # unchanged: nobody could drop it
    assert status["NoNewPrivs"] == "1"
    assert any("CAP_SETPCAP" in p for p in state["problems"])
    assert "CHOWN" in state["not_dropped"]


@needs_root
def test_bounding_already_small_is_left_alone() -> None:
    child = run_child(["setpriv", "--bounding-set=-all,+sys_ptrace,+dac_read_search,"
                       "+sys_admin,+setpcap", "--"])
    assert capsh_names(child["status"]["CapBnd"]) == AGENT_CAPSH
    assert child["state"]["dropped_bounding"] == ["SETPCAP"]
    assert child["state"]["problems"] == []


@needs_root
def test_not_root_degrades_gracefully() -> None:
    # uid 65534 runs a world-readable copy (agent/ and python-prctl): the checkout and the
    # venv may sit under a 0700 home directory.
    with world_readable_copy("prctl", "_prctl") as copy:
        child = run_child(AS_NOBODY, python=nobody_python(), cwd=copy,
                          env={"PYTHONPATH": str(copy)})
    status, state = child["status"], child["state"]
    assert int(status["CapPrm"], 16) == 0
    assert int(status["CapEff"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert state["kept"] == []
    assert any("CAP_SETPCAP" in p for p in state["problems"])


@needs_root
def test_opt_out_changes_nothing() -> None:
    before = subprocess.run(["grep", "^CapBnd", "/proc/self/status"], capture_output=True,
                            text=True).stdout.split()[1]
    child = run_child([], env={KEEP_PRIVILEGES_ENV: "1"})
    assert child["status"]["CapBnd"] == before
    assert child["state"]["skipped"] == f"{KEEP_PRIVILEGES_ENV}=1"


@needs_root
def test_a_thread_started_first_is_reported() -> None:
    child = run_child([], "--thread-first")
    assert any("other thread" in p for p in child["state"]["problems"])
    # The calling thread is still restricted.
    assert capsh_names(child["status"]["CapEff"]) == AGENT_CAPSH


def test_unknown_capability_name_is_refused() -> None:
    with pytest.raises(ValueError, match="NOT_A_CAP"):
        restrict_self(("SYS_PTRACE", "NOT_A_CAP"))


# --- the agent in its own simulated container (README: its own privileges) ---

MARKER = "@@opaudit-exit="


def staged_opaudit(stage: Stage, cli_args: list[str], *, bounding: list[str],
                   no_new_privs: bool = True, timeout: float = 60) -> tuple[int, str, str]:
    """Run `opaudit CLI_ARGS` as uid 0 in a private mount namespace with a read-only root,
    under `setpriv` with this bounding set (how the DaemonSet's container starts it).

    A shell prints the exit status after opaudit and then sleeps, so the staging code sees
    a live process; the status and stdout are read from the pipe.
    """
    command = shlex.join([sys.executable, "-m", "agent.cli", *cli_args])
    script = f'{command}; echo "{MARKER}$?"; exec sleep 600'
    proc = stage.spawn(argv=["/bin/sh", "-c", script], bounding=bounding,
                       no_new_privs=no_new_privs, readonly_root=True,
                       env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.popen.stdout is not None
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.popen.stdout], [], [], deadline - time.monotonic())
        line = proc.popen.stdout.readline().decode() if ready else ""
        if line.startswith(MARKER):
            stage.kill(proc)
            return int(line[len(MARKER):]), "".join(out), proc.stderr_text
        if not line:
            break
        out.append(line)
    stage.kill(proc)
    raise AssertionError(f"opaudit did not finish in {timeout}s: {''.join(out)[:300]} "
                         f"{proc.stderr_text[:300]}")


def test_diagnose_self_in_its_own_container_shows_only_the_agent_caps(stage: Stage) -> None:
    # The runtime gave the container more than the DaemonSet declares, and no no_new_privs:
    # restrict_self alone must bring both down.
    bounding = [*AGENT_CAPABILITIES, "CHOWN", "NET_RAW", "SETPCAP", "DAC_OVERRIDE"]
    code, out, err = staged_opaudit(stage, ["diagnose", "--self", "-o", "json",
                                            "--fail-on", "critical"],
                                    bounding=bounding, no_new_privs=False)
    assert code == 0, err
    (target,) = json.loads(out)["targets"]
    caps = target["capabilities"]
    for which in ("effective", "permitted", "bounding"):
        assert caps[which] == sorted(AGENT_CAPABILITIES), which
    assert caps["inheritable"] == [] and caps["ambient"] == []
    assert target["no_new_privs"] is True
    assert target["identity"]["uid"]["effective"] == 0
    assert target["filesystem"]["root_readonly"] is True


def test_diagnose_self_as_the_daemonset_starts_it(stage: Stage) -> None:
    code, out, err = staged_opaudit(stage, ["diagnose", "--self", "-o", "json",
                                            "--fail-on", "critical"],
                                    bounding=list(AGENT_CAPABILITIES))
    assert code == 0, err
    (target,) = json.loads(out)["targets"]
    assert target["capabilities"]["bounding"] == sorted(AGENT_CAPABILITIES)
    assert target["capabilities"]["effective"] == sorted(AGENT_CAPABILITIES)
    assert target["no_new_privs"] is True


# What each capability buys, measured on this kernel (the README's degradation table):
# without SYS_PTRACE: /proc/PID/root and /proc/PID/ns/net of another uid's process;
# without DAC_READ_SEARCH: /proc/PID/environ (mode 0400) and /proc/PID/fd (mode 0500);
# without SYS_ADMIN: setns into the pod's network namespace.
DEGRADED_FACTS = {
    "SYS_PTRACE": {"identity.user", "identity.home", "network"},
    "DAC_READ_SEARCH": {"environ", "network.listeners.owners"},
    "SYS_ADMIN": {"network"},
}
PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"


def target_in_a_pod(stage: Stage) -> int:
    root = stage.rootfs({"etc/passwd": PASSWD})
    (root / "home" / "app").mkdir(mode=0o700)
    os.chown(root / "home" / "app", 1000, 1000)
    proc = stage.spawn([Sock("tcp", 4, "0.0.0.0", 8080)], netns=stage.netns(), uid=1000,
                       bounding=[], no_new_privs=True, root=root, env={"HOME": "/home/app"})
    return proc.pid


def same_where_known(degraded: Any, full: Any, path: str = "") -> list[str]:
    """Paths where `degraded` states a fact (not null) that differs from `full`."""
    if degraded is None or path.endswith(".error"):  # an error says why a fact is null
        return []
    if isinstance(degraded, dict) and isinstance(full, dict):
        return [p for key, value in degraded.items()
                for p in same_where_known(value, full.get(key), f"{path}.{key}")]
    if isinstance(degraded, list) and isinstance(full, list) and len(degraded) == len(full):
        return [p for i, (d, f) in enumerate(zip(degraded, full, strict=True))
                for p in same_where_known(d, f, f"{path}[{i}]")]
    return [] if degraded == full else [f"{path}: {degraded!r} != {full!r}"]


@pytest.mark.parametrize("missing", AGENT_CAPABILITIES)
def test_without_a_capability_facts_become_incomplete_never_wrong(
    stage: Stage, missing: str
) -> None:
    pid = target_in_a_pod(stage)
    args = ["diagnose", "--pid", str(pid), "-o", "json", "--fail-on", "critical"]
    code, out, err = staged_opaudit(stage, args, bounding=list(AGENT_CAPABILITIES))
    assert code == 0, err
    full = json.loads(out)
    code, out, err = staged_opaudit(
        stage, args, bounding=[c for c in AGENT_CAPABILITIES if c != missing])
    assert code == 0, err
    assert "Traceback" not in err
    degraded = json.loads(out)
    (target,), (full_target,) = degraded["targets"], full["targets"]
    assert full_target["identity"]["user"] == "app"  # the full run did see everything

    everything = {g["fact"]: g["reason"] for g in target["incomplete"]}
    for fact in DEGRADED_FACTS[missing]:
        assert fact in everything, (fact, everything)
        assert f"CAP_{missing}" in everything[fact]
    (incomplete,) = [f for f in degraded["findings"] if f["rule"] == "InspectionIncomplete"]
    for fact in DEGRADED_FACTS[missing]:  # facts that share a reason are listed before it
        assert re.search(rf"\b{re.escape(fact)}(, [\w./]+)* \(", incomplete["message"]), fact
    assert f"CAP_{missing}" in incomplete["message"]
    # Its Event note: the fix's comment lines wrap one sentence, so the note reads them
    # joined by spaces (not `DAC_READ_SEARCH,; SYS_ADMIN`) and ends that sentence once.
    as_reported = Finding(rule=incomplete["rule"], severity=Severity(incomplete["severity"]),
                          message=incomplete["message"], remediation=incomplete["remediation"])
    note = finding_note(PodRef("ns", "pod", "uid"), "c", [as_reported])
    sentence = " ".join(line.lstrip("#").strip()
                        for line in incomplete["remediation"].splitlines())
    assert f"Fix: {sentence} Full fix: opaudit diagnose --pod ns/pod" in note, note

    # What it still states is what the full run states; a rule it could not judge is absent.
    if "network.listeners.owners" in everything:
        for listener in (target["network"] or {}).get("listeners", []):
            listener.pop("pids")
        for listener in full_target["network"]["listeners"]:
            listener.pop("pids")
        # How the owners were read differs too: no fd table was readable.
        (target["network"] or {}).pop("owner_reader", None)
        full_target["network"].pop("owner_reader")
    target.pop("incomplete")
    # A rule that passed without the capability passed with it; one that could not be
    # evaluated without it names a missing fact, and the capability as the reason.
    passed, full_passed = set(target.pop("passed")), set(full_target["passed"])
    assert passed <= full_passed
    unknown_before = {u["rule"] for u in full_target["unevaluated"]}
    newly_unknown = [u for u in target.pop("unevaluated") if u["rule"] not in unknown_before]
    fired = {f["rule"] for f in degraded["findings"]}  # InspectionIncomplete, now
    assert {u["rule"] for u in newly_unknown} | fired >= full_passed - passed
    for verdict in newly_unknown:
        assert any(f"CAP_{missing}" in m["reason"] for m in verdict["missing"]), verdict
    assert same_where_known(target, full_target) == []
    rules = {f["rule"] for f in full["findings"]}
    extra = {f["rule"] for f in degraded["findings"]} - rules - {"InspectionIncomplete"}
    assert extra == set()


def test_sockets_without_dac_read_search_says_the_owners_are_unknown(stage: Stage) -> None:
    pid = target_in_a_pod(stage)
    args = ["sockets", "--pid", str(pid), "-o", "json"]
    code, out, err = staged_opaudit(stage, args, bounding=list(AGENT_CAPABILITIES))
    assert code == 0, err
    assert [x["pids"] for x in json.loads(out)["listeners"]] == [[pid]]
    code, out, err = staged_opaudit(
        stage, args, bounding=[c for c in AGENT_CAPABILITIES if c != "DAC_READ_SEARCH"])
    assert code == 0, err
    assert [x["pids"] for x in json.loads(out)["listeners"]] == [[]]
    assert "network.listeners.owners" in err and "CAP_DAC_READ_SEARCH" in err


@pytest.mark.parametrize("missing", ["SYS_PTRACE", "SYS_ADMIN"])
def test_sockets_without_a_capability_is_one_line_naming_it(stage: Stage, missing: str) -> None:
    pid = target_in_a_pod(stage)
    code, out, err = staged_opaudit(stage, ["sockets", "--pid", str(pid)],
                                    bounding=[c for c in AGENT_CAPABILITIES if c != missing])
    assert code == 2 and out == ""
    assert f"CAP_{missing}" in err and "Traceback" not in err
