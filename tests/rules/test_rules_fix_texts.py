"""Each fix fits the case it is given for, staged on the real kernel: the pod's address
families, who set IPV6_V6ONLY (the program, the netns default, the pod's own sysctl), the
probe's handler, and the volumes the pod really has.

Oracles: `ss -tlneH` for a socket's v6only flag, `sysctl` inside the netns for its default,
`ip addr` for the pod's families, a real write as the process's uid for /tmp.
"""

from __future__ import annotations

import copy
import re
import subprocess
from typing import Any

from rules.rule_snapshots import fixture_path
from rules.rule_staging import GO_SOCKETS, WEBHOOK_ROOT_FILES, can_write_as, findings, spawn_webhook
from staging import Sock, Stage

from agent.kube.podspec import declared_from_pod, load_pod_manifest
from agent.model import DeclaredContainer, Finding

IPV4_POD_IP = "192.0.2.10"  # the staged netns's veth0 address (staging.Stage.netns)
IPV6_POD_IP = "2001:db8::10"


def pod(name: str = "spark-operator-controller-hardened.yaml", *, pod_ips: tuple[str, ...] = (
        IPV4_POD_IP,), sysctls: dict[str, str] | None = None,
        liveness: dict[str, Any] | None = None, tmp_volume: dict[str, Any] | None = None,
        tmp_read_only: bool = False) -> DeclaredContainer:
    """A fixture manifest, changed as a user would write it, through the real parser."""
    manifest = copy.deepcopy(load_pod_manifest(str(fixture_path(name))))
    for mount in manifest["spec"]["containers"][0].get("volumeMounts", []):
        if mount["mountPath"] == "/tmp" and tmp_read_only:
            mount["readOnly"] = True
    if tmp_volume is not None:
        manifest["spec"]["volumes"] = [
            {"name": "tmp", **tmp_volume} if v["name"] == "tmp" else v
            for v in manifest["spec"]["volumes"]]
    manifest["status"]["podIPs"] = [{"ip": ip} for ip in pod_ips]
    manifest["status"]["podIP"] = pod_ips[0]
    if sysctls:
        manifest["spec"].setdefault("securityContext", {})["sysctls"] = [
            {"name": k, "value": v} for k, v in sysctls.items()]
    if liveness is not None:
        manifest["spec"]["containers"][0]["livenessProbe"] = liveness
    return declared_from_pod(manifest)


def the(found: tuple[Finding, ...], rule: str) -> list[Finding]:
    return [f for f in found if f.rule == rule]


def in_netns(netns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True,
                          text=True, check=True, timeout=30).stdout


def test_ipv6_only_pod_loopback_fix_offers_the_ipv6_wildcard_first(stage: Stage) -> None:
    netns = stage.netns(v4=(), v6=(f"{IPV6_POD_IP}/64",))
    pid = stage.spawn([Sock("tcp", 6, "::1", 8081, v6only=1), GO_SOCKETS[0]], netns=netns).pid
    assert "inet " not in in_netns(netns, "ip", "-o", "addr", "show", "scope", "global")
    [f] = the(findings(pid, pod(pod_ips=(IPV6_POD_IP,))), "ListenerLoopbackOnly")
    assert f.remediation.startswith("# Bind the listener to all addresses: [::]:8081")
    assert "0.0.0.0" not in f.remediation  # it would serve nothing on this pod
    # Near miss: an IPv4-only pod still gets 0.0.0.0 first; a dual-stack one [::] for both.
    v4 = stage.spawn([Sock("tcp", 4, "127.0.0.1", 8081), GO_SOCKETS[0]],
                     netns=stage.netns(v6=())).pid
    [f] = the(findings(v4, pod()), "ListenerLoopbackOnly")
    assert f.remediation.index("0.0.0.0:8081") < f.remediation.index("[::]:8081")
    dual = stage.spawn([Sock("tcp", 4, "127.0.0.1", 8081), GO_SOCKETS[0]],
                       netns=stage.netns()).pid
    [f] = the(findings(dual, pod(pod_ips=(IPV4_POD_IP, IPV6_POD_IP))), "ListenerLoopbackOnly")
    assert f.remediation.index("[::]:8081 with IPV6_V6ONLY=0") < f.remediation.index("0.0.0.0")


def test_a_socket_that_sets_v6only_itself_gets_no_sysctl_fix(stage: Stage) -> None:
    netns = stage.netns()
    pid = stage.spawn([GO_SOCKETS[0], Sock("tcp", 6, "::", 8081, v6only=1)], netns=netns).pid
    assert in_netns(netns, "sysctl", "-n", "net.ipv6.bindv6only").strip() == "0"
    assert "v6only:1" in in_netns(netns, "ss", "-tlneH", "sport = :8081")
    [f] = the(findings(pid, pod()), "ListenerFamilyMismatch")
    assert "sets IPV6_V6ONLY=1 on the socket itself" in f.remediation
    assert "sysctls:" not in f.remediation and "bind 0.0.0.0:8081" in f.remediation


