from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from cgroup_staging import KubepodsCgroups, systemd_scope
from hypothesis import given
from hypothesis import strategies as st
from staging import STAGE_PYTHON, Stage, Staged

from agent.collect import nodewalk
from agent.collect.errors import CollectError, ParseError, ProcessGone
from agent.collect.fileio import PROC_FILE_LIMIT
from agent.collect.procfs import ProcFS
from agent.collect.procparse import (
    OVERFLOW_ID,
    parse_id_map,
    parse_stat,
    parse_status,
    translate_id,
)
from agent.collect.text import sanitize
from agent.model import IdMapRange

STATUS = """Name:\tspark-operator
Umask:\t0022
State:\tS (sleeping)
Tgid:\t8067
Pid:\t8067
Uid:\t185\t186\t187\t188
Gid:\t185\t185\t185\t185
FDSize:\t256
Groups:\t185 1000\x20
NStgid:\t8067\t1
NSpid:\t8067\t1
CapInh:\t0000000000000000
CapPrm:\t0000000000000400
CapEff:\t0000000000000400
CapBnd:\t00000000a80425fb
CapAmb:\t0000000000000000
NoNewPrivs:\t1
Seccomp:\t2
Seccomp_filters:\t1
"""


def replace_line(text: str, key: str, line: str | None) -> str:
    lines = [ln for ln in text.splitlines() if not ln.startswith(key + ":")]
    return "\n".join(lines + ([line] if line is not None else [])) + "\n"


def test_parse_status() -> None:
    status = parse_status(STATUS, last_cap=40)
    assert status.name == "spark-operator"
    assert (status.uid.real, status.uid.effective, status.uid.saved, status.uid.fs) == (
        185, 186, 187, 188)
    assert status.groups == (185, 1000)
    assert status.capabilities.effective == 1 << 10
    assert status.capabilities.bounding == 0xA80425FB
    assert status.capabilities.last_cap == 40
    assert status.no_new_privs is True
    assert status.seccomp == "filter"


@pytest.mark.parametrize(("mode", "name"), [("0", "disabled"), ("1", "strict"), ("2", "filter")])
def test_parse_status_seccomp_modes(mode: str, name: str) -> None:
    assert parse_status(replace_line(STATUS, "Seccomp", f"Seccomp:\t{mode}"), 40).seccomp == name


def test_parse_status_old_kernel_fields_absent() -> None:
    text = STATUS
    for key in ("NoNewPrivs", "Seccomp", "CapAmb", "NSpid", "Groups"):
        text = replace_line(text, key, None)
    status = parse_status(text, 40)
    assert status.no_new_privs is None
    assert status.seccomp is None
    assert status.capabilities.ambient == 0
    assert status.groups == ()


@pytest.mark.parametrize(
    ("key", "line"),
    [("Uid", None), ("Uid", "Uid:\t1\t2\t3"), ("Gid", "Gid:\t1 2 3 x"), ("CapEff", None),
     ("CapEff", "CapEff:\tzz"), ("Seccomp", "Seccomp:\t3"), ("NoNewPrivs", "NoNewPrivs:\tyes"),
     ("Uid", "Uid:\t4294967296 0 0 0"), ("Groups", "Groups:\t-1"), ("Name", None),
     ("Uid", "Uid:\t١٨٥ 185 185 185")],  # Arabic-Indic digits that int() would accept
)
def test_parse_status_rejects_malformed(key: str, line: str | None) -> None:
    with pytest.raises(ParseError):
        parse_status(replace_line(STATUS, key, line), 40)


STATUS_KEYS = ["Name", "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
               "NoNewPrivs", "Seccomp", "NSpid", "State"]


@given(st.lists(st.tuples(st.sampled_from(STATUS_KEYS) | st.text(max_size=8),
                          st.text(max_size=30)), max_size=20))
def test_parse_status_parses_or_raises(lines: list[tuple[str, str]]) -> None:
    text = "\n".join(f"{k}:\t{v}" for k, v in lines)
    try:
        status = parse_status(text, 40)
    except ParseError:
        return
    assert all(0 <= i < 1 << 32 for i in (*status.groups, status.uid.real, status.gid.fs))
    assert status.seccomp in (None, "disabled", "strict", "filter")


