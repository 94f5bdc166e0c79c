"""Kubernetes semantics on a real runtime: the chart's pods and the seed's cases, started by
runc with OCI specs as containerd's CRI writes them (see e2e/cri.py), audited with
`opaudit diagnose --pid --pod-spec`, every fact checked by the oracle.

Each expected finding set is justified by the oracle facts asserted before it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from e2e.agreement import (
    HOME_INFO,
    HOME_LOW,
    HOME_MEDIUM,
    Audited,
    assert_verdicts,
    audit_and_check,
    load_fixture,
    variant,
    write_manifest,
)
from e2e.cri import CGROUPFS, SYSTEMD
from e2e.image import CERT_DIR
from e2e.lane import Lane
from e2e.pods import IPV4_ONLY, CriPod, start_pod

NAIVE = {"OPLISTEN_NAIVE": "1"}  # listens as a JVM or C server would: [::], no V6ONLY choice


def play(lane: Lane, pods: list[CriPod], fixture: Mapping[str, Any], tmp_path: Path,
         **options: Any) -> tuple[CriPod, Audited]:
    pod = start_pod(lane, fixture, options.pop("layout", CGROUPFS), **options)
    pods.append(pod)
    assert pod.app.pid is not None, pod.app.exit_output
    # Every pod is also linted: the prediction must equal what the process shows.
    return pod, audit_and_check(pod.app.pid, write_manifest(pod.manifest, tmp_path, pod.uid),
                                runtime=runtime_model(options), image=lane.image)


def runtime_model(options: Mapping[str, Any]) -> str:
    """The CRI's netns as containerd 1.x leaves it, or as 2.x sets it (the sysctl at 0)."""
    sysctls = options.get("sysctls") or {}
    lowered = sysctls.get("net.ipv4.ip_unprivileged_port_start") == 0
    return "containerd-2" if lowered else "containerd"


def families(audited: Audited) -> set[tuple[str, int, bool | None]]:
    return {(x.address, x.port, x.v6only) for x in audited.listeners}


def netns_sysctl(pid: int, key: str) -> int:
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "sysctl", "-n", key],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return int(out)


def connects(netns: str, address: str, port: int) -> bool:
    code = ("import socket,sys\ntry: socket.create_connection((sys.argv[1], int(sys.argv[2])),"
            " timeout=2).close()\nexcept OSError: sys.exit(1)")
    return subprocess.run(["ip", "netns", "exec", netns, "/usr/bin/python3", "-c", code,
                           address, str(port)], timeout=10).returncode == 0


# --- the chart's pods as Kubernetes runs them ---------------------------------------------


def test_default_controller(lane: Lane, pods: list[CriPod], tmp_path: Path) -> None:
    _, audited = play(lane, pods, load_fixture("spark-operator-controller.yaml"), tmp_path)
    assert audited.caps["bounding"] == audited.caps["effective"] == []  # drop: [ALL]
    # /tmp: the kubelet's emptyDir is 0777 (group 185, setgid); uid 185's home does not exist.
    assert_verdicts(audited.verdicts, {"/tmp": True, "/nonexistent": False})
    assert audited.findings == [HOME_MEDIUM]


def test_default_webhook(lane: Lane, pods: list[CriPod], tmp_path: Path) -> None:
    _, audited = play(lane, pods, load_fixture("spark-operator-webhook.yaml"), tmp_path,
                      layout=SYSTEMD)
    assert families(audited) == {
        ("::", 9443, False), ("::", 8080, False), ("::", 8081, False)}  # as Go listens
    assert_verdicts(audited.verdicts, {CERT_DIR: True, "/nonexistent": False})
    assert audited.findings == [HOME_INFO]


def test_hardened_controller(lane: Lane, pods: list[CriPod], tmp_path: Path) -> None:
    _, audited = play(lane, pods, load_fixture("spark-operator-controller-hardened.yaml"),
                      tmp_path)
    assert_verdicts(audited.verdicts, {"/tmp": True, "/tmp/ivy2": True, "/nonexistent": False})
    assert audited.findings == [HOME_LOW]


def test_hardened_webhook(lane: Lane, pods: list[CriPod], tmp_path: Path) -> None:
    _, audited = play(lane, pods, load_fixture("spark-operator-webhook-hardened.yaml"), tmp_path,
                      layout=SYSTEMD)
    assert_verdicts(audited.verdicts, {CERT_DIR: True, "/nonexistent": False})
    assert audited.findings == [HOME_INFO]


# --- the seed's cases ---------------------------------------------------------------------