def test_the_pods_own_bindv6only_sysctl_is_to_be_removed(stage: Stage) -> None:
    netns = stage.netns(sysctls={"net.ipv6.bindv6only": 1})
    pid = stage.spawn([GO_SOCKETS[0], Sock("tcp", 6, "::", 8081)], netns=netns).pid
    assert "v6only:1" in in_netns(netns, "ss", "-tlneH", "sport = :8081")
    decl = pod(sysctls={"net.ipv6.bindv6only": "1"})
    [f] = the(findings(pid, decl), "ListenerFamilyMismatch")
    assert "The pod itself sets net.ipv6.bindv6only=1" in f.remediation
    assert "remove that sysctl" in f.remediation and 'value: "0"' not in f.remediation
    # Near miss: the same netns default, not set by the pod, gets the sysctl that undoes it.
    [f] = the(findings(pid, pod()), "ListenerFamilyMismatch")
    assert "- name: net.ipv6.bindv6only\n    value: \"0\"" in f.remediation
    assert "remove" not in f.remediation


def test_a_grpc_probe_gets_a_grpc_snippet(stage: Stage) -> None:
    pid = stage.spawn(list(GO_SOCKETS), netns=stage.netns()).pid
    decl = pod(liveness={"grpc": {"port": 9090}, "periodSeconds": 10})
    assert "9090" not in in_netns(stage.netns_names[-1], "ss", "-tlnH")
    [f] = the(findings(pid, decl), "ProbePortNotListening")
    assert "livenessProbe:\n  grpc:\n    port:" in f.remediation
    assert "httpGet" not in f.remediation


def volume_names(fix: str, key: str) -> set[str]:
    """The `- name:` entries of every `key:` list in a fix's YAML snippets."""
    names: set[str] = set()
    for block in re.findall(rf"^( *){key}:\n((?:\1  .*\n?)+)", fix, re.MULTILINE):
        names |= set(re.findall(r"^\s*- name: (\S+)", block[1], re.MULTILINE))
    return names


def test_the_home_fix_names_only_volumes_the_pod_has_or_adds_it(stage: Stage) -> None:
    # The demo's webhook: read-only root, an emptyDir only on the cert dir, no /tmp.
    pid = spawn_webhook(stage)
    assert not can_write_as(pid, 185, "/tmp")
    decl = pod("spark-operator-webhook.yaml")
    assert "/tmp" not in {m.mount_path for m in decl.volume_mounts}
    [f] = the(findings(pid, decl), "HomeDirectoryUnusable")
    assert "here the /tmp one" not in f.remediation
    has = {m.name for m in decl.volume_mounts}
    added = volume_names(f.remediation, "volumes")
    assert added == {"tmp"} and not added & has
    assert volume_names(f.remediation, "volumeMounts") <= has | added
    assert "mountPath: /tmp" in f.remediation and "value: /tmp" in f.remediation
    # Near miss: the controller mounts a /tmp emptyDir: the fix names it and adds nothing.
    controller = stage.spawn((), netns=stage.netns(), root=stage.rootfs(WEBHOOK_ROOT_FILES),
                             uid=185, gid=185, groups=[185], bounding=[], no_new_privs=True,
                             readonly_root=True, tmpfs=("/tmp",), comm="spark-operator",
                             env={"HOME": "/nonexistent"}, argv=["sleep", "600"]).pid
    assert can_write_as(controller, 185, "/tmp")
    decl = pod("spark-operator-controller-hardened.yaml")
    tmp = next(m.name for m in decl.volume_mounts if m.mount_path == "/tmp")
    [f] = the(findings(controller, decl), "HomeDirectoryUnusable")
    assert f"the pod's /tmp volume ({tmp})" in f.remediation
    assert volume_names(f.remediation, "volumes") == set()


def test_a_path_whose_volume_is_read_only_is_fixed_on_that_volume(stage: Stage) -> None:
    """/tmp is mounted, but read-only (a host directory bound read-only stands in for the
    kubelet's mount): the fix changes that volume, never a second mount at /tmp."""
    pid = stage.spawn((), netns=stage.netns(), root=stage.rootfs(WEBHOOK_ROOT_FILES), uid=185,
                      gid=185, groups=[185], bounding=[], no_new_privs=True, readonly_root=True,
                      binds=("/tmp",), comm="spark-operator", env={"HOME": "/nonexistent"},
                      argv=["sleep", "600"]).pid
    assert not can_write_as(pid, 185, "/tmp")
    read_only = pod(tmp_read_only=True)
    found = findings(pid, read_only)
    [missing] = [f for f in the(found, "WritablePathMissing") if "write /tmp:" in f.message]
    [home] = the(found, "HomeDirectoryUnusable")
    for fix in (missing.remediation, home.remediation):
        assert "Volume tmp is mounted readOnly at /tmp: mount it writable." in fix
        assert "readOnly: false" in fix and volume_names(fix, "volumes") == set()
    # A secret volume there is read-only whatever the mount says: it becomes an emptyDir,
    # under its own name.
    secret = pod(tmp_volume={"secret": {"secretName": "scratch"}})
    assert [m.volume_type for m in secret.volume_mounts if m.mount_path == "/tmp"] == ["secret"]
    [missing] = [f for f in the(findings(pid, secret), "WritablePathMissing")
                 if "write /tmp:" in f.message]
    assert "Volume tmp at /tmp is a secret volume" in missing.remediation
    assert volume_names(missing.remediation, "volumes") == {"tmp"}
    assert "emptyDir:" in missing.remediation