def test_parse_id_map_and_translate() -> None:
    identity = parse_id_map("         0          0 4294967295\n")
    assert identity == (IdMapRange(0, 0, 4294967295),)
    assert translate_id(185, identity) == 185
    userns = parse_id_map("         0     100000      65536\n")
    assert translate_id(100185, userns) == 185
    assert translate_id(100000, userns) == 0
    assert translate_id(165535, userns) == 65535
    assert translate_id(165536, userns) == OVERFLOW_ID  # just past the range
    assert translate_id(185, userns) == OVERFLOW_ID  # a host id the pod cannot name
    assert translate_id(0, ()) == OVERFLOW_ID  # user namespace with no map written yet


def test_parse_id_map_several_ranges() -> None:
    ranges = parse_id_map("0 1000 1\n1 100000 65535\n")
    assert translate_id(1000, ranges) == 0
    assert translate_id(100000, ranges) == 1


@pytest.mark.parametrize("text", ["0 0", "0 0 0\n", "a b c", "0 0 1 2", "0 0 4294967296"])
def test_parse_id_map_rejects_malformed(text: str) -> None:
    with pytest.raises(ParseError):
        parse_id_map(text)


@given(st.text(alphabet="0123456789 \n\t-x", max_size=80))
def test_parse_id_map_parses_or_raises(text: str) -> None:
    try:
        ranges = parse_id_map(text)
    except ParseError:
        return
    for r in ranges:
        assert r.count > 0
        assert translate_id(r.outside, ranges) == next(
            x.inside + r.outside - x.outside for x in ranges
            if x.outside <= r.outside < x.outside + x.count)


def test_parse_stat_with_parenthesis_in_comm() -> None:
    fields = " ".join(str(n) for n in range(4, 22))
    stat = parse_stat(f"42 (a) (b) c) S {fields} 98765 0 0\n".encode())
    assert (stat.comm, stat.start_time) == ("a) (b) c", 98765)


@pytest.mark.parametrize("text", ["", "42 (x S 1 2", "42 (x) S 1 2 3", "42 (x) " + "x " * 30])
def test_parse_stat_rejects_malformed(text: str) -> None:
    with pytest.raises(ParseError):
        parse_stat(text.encode())


@given(st.binary(max_size=40).filter(lambda comm: b"\n" not in comm),
       st.integers(0, 10**19))
def test_parse_stat_takes_any_comm_and_the_22nd_field(comm: bytes, start: int) -> None:
    # comm is 15 bytes in the kernel, but any bytes must leave the fields after it intact.
    fields = " ".join(str(n) for n in range(4, 22))
    stat = parse_stat(b"42 (" + comm + b") S " + fields.encode() + f" {start} 0 0\n".encode())
    assert stat.start_time == start
    assert stat.comm == sanitize(comm, 64)


def test_read_start_time_matches_psutil(stage: Stage) -> None:
    # comm may hold ') ' and spaces: the kernel does not escape it in stat.
    staged = stage.spawn(comm="x) (y) 1 2 3")
    with ProcFS().process(staged.pid) as process:
        stat = process.stat()
    assert stat.comm == "x) (y) 1 2 3"
    ticks = os.sysconf("SC_CLK_TCK")
    created = psutil.boot_time() + stat.start_time / ticks
    assert abs(created - psutil.Process(staged.pid).create_time()) < 0.05


def test_a_handle_reads_nothing_once_its_process_exited() -> None:
    child = subprocess.Popen(["sleep", "60"])
    process = ProcFS().process(child.pid)
    child.kill()
    child.wait()
    try:
        for read in (process.status, process.stat, process.cmdline, process.environ,
                     process.uid_map, process.gid_map, process.mountinfo, process.cgroup,
                     process.root_fd, process.open_netns, process.netns_inode,
                     process.open_fd_dir):
            with pytest.raises(ProcessGone):
                read()
    finally:
        process.close()
    with pytest.raises(ProcessGone):
        ProcFS().process(child.pid)


