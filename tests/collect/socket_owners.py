"""Socket owners for tests/collect: the oracle, `ss -tulnpH` parsed (`ss_sockets`), and the
staging, a listener held at a far fd by a process and its forked child next to another
process's sockets (`stage_owners`), whose owners /proc and the BPF iterator must agree on."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass

import pytest
from staging import STAGE_PYTHON, Sock, Stage, Staged, run

from agent.collect import btf
from agent.collect.sockets import OwnerScan

needs_btf = pytest.mark.skipif(not os.path.exists(btf.VMLINUX_BTF),
                               reason="kernel without CONFIG_DEBUG_INFO_BTF")


# --- the oracle: ss ------------------------------------------------------------------------


@dataclass(frozen=True)
class SsSocket:
    protocol: str
    address: str
    port: int
    interface: str | None
    v6only: bool | None  # what ss's `*` (v6only off) vs `[::]` (on) tells for the wildcard
    users: frozenset[tuple[int, int]]  # (pid, fd)


_USER = re.compile(r'\("(?:[^"\\]|\\.)*",pid=(\d+),fd=(\d+)\)')


def parse_ss_line(line: str) -> SsSocket:
    """One `ss -tulnpH` line: netid state recv-q send-q local peer [users:(...)]."""
    fields = line.split()
    netid, local = fields[0], fields[4]
    host, _, port = local.rpartition(":")
    host, _, interface = host.partition("%")
    v6only: bool | None = None
    if host == "*":  # ss prints `*` for `::` with v6only off (inet_addr_print)
        address, v6only = "::", False
    elif host.startswith("["):
        address = host[1:-1]
        v6only = True if address == "::" else None
    else:
        address = host
    users = frozenset((int(p), int(f)) for p, f in _USER.findall(" ".join(fields[6:])))
    return SsSocket(netid, address, int(port), interface or None, v6only, users)


def ss_sockets(netns: str) -> list[SsSocket]:
    out = run(["ip", "netns", "exec", netns, "ss", "-tulnpH"]).stdout
    return [parse_ss_line(line) for line in out.splitlines() if line.strip()]


# --- staged owners -----------------------------------------------------------------------

# A listener dup'ed to a far fd, inherited by a forked child, plus `filler` fds of /dev/null.
HOLDER = r"""
import json, os, signal, socket, sys
filler = int(sys.argv[1])
s = socket.socket(socket.AF_INET6); s.bind(("::", 7301)); s.listen()
os.dup2(s.fileno(), 4000)
null = [os.open("/dev/null", os.O_RDONLY) for _ in range(filler)]
child = os.fork()
if child == 0:
    signal.pause(); os._exit(0)
print(json.dumps({"child": child}), flush=True)
signal.pause()
"""


def spawn_holder(stage: Stage, netns: str, filler: int = 0) -> tuple[Staged, int]:
    popen = subprocess.Popen(["ip", "netns", "exec", netns, STAGE_PYTHON, "-c", HOLDER,
                              str(filler)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)  # killpg reaches the child too
    staged = Staged(pid=popen.pid, popen=popen, netns=netns)
    stage.processes.append(staged)
    assert popen.stdout is not None
    line = popen.stdout.readline()
    assert line, popen.stderr.read() if popen.stderr else "holder did not start"
    return staged, int(json.loads(line)["child"])


def stage_owners(stage: Stage, filler: int = 0) -> tuple[str, list[int], int, list[int]]:
    netns = stage.netns()
    holder, child = spawn_holder(stage, netns, filler)
    other = stage.spawn([Sock("tcp", 4, "0.0.0.0", 7302), Sock("udp", 6, "::", 7303)],
                        netns=netns, uid=1000, bounding=[])
    ns_ino = os.stat(f"/proc/{holder.pid}/ns/net").st_ino
    inodes = sorted({int(m) for pid in (holder.pid, other.pid) for fd in os.listdir(
        f"/proc/{pid}/fd") if (m := socket_inode(f"/proc/{pid}/fd/{fd}"))})
    return netns, inodes, ns_ino, [holder.pid, child, other.pid]


def socket_inode(link: str) -> str | None:
    try:
        found = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(link))
    except OSError:
        return None
    return found.group(1) if found else None


def owner_pairs(scan: OwnerScan) -> set[tuple[int, int, int]]:
    return {(inode, o.pid, o.fd) for inode, held in scan.owners.items() for o in held}
