"""A crash-looping container (kubeflow/spark-operator#2331: `webhook.port=443`, uid 185, no
capability) has no process, but its pod's sandbox holds the netns. `run --once` and
`diagnose --pod` read ip_unprivileged_port_start there, take the rest from the API, and say
why the container cannot start. Real sandbox processes in real kubepods cgroups; the API is
the test server; the oracle is a real bind() as uid 185 in the same netns."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml
from agent_run import OPAUDIT, run_once
from cgroup_staging import KubepodsCgroups, random_container_id, systemd_scope
from fixture_data import pod_fixture
from kube.apiserver import ApiServer
from pod_staging import NODE, events_on
from staging import STAGE_PYTHON, Stage

RULE = "PrivilegedPortNotBindable"
CONTAINER = "spark-operator-webhook"
BIND_443 = ("import socket, sys\ns = socket.socket(socket.AF_INET6)\n"
            "try:\n    s.bind(('::', 443))\nexcept PermissionError:\n    sys.exit(13)\n")


class NoTimestamps(yaml.SafeLoader):
    """YAML as the API serves it: timestamps stay RFC 3339 strings."""


NoTimestamps.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def crash_looping_webhook(name: str, container_id: str) -> dict[str, Any]:
    """The chart's default webhook with webhook.port=443, in CrashLoopBackOff."""
    pod = yaml.load(pod_fixture("spark-operator-webhook.yaml").read_text(), NoTimestamps)
    pod["metadata"].update(name=name, uid=str(uuid.uuid4()))
    for key in ("resourceVersion", "ownerReferences"):
        pod["metadata"].pop(key, None)
    pod["spec"]["nodeName"] = NODE
    [container] = pod["spec"]["containers"]
    container["args"] = [a.replace("--webhook-port=9443", "--webhook-port=443")
                         for a in container["args"]]
    container["ports"][0]["containerPort"] = 443
    [status] = pod["status"]["containerStatuses"]
    status.update(ready=False, restartCount=4, containerID=f"containerd://{container_id}",
                  state={"waiting": {"reason": "CrashLoopBackOff",
                                     "message": "back-off 1m20s restarting failed container"}},
                  lastState={"terminated": {
                      "exitCode": 1, "reason": "Error", "containerID": f"containerd://{container_id}",
                      "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}})
    status.pop("started", None)
    pod["status"]["podIP"] = "192.0.2.10"  # the staged netns's veth0 (staging.Stage.netns)
    pod["status"]["podIPs"] = [{"ip": "192.0.2.10"}, {"ip": "2001:db8::10"}]
    return pod


def stage_sandbox(stage: Stage, cgroups: KubepodsCgroups, pod: dict[str, Any],
                  port_start: int | None = None) -> tuple[int, str]:
    """The pod's sandbox: a `pause` process (uid 65535, as the pause image runs) in the
    pod's own netns and its sandbox scope; nothing else of the pod is alive."""
    sysctls = {"net.ipv4.ip_unprivileged_port_start": port_start} if port_start is not None \
        else None
    netns = stage.netns(sysctls=sysctls)
    pause = stage.spawn(netns=netns, uid=65535, bounding=[], comm="pause")
    cgroups.place_v2(pause.pid, systemd_scope(pod["metadata"]["uid"], random_container_id()))
    return pause.pid, netns


def bind_443_as_185(netns: str) -> int:
    """Oracle: exit 0 when uid 185 without capabilities can bind [::]:443 there, 13 on EACCES."""
    return subprocess.run(
        ["ip", "netns", "exec", netns, "setpriv", "--reuid=185", "--regid=185", "--clear-groups",
         "--bounding-set=-all", "--inh-caps=-all", STAGE_PYTHON, "-c", BIND_443],
        capture_output=True, timeout=30).returncode


def test_run_once_says_why_a_crash_looping_container_cannot_start(
        stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: Path) -> None:
    failing = crash_looping_webhook("so-webhook-443", random_container_id())
    pause, netns = stage_sandbox(stage, cgroups, failing)
    # containerd's enable_unprivileged_ports (and kind, k3s) set the threshold to 0: it binds.
    binding = crash_looping_webhook("so-webhook-443-sysctl", random_container_id())
    _, netns_0 = stage_sandbox(stage, cgroups, binding, port_start=0)
    assert (bind_443_as_185(netns), bind_443_as_185(netns_0)) == (13, 0)
    for pod in (failing, binding):
        server.add_pod(pod)

    result = run_once(kubeconfig)
    assert result.returncode == 0, result.stderr
    [event] = events_on(server, failing["metadata"]["uid"])
    assert event["reason"] == RULE and event["type"] == "Warning"
    assert f"container {CONTAINER}" in event["note"] and "443" in event["note"]
    assert "ip_unprivileged_port_start=1024" in event["note"]
    assert events_on(server, binding["metadata"]["uid"]) == []


def diagnose_pod(pod: dict[str, Any], kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    """`opaudit diagnose --pod NS/NAME -o json` on this node, as a user runs it."""
    ref = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    return subprocess.run(
        [str(OPAUDIT), "diagnose", "--pod", ref, "--node", NODE, "--kubeconfig", str(kubeconfig),
         "-o", "json"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "NODE_NAME": NODE})


def test_diagnose_pod_reports_it_through_the_sandbox(
        stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: Path) -> None:
    failing = crash_looping_webhook("so-webhook-443", random_container_id())
    pause, _ = stage_sandbox(stage, cgroups, failing)
    server.add_pod(failing)
    result = diagnose_pod(failing, kubeconfig)
    assert result.returncode == 1, result.stderr  # a high finding
    report = json.loads(result.stdout)
    [target] = report["targets"]
    assert target["pid"] == pause and target["container"]["name"] == CONTAINER
    assert target["network"]["sysctls"]["net.ipv4.ip_unprivileged_port_start"] == 1024
    assert any("sandbox" in str(gap) for gap in target["incomplete"])
    [finding] = report["findings"]
    assert finding["rule"] == RULE and finding["severity"] == "high"
    assert "webhook:\n  port: 9443" in finding["remediation"]


def test_a_crash_looping_container_whose_uid_nothing_names_is_unknown(
        stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: Path) -> None:
    """No runAsUser, no runAsNonRoot, and a status without `user` (a runtime that does not
    report it): the image's USER decides whether it can bind 443, and no process is there
    to read. The verdict is unknown, naming why, not passed; and no Event is written."""
    pod = crash_looping_webhook("so-webhook-443-no-uid", random_container_id())
    [container] = pod["spec"]["containers"]
    container["securityContext"].pop("runAsNonRoot")
    for security in (pod["spec"].get("securityContext") or {}, container["securityContext"]):
        assert not {"runAsUser", "runAsNonRoot"} & security.keys()
    pod["status"]["containerStatuses"][0].pop("user")
    stage_sandbox(stage, cgroups, pod)
    server.add_pod(pod)
    result = diagnose_pod(pod, kubeconfig)
    assert result.returncode == 0, result.stderr
    [target] = json.loads(result.stdout)["targets"]
    assert RULE not in target["passed"]
    [unknown] = [u for u in target["unevaluated"] if u["rule"] == RULE]
    [missing] = unknown["missing"]
    assert missing["fact"] == "identity.uid.declared"
    assert "no runAsUser, no runAsNonRoot and no status user" in missing["reason"]
    assert run_once(kubeconfig).returncode == 0
    assert events_on(server, pod["metadata"]["uid"]) == []
