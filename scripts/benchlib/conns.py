"""Stage one netns holding many established TCP connections and 50 listeners.

RLIMIT_NOFILE is 20,000 on the bench machine and cannot be raised, and each loopback
connection costs its holder two fds (client + accepted side), so the connections are spread
over several holder processes inside the netns, each below the limit.
"""

from __future__ import annotations

import json
import math
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from staging import STAGE_PYTHON, Sock, Stage, Staged, StageError, run

LISTENERS = 50
FDS_PER_HOLDER = 19_000  # under RLIMIT_NOFILE 20,000 with room for the interpreter's own
PAIRS_PER_HOLDER = FDS_PER_HOLDER // 2
BATCH = 1000  # connects per accept round; below the listen backlog, so no SYN is dropped

# Runs inside the netns: connect N loopback clients to its own listener in batches, accept
# them, close the listener (accepted sockets survive it), report, then wait to be killed.
HOLDER_CODE = r"""
import json, signal, socket, sys
spec = json.loads(sys.argv[1])
pairs, batch = spec["pairs"], spec["batch"]
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(batch * 2)
address = listener.getsockname()
held = []
made = 0
while made < pairs:
    step = min(batch, pairs - made)
    for _ in range(step):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.connect(address)
        held.append(client.detach())
    for _ in range(step):
        accepted, _ = listener.accept()
        held.append(accepted.detach())
    made += step
listener.close()
print(json.dumps({"pairs": made}), flush=True)
while True:
    signal.pause()
"""


@dataclass(frozen=True)
class ConnStage:
    netns: str
    target: Staged  # holds the 50 listeners: the pid `opaudit sockets --pid` is given
    holders: tuple[Staged, ...]
    connections: int
    established_sockets: int  # both ends of every connection
    tcp_inuse: int  # /proc/net/sockstat "TCP: inuse" inside the netns


def listener_sockets(count: int = LISTENERS) -> list[Sock]:
    """`count` TCP listeners over IPv4/IPv6 wildcard and the veth's documentation addresses."""
    addresses = ((4, "0.0.0.0", None), (6, "::", 0), (4, "192.0.2.10", None),
                 (6, "::", 1), (6, "2001:db8::10", 1))
    socks = []
    for i in range(count):
        family, addr, v6only = addresses[i % len(addresses)]
        socks.append(Sock("tcp", family, addr, 20_000 + i, v6only))
    return socks


def stage_connections(stage: Stage, connections: int,
                      log: Callable[[str], None] | None = print) -> ConnStage:
    """A netns with `connections` established loopback connections and 50 listeners."""
    ns = stage.netns()
    # Room for 100k+ connects; connect() reuses an ephemeral port towards another destination.
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
         "net.ipv4.ip_local_port_range=1024 65000"])
    target = stage.spawn(listener_sockets(), netns=ns, comm="bench-target")
    started = time.monotonic()
    holders = hold_connections(stage, ns, connections)
    if log is not None:
        log(f"bench: {connections} connections over {len(holders)} holders in "
            f"{time.monotonic() - started:.1f}s")
    inuse = tcp_inuse(ns)
    return ConnStage(ns, target, holders, connections, 2 * connections, inuse)


def hold_connections(stage: Stage, ns: str, connections: int) -> tuple[Staged, ...]:
    """`connections` established loopback connections in `ns`, spread over holders."""
    holder_count = max(1, math.ceil(connections / PAIRS_PER_HOLDER))
    shares = [connections // holder_count + (1 if i < connections % holder_count else 0)
              for i in range(holder_count)]
    holders = tuple(spawn_holder(stage, ns, pairs) for pairs in shares if pairs)
    for holder, pairs in zip(holders, shares, strict=False):
        await_holder(stage, holder, pairs, timeout=120 + pairs / 500)
    return holders


def spawn_holder(stage: Stage, ns: str, pairs: int) -> Staged:
    spec = json.dumps({"pairs": pairs, "batch": BATCH})
    popen = subprocess.Popen(
        ["ip", "netns", "exec", ns, STAGE_PYTHON, "-c", HOLDER_CODE, spec],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    holder = Staged(pid=popen.pid, popen=popen, netns=ns)
    stage.processes.append(holder)  # Stage.close() kills it whatever happens
    return holder


def await_holder(stage: Stage, holder: Staged, pairs: int, timeout: float) -> None:
    assert holder.popen.stdout is not None
    ready, _, _ = select.select([holder.popen.stdout], [], [], timeout)
    line = holder.popen.stdout.readline().decode() if ready else ""
    if not line.startswith("{") or json.loads(line)["pairs"] != pairs:
        stage.kill(holder)
        raise StageError(f"holder {holder.pid} did not connect {pairs} pairs: "
                         f"{line.strip()} {holder.stderr_text}".strip())


def tcp_inuse(ns: str) -> int:
    """TCP sockets in use in `ns` (sockstat is per network namespace)."""
    text = run(["ip", "netns", "exec", ns, "cat", "/proc/net/sockstat"]).stdout
    for line in text.splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("inuse") + 1])
    raise StageError("no TCP line in /proc/net/sockstat")


def check_sockets_output(staged: ConnStage, opaudit: str, psutil_python: str) -> None:
    """The figures only count if each command sees what was staged: all 50 listeners,
    each with the target among its owners."""
    pid = staged.target.pid
    out = subprocess.run([opaudit, "sockets", "--pid", str(pid), "-o", "json"],
                         capture_output=True, text=True, check=True).stdout
    listeners = json.loads(out)["listeners"]
    tcp = [x for x in listeners if x["protocol"] == "tcp"]
    if len(tcp) != LISTENERS or any(pid not in x["pids"] for x in tcp):
        raise SystemExit(f"bench: opaudit sockets saw {len(tcp)} tcp listeners "
                         f"(want {LISTENERS}, each owned by {pid}): {out[:400]}")
    ss_lines = subprocess.run(["nsenter", "-t", str(pid), "-n", "ss", "-Htlnp"],
                              capture_output=True, text=True, check=True).stdout.splitlines()
    owned = [ln for ln in ss_lines if f"pid={pid}," in ln]
    if len(owned) != LISTENERS:
        raise SystemExit(f"bench: ss -tlnp shows {len(owned)} listeners of {pid}")
    code = ("import psutil; print(sum(1 for c in psutil.net_connections('tcp') "
            f"if c.status == 'LISTEN' and c.pid == {pid}))")
    seen = subprocess.run(["nsenter", "-t", str(pid), "-n", psutil_python, "-c", code],
                          capture_output=True, text=True, check=True).stdout.strip()
    if seen != str(LISTENERS):
        raise SystemExit(f"bench: psutil.net_connections shows {seen} listeners of {pid}")
    if staged.tcp_inuse < staged.established_sockets:
        raise SystemExit(f"bench: only {staged.tcp_inuse} TCP sockets in use in the netns")
