"""Faults injected into a running `opaudit run`, for tests/test_loop_faults.py only.

Python imports `sitecustomize` at start-up from the PYTHONPATH the test gives the agent
(this directory); production code has no hook. OPAUDIT_TEST_FAULTS (JSON) names the pids
to fault, each at the place where such a fault really arises:

- `fd_reader`: the BPF fd reader raises an OSError (EAGAIN) it did not wrap, whenever
  its scan includes that pid (run the agent with OPAUDIT_FD_READER=bpf);
- `mountinfo`: /proc/PID/mountinfo reads as a malformed line (the real parser then
  refuses it);
- `parser_bug`: /proc/PID/status has a malformed Uid line, and the status parser fails
  on it with an IndexError, as a parser bug would;
- `vanish`: the process is killed while it is being audited (after its stat was read):
  the agent, which holds no CAP_KILL, asks the test to by writing `vanish_request`, and
  waits until the test has killed and reaped it, so every later read finds it gone;
- `sink`: the policy-report sink's publish raises, every cycle;
- `cycle`: the first `cycle` audits of the loop raise from outside any target (the pod
  sandbox lookup), ending that cycle.
"""

from __future__ import annotations

import errno
import json
import os
import time
from typing import Any

FAULTS = json.loads(os.environ.get("OPAUDIT_TEST_FAULTS") or "{}")
MALFORMED_STATUS = b"Name:\tspark-operator\nUid:\t1000\n"


def _install() -> None:
    from agent.collect import fditer, procfs

    original_socket_fds = fditer.socket_fds
    original_read = procfs.ProcessHandle.read
    original_exe = procfs.ProcessHandle.exe
    original_parse_status = procfs.parse_status
    killed: set[int] = set()

    def socket_fds(tgids: Any, inodes: Any) -> Any:
        tgids = list(tgids)
        if FAULTS.get("fd_reader") in tgids:
            raise OSError(errno.EAGAIN, "injected: read of the BPF iterator failed")
        return original_socket_fds(tgids, inodes)

    def read(self: Any, name: str, **kwargs: Any) -> Any:
        if self.pid == FAULTS.get("mountinfo") and name == "mountinfo":
            self.reads[name] = self.reads.get(name, 0) + 1
            return b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 -\n", False
        if self.pid == FAULTS.get("parser_bug") and name == "status":
            return MALFORMED_STATUS, False
        return original_read(self, name, **kwargs)

    def parse_status(text: str, last_cap: int) -> Any:
        if text == MALFORMED_STATUS.decode():
            fields = text.split("\n")[1].split()
            return fields[4]  # IndexError: the bug
        return original_parse_status(text, last_cap)

    def exe(self: Any) -> Any:
        if self.pid == FAULTS.get("vanish") and self.pid not in killed:
            # The agent holds no CAP_KILL: the test kills and reaps the process when asked.
            killed.add(self.pid)
            with open(FAULTS["vanish_request"], "w") as request:
                request.write(str(self.pid))
            deadline = time.monotonic() + 10
            while os.path.exists(f"/proc/{self.pid}") and time.monotonic() < deadline:
                time.sleep(0.01)
        return original_exe(self)

    fditer.socket_fds = socket_fds
    procfs.ProcessHandle.read = read
    procfs.ProcessHandle.exe = exe
    procfs.parse_status = parse_status

    if FAULTS.get("sink"):
        from agent.output.policyreports import sink as reporting

        def publish(self: Any, report: Any) -> None:
            raise RuntimeError("injected: the report sink failed")

        reporting.ReportsSink.publish = publish

    if FAULTS.get("cycle"):
        from agent.targets import requests

        original_sandboxes = requests.sandbox_requests
        calls = [0]

        def sandbox_requests(pods: Any, proc: Any) -> Any:
            calls[0] += 1
            if calls[0] <= FAULTS["cycle"]:
                raise RuntimeError("injected: a fault outside any target")
            return original_sandboxes(pods, proc)

        requests.sandbox_requests = sandbox_requests


if FAULTS:
    _install()
