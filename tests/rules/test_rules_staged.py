"""The seed's acceptance scenarios staged on the real kernel, through the real engine.

Real processes under setpriv/unshare in real network namespaces: uid, capability sets,
no_new_privs, seccomp filter, read-only root, tmpfs emptyDirs, sockets with chosen v6only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from rules.rule_snapshots import CERTS, PRIVILEGE_RULES, declared, rule_ids
from rules.rule_staging import GO_SOCKETS, findings
from staging import Sock, Stage

from agent.model import DeclaredContainer, DeclaredPort, Finding, Severity

PASSWD_TMP_HOME = "spark:x:185:185:spark:/tmp:/bin/sh\n"
PASSWD_ROOT_HOME = "spark:x:185:185:spark:/home/spark:/bin/sh\n"
IVY_OPTS = "-Divy.cache.dir=/tmp/ivy2/cache -Divy.home=/tmp/ivy2"


def hardened(stage: Stage, root: Path, sockets: Sequence[Sock] = GO_SOCKETS,
             tmpfs: Sequence[str] = ("/tmp",), bounding: Sequence[str] = (),
             home: str = "/tmp", netns: str | None = None) -> int:
    """A process as the chart's hardened controller runs: uid 185, nnp, seccomp, ro root."""
    staged = stage.spawn(
        sockets, netns=netns or stage.netns(), uid=185, gid=185, groups=[185],
        bounding=list(bounding), no_new_privs=True, seccomp=True, readonly_root=True,
        tmpfs=tmpfs, root=root, comm="spark-operator",
        env={"HOME": home, "SPARK_SUBMIT_OPTS": IVY_OPTS})
    return staged.pid


def at_low_or_above(found: Sequence[Finding]) -> list[Finding]:
    return [f for f in found if f.severity.rank >= Severity.LOW.rank]


def test_hardened_controller_home_on_tmp_is_clean(stage: Stage) -> None:
    pid = hardened(stage, stage.rootfs({"etc/passwd": PASSWD_TMP_HOME}))
    found = findings(pid, declared("spark-operator-controller-hardened.yaml"))
    assert at_low_or_above(found) == [], found


def test_hardened_controller_home_on_readonly_root(stage: Stage) -> None:
    root = stage.rootfs({"etc/passwd": PASSWD_ROOT_HOME, "home/spark/.profile": ""})
    pid = hardened(stage, root, home="/home/spark")
    [f] = at_low_or_above(findings(pid, declared("spark-operator-controller-hardened.yaml")))
    assert f.rule == "HomeDirectoryUnusable"
    assert "/home/spark" in f.message and "read-only" in f.message
    assert IVY_OPTS in f.remediation


def test_seed_netbind_config(stage: Stage) -> None:
    pid = hardened(stage, stage.rootfs({"etc/passwd": PASSWD_TMP_HOME}),
                   bounding=["NET_BIND_SERVICE"])
    found = findings(pid, declared("spark-operator-controller-netbind.yaml"))
    assert sorted(set(rule_ids(found)) & PRIVILEGE_RULES) == [
        "CapabilityAddedButIneffective", "NetBindServiceUnneeded"]
    unneeded = next(f for f in found if f.rule == "NetBindServiceUnneeded")
    assert "(8080, 8081)" in unneeded.message and "=1024" in unneeded.message


def test_webhook_cert_dir_on_readonly_root(stage: Stage) -> None:
    root = stage.rootfs({"etc/passwd": PASSWD_TMP_HOME, f"{CERTS}/.keep": ""})
    sockets = (*GO_SOCKETS, Sock("tcp", 6, "::", 9443, v6only=0))
    decl = declared("spark-operator-webhook-hardened.yaml")
    pid = hardened(stage, root, sockets)
    [f] = [f for f in findings(pid, decl) if f.rule == "WritablePathMissing"]
    assert CERTS in f.message and "read-only" in f.message
    # Near miss: the emptyDir is there (a tmpfs stands in for it).
    pid = hardened(stage, root, sockets, tmpfs=("/tmp", CERTS))
    assert at_low_or_above(findings(pid, decl)) == []


