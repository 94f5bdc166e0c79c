"""`opaudit lint`'s prediction of a pod the lane started, compared fact by fact with what
`opaudit diagnose` read from every running process of each container (itself checked by the
oracle first), and, for a container that exited (a crash loop), with what can still be
observed: the pod netns's ip_unprivileged_port_start (through the sandbox) and each declared
port's fate (the container's own bind error, or a real bind in the pod's netns).

The image is given to lint as the lane's own root filesystem in an OCI archive, as a user
would give `--image` (USER 185:185, its passwd, owners and modes); every container of the
lane runs that image, whatever reference its manifest names. A disagreement names the fact
and the runtime model.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from e2e.agreement import OPAUDIT, diagnose, write_manifest
from e2e.containerd import lint_model
from e2e.cri_pods import Container, KubePod
from e2e.image import ENTRYPOINT, Image
from oci_build import write_archive

SYSCTL = "net.ipv4.ip_unprivileged_port_start"
CAP_SETS = ("effective", "permitted", "inheritable", "bounding", "ambient")
# Facts lint may leave unknown: a path's writability (null in its JSON), and a hostNetwork
# pod's threshold and so which of its ports bind (a gap it states).
UNPREDICTED = ("writable ", "ip_unprivileged_port_start", "port ")
ARCHIVES: dict[Path, Path] = {}  # the lane image's tar -> its OCI archive
BIND_AS = ("import os, socket, sys\nuid = int(sys.argv[2])\nif uid:\n"
           "    os.setgroups([uid]); os.setgid(uid); os.setuid(uid)\n"
           "try:\n    socket.socket(socket.AF_INET6).bind(('::', int(sys.argv[1])))\n"
           "except PermissionError:\n    sys.exit(13)\nexcept OSError:\n    sys.exit(98)\n")


def image_archive(image: Image) -> Path:
    """The lane's image as an OCI archive (one uncompressed layer: its rootfs tar)."""
    if image.tar not in ARCHIVES:
        config = {"User": image.user, "Entrypoint": [ENTRYPOINT],
                  "Env": ["PATH=/usr/bin:/bin"]}
        ARCHIVES[image.tar] = write_archive(image.tar.with_suffix(".oci.tar"), config,
                                            [image.tar.read_bytes()], gzipped=False)
    return ARCHIVES[image.tar]


