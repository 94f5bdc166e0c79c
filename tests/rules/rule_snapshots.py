"""Hand-built snapshots for rule tests: a hardened spark-operator controller, and tweaks of it.

`observed()` is what the chart's hardened controller looks like from the node (uid 185, no
capabilities, no_new_privs, seccomp filter, read-only root with a /tmp emptyDir, Go dual-stack
listeners on 8080 and 8081), with the spark user's home on the /tmp emptyDir.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fixture_data import pod_fixture

from agent.kube.podspec import declared_from_pod, load_pod_manifest
from agent.model import (
    Capabilities,
    DeclaredContainer,
    Filesystem,
    Identity,
    IdQuad,
    InterfaceAddress,
    Listener,
    NetnsFacts,
    ObservedProcess,
    PathAccess,
    Profile,
    SocketOwner,
    Sysctls,
)

PID = 4242
LAST_CAP = 40
# The chart's webhook serving-certs emptyDir (its Helm values, tests/fixtures/pods/).
CERTS = "/etc/k8s-webhook-server/serving-certs"
# The rules about privileges a container holds or can gain, as the acceptance scenarios
# count them.
PRIVILEGE_RULES = {"PrivilegedContainer", "PrivilegeEscalationAllowed", "CapabilitiesNotDropped",
                   "CapabilityAddedButIneffective", "NetBindServiceUnneeded", "SeccompUnconfined"}
def fixture_path(name: str) -> Path:
    return pod_fixture(name)


def declared(name: str = "spark-operator-controller-hardened.yaml", **changes: Any
             ) -> DeclaredContainer:
    base = declared_from_pod(load_pod_manifest(str(fixture_path(name))))
    return dataclasses.replace(base, **changes)


def ids(uid: int) -> IdQuad:
    return IdQuad(uid, uid, uid, uid)


def caps(effective: int = 0, bounding: int = 0, ambient: int = 0, permitted: int | None = None
         ) -> Capabilities:
    held = effective if permitted is None else permitted
    return Capabilities(effective=effective, permitted=held, inheritable=ambient,
                        bounding=bounding, ambient=ambient, last_cap=LAST_CAP)


def writable(path: str) -> PathAccess:
    return PathAccess(path, exists=True, is_dir=True, on_readonly_mount=False, writable=True)


def readonly(path: str) -> PathAccess:
    return PathAccess(path, exists=True, is_dir=True, on_readonly_mount=True, writable=False)


def missing(path: str) -> PathAccess:
    return PathAccess(path, exists=False, is_dir=None, on_readonly_mount=None, writable=None)


def listener(port: int, address: str = "::", v6only: bool | None = False, protocol: str = "tcp",
             pid: int | None = PID) -> Listener:
    family = 6 if ":" in address else 4
    owners = (SocketOwner(pid, "spark-operator", 3 + port % 50),) if pid is not None else ()
    return Listener(protocol=protocol, family=family, address=address, port=port,
                    v6only=v6only if family == 6 else None, inode=port * 7, owners=owners)


def network(*listeners: Listener, bindv6only: int = 0, disable_ipv6: int = 0,
            port_start: int = 1024, v4: str | None = "192.0.2.41",
            v6: str | None = "2001:db8::29") -> NetnsFacts:
    addresses = [InterfaceAddress("lo", 4, "127.0.0.1", 8, "host")]
    if v4:
        addresses.append(InterfaceAddress("eth0", 4, v4, 24, "global"))
    if v6 and not disable_ipv6:
        addresses.append(InterfaceAddress("eth0", 6, v6, 64, "global"))
    return NetnsFacts(inode=4026532285, sysctls=Sysctls(bindv6only, disable_ipv6, port_start),
                      addresses=tuple(addresses), listeners=tuple(listeners))


GO_LISTENERS = (listener(8080), listener(8081))


def observed(**changes: Any) -> ObservedProcess:
    base = ObservedProcess(
        pid=PID,
        start_time=123456,
        comm="spark-operator",
        cmdline=("/usr/bin/spark-operator", "controller", "start"),
        identity=Identity(uid=ids(185), gid=ids(185), groups=(185,), user="spark", home="/tmp",
                          env_home="/tmp"),
        capabilities=caps(),
        no_new_privs=True,
        seccomp="filter",
        filesystem=Filesystem(root_readonly=True, writable_mounts=("/tmp",), mounts=()),
        network=network(*GO_LISTENERS),
        environ=(("HOME", "/tmp"),
                 ("SPARK_SUBMIT_OPTS", "-Divy.cache.dir=/tmp/ivy2/cache -Divy.home=/tmp/ivy2")),
        paths=(readonly("/"), writable("/tmp"), missing("/tmp/ivy2"), missing("/tmp/ivy2/cache"),
               readonly("/etc"), readonly("/etc/k8s-webhook-server"),
               readonly(CERTS),
               missing("/nonexistent"), readonly("/opt/spark")),
    )
    return dataclasses.replace(base, **changes)


def with_paths(snapshot: ObservedProcess, *accesses: PathAccess) -> ObservedProcess:
    """Replace (or add) PathAccess entries by path."""
    new = {a.path: a for a in accesses}
    kept = tuple(a for a in snapshot.paths if a.path not in new)
    return dataclasses.replace(snapshot, paths=kept + tuple(new.values()))


def rule_ids(findings: Any) -> list[str]:
    return [f.rule for f in findings]


def profile_for(decl: DeclaredContainer | None) -> Profile:
    from agent.model import DEFAULT_CONFIG
    from agent.rules.profiles import match_profile
    return match_profile(decl, DEFAULT_CONFIG)
