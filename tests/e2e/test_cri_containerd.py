"""Kubernetes semantics from the real runtime: the chart's pods and the seed's cases, started by
containerd's CRI (Debian's 1.6, e2e/containerd.py) from the pod manifest as the kubelet sends
it (e2e/kubelet.py), audited with `opaudit diagnose --pid --pod-spec`.

Every fact is checked twice without opaudit: by the oracle (a real write as the uid, `ss` in
the pod's netns, `capsh --decode`), and against the OCI spec containerd generated (its
ContainerStatus verbose info). Each expected finding set is justified by the facts asserted
before it.
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
from e2e.containerd import POD_SUBNET, Containerd, lint_model
from e2e.cri_pods import KubePod, netns_sysctl, run_pod
from e2e.image import CERT_DIR

NAIVE = {"OPLISTEN_NAIVE": "1"}  # listens as a JVM or C server would: [::], no V6ONLY choice


def play(runtime: Containerd, kube_pods: list[KubePod], fixture: Mapping[str, Any],
         tmp_path: Path, **options: Any) -> tuple[KubePod, Audited]:
    pod = run_pod(runtime, fixture, **options)
    kube_pods.append(pod)
    assert pod.app.pid is not None, pod.app.exit_output
    # Every pod is also linted: the prediction under this containerd's model, with its
    # image as --image, must equal what the process shows, fact by fact.
    return pod, audit_and_check(pod.app.pid, write_manifest(pod.manifest, tmp_path, pod.uid),
                                pod.oci_spec(), runtime=lint_model(runtime),
                                image=runtime.image)


def with_sysctls(fixture: Mapping[str, Any], **sysctls: int) -> dict[str, Any]:
    """The pod asks for the sysctls (spec.securityContext.sysctls); the CRI sets them."""
    def change(pod: dict[str, Any]) -> None:
        pod["spec"].setdefault("securityContext", {})["sysctls"] = [
            {"name": k.replace("__", "."), "value": str(v)} for k, v in sysctls.items()]

    return variant(fixture, change)


def families(audited: Audited) -> set[tuple[str, int, bool | None]]:
    return {(x.address, x.port, x.v6only) for x in audited.listeners}


def connects(netns: str, address: str, port: int) -> bool:
    code = ("import socket,sys\ntry: socket.create_connection((sys.argv[1], int(sys.argv[2])),"
            " timeout=2).close()\nexcept OSError: sys.exit(1)")
    return subprocess.run(["nsenter", f"--net={netns}", "/usr/bin/python3", "-c", code,
                           address, str(port)], timeout=10).returncode == 0


# --- the chart's pods as Kubernetes runs them ---------------------------------------------


def test_default_controller(containerd: Containerd, kube_pods: list[KubePod],
                            tmp_path: Path) -> None:
    pod, audited = play(containerd, kube_pods, load_fixture("spark-operator-controller.yaml"),
                        tmp_path)
    assert audited.caps["bounding"] == audited.caps["effective"] == []  # drop: [ALL]
    # /tmp: the kubelet's emptyDir is 0777 (group 185, setgid); uid 185's home does not exist.
    assert_verdicts(audited.verdicts, {"/tmp": True, "/nonexistent": False})
    assert audited.findings == [HOME_MEDIUM]
    # The pod got its address from CNI, in the lane's documentation range.
    assert pod.manifest["status"]["podIP"].startswith(POD_SUBNET.rsplit(".", 1)[0] + ".")


def test_default_webhook(containerd: Containerd, kube_pods: list[KubePod],
                         tmp_path: Path) -> None:
    _, audited = play(containerd, kube_pods, load_fixture("spark-operator-webhook.yaml"),
                      tmp_path)
    assert families(audited) == {
        ("::", 9443, False), ("::", 8080, False), ("::", 8081, False)}  # as Go listens
    assert_verdicts(audited.verdicts, {CERT_DIR: True, "/nonexistent": False})
    assert audited.findings == [HOME_INFO]


def test_hardened_controller(containerd: Containerd, kube_pods: list[KubePod],
                             tmp_path: Path) -> None:
    _, audited = play(containerd, kube_pods,
                      load_fixture("spark-operator-controller-hardened.yaml"), tmp_path)
    assert_verdicts(audited.verdicts, {"/tmp": True, "/tmp/ivy2": True, "/nonexistent": False})
    assert audited.findings == [HOME_LOW]


def test_hardened_webhook(containerd: Containerd, kube_pods: list[KubePod],
                          tmp_path: Path) -> None:
    _, audited = play(containerd, kube_pods,
                      load_fixture("spark-operator-webhook-hardened.yaml"), tmp_path)
    assert_verdicts(audited.verdicts, {CERT_DIR: True, "/nonexistent": False})
    assert audited.findings == [HOME_INFO]


# --- the seed's cases ---------------------------------------------------------------------


def test_the_seeds_controller_adds_a_capability_that_does_nothing(
    containerd: Containerd, kube_pods: list[KubePod], tmp_path: Path
) -> None:
    pod, audited = play(containerd, kube_pods,
                        load_fixture("spark-operator-controller-netbind.yaml"), tmp_path)
    threshold = netns_sysctl(pod.netns, "net.ipv4.ip_unprivileged_port_start")
    # The CRI puts NET_BIND_SERVICE in the bounding set only: uid 185 loses it at execve.
    assert audited.caps["bounding"] == ["NET_BIND_SERVICE"]
    assert audited.caps["effective"] == audited.caps["permitted"] == audited.caps["ambient"] == []
    assert min(audited.ports) >= threshold == 1024  # containerd 1.x: the kernel's default
    assert_verdicts(audited.verdicts, {"/tmp": True, "/nonexistent": False})
    assert audited.findings == sorted([HOME_MEDIUM, ("NetBindServiceUnneeded", "medium"),
                                       ("CapabilityAddedButIneffective", "low")])


def test_a_v6only_listener_on_an_ipv4_pod(containerd: Containerd, kube_pods: list[KubePod],
                                          tmp_path: Path) -> None:
    manifest = with_sysctls(load_fixture("spark-operator-webhook.yaml"),
                            net__ipv6__bindv6only=1)
    pod, audited = play(containerd, kube_pods, manifest, tmp_path, env=NAIVE)
    assert families(audited) == {
        ("::", 9443, True), ("::", 8080, True), ("::", 8081, True)}
    # The pod's only address is IPv4 (the CNI range): it is refused.
    assert not connects(pod.netns, pod.manifest["status"]["podIP"], 9443)
    mismatch = ("ListenerFamilyMismatch", "high")  # 9443 and 8080 declared, 8081 probed
    assert audited.findings == sorted([HOME_INFO, mismatch, mismatch, mismatch])


def test_a_wildcard_ipv6_listener_where_ipv6_is_disabled(
    containerd: Containerd, kube_pods: list[KubePod], tmp_path: Path
) -> None:
    manifest = with_sysctls(load_fixture("spark-operator-webhook.yaml"),
                            net__ipv6__conf__all__disable_ipv6=1)
    pod, audited = play(containerd, kube_pods, manifest, tmp_path, env=NAIVE)
    assert netns_sysctl(pod.netns, "net.ipv6.conf.all.disable_ipv6") == 1
    assert families(audited) == {
        ("::", 9443, False), ("::", 8080, False), ("::", 8081, False)}
    assert connects(pod.netns, pod.manifest["status"]["podIP"], 9443)  # v4-mapped
    disabled = ("IPv6ListenerWithIPv6Disabled", "info")
    assert audited.findings == sorted([HOME_INFO, disabled, disabled, disabled])


def test_go_listens_on_ipv4_where_ipv6_is_disabled(
    containerd: Containerd, kube_pods: list[KubePod], tmp_path: Path
) -> None:
    manifest = with_sysctls(load_fixture("spark-operator-webhook.yaml"),
                            net__ipv6__conf__all__disable_ipv6=1)
    _, audited = play(containerd, kube_pods, manifest, tmp_path)
    # Go's probe cannot bind ::1, so it opens AF_INET sockets: nothing to report.
    assert families(audited) == {
        ("0.0.0.0", 9443, None), ("0.0.0.0", 8080, None), ("0.0.0.0", 8081, None)}
    assert audited.findings == [HOME_INFO]


def test_the_oracle_sees_what_a_spec_with_no_hardening_gives(
    containerd: Containerd, kube_pods: list[KubePod], tmp_path: Path
) -> None:
    def unhardened(pod: dict[str, Any]) -> None:
        container = pod["spec"]["containers"][0]
        container["securityContext"] = {"runAsUser": 185}

    manifest = variant(load_fixture("spark-operator-controller.yaml"), unhardened)
    _, audited = play(containerd, kube_pods, manifest, tmp_path)
    # containerd's default set stays in the bounding set; no no_new_privs, no seccomp, rw root.
    assert {"NET_RAW", "NET_BIND_SERVICE"} <= set(audited.caps["bounding"])
    assert audited.caps["effective"] == []
    assert min(audited.ports) >= 1024
    assert_verdicts(audited.verdicts, {"/tmp": True, "/nonexistent": False})
    assert audited.findings == sorted([
        HOME_MEDIUM, ("CapabilitiesNotDropped", "high"), ("PrivilegeEscalationAllowed", "high"),
        ("SeccompUnconfined", "high"), ("NetBindServiceUnneeded", "medium"),
        ("RootFilesystemWritable", "medium")])


def test_the_seeds_controller_on_containerd_2x_defaults(
    containerd_2x: Containerd, kube_pods: list[KubePod], tmp_path: Path
) -> None:
    pod, audited = play(containerd_2x, kube_pods,
                        load_fixture("spark-operator-controller-netbind.yaml"), tmp_path)
    # containerd 2.x lowers the threshold in every pod: no port needs the capability at all.
    assert netns_sysctl(pod.netns, "net.ipv4.ip_unprivileged_port_start") == 0
    assert audited.caps["bounding"] == ["NET_BIND_SERVICE"] and audited.caps["effective"] == []
    assert audited.findings == sorted([HOME_MEDIUM, ("NetBindServiceUnneeded", "medium"),
                                       ("CapabilityAddedButIneffective", "low")])
