"""NetBindServiceUnneeded names only ports the target holds.

A `sleep` that holds NET_BIND_SERVICE shares its netns with another process's listener on
2024. The oracle is the kernel's own socket table as `ss -tlnp` shows it: the port's owner
is the other process, or nobody at all for a socket that sits in flight in an SCM_RIGHTS
message (no fd table holds it, so no owner can be found).
"""

from __future__ import annotations

import subprocess

from staging import STAGE_PYTHON, Sock, Stage

from agent.audit import AuditRequest, audit
from agent.model import Finding

# Bind 2024, pass the listener through a socketpair and close every fd of it: the socket
# lives on only inside the queued SCM_RIGHTS message, held by the kernel, owned by no fd.
IN_FLIGHT_LISTENER = r"""
import array, signal, socket, sys
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 2024)); listener.listen(8)
left, right = socket.socketpair()
rights = array.array("i", [listener.fileno()])
left.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
listener.close(); left.close()
print("ready", flush=True)
signal.pause()
"""


def net_bind_finding(pid: int) -> Finding:
    [target] = audit([AuditRequest(pid)]).targets
    [finding] = [f for f in target.findings if f.rule == "NetBindServiceUnneeded"]
    return finding


def ss_owner_of_2024(netns: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Htlnp", "sport = :2024"],
                         capture_output=True, text=True, check=True).stdout
    assert ":2024" in out, out
    return out


def test_a_process_with_no_socket_listens_on_no_port(stage: Stage) -> None:
    netns = stage.netns()
    other = stage.spawn([Sock("tcp", 4, "0.0.0.0", 2024)], netns=netns, comm="other")
    sleeper = stage.spawn(netns=netns, bounding=["NET_BIND_SERVICE"], argv=["sleep", "600"])
    assert f"pid={other.pid}," in ss_owner_of_2024(netns)

    message = net_bind_finding(sleeper.pid).message
    assert "it listens on no port (" in message
    assert "2024" not in message


def test_a_port_of_unknown_owner_is_not_called_the_targets(stage: Stage) -> None:
    netns = stage.netns()
    holder = stage.spawn(netns=netns, argv=[STAGE_PYTHON, "-c", IN_FLIGHT_LISTENER])
    assert holder.popen.stdout is not None and holder.popen.stdout.readline() == b"ready\n"
    sleeper = stage.spawn(netns=netns, bounding=["NET_BIND_SERVICE"], argv=["sleep", "600"])
    assert "users:" not in ss_owner_of_2024(netns)  # ss finds no owner either

    message = net_bind_finding(sleeper.pid).message
    assert "every port it listens on" not in message
    assert "it listens on no port of its own" in message
    assert "whose owner could not be read (2024)" in message
