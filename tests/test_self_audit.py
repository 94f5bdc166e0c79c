"""opaudit audits its own agent.

The agent runs as the rendered DaemonSet (`kubectl kustomize daemonset/`) runs it: root in
its container, the three added capabilities only, no_new_privs, a seccomp filter, a
read-only root with /tmp and /root as emptyDirs, the container's args. Its network
namespace is IPv6-only (2001:db8::10/64, no IPv4 address but loopback), as a pod of a
single-stack IPv6 cluster. Then `opaudit diagnose --pid AGENT --pod-spec POD` runs on it.

The oracle for the listener is `ss`, in the agent's netns: the kubelet's probe reaches the
pod's IPv6 address only if the socket is `[::]` (or the address itself).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent_run import OPAUDIT, REPO
from kube.apiserver import ApiServer
from manifests import daemonset_pod, kustomize
from seccomp_shim import ALLOW_ALL
from staging import STAGE_PYTHON, Stage

POD_IP = "2001:db8::10"
# RunsAsRoot and CapabilitiesNotDropped are the agent's by design (README "The agent's own
# privileges"): waived here with that reason, so anything else shows.
OWN_WAIVERS = """\
waivers:
- rule: RunsAsRoot
  reason: "the agent needs uid 0: Kubernetes gives a non-root uid no effective capability"
  namespace: opaudit
- rule: CapabilitiesNotDropped
  reason: "SYS_PTRACE, DAC_READ_SEARCH and SYS_ADMIN are the agent's three, each justified"
  namespace: opaudit
"""

# Runs first in the agent's container: a seccomp filter (RuntimeDefault stands for one; this
# one allows everything), then exec of the agent with the container's args.
WITH_SECCOMP = ALLOW_ALL


def rendered_pod(address: str) -> dict[str, Any]:
    pod = daemonset_pod(kustomize())
    pod["status"]["podIP"] = address
    pod["status"]["podIPs"] = [{"ip": address}]
    return pod


def start_agent(stage: Stage, netns: str, pod: dict[str, Any], kubeconfig: str) -> int:
    container = pod["spec"]["containers"][0]
    security = container["securityContext"]
    assert security["runAsUser"] == 0 and security["readOnlyRootFilesystem"] is True
    emptydirs = [m["mountPath"] for m in container["volumeMounts"]]
    root = stage.rootfs({"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
                         "etc/kubeconfig": Path(kubeconfig).read_text()})
    staged = stage.spawn(
        netns=netns, uid=0, gid=0, bounding=security["capabilities"]["add"],
        no_new_privs=security["allowPrivilegeEscalation"] is False, readonly_root=True,
        tmpfs=emptydirs, root=root, binds=[str(REPO), sys.base_prefix],
        env={"NODE_NAME": "worker-1"},
        argv=[STAGE_PYTHON, "-c", WITH_SECCOMP, str(OPAUDIT), *container["args"],
              "--kubeconfig", "/etc/kubeconfig"])
    return staged.pid


def listening(netns: str, port: int) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, "ss", "-Htln", f"sport = :{port}"],
                          capture_output=True, text=True).stdout.strip()


def wait_listening(netns: str, port: int) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if out := listening(netns, port):
            return out
        time.sleep(0.1)
    raise AssertionError(f"the agent never listened on {port}")


def diagnose(pid: int, pod: dict[str, Any], tmp_path: Path, *extra: str) -> dict[str, Any]:
    spec = tmp_path / "pod.json"
    spec.write_text(json.dumps(pod))
    result = subprocess.run([str(OPAUDIT), "diagnose", "--pid", str(pid), "--pod-spec",
                             str(spec), "-o", "json", "--fail-on", "critical", *extra],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def at_low_or_above(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["rule"], f["message"]) for f in doc["findings"]
            if f["severity"] not in ("info",)]


def test_the_agent_in_an_ipv6_only_netns_has_no_finding(
    stage: Stage, server: ApiServer, tmp_path: Path
) -> None:
    pod = rendered_pod(POD_IP)
    port = int(next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]))
    netns = stage.netns(v4=(), v6=(f"{POD_IP}/64",))
    agent = start_agent(stage, netns, pod, server.write_kubeconfig(tmp_path / "kubeconfig"))
    socket_line = wait_listening(netns, port)
    assert f"[::]:{port}" in socket_line or f"*:{port}" in socket_line, socket_line

    waivers = tmp_path / "own-waivers.yaml"
    waivers.write_text(OWN_WAIVERS)
    assert at_low_or_above(diagnose(agent, pod, tmp_path, "--config", str(waivers))) == []
    # Without the waivers, exactly the two documented findings of the agent's design.
    unwaived = {rule for rule, _ in at_low_or_above(diagnose(agent, pod, tmp_path))}
    assert unwaived == {"RunsAsRoot", "CapabilitiesNotDropped"}


def test_where_ipv6_is_disabled_the_agent_binds_ipv4(
    stage: Stage, server: ApiServer, tmp_path: Path
) -> None:
    pod = rendered_pod("192.0.2.10")
    port = int(next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]))
    netns = stage.netns(sysctls={"net.ipv6.conf.all.disable_ipv6": 1})
    agent = start_agent(stage, netns, pod, server.write_kubeconfig(tmp_path / "kubeconfig"))
    assert f"0.0.0.0:{port}" in wait_listening(netns, port)
    rules = {f["rule"] for f in diagnose(agent, pod, tmp_path)["findings"]}
    assert "IPv6ListenerWithIPv6Disabled" not in rules and "ListenerFamilyMismatch" not in rules
