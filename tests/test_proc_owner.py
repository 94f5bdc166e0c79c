"""One owner for /proc: each target's files are read once per cycle, /proc is walked once
per cycle, and HOST_PROC chooses the /proc tree for every command that reads it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_run import OPAUDIT
from cgroup_staging import KubepodsCgroups, systemd_scope
from kube.apiserver import ApiServer
from sinks import RecordingSink
from staging import Sock, Stage

from agent.audit import AuditRequest, audit
from agent.collect.procfs import ProcessHandle, ProcFS
from agent.daemon import NodeAgent, RunOptions
from agent.kube.client import load_api
from agent.output.metrics import AgentMetrics

NODE = "worker-1"
NAMESPACE = "opaudit-hostproc"
LABELS = {"app.kubernetes.io/name": "opaudit-hostproc"}
SELECTOR = "app.kubernetes.io/name=opaudit-hostproc"
COMM = "opa-hostproc"


class RecordingProcFS(ProcFS):
    """The real /proc, keeping every handle it gave out, to count what each one read."""

    def __init__(self, root: str | None = None) -> None:
        super().__init__(root)
        self.opened: list[ProcessHandle] = []

    def process(self, pid: int) -> ProcessHandle:
        handle = super().process(pid)
        if all(h is not handle for h in self.opened):
            self.opened.append(handle)
        return handle

    def handles_of(self, pid: int) -> list[ProcessHandle]:
        return [h for h in self.opened if h.pid == pid]


def assert_read_once(proc: RecordingProcFS, pid: int) -> None:
    (handle,) = proc.handles_of(pid)  # one handle per target per cycle
    assert handle.reads["status"] == 1, handle.reads
    assert handle.reads["stat"] == 1, handle.reads
    assert handle.reads["root"] == 1, handle.reads  # passwd and the path probes share it


def test_an_audit_reads_each_targets_status_stat_and_root_once_in_one_pass(
    stage: Stage,
) -> None:
    # Read-only roots: the audit probes /tmp (a second pass over the same process).
    staged = [stage.spawn([Sock("tcp", 4, "0.0.0.0", 7401 + i)], netns=stage.netns(),
                          uid=185, readonly_root=True) for i in range(2)]
    proc = RecordingProcFS()
    report = audit([AuditRequest(s.pid) for s in staged], proc=proc)
    assert proc.walks == 1  # the owner scan's pass over /proc
    for target, process in zip(report.targets, staged, strict=True):
        assert target.observed.incomplete == ()
        assert "/tmp" in [p.path for p in target.observed.paths]
        network = target.observed.network
        assert network is not None
        assert [o.pid for s in network.listeners for o in s.owners] == [process.pid]
        assert_read_once(proc, process.pid)


def pod_manifest(name: str, uid: str, container_id: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid, "labels": LABELS},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "example/app:1"}]},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "app", "ready": True, "restartCount": 0, "image": "example/app:1",
            "imageID": "", "containerID": f"containerd://{container_id}",
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]},
    }


def add_pod(server: ApiServer, cgroups: KubepodsCgroups, host_pid: int, name: str) -> str:
    uid, container_id = str(uuid.uuid4()), os.urandom(32).hex()
    cgroups.place_v2(host_pid, systemd_scope(uid, container_id))
    server.add_pod(pod_manifest(name, uid, container_id))
    return uid


def test_a_run_cycle_walks_proc_once_for_the_cgroups_and_the_owners(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer
) -> None:
    staged = [stage.spawn([Sock("tcp", 4, "0.0.0.0", 7411 + i)], netns=stage.netns(),
                          uid=185, readonly_root=True) for i in range(2)]
    for i, process in enumerate(staged):
        add_pod(server, cgroups, process.pid, f"counted-{i}")
    options = RunOptions(node=NODE, selector=SELECTOR, interval=300)
    agent = NodeAgent(load_api(configuration=server.configuration()), NODE, options,
                      RecordingSink(), AgentMetrics(), threading.Event())
    agent.watcher.relist()
    for cycle in (1, 2):
        proc = agent.proc = RecordingProcFS()
        report = agent.cycle("interval")
        assert sorted(t.observed.pid for t in report.targets) == sorted(s.pid for s in staged)
        assert proc.walks == 1, f"cycle {cycle}"  # cgroup mapping and owner scan share it
        for process in staged:
            assert_read_once(proc, process.pid)


# --- HOST_PROC ----------------------------------------------------------------------------

LISTENER = f"""
import ctypes, socket, sys, time
ctypes.CDLL(None).prctl(15, b"{COMM}", 0, 0, 0)  # PR_SET_NAME
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(600)
"""


@dataclass
class PidNamespace:
    proc: Path  # that namespace's /proc, mounted here
    host_pid: int  # its pid 1 (our listener), as the node sees it
    port: int


@pytest.fixture
def pid_namespace(stage: Stage) -> Iterator[PidNamespace]:
    """A listener that is pid 1 of its own PID namespace, whose /proc is mounted in a
    directory of ours: under HOST_PROC=that directory, pid 1 is the listener."""
    proc = Path(tempfile.mkdtemp(prefix=f"opa{os.getpid()}x-hostproc-"))
    script = f'mount -t proc proc {proc} || exit 3\nexec {sys.executable} -c "$LISTENER"\n'
    popen = subprocess.Popen(
        ["unshare", "--pid", "--fork", "sh", "-c", script], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LISTENER": LISTENER},
    )
    try:
        assert popen.stdout is not None
        port = popen.stdout.readline().strip()
        assert port.isdigit(), popen.stderr.read() if popen.stderr else "no listener"
        children = Path(f"/proc/{popen.pid}/task/{popen.pid}/children").read_text().split()
        yield PidNamespace(proc, int(children[0]), int(port))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.communicate(timeout=10)
        subprocess.run(["umount", "-l", str(proc)], capture_output=True)
        os.rmdir(proc)


def opaudit(*args: str, host_proc: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HOST_PROC", "NODE_NAME")}
    if host_proc is not None:
        env["HOST_PROC"] = str(host_proc)
    return subprocess.run([str(OPAUDIT), *args], capture_output=True, text=True, timeout=120,
                          env=env)


def only_target(stdout: str) -> dict[str, Any]:
    (target,) = json.loads(stdout)["targets"]
    assert isinstance(target, dict)
    return target


def test_host_proc_chooses_the_process_of_diagnose_pid(pid_namespace: PidNamespace) -> None:
    inside = opaudit("diagnose", "--pid", "1", "-o", "json", host_proc=pid_namespace.proc)
    assert inside.returncode in (0, 1), inside.stderr
    target = only_target(inside.stdout)
    assert (target["pid"], target["comm"]) == (1, COMM)
    ports = [x["port"] for x in target["network"]["listeners"] if x["pids"] == [1]]
    assert ports == [pid_namespace.port]  # socket owners are pids of the same /proc
    node = opaudit("diagnose", "--pid", "1", "-o", "json", host_proc=None)
    assert only_target(node.stdout)["comm"] != COMM  # the node's own pid 1


def test_host_proc_chooses_the_process_of_sockets(pid_namespace: PidNamespace) -> None:
    result = opaudit("sockets", "--pid", "1", "-o", "json", host_proc=pid_namespace.proc)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    ours = [x for x in doc["listeners"] if x["port"] == pid_namespace.port]
    assert [x["pids"] for x in ours] == [[1]]  # pid 1 as that /proc names it
    assert doc["netns"] == os.stat(f"/proc/{pid_namespace.host_pid}/ns/net").st_ino


def test_host_proc_chooses_the_processes_of_diagnose_pod_and_run(
    pid_namespace: PidNamespace, cgroups: KubepodsCgroups, server: ApiServer, tmp_path: Path
) -> None:
    add_pod(server, cgroups, pid_namespace.host_pid, "in-pid-namespace")
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    pod = opaudit("diagnose", "--pod", f"{NAMESPACE}/in-pid-namespace", "--node", NODE,
                  "--kubeconfig", str(kubeconfig), "-o", "json", host_proc=pid_namespace.proc)
    assert pod.returncode in (0, 1), pod.stderr
    target = only_target(pod.stdout)  # found in that /proc's cgroups, audited there
    assert (target["pid"], target["comm"]) == (1, COMM)

    run = opaudit("run", "--once", "--node", NODE, "-l", SELECTOR, "--kubeconfig",
                  str(kubeconfig), "--sink", "stdout", host_proc=pid_namespace.proc)
    assert run.returncode == 0, run.stderr
    (line,) = [json.loads(x) for x in run.stdout.splitlines() if x.strip()]
    assert [(t["pid"], t["comm"]) for t in line["targets"]] == [(1, COMM)]
    without = opaudit("diagnose", "--pod", f"{NAMESPACE}/in-pid-namespace", "--node", NODE,
                      "--kubeconfig", str(kubeconfig), "-o", "json", host_proc=None)
    assert only_target(without.stdout)["pid"] == pid_namespace.host_pid
