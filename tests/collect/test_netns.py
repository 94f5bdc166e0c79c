"""Entering network namespaces on the real kernel: sysctls, addresses, errors, and our own netns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest
from proc_reads import netns_inode_of
from staging import Sock, Stage, run

from agent.collect import sockdiag
from agent.collect.errors import ParseError, ProcessGone
from agent.collect.netlink import NetlinkMessage
from agent.collect.netns import read_many_netns, read_netns_facts
from agent.collect.procfs import ProcFS
from agent.model import Listener, NetnsFacts, Sysctls

REPO = Path(__file__).resolve().parents[2]
SYSCTL_KEYS = ("net.ipv6.bindv6only", "net.ipv6.conf.all.disable_ipv6",
               "net.ipv4.ip_unprivileged_port_start")


def _sysctls_by_ss(netns: str | None) -> Sysctls:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    values = [int(run([*prefix, "sysctl", "-n", key]).stdout) for key in SYSCTL_KEYS]
    return Sysctls(*values)


def _own_netns() -> tuple[str, str]:
    return os.readlink("/proc/self/ns/net"), os.readlink("/proc/thread-self/ns/net")


def test_sysctls_of_two_netns_in_one_call(stage: Stage) -> None:
    strict = stage.netns(sysctls={"net.ipv6.bindv6only": 1,
                                  "net.ipv4.ip_unprivileged_port_start": 0})
    no_v6 = stage.netns(sysctls={"net.ipv6.conf.all.disable_ipv6": 1,
                                 "net.ipv4.ip_unprivileged_port_start": 1024})
    a = stage.spawn([], netns=strict)
    b = stage.spawn([], netns=no_v6)
    own_before, own_sysctls = _own_netns(), _sysctls_by_ss(None)
    results = read_many_netns([a.pid, b.pid])
    facts_a, facts_b = results[a.pid], results[b.pid]
    assert isinstance(facts_a, NetnsFacts) and isinstance(facts_b, NetnsFacts)
    assert facts_a.sysctls == Sysctls(1, 0, 0) == _sysctls_by_ss(strict)
    assert facts_b.sysctls == Sysctls(0, 1, 1024) == _sysctls_by_ss(no_v6)
    assert facts_a.inode != facts_b.inode
    assert (_own_netns(), _sysctls_by_ss(None)) == (own_before, own_sysctls)
    own = read_netns_facts(os.getpid(), owners=False)
    assert own.sysctls == own_sysctls


def test_ipv6_disabled_wildcard_still_binds_and_is_reported(stage: Stage) -> None:
    netns = stage.netns(sysctls={"net.ipv6.conf.all.disable_ipv6": 1})
    staged = stage.spawn([Sock("tcp", 6, "::", 8443, v6only=0)], netns=netns)
    facts = read_netns_facts(staged.pid)
    assert facts.sysctls.disable_ipv6 == 1
    [listener] = facts.listeners
    assert (listener.family, listener.address, listener.port, listener.v6only) == (
        6, "::", 8443, False)
    assert [o.pid for o in listener.owners] == [staged.pid]
    assert not [a for a in facts.addresses if a.family == 6 and a.scope == "global"]


def test_addresses_match_ip_addr(stage: Stage) -> None:
    netns = stage.netns(v4=("192.0.2.10/24", "192.0.2.11/32"), v6=("2001:db8::10/64",))
    staged = stage.spawn([], netns=netns)
    facts = read_netns_facts(staged.pid)
    shown = json.loads(run(["ip", "-n", netns, "-j", "addr", "show"]).stdout)
    expected = {(link["ifname"], 4 if a["family"] == "inet" else 6, a["local"], a["prefixlen"],
                 a["scope"]) for link in shown for a in link["addr_info"]}
    ours = {(a.interface, a.family, a.address, a.prefixlen, a.scope) for a in facts.addresses}
    assert ours == expected
    assert {("veth0", 4, "192.0.2.10", 24, "global"), ("veth0", 6, "2001:db8::10", 64, "global"),
            ("lo", 4, "127.0.0.1", 8, "host"), ("lo", 6, "::1", 128, "host")} <= ours


def test_many_netns_groups_pids_and_maps_owners_per_netns(stage: Stage) -> None:
    one, two = stage.netns(), stage.netns()
    a1 = stage.spawn([Sock("tcp", 4, "0.0.0.0", 7001)], netns=one)
    a2 = stage.spawn([Sock("udp", 6, "::", 7002)], netns=one)
    b = stage.spawn([Sock("tcp", 4, "0.0.0.0", 7001)], netns=two)
    results = read_many_netns([a1.pid, a2.pid, b.pid, a1.pid], workers=2)
    assert results[a1.pid] is results[a2.pid]
    facts_one, facts_two = results[a1.pid], results[b.pid]
    assert isinstance(facts_one, NetnsFacts) and isinstance(facts_two, NetnsFacts)
    assert {(s.port, s.pids) for s in facts_one.listeners} == {
        (7001, (a1.pid,)), (7002, (a2.pid,))}
    assert {(s.port, s.pids) for s in facts_two.listeners} == {(7001, (b.pid,))}


def test_vanished_pid_is_process_gone(stage: Stage) -> None:
    staged = stage.spawn([])
    pid = staged.pid
    stage.kill(staged)
    with pytest.raises(ProcessGone):
        ProcFS().process(pid).netns_inode()
    with pytest.raises(ProcessGone):
        read_netns_facts(pid)
    assert isinstance(read_many_netns([pid])[pid], ProcessGone)


def test_own_netns_and_threads_never_change(stage: Stage) -> None:
    netns = stage.netns()
    staged = stage.spawn([Sock("tcp", 4, "0.0.0.0", 7003)], netns=netns)
    before, threads = _own_netns(), threading.active_count()
    for _ in range(3):
        assert read_netns_facts(staged.pid).inode == netns_inode_of(staged.pid)
        assert _own_netns() == before
    assert threading.active_count() == threads
    assert read_netns_facts(staged.pid).inode != os.stat("/proc/self/ns/net").st_ino


def test_host_network_compares_with_pid_1(stage: Stage, tmp_path: Path) -> None:
    netns = stage.netns()
    pod = stage.spawn([], netns=netns)
    # A proc root where "pid 1" is this test process: its netns plays the host's.
    for name, target in (("1", f"/proc/{os.getpid()}"), (str(os.getpid()), f"/proc/{os.getpid()}"),
                         (str(pod.pid), f"/proc/{pod.pid}"), ("sys", "/proc/sys")):
        (tmp_path / name).symlink_to(target)
    assert read_netns_facts(os.getpid(), ProcFS(str(tmp_path))).host_network is True
    assert read_netns_facts(pod.pid, ProcFS(str(tmp_path))).host_network is False


def _read_without(cap: str, pid: int) -> dict[str, str]:
    code = (
        "import json, sys\n"
        "from agent.collect.netns import read_netns_facts\n"
        "try:\n"
        f"    read_netns_facts({pid})\n"
        "    print(json.dumps({'error': None}))\n"
        "except Exception as e:\n"
        "    print(json.dumps({'error': type(e).__name__, 'missing': getattr(e, 'missing', None),"
        " 'text': str(e)}))\n"
    )
    argv = ["setpriv", f"--bounding-set=-{cap}", f"--inh-caps=-{cap}", "--",
            sys.executable, "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO)
    assert done.returncode == 0 and not done.stderr, done.stderr  # never a traceback
    result: dict[str, str] = json.loads(done.stdout)
    return result


def test_setns_without_sys_admin_is_access_denied(stage: Stage) -> None:
    staged = stage.spawn([], netns=stage.netns())
    result = _read_without("sys_admin", staged.pid)
    assert (result["error"], result["missing"]) == ("AccessDenied", "SYS_ADMIN")


def test_other_users_netns_without_sys_ptrace_is_access_denied(stage: Stage) -> None:
    staged = stage.spawn([], netns=stage.netns(), uid=1000, bounding=[])
    result = _read_without("sys_ptrace", staged.pid)
    assert (result["error"], result["missing"]) == ("AccessDenied", "SYS_PTRACE")


def test_unreadable_facts_become_gaps(stage: Stage, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    netns = stage.netns()
    staged = stage.spawn([Sock("tcp", 4, "0.0.0.0", 7005), Sock("udp", 4, "0.0.0.0", 7006)],
                         netns=netns)
    # A proc root as on a node booted with ipv6.disable=1 and a garbled ipv4 sysctl.
    for name in ("1", str(staged.pid)):
        (tmp_path / name).symlink_to(f"/proc/{name}")
    (tmp_path / "sys/net/ipv4").mkdir(parents=True)
    (tmp_path / "sys/net/ipv4/ip_unprivileged_port_start").write_text("garbage\n")

    def broken_udp(messages: list[NetlinkMessage], protocol: str,
                   names: Mapping[int, str]) -> list[Listener]:
        if protocol == "udp":
            raise ParseError("sock_diag udp message", "staged corruption")
        return real_decode(messages, protocol, names)

    real_decode = sockdiag.decode_listeners
    monkeypatch.setattr(sockdiag, "decode_listeners", broken_udp)
    facts = read_netns_facts(staged.pid, ProcFS(str(tmp_path)))
    assert facts.sysctls == Sysctls(None, None, None)
    gaps = {g.fact: g.reason for g in facts.gaps}
    assert "ipv6.disable=1" in gaps["net.ipv6.bindv6only"]
    assert "ipv6.disable=1" in gaps["net.ipv6.conf.all.disable_ipv6"]
    assert "unreadable" in gaps["net.ipv4.ip_unprivileged_port_start"]
    assert "staged corruption" in gaps["network.listeners.udp"]
    assert [(s.protocol, s.port, s.pids) for s in facts.listeners] == [
        ("tcp", 7005, (staged.pid,))]


def test_host_network_is_told_on_this_machine(stage: Stage) -> None:
    # kthreadd lives in the initial netns even where pid 1's ns link is refused.
    on_host = stage.spawn([Sock("tcp", 4, "127.0.0.1", 0)])
    in_pod = stage.spawn([Sock("tcp", 4, "127.0.0.1", 0)], netns=stage.netns())
    host, pod = read_netns_facts(on_host.pid), read_netns_facts(in_pod.pid)
    assert host.host_network is True and pod.host_network is False
    assert not [g for g in (*host.gaps, *pod.gaps) if g.fact == "network.host_network"]


def test_unreadable_processes_are_a_gap_only_for_orphan_listeners() -> None:
    from agent.collect.netns import _owner_gap
    from agent.model import SocketOwner

    owned = Listener("tcp", 4, "0.0.0.0", 80, None, 1, owners=(SocketOwner(7, "x", 3),))
    orphan = Listener("tcp", 6, "::", 81, False, 2)
    assert _owner_gap((owned,), "1 process unreadable") is None
    assert _owner_gap((owned, orphan), None) is None
    gap = _owner_gap((owned, orphan), "1 process unreadable")
    assert gap is not None and "tcp [::]:81" in gap.reason and "unreadable" in gap.reason