def test_the_seeds_controller_adds_a_capability_that_does_nothing(
    lane: Lane, pods: list[CriPod], tmp_path: Path
) -> None:
    pod, audited = play(lane, pods, load_fixture("spark-operator-controller-netbind.yaml"),
                        tmp_path)
    threshold = netns_sysctl(pod.app.pid, "net.ipv4.ip_unprivileged_port_start")
    # The CRI puts NET_BIND_SERVICE in the bounding set only: uid 185 loses it at execve.
    assert audited.caps["bounding"] == ["NET_BIND_SERVICE"]
    assert audited.caps["effective"] == audited.caps["permitted"] == audited.caps["ambient"] == []
    assert min(audited.ports) >= threshold == 1024  # and no port needs it
    assert_verdicts(audited.verdicts, {"/tmp": True, "/nonexistent": False})
    assert audited.findings == sorted([HOME_MEDIUM, ("NetBindServiceUnneeded", "medium"),
                                       ("CapabilityAddedButIneffective", "low")])


def test_a_v6only_listener_on_an_ipv4_pod(lane: Lane, pods: list[CriPod], tmp_path: Path) -> None:
    pod, audited = play(lane, pods, load_fixture("spark-operator-webhook.yaml"), tmp_path,
                        addresses=IPV4_ONLY, sysctls={"net.ipv6.bindv6only": 1}, env=NAIVE)
    assert families(audited) == {
        ("::", 9443, True), ("::", 8080, True), ("::", 8081, True)}
    assert not connects(pod.netns, "192.0.2.10", 9443)  # the pod IP is refused
    mismatch = ("ListenerFamilyMismatch", "high")  # 9443 and 8080 declared, 8081 probed
    assert audited.findings == sorted([HOME_INFO, mismatch, mismatch, mismatch])


def test_a_wildcard_ipv6_listener_where_ipv6_is_disabled(
    lane: Lane, pods: list[CriPod], tmp_path: Path
) -> None:
    pod, audited = play(lane, pods, load_fixture("spark-operator-webhook.yaml"), tmp_path,
                        addresses=IPV4_ONLY, sysctls={"net.ipv6.conf.all.disable_ipv6": 1},
                        env=NAIVE)
    assert netns_sysctl(pod.app.pid, "net.ipv6.conf.all.disable_ipv6") == 1
    assert families(audited) == {
        ("::", 9443, False), ("::", 8080, False), ("::", 8081, False)}
    assert connects(pod.netns, "192.0.2.10", 9443)  # served through v4-mapped addresses
    disabled = ("IPv6ListenerWithIPv6Disabled", "info")
    assert audited.findings == sorted([HOME_INFO, disabled, disabled, disabled])


def test_go_listens_on_ipv4_where_ipv6_is_disabled(
    lane: Lane, pods: list[CriPod], tmp_path: Path
) -> None:
    _, audited = play(lane, pods, load_fixture("spark-operator-webhook.yaml"), tmp_path,
                      addresses=IPV4_ONLY, sysctls={"net.ipv6.conf.all.disable_ipv6": 1})
    # Go's probe cannot bind ::1, so it opens AF_INET sockets: nothing to report.
    assert families(audited) == {
        ("0.0.0.0", 9443, None), ("0.0.0.0", 8080, None), ("0.0.0.0", 8081, None)}
    assert audited.findings == [HOME_INFO]


def test_the_oracle_sees_what_a_spec_with_no_hardening_gives(
    lane: Lane, pods: list[CriPod], tmp_path: Path
) -> None:
    def unhardened(pod: dict[str, Any]) -> None:
        container = pod["spec"]["containers"][0]
        container["securityContext"] = {"runAsUser": 185}

    manifest = variant(load_fixture("spark-operator-controller.yaml"), unhardened)
    _, audited = play(lane, pods, manifest, tmp_path)
    # containerd's default set stays in the bounding set; no no_new_privs, no seccomp, rw root.
    assert {"NET_RAW", "NET_BIND_SERVICE"} <= set(audited.caps["bounding"])
    assert audited.caps["effective"] == []
    assert min(audited.ports) >= 1024
    assert_verdicts(audited.verdicts, {"/tmp": True, "/nonexistent": False})
    assert audited.findings == sorted([
        HOME_MEDIUM, ("CapabilitiesNotDropped", "high"), ("PrivilegeEscalationAllowed", "high"),
        ("SeccompUnconfined", "high"), ("NetBindServiceUnneeded", "medium"),
        ("RootFilesystemWritable", "medium")])
