"""The oracle: each fact opaudit reports, found again without opaudit.

- a path is writable when a real create succeeds as the process's uid, gid and groups, with
  no capabilities, inside the process's mount namespace (setns, then setgroups/setgid/setuid);
- listeners are what `nsenter -t PID -n ss -tulnpH` prints (ss shows a v6only=0 `[::]`
  socket as `*` and a v6only one as `[::]`); a pid ss names that is not the target's shows
  as its negated in-namespace pid, so it can never match opaudit's;
- capability sets are /proc/PID/status masks decoded by `capsh --decode`.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass

HOST_PYTHON = "/usr/bin/python3"
CAP_FIELDS = {"effective": "CapEff", "permitted": "CapPrm", "inheritable": "CapInh",
              "bounding": "CapBnd", "ambient": "CapAmb"}

# Runs as root on the host, single-threaded (setns(CLONE_NEWNS) requires it). Everything is
# imported before entering the container: its root has no Python.
WRITE_AS_PROCESS = r"""
import ctypes, json, os, sys
pid, path, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(f"/proc/{pid}/status") as f:
    status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
uid, gid = int(status["Uid"].split()[1]), int(status["Gid"].split()[1])
groups = [int(g) for g in status["Groups"].split()]
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
if libc.setns(fd, 0x00020000) != 0:  # CLONE_NEWNS; root and cwd become the namespace's root
    sys.exit("setns: " + os.strerror(ctypes.get_errno()))
os.setgroups(groups); os.setgid(gid); os.setuid(uid)  # non-root: every capability is gone
made = []
try:
    missing = []
    parent = path
    while not os.path.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for d in reversed(missing):
        os.mkdir(d); made.append(d)
    probe = os.path.join(path, name)
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    made.append(probe)
    print(json.dumps({"writable": True}))
except OSError as exc:
    print(json.dumps({"writable": False, "error": exc.strerror}))
finally:
    for p in reversed(made):
        (os.rmdir if os.path.isdir(p) else os.unlink)(p)
"""


def can_write(pid: int, path: str) -> bool:
    result = subprocess.run([HOST_PYTHON, "-c", WRITE_AS_PROCESS, str(pid), path,
                             f".opaudit-oracle-{pid}"],
                            capture_output=True, text=True, timeout=30, check=True)
    return bool(json.loads(result.stdout)["writable"])


def capsh_names(mask_hex: str) -> list[str]:
    """`capsh --decode=HEX` -> sorted securityContext names (NET_BIND_SERVICE)."""
    out = subprocess.run(["capsh", f"--decode={mask_hex}"], capture_output=True, text=True,
                         timeout=10, check=True).stdout.strip()
    _, _, names = out.partition("=")
    return sorted(n.removeprefix("cap_").upper() for n in names.split(",") if n)


def capability_sets(pid: int) -> dict[str, list[str]]:
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    return {key: capsh_names(status[field]) for key, field in CAP_FIELDS.items()}


@dataclass(frozen=True, order=True)
class SsListener:
    protocol: str
    address: str
    port: int
    v6only: bool | None
    pids: tuple[int, ...]


LOCAL = re.compile(r"^(?P<addr>\*|\[[^\]]*\]|[0-9.]+)(?:%\S+)?:(?P<port>\d+)$")


def ns_pid(pid: int) -> int:
    """The pid as the process's own pid namespace numbers it (the last NSpid field)."""
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("NSpid:")).split()[-1])


def ss_listeners(pid: int) -> list[SsListener]:
    """`nsenter -t PID -n ss -tulnpH`, run in the container's pid namespace with its own /proc:
    `ss -p` reads every process's fds, and on a busy node the host's /proc takes seconds.
    ss then names owners by their pids in that namespace; the target's is mapped back."""
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "-p", "--", "unshare", "--mount",
                          "--mount-proc", "ss", "-tulnpH"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    host_pid = {ns_pid(pid): pid}
    found = []
    for line in out.splitlines():
        fields = line.split()
        if fields[0] == "udp" and fields[1] != "UNCONN":
            continue
        match = LOCAL.match(fields[4])
        if match is None:
            raise AssertionError(f"ss printed a local address the oracle cannot read: {line}")
        addr = match["addr"]
        if addr == "*":  # an AF_INET6 wildcard with IPV6_V6ONLY=0 (ss prints [::] when 1)
            address, v6only = "::", False
        elif addr.startswith("["):
            address, v6only = addr[1:-1], True if addr == "[::]" else None
        else:
            address, v6only = addr, None
        pids = tuple(sorted({host_pid.get(int(p), -int(p))
                             for p in re.findall(r"pid=(\d+)", line)}))
        found.append(SsListener(fields[0], address, int(match["port"]), v6only, pids))
    return sorted(found)