def test_reads_are_size_capped_and_sanitised(tmp_path: Path) -> None:
    pid_dir = tmp_path / "77"
    pid_dir.mkdir()
    big = b"X=" + b"y" * (3 * PROC_FILE_LIMIT)
    (pid_dir / "environ").write_bytes(b"HOME=/home/\x1b[2Jspark\0noequals\0" + big)
    huge_arg = b"z" * (2 * PROC_FILE_LIMIT)
    (pid_dir / "cmdline").write_bytes(b"java\0-Divy.home=/tmp/.ivy2\0" + huge_arg)
    process = ProcFS(str(tmp_path)).process(77)
    environ = process.environ()
    assert environ[0] == ("HOME", "/home/\\x1b[2Jspark")
    assert [k for k, _ in environ] == ["HOME", "X"]
    assert len(environ[1][1]) <= 4096
    cmdline = process.cmdline()
    assert cmdline[:2] == ("java", "-Divy.home=/tmp/.ivy2")
    assert len(cmdline[2]) <= 4096


def test_host_proc_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/cap_last_cap").write_text("63\n")
    monkeypatch.setenv("HOST_PROC", str(tmp_path))
    assert ProcFS().read_cap_last_cap() == 63


def test_unreadable_file_is_a_collect_error(tmp_path: Path) -> None:
    (tmp_path / "5" / "status").mkdir(parents=True)  # EISDIR: neither gone nor denied
    with pytest.raises(CollectError) as info:
        ProcFS(str(tmp_path)).process(5).status()
    assert not isinstance(info.value, ProcessGone)


def test_cap_last_cap_matches_kernel() -> None:
    assert ProcFS().read_cap_last_cap() == int(Path("/proc/sys/kernel/cap_last_cap").read_text())


REUSE_SCRIPT = """mount -t proc proc "$PROCDIR" || exit 3
sleep 600 & echo $!
read go
kill $! && wait $!
echo $(( $! - 1 )) > "$PROCDIR/sys/kernel/ns_last_pid"
sleep 600 & echo $!
read never
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="stages a PID namespace: needs root")
def test_a_handle_never_reads_the_process_that_reused_its_pid(tmp_path: Path) -> None:
    # In a PID namespace of our own, ns_last_pid makes the next child take the pid of the
    # one just reaped: real pid reuse, without waiting for the node's pids to wrap.
    procdir = tmp_path / f"opa{os.getpid()}x-reuse"
    procdir.mkdir()
    shell = subprocess.Popen(
        ["unshare", "--pid", "--fork", "sh", "-c", REUSE_SCRIPT], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PROCDIR": str(procdir)})
    try:
        assert shell.stdin is not None and shell.stdout is not None
        pid = int(shell.stdout.readline())
        proc = ProcFS(str(procdir))
        first = proc.process(pid)
        first.stat()
        shell.stdin.write("go\n")
        shell.stdin.flush()
        assert int(shell.stdout.readline()) == pid  # the new sleep took the same pid
        with proc.process(pid) as second:
            second.status()  # the pid is alive again (forked, maybe not yet sleep)...
        with pytest.raises(ProcessGone):
            first.status()  # ...but not the process this handle was opened on
        # (start times could not tell them apart: both may start in the same clock tick)
        first.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.communicate(timeout=10)
        subprocess.run(["umount", "-l", str(procdir)], capture_output=True)


# --- the cgroup text kept across passes -----------------------------------------------

# The init of a new pid namespace: on "spawn N FILE" it makes the next pid N (ns_last_pid,
# as CRIU does), forks a child that moves itself into the cgroup of FILE, and prints the pid
# once it has; on "kill N" it kills and reaps that child.
PIDNS_INIT = r"""
import os, signal, sys
for line in sys.stdin:
    command, *args = line.split()
    if command == "spawn":
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(int(args[0]) - 1))
        ready, told = os.pipe()
        child = os.fork()
        if child == 0:
            with open(args[1], "w") as f:
                f.write("0")
            os.write(told, b"1")
            signal.pause()
        os.read(ready, 1)
        print(child, flush=True)
    elif command == "kill":
        os.kill(int(args[0]), signal.SIGKILL)
        os.waitpid(int(args[0]), 0)
        print("killed", flush=True)
