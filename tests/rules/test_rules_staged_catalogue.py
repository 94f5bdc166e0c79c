"""Every catalogue rule staged on the real kernel: a case where it fires and a near miss.

Each case is one real process in its own netns (tests/staging.py: setpriv uid/gid/caps,
no_new_privs, seccomp filter, read-only root, tmpfs, container root), audited through the real
engine. The base is the chart's hardened controller, which is clean; a case changes the one
condition its rule is about, and asserts only on that rule (and one word of its message).
test_rules_staged.py stages the seed's acceptance scenarios; the pairs here use other conditions.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from rules.rule_snapshots import declared
from staging import Sock, Stage, Staged

from agent.audit import AuditRequest, audit
from agent.model import (
    CAPABILITY_NAMES,
    DeclaredContainer,
    DeclaredPort,
    Finding,
    Severity,
)
from agent.rules.catalogue import RULE_IDS

PASSWD = {"etc/passwd": "spark:x:185:185:spark:/tmp:/bin/sh\n"}
HEALTH = 8081  # the hardened fixture's liveness/readiness httpGet port
METRICS = Sock("tcp", 6, "::", 8080, v6only=0)  # Go's ":8080"
GO = (METRICS, Sock("tcp", 6, "::", HEALTH, v6only=0))
POD_V4 = ("192.0.2.10",)  # the staged netns's veth0 addresses (staging.Stage.netns)
POD_DUAL = ("192.0.2.10", "2001:db8::10")
BASE_SPAWN: Mapping[str, Any] = {
    "sockets": GO, "uid": 185, "gid": 185, "groups": [185], "bounding": [],
    "no_new_privs": True, "seccomp": True, "readonly_root": True, "tmpfs": ("/tmp",),
    "comm": "spark-operator",
    "env": {"HOME": "/tmp", "SPARK_SUBMIT_OPTS": "-Divy.cache.dir=/tmp/ivy2/cache"},
}
NO_IPV6 = {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1}
NBS = ["NET_BIND_SERVICE"]
DNS_UDP = DeclaredPort(5353, "UDP", "dns")
HTTPS = DeclaredPort(443, "TCP", "webhook")
ALL_BUT_SYS_ADMIN = [c for c in CAPABILITY_NAMES if c != "SYS_ADMIN"]


@dataclasses.dataclass(frozen=True)
class Case:
    rule: str
    fires: bool
    name: str
    spawn: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # over BASE_SPAWN
    declared: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # over the base pod
    add_ports: tuple[DeclaredPort, ...] = ()  # after the base pod's containerPorts
    unlimited_emptydirs: bool = False  # drop every emptyDir's sizeLimit
    sysctls: Mapping[str, int] = dataclasses.field(default_factory=dict)
    files: Mapping[str, str] = dataclasses.field(default_factory=lambda: PASSWD)
    word: str | None = None  # must be in the message when it fires
    severity: Severity | None = None
    how: str = "spawn"  # "spawn" | "killed" (audited after it is gone) | "userns"

    @property
    def id(self) -> str:
        return f"{self.rule}-{'fires' if self.fires else 'miss'}-{self.name}"


def fire(rule: str, name: str, word: str | None = None, **kw: Any) -> Case:
    return Case(rule, True, name, word=word, **kw)


def miss(rule: str, name: str, **kw: Any) -> Case:
    return Case(rule, False, name, **kw)


CASES = (
    fire("RunsAsRoot", "uid-0", "uid 0", spawn={"uid": 0, "gid": 0, "groups": None}),
    miss("RunsAsRoot", "uid-185"),
    fire("RunAsUserMismatch", "setpriv-1001-declared-185", "uid 1001", spawn={"uid": 1001}),
    miss("RunAsUserMismatch", "setpriv-1001-declared-1001", spawn={"uid": 1001},
         declared={"run_as_user": 1001}),
    fire("RunAsGroupMismatch", "setpriv-gid-1002-declared-185", "gid 1002",
         spawn={"gid": 1002}),
    miss("RunAsGroupMismatch", "setpriv-gid-1002-declared-1002", spawn={"gid": 1002},
         declared={"run_as_group": 1002}),
    fire("HomeDirectoryUnusable", "passwd-home-missing-on-ro-root", "does not exist",
         files={"etc/passwd": "spark:x:185:185:spark:/home/spark:/bin/sh\n"}),
    miss("HomeDirectoryUnusable", "passwd-home-on-tmpfs", spawn={"tmpfs": ("/tmp", "/home/spark")},
         files={"etc/passwd": "spark:x:185:185:spark:/home/spark:/bin/sh\n",
                "home/spark/.keep": ""}),
    # A dropped bounding cap never comes back (this host's root lacks SYS_RESOURCE), but a new
    # user namespace starts with a full bounding set.
    fire("PrivilegedContainer", "user-namespace-full-bounding", "cap_last_cap", how="userns"),
    fire("PrivilegedContainer", "declared-privileged", "privileged: true is declared",
         declared={"privileged": True}),
    miss("PrivilegedContainer", "all-but-sys-admin", spawn={"bounding": ALL_BUT_SYS_ADMIN}),
    # Without no_new_privs only CAP_SYS_ADMIN may install a seccomp filter: none in both.
    fire("PrivilegeEscalationAllowed", "nnp-0", "NoNewPrivs 0",
         spawn={"no_new_privs": False, "seccomp": False}),
    miss("PrivilegeEscalationAllowed", "nnp-1", spawn={"seccomp": False}),
    fire("CapabilitiesNotDropped", "bounding-sys-admin", "SYS_ADMIN",
         spawn={"bounding": ["SYS_ADMIN"]}),
    miss("CapabilitiesNotDropped", "bounding-net-bind-only", spawn={"bounding": NBS}),
    fire("CapabilityAddedButIneffective", "add-nbs-bounding-only", "NET_BIND_SERVICE",
         spawn={"bounding": NBS}, declared={"capabilities_add": ("NET_BIND_SERVICE",)}),
    miss("CapabilityAddedButIneffective", "add-nbs-ambient",
         spawn={"bounding": NBS, "ambient": NBS},
         declared={"capabilities_add": ("NET_BIND_SERVICE",)}),
    fire("NetBindServiceUnneeded", "ambient-ports-above-1024", "=1024",
         spawn={"bounding": NBS, "ambient": NBS}),
    # Same sockets and capability; the raised threshold makes 8080 privileged, so it is used.
    miss("NetBindServiceUnneeded", "ambient-port-start-9000",
         spawn={"bounding": NBS, "ambient": NBS},
         sysctls={"net.ipv4.ip_unprivileged_port_start": 9000}),
    # webhook.port=443 (#2331): nothing listens, the bind failed with EACCES as uid 185.
    fire("PrivilegedPortNotBindable", "443-uid-185-no-caps", "permission denied",
         add_ports=(HTTPS,)),
    # The safe sysctl lowered to 443 lets uid 185 bind it: the fix's second way out.
    miss("PrivilegedPortNotBindable", "443-port-start-443", add_ports=(HTTPS,),
         sysctls={"net.ipv4.ip_unprivileged_port_start": 443}),
    miss("PrivilegedPortNotBindable", "443-ambient-bound",
         spawn={"bounding": NBS, "ambient": NBS, "sockets": (*GO, Sock("tcp", 6, "::", 443))},
         add_ports=(HTTPS,)),
    fire("SeccompUnconfined", "no-filter", "seccomp mode 0", spawn={"seccomp": False}),
    miss("SeccompUnconfined", "filter"),
    fire("RootFilesystemWritable", "rw-root-declared-ro", "drift", severity=Severity.HIGH,
         spawn={"readonly_root": False}),
    fire("RootFilesystemWritable", "rw-root-undeclared", "writable", severity=Severity.MEDIUM,
         spawn={"readonly_root": False}, declared={"read_only_root_filesystem": None}),
    miss("RootFilesystemWritable", "ro-root"),
    fire("WritablePathMissing", "tmp-on-ro-root", "cannot write /tmp", spawn={"tmpfs": ()}),
    miss("WritablePathMissing", "tmp-on-tmpfs"),
    # Declared-side rule: the staged process only carries the audit through the engine.
    fire("EmptyDirWithoutSizeLimit", "tmp-no-size-limit", "'tmp'",
         unlimited_emptydirs=True),
    miss("EmptyDirWithoutSizeLimit", "tmp-1Gi"),
    fire("ProbePortNotListening", "nothing-on-8081", str(HEALTH), spawn={"sockets": (METRICS,)}),
    miss("ProbePortNotListening", "listener-on-8081"),
    fire("ListenerLoopbackOnly", "127.0.0.1", "127.0.0.1",
         spawn={"sockets": (METRICS, Sock("tcp", 4, "127.0.0.1", HEALTH))}),
    miss("ListenerLoopbackOnly", "0.0.0.0",
         spawn={"sockets": (METRICS, Sock("tcp", 4, "0.0.0.0", HEALTH))}),
    fire("ListenerFamilyMismatch", "v6-address-on-v4-pod", "IPv4",
         spawn={"sockets": (METRICS, Sock("tcp", 6, "2001:db8::10", HEALTH))}),
    miss("ListenerFamilyMismatch", "v4-address-on-v4-pod",
         spawn={"sockets": (METRICS, Sock("tcp", 4, "192.0.2.10", HEALTH))}),
    fire("DualStackListenerGap", "v4-socket-dual-pod", "serves only IPv4",
         spawn={"sockets": (METRICS, Sock("tcp", 4, "0.0.0.0", HEALTH))},
         declared={"pod_ips": POD_DUAL}),
    miss("DualStackListenerGap", "v6only-0-dual-pod", declared={"pod_ips": POD_DUAL}),
    fire("IPv6ListenerWithIPv6Disabled", "any6-ipv6-off", "IPv6 is disabled", sysctls=NO_IPV6),
    miss("IPv6ListenerWithIPv6Disabled", "any4-ipv6-off", sysctls=NO_IPV6,
         spawn={"sockets": (Sock("tcp", 4, "0.0.0.0", 8080), Sock("tcp", 4, "0.0.0.0", HEALTH))}),
    fire("DeclaredPortNotListening", "udp-declared-tcp-listener", "check `protocol`",
         spawn={"sockets": (*GO, Sock("tcp", 4, "0.0.0.0", 5353))},
         add_ports=(DNS_UDP,)),
    miss("DeclaredPortNotListening", "udp-declared-udp-listener",
         spawn={"sockets": (*GO, Sock("udp", 4, "0.0.0.0", 5353))}, add_ports=(DNS_UDP,)),
    fire("UndeclaredListener", "extra-9090", "9090",
         spawn={"sockets": (*GO, Sock("tcp", 4, "0.0.0.0", 9090))}),
    miss("UndeclaredListener", "extra-9090-declared",
         spawn={"sockets": (*GO, Sock("tcp", 4, "0.0.0.0", 9090))},
         add_ports=(DeclaredPort(9090, "TCP", "extra"),)),
    fire("InspectionIncomplete", "process-gone", "could not be read", how="killed"),
    miss("InspectionIncomplete", "process-alive"),
)


def declared_for(case: Case) -> DeclaredContainer:
    base = declared("spark-operator-controller-hardened.yaml", pod_ips=POD_V4)
    mounts = tuple(dataclasses.replace(m, size_limit=None)
                   if case.unlimited_emptydirs and m.volume_type == "emptyDir" else m
                   for m in base.volume_mounts)
    return dataclasses.replace(base, ports=(*base.ports, *case.add_ports), volume_mounts=mounts,
                               **case.declared)


def in_user_namespace(stage: Stage, netns: str) -> int:
    """A process in a new user namespace: the kernel gives it a full bounding set
    (kernel/user_namespace.c set_cred_user_ns), as in a userns pod or a rootless runtime."""
    popen = subprocess.Popen(
        ["ip", "netns", "exec", netns, "unshare", "--user", "--map-root-user", "sleep", "300"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    stage.processes.append(Staged(pid=popen.pid, popen=popen, netns=netns))
    comm = Path(f"/proc/{popen.pid}/comm")
    deadline = time.monotonic() + 10
    while popen.poll() is None and time.monotonic() < deadline:
        # ip and unshare exec in place, so `sleep` runs once the namespace exists.
        if comm.read_text().strip() == "sleep":
            return popen.pid
        time.sleep(0.01)
    raise AssertionError(f"unshare --user did not start (exit {popen.returncode})")


def start(stage: Stage, case: Case) -> int:
    netns = stage.netns(sysctls=case.sysctls or None)
    if case.how == "userns":
        return in_user_namespace(stage, netns)
    options = {**BASE_SPAWN, "root": stage.rootfs(case.files), **case.spawn}
    staged = stage.spawn(netns=netns, **options)
    if case.how == "killed":
        stage.kill(staged)
    return staged.pid


def findings_of(pid: int, decl: DeclaredContainer) -> tuple[Finding, ...]:
    [target] = audit([AuditRequest(pid, decl)]).targets
    return target.findings


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule_staged(stage: Stage, case: Case) -> None:
    found = findings_of(start(stage, case), declared_for(case))
    mine = [f for f in found if f.rule == case.rule]
    if not case.fires:
        assert mine == [], mine
        return
    assert mine, [f.rule for f in found]
    if case.word is not None:
        assert any(case.word in f.message for f in mine), [f.message for f in mine]
    if case.severity is not None:
        assert {f.severity for f in mine} == {case.severity}


def test_every_rule_has_a_staged_fire_and_near_miss() -> None:
    staged = {(c.rule, c.fires) for c in CASES}
    missing = sorted(f"{rule} {'fires' if fires else 'near miss'}"
                     for rule in RULE_IDS for fires in (True, False)
                     if (rule, fires) not in staged)
    assert missing == []
    assert {c.rule for c in CASES} <= RULE_IDS