def manifest_containers(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = manifest["spec"]
    return [*(spec.get("initContainers") or []), *spec["containers"]]


def lint_prediction(pod_spec: Path, container: str, runtime: str, image: Image
                    ) -> dict[str, Any]:
    manifest = yaml.safe_load(pod_spec.read_text())
    refs = sorted({str(c.get("image") or "") for c in manifest_containers(manifest)})
    archive = image_archive(image)
    images = [a for ref in refs for a in ("--image", f"{ref}=oci-archive:{archive}")]
    done = subprocess.run([str(OPAUDIT), "lint", str(pod_spec), "-o", "json", "--runtime",
                           runtime, *images, "--fail-on", "critical"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    (found,) = [c for c in json.loads(done.stdout)["containers"] if c["container"] == container]
    predictions = [p for p in found["predicted"] if p["condition"] is None]
    assert len(predictions) == 1, f"{runtime}: the image left alternatives open: {found}"
    prediction: dict[str, Any] = dict(predictions[0])
    # The facts lint says it cannot know: the prediction's own gaps, and the ones it gives
    # for each rule it leaves unknown.
    prediction["stated_unknown"] = {g["fact"] for g in prediction["incomplete"]} | {
        m["fact"] for rule in found["unknown"] for m in rule["missing"]}
    return prediction


def port_bindable(pid: int, port: int, uid: int, bound: set[int]) -> bool:
    """The container bound it, or a real bind() as its uid (no capability for a non-root
    uid, as for the process) in the netns of `pid` succeeds."""
    if port in bound:
        return True
    done = subprocess.run(["nsenter", "-t", str(pid), "-n", "/usr/bin/python3", "-c", BIND_AS,
                           str(port), str(uid)], timeout=10)
    assert done.returncode in (0, 13, 98), done
    return done.returncode != 13


def promised_ports(manifest: Mapping[str, Any], name: str) -> set[int]:
    """The container's declared ports and the ports its probes target."""
    (container,) = [c for c in manifest_containers(manifest) if c["name"] == name]
    ports = {p["containerPort"] for p in container.get("ports") or []}
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        for handler in ("httpGet", "tcpSocket", "grpc"):
            port = ((container.get(kind) or {}).get(handler) or {}).get("port")
            if isinstance(port, int):
                ports.add(port)
    return ports


def predicted_facts(prediction: Mapping[str, Any], ports: set[int]) -> dict[str, Any]:
    """lint's prediction, named as the observations below name their facts."""
    facts: dict[str, Any] = {
        "uid": prediction["uid"], "gid": prediction["gid"],
        "no_new_privs": prediction["no_new_privs"], "seccomp": prediction["seccomp"],
        "root_readonly": prediction["root_readonly"],
    }
    for name in CAP_SETS:
        facts[f"capabilities.{name}"] = prediction["capabilities"][name]
    for path, writable in prediction["paths"].items():
        if writable is not None:  # unknown: a gap lint states, nothing to compare
            facts[f"writable {path}"] = writable
    if prediction["ip_unprivileged_port_start"] is None:
        # hostNetwork: the node's sysctl, which a manifest cannot tell, so neither which
        # ports bind; lint must say so (a gap), not leave them out silently.
        assert SYSCTL in prediction["stated_unknown"], prediction["stated_unknown"]
        return facts
    facts["ip_unprivileged_port_start"] = prediction["ip_unprivileged_port_start"]
    bindable = {int(p.split("/")[1]) for p in prediction["bindable_ports"]}
    for port in ports:
        facts[f"port {port} bindable"] = port in bindable
    return facts


def process_facts(target: Mapping[str, Any], ports: set[int], bound: set[int]
                  ) -> dict[str, Any]:
    """What diagnose read from one live process, the ports checked by a real bind."""
    identity = target["identity"]
    facts: dict[str, Any] = {
        "uid": identity["uid"]["effective"], "gid": identity["gid"]["effective"],
        "no_new_privs": target["no_new_privs"], "seccomp": target["seccomp"],
        "root_readonly": target["filesystem"]["root_readonly"],
        "ip_unprivileged_port_start":
            target["network"]["sysctls"][SYSCTL],
    }
    for name in CAP_SETS:
        facts[f"capabilities.{name}"] = target["capabilities"][name]
    for path in target["paths"]:
        facts[f"writable {path['path']}"] = path["writable"]
    for port in ports:
        facts[f"port {port} bindable"] = port_bindable(
            target["pid"], port, identity["uid"]["effective"], bound)
    return facts


def exited_facts(pod: KubePod, container: Container, ports: set[int]) -> dict[str, Any]:
    """An exited container has no process to read: the pod's netns lives on in the sandbox,
    and each port either failed the container's own bind (its last words in the CRI log,
    Go's `listen tcp :443: bind: permission denied`) or takes a real bind there as the uid
    containerd's OCI spec gives the process."""
    threshold = subprocess.run(
        ["nsenter", "-t", str(pod.sandbox_pid), "-n", "sysctl", "-n", SYSCTL],
        capture_output=True, text=True, timeout=10, check=True).stdout
    facts: dict[str, Any] = {"ip_unprivileged_port_start": int(threshold)}
    uid = int(pod.oci_spec(container.name)["process"]["user"]["uid"])
    for port in ports:
        refused = f":{port}: bind: permission denied" in container.exit_output
        facts[f"port {port} bindable"] = (
            False if refused else port_bindable(pod.sandbox_pid, port, uid, set()))
    return facts


def disagreements(predicted: Mapping[str, Any], observed: Mapping[str, Any], runtime: str,
                  where: str) -> list[str]:
    """Each observed fact the prediction gets wrong, as `fact (runtime, where): ...`; a
    fact lint predicts that this observation cannot see (an exited container's
    capabilities) is not compared; an observed fact lint leaves unknown is not compared only
    when lint says so (a path whose owner it cannot know, a hostNetwork pod's sysctl and
    ports)."""
    return [f"{fact} ({runtime}, {where}): predicted {predicted.get(fact, 'nothing')!r}, "
            f"observed {seen!r}" for fact, seen in sorted(observed.items())
            if predicted.get(fact, "nothing") != seen
            and (fact in predicted or not fact.startswith(UNPREDICTED))]


def report_disagreements(report: Mapping[str, Any], pod_spec: Path, runtime: str,
                         image: Image) -> list[str]:
    """Every process diagnose reported, against its container's prediction. The lane's
    stand-in forks its workers and child listener without changing credentials, so each
    process, not only the container's first, must have the predicted identity,
    capabilities, no_new_privs and seccomp."""
    manifest = yaml.safe_load(pod_spec.read_text())
    by_container: dict[str, list[Mapping[str, Any]]] = {}
    for target in report["targets"]:
        by_container.setdefault(target["container"]["name"], []).append(target)
    assert by_container, "diagnose reported no process"
    problems = []
    for name, targets in by_container.items():
        ports = promised_ports(manifest, name)
        predicted = predicted_facts(lint_prediction(pod_spec, name, runtime, image), ports)
        # A port a sibling process holds (prefork workers share the parent's sockets) is bound.
        bound = {x["port"] for t in targets for x in t["network"]["listeners"]}
        for target in targets:
            observed = process_facts(target, ports, bound)
            problems += disagreements(predicted, observed, runtime,
                                      f"{name} pid {target['pid']}")
    return problems


def assert_prediction_agrees(report: Mapping[str, Any], pid: int, pod_spec: Path,
                             runtime: str, image: Image) -> None:
    """diagnose's report of `pid` (every process of its container) against lint."""
    assert pid in {t["pid"] for t in report["targets"]}
    problems = report_disagreements(report, pod_spec, runtime, image)
    assert problems == [], "\n".join(problems)


def assert_pod_agrees(pod: KubePod, directory: Path) -> None:
    """Every container of a pod the lane started, under the model of the containerd that
    runs it: a live one through diagnose, an exited one through what it left."""
    runtime, image = lint_model(pod.runtime), pod.runtime.image
    assert image is not None, "the containerd was never started"
    spec = write_manifest(pod.manifest, directory, f"lint-{pod.uid}")
    problems = []
    for name, container in pod.containers.items():
        if container.pid is not None:
            problems += report_disagreements(diagnose(container.pid, spec), spec, runtime,
                                             image)
            continue
        ports = promised_ports(pod.manifest, name)
        predicted = predicted_facts(lint_prediction(spec, name, runtime, image), ports)
        problems += disagreements(predicted, exited_facts(pod, container, ports), runtime,
                                  f"{name} exited")
    assert problems == [], "\n".join(problems)