"""


def test_a_reused_pid_in_another_container_is_read_anew(stage: Stage,
                                                         cgroups: KubepodsCgroups) -> None:
    """The kept text of a container's process is keyed by the inode of /proc/PID: a new
    process given the same pid, in another container, is never taken for the old one."""
    ids = [os.urandom(32).hex() for _ in range(2)]
    procs = [cgroups.procs_files(systemd_scope(str(uuid.uuid4()), cid), None)[0] for cid in ids]
    init = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", STAGE_PYTHON, "-c",
                             PIDNS_INIT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    stage.processes.append(Staged(pid=init.pid, popen=init))
    assert init.stdin is not None and init.stdout is not None

    def say(line: str) -> str:
        assert init.stdin is not None and init.stdout is not None
        init.stdin.write(line + "\n")
        init.stdin.flush()
        return init.stdout.readline().strip()

    try:
        assert say(f"spawn 300 {procs[0]}") == "300"
        inner_init = int(Path(f"/proc/{init.pid}/task/{init.pid}/children").read_text().split()[0])
        proc = ProcFS(f"/proc/{inner_init}/root/proc")  # that pid namespace's own procfs
        reads: list[str] = []
        real_read = nodewalk.read_file

        def counting_read(path: str, **kwargs: Any) -> tuple[bytes, bool]:
            reads.append(path)
            return real_read(path, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(nodewalk, "read_file", counting_read)
            first = {e.pid: e.cgroup for e in proc.walk(cgroups=True).entries}
            assert ids[0] in (first[300] or "")
            reads.clear()
            again = {e.pid: e.cgroup for e in proc.walk(cgroups=True).entries}
            assert again[300] == first[300]
            assert not [r for r in reads if r.endswith("/300/cgroup")]  # kept, not re-read

            assert say("kill 300") == "killed"
            assert say(f"spawn 300 {procs[1]}") == "300"  # the same pid, another container
            reused = {e.pid: e.cgroup for e in proc.walk(cgroups=True).entries}
            assert ids[1] in (reused[300] or "") and ids[0] not in (reused[300] or "")
    finally:
        # Its init reaps every process of the namespace before it exits (zap_pid_ns_processes),
        # so the cgroups are empty once this returns.
        stage.kill(stage.processes.pop())


def test_a_recorded_tree_is_read_anew_every_pass(tmp_path: Path) -> None:
    """Files of a recorded tree can change under the same inode: nothing is kept."""
    (tmp_path / "42").mkdir()
    scope = "kubepods.slice/kubepods-pod1.slice/cri-containerd-{}.scope"
    cgroup = tmp_path / "42" / "cgroup"
    cgroup.write_text(f"0::/{scope.format('a' * 64)}\n")
    proc = ProcFS(str(tmp_path))
    assert "a" * 64 in (proc.walk(cgroups=True).entries[0].cgroup or "")
    cgroup.write_text(f"0::/{scope.format('b' * 64)}\n")
    assert "b" * 64 in (proc.walk(cgroups=True).entries[0].cgroup or "")


def test_netns_inode_agrees_with_stat(stage: Stage, tmp_path: Path) -> None:
    netns = stage.netns()
    inside = stage.spawn([], netns=netns)
    for pid in (os.getpid(), inside.pid):
        link = f"/proc/{pid}/ns/net"
        assert nodewalk.netns_inode(link) == os.stat(link).st_ino
    assert nodewalk.netns_inode(f"/proc/{inside.pid}/ns/net") != nodewalk.netns_inode(
        f"/proc/{os.getpid()}/ns/net")
    recorded = tmp_path / "net"
    recorded.write_text("")  # a recorded tree: a plain file where the link was
    assert nodewalk.netns_inode(str(recorded)) == recorded.stat().st_ino
    (tmp_path / "dangling").symlink_to("net:[12]")  # a recorded link keeps the kernel's text
    assert nodewalk.netns_inode(str(tmp_path / "dangling")) == 12
