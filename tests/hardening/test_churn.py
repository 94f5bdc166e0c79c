"""Process churn under the running node loop, with real pid reuse.

A pod's container (a kubepods cgroup and a netns) runs a supervisor that forks 1,000
short-lived children; half of them bind a listener on their own port, some close it
before exiting. The children live in a PID namespace whose pid_max is 400 (per-namespace
since Linux 6.14), so pids wrap every ~100 processes and are reused many times over.
opaudit's node loop audits that namespace's /proc (a ProcFS of that /proc) every 0.1 s.

Then, for every report the loop published:
- every audited process with a start time is the incarnation whose comm we set;
- every listener owner (pid, start time) is the incarnation that bound that port;
- a process that vanished mid-inspection is InspectionIncomplete, never half someone else;
and no exception escaped the loop, which stops cleanly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_run import loop_thread
from cgroup_staging import KubepodsCgroups, systemd_scope
from kube.apiserver import ApiServer
from sinks import RecordingSink
from staging import STAGE_PYTHON, Stage

from agent.collect.procfs import ProcFS
from agent.daemon import NodeAgent, RunOptions
from agent.kube.client import load_api
from agent.model import Outcome
from agent.output.metrics import AgentMetrics

CHILDREN = 1_000
PID_MAX = 400  # pids wrap to 300 (RESERVED_PIDS): ~100 pids cycle
BASE_PORT = 20_000
NODE = "churn-node"
SELECTOR = "app=churn"

# Forks CHILDREN children. Each names itself c<i>, binds port BASE+i when i is even, reports
# "<pid in the namespace> <start time> <port or 0> <comm>" on a pipe, and exits 0-30 ms
# later; every fourth closes its listener first. SIGCHLD ignored: reaped at once, so pids
# free up (and get reused) as fast as possible.
SUPERVISOR = r"""
import ctypes, os, random, signal, socket, sys, time
count, base = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(int(sys.argv[3]))
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
libc = ctypes.CDLL(None)
print(f"supervisor {os.getpid()}", flush=True)
for i in range(count):
    read_end, write_end = os.pipe()
    delay = rng.random() * 0.03
    if os.fork() == 0:
        os.close(read_end)
        comm = f"c{i}"
        libc.prctl(15, comm.encode(), 0, 0, 0)
        port = 0
        if i % 2 == 0:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", base + i))
            sock.listen(1)
            port = base + i
        with open("/proc/self/stat") as stat:
            start = stat.read().rsplit(")", 1)[1].split()[19]
        os.write(write_end, f"{os.getpid()} {start} {port} {comm}\n".encode())
        os.close(write_end)
        if i % 4 == 0:
            time.sleep(delay / 2)
            sock.close()
        time.sleep(delay)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as lines:
        sys.stdout.write("child " + lines.readline())
    sys.stdout.flush()
    time.sleep(rng.random() * 0.004)