def ipv4_pod(netns_v4: str = "192.0.2.10") -> DeclaredContainer:
    return declared("spark-operator-controller-hardened.yaml", pod_ips=(netns_v4,))


def test_bindv6only_default_socket_on_ipv4_pod(stage: Stage) -> None:
    netns = stage.netns(sysctls={"net.ipv6.bindv6only": 1})
    pid = stage.spawn([Sock("tcp", 6, "::", 8080), Sock("tcp", 6, "::", 8081)],
                      netns=netns).pid
    found = findings(pid, ipv4_pod())
    assert rule_ids(found).count("ListenerFamilyMismatch") == 2
    # Go sets IPV6_V6ONLY=0 on its own socket, whatever the sysctl says.
    go = stage.spawn(
        [Sock("tcp", 6, "::", 8080, v6only=0), Sock("tcp", 6, "::", 8081, v6only=0)],
        netns=stage.netns(sysctls={"net.ipv6.bindv6only": 1})).pid
    assert "ListenerFamilyMismatch" not in rule_ids(findings(go, ipv4_pod()))


def test_ipv6_disabled(stage: Stage) -> None:
    off = {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1}
    v6only = stage.spawn([Sock("tcp", 6, "::", 8080, v6only=1),
                          Sock("tcp", 6, "::", 8081, v6only=0)], netns=stage.netns(sysctls=off))
    found = findings(v6only.pid, ipv4_pod())
    [f] = [f for f in found if f.rule == "ListenerFamilyMismatch"]
    assert "8080" in f.message and "IPv6 is disabled" in f.message
    dual = stage.spawn(list(GO_SOCKETS), netns=stage.netns(sysctls=off))
    network_rules = {"ListenerFamilyMismatch", "DualStackListenerGap", "ListenerLoopbackOnly",
                     "ProbePortNotListening", "DeclaredPortNotListening", "UndeclaredListener",
                     "IPv6ListenerWithIPv6Disabled"}
    found = findings(dual.pid, ipv4_pod())
    assert set(rule_ids(found)) & network_rules == {"IPv6ListenerWithIPv6Disabled"}
    assert {f.severity for f in found if f.rule == "IPv6ListenerWithIPv6Disabled"} == {
        Severity.INFO}


def port_80_pod() -> DeclaredContainer:
    base = ipv4_pod()
    return dataclasses.replace(base, ports=(DeclaredPort(80, "TCP", "http"),), probes=(),
                               capabilities_add=("NET_BIND_SERVICE",))


def test_ambient_net_bind_service_and_port_80(stage: Stage) -> None:
    caps = {"bounding": ["NET_BIND_SERVICE"], "ambient": ["NET_BIND_SERVICE"]}
    needed = stage.spawn([Sock("tcp", 4, "0.0.0.0", 80)], netns=stage.netns(), uid=185, **caps)
    assert "NetBindServiceUnneeded" not in rule_ids(findings(needed.pid, port_80_pod()))
    low = stage.netns(sysctls={"net.ipv4.ip_unprivileged_port_start": 0})
    unneeded = stage.spawn([Sock("tcp", 4, "0.0.0.0", 80)], netns=low, uid=185, **caps)
    [f] = [f for f in findings(unneeded.pid, port_80_pod()) if f.rule == "NetBindServiceUnneeded"]
    assert "(80)" in f.message and "ip_unprivileged_port_start=0" in f.message


def test_no_capability_port_80_with_sysctl_0(stage: Stage) -> None:
    low = stage.netns(sysctls={"net.ipv4.ip_unprivileged_port_start": 0})
    staged = stage.spawn([Sock("tcp", 4, "0.0.0.0", 80)], netns=low, uid=185, bounding=[],
                         no_new_privs=True, seccomp=True)
    decl = dataclasses.replace(port_80_pod(), capabilities_add=())
    assert set(rule_ids(findings(staged.pid, decl))) & PRIVILEGE_RULES == set()