print("done", flush=True)
"""


@dataclass(frozen=True)
class Incarnation:
    comm: str
    port: int  # 0: no listener


@dataclass
class PidNamespace:
    """A PID namespace with a small pid_max and its /proc mounted at `proc`."""

    popen: subprocess.Popen[str]
    proc: Path
    init_host_pid: int


def kernel_version() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


@pytest.fixture
def pid_namespace(stage: Stage) -> Iterator[PidNamespace]:
    # Before 6.14 kernel.pid_max is global: writing it in the namespace would set the node's.
    if kernel_version() < (6, 14):
        pytest.skip(f"kernel {os.uname().release}: pid_max is not per PID namespace before 6.14")
    host_pid_max = Path("/proc/sys/kernel/pid_max").read_text()
    proc = Path(tempfile.mkdtemp(prefix="opaudit-pidns-proc-"))
    netns = stage.netns()
    # pid 1 (this sh) stays in the node's netns; the supervisor runs in the pod's netns.
    script = (
        f"mount -t proc proc {proc} && echo {PID_MAX} > {proc}/sys/kernel/pid_max || exit 3\n"
        "echo mounted\n"
        "read go\n"
        f'ip netns exec {netns} {STAGE_PYTHON} -c "$SUPERVISOR" {CHILDREN} {BASE_PORT} 7\n'
        "echo finished\n"
        "read never\n"
    )
    popen = subprocess.Popen(
        ["unshare", "--pid", "--fork", "sh", "-c", script], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SUPERVISOR": SUPERVISOR},
    )
    try:
        assert popen.stdout is not None
        first = popen.stdout.readline().strip()
        if first != "mounted":
            popen.kill()
            pytest.skip(f"no PID namespace with its own pid_max here: {popen.stderr.read()!r}"
                        if popen.stderr else "no PID namespace")
        if Path("/proc/sys/kernel/pid_max").read_text() != host_pid_max:
            Path("/proc/sys/kernel/pid_max").write_text(host_pid_max)
            pytest.skip("this kernel's pid_max is global, not per PID namespace (restored)")
        children = Path(f"/proc/{popen.pid}/task/{popen.pid}/children").read_text().split()
        yield PidNamespace(popen, proc, int(children[0]))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)  # pid 1 of the namespace dies: all its tasks
        popen.wait(timeout=10)
        for stream in (popen.stdin, popen.stdout, popen.stderr):
            if stream is not None:
                stream.close()
        subprocess.run(["umount", "-l", str(proc)], capture_output=True)
        os.rmdir(proc)


def pod_manifest(uid: str, container_id: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "churn", "namespace": "default", "uid": uid,
                     "labels": {"app": "churn"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "churn", "image": "busybox"}]},
        "status": {"phase": "Running", "podIPs": [{"ip": "192.0.2.10"}],
                   "containerStatuses": [{
                       "name": "churn", "ready": True, "restartCount": 0, "image": "busybox",
                       "imageID": "", "containerID": f"containerd://{container_id}",
                       "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]},
    }


def read_supervisor(popen: subprocess.Popen[str]) -> tuple[dict[tuple[int, int], Incarnation],
                                                             list[str]]:
    """Children reported by the supervisor, keyed by (pid in the namespace, start time)."""
    assert popen.stdout is not None
    born: dict[tuple[int, int], Incarnation] = {}
    other: list[str] = []
    for line in popen.stdout:
        words = line.split()
        if words[:1] == ["child"]:
            pid, start, port, comm = int(words[1]), int(words[2]), int(words[3]), words[4]
            assert (pid, start) not in born, "(pid, start time) repeated: reuse in one tick"
            born[(pid, start)] = Incarnation(comm, port)
        else:
            other.append(line.strip())
        if line.strip() == "finished":
            break
    return born, other


def stat_start(proc: Path, pid: int) -> int:
    return int((proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19])


def test_churn_never_mixes_up_processes(
    stage: Stage, cgroups: KubepodsCgroups, pid_namespace: PidNamespace
) -> None:
    uid, container_id = str(uuid.uuid4()), os.urandom(32).hex()
    cgroups.place_v2(pid_namespace.init_host_pid, systemd_scope(uid, container_id))
    long_lived = {(1, stat_start(pid_namespace.proc, 1)): Incarnation("sh", 0)}

    with ApiServer() as server:
        server.add_pod(pod_manifest(uid, container_id))
        options = RunOptions(node=NODE, selector=SELECTOR, interval=0.1)
        sink = RecordingSink()
        agent = NodeAgent(load_api(configuration=server.configuration()), NODE, options, sink,
                          AgentMetrics(), threading.Event(), ProcFS(str(pid_namespace.proc)))
        with loop_thread(agent) as running:
            assert pid_namespace.popen.stdin is not None
            pid_namespace.popen.stdin.write("go\n")
            pid_namespace.popen.stdin.flush()
            started = time.monotonic()
            born, other = read_supervisor(pid_namespace.popen)
            churn_seconds = time.monotonic() - started
            cycles_during_churn = len(sink.reports)
    assert running.stopped_cleanly, running.failure
    assert len(born) == CHILDREN, other

    supervisor = [line for line in other if line.startswith("supervisor ")]
    assert supervisor
    pids = [pid for pid, _ in born]
    reused = len(pids) - len(set(pids))
    assert reused >= CHILDREN // 2, f"pids were reused only {reused} times"
    assert cycles_during_churn >= 5, f"{cycles_during_churn} cycles in {churn_seconds:.1f} s"

    audited = with_listener = vanished = 0
    for report in sink.reports:
        for target in report.targets:
            observed = target.observed
            audited += 1
            if observed.start_time is None:
                vanished += 1
                assert any(g.fact == "process" for g in observed.incomplete), observed
                # Its verdict: the finding itself is its container's, on the first target.
                fired = {v.rule for v in target.verdicts if v.outcome is Outcome.FIRED}
                assert "InspectionIncomplete" in fired
                continue
            key = (observed.pid, observed.start_time)
            if key in long_lived or observed.comm in ("python3", "ip"):
                continue  # pid 1; the supervisor (`ip` until it execs python)
            assert key in born, f"audited {key} {observed.comm!r}: not a process we started"
            assert observed.comm == born[key].comm, (key, observed.comm)
            for listener in observed.network.listeners if observed.network else ():
                for owner in listener.owners:
                    assert owner.start_time is not None, listener
                    holder = born.get((owner.pid, owner.start_time))
                    assert holder is not None, f"owner {owner} is not a process we started"
                    assert holder.port == listener.port, (
                        f"port {listener.port} attributed to {owner}, which bound "
                        f"{holder.port}")
                    with_listener += 1
    print(f"\nchurn: {CHILDREN} children in {churn_seconds:.1f} s, {reused} pid reuses, "
          f"{len(sink.reports)} cycles, {audited} targets audited, {vanished} vanished "
          f"mid-inspection, {with_listener} listener owners checked")
    assert with_listener > 0, "no listener was ever seen: the test checked nothing"
