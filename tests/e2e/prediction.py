"""`opaudit lint`'s prediction of a pod the lane started, compared fact by fact with what
`opaudit diagnose` read from the running process (itself checked by the oracle first).

The image is given to lint as the lane's own root filesystem in an OCI archive, as a user
would give `--image` (USER 185:185, its passwd, owners and modes). A disagreement names the
fact and the runtime model.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from e2e.agreement import OPAUDIT
from e2e.image import ENTRYPOINT, Image
from oci_build import write_archive

CAP_SETS = ("effective", "permitted", "inheritable", "bounding", "ambient")
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


def lint_prediction(pod_spec: Path, container: str, runtime: str, image: Image
                    ) -> dict[str, Any]:
    manifest = yaml.safe_load(pod_spec.read_text())
    ref = str(manifest["spec"]["containers"][0].get("image") or "")
    done = subprocess.run([str(OPAUDIT), "lint", str(pod_spec), "-o", "json", "--runtime",
                           runtime, "--image", f"{ref}=oci-archive:{image_archive(image)}",
                           "--fail-on", "critical"], capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    (found,) = [c for c in json.loads(done.stdout)["containers"] if c["container"] == container]
    predictions = [p for p in found["predicted"] if p["condition"] is None]
    assert len(predictions) == 1, f"{runtime}: the image left alternatives open: {found}"
    prediction: dict[str, Any] = predictions[0]
    return prediction


def port_bindable(pid: int, port: int, uid: int, bound: set[int]) -> bool:
    """The process bound it, or a real bind() as its uid (no capability for a non-root uid,
    as for the process) in its netns succeeds."""
    if port in bound:
        return True
    done = subprocess.run(["nsenter", "-t", str(pid), "-n", "/usr/bin/python3", "-c", BIND_AS,
                           str(port), str(uid)], timeout=10)
    assert done.returncode in (0, 13, 98), done
    return done.returncode != 13


def promised_ports(manifest: Mapping[str, Any]) -> set[int]:
    container = manifest["spec"]["containers"][0]
    ports = {p["containerPort"] for p in container.get("ports") or []}
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        for handler in ("httpGet", "tcpSocket", "grpc"):
            port = ((container.get(kind) or {}).get(handler) or {}).get("port")
            if isinstance(port, int):
                ports.add(port)
    return ports


def disagreements(prediction: Mapping[str, Any], target: Mapping[str, Any], pid: int,
                  ports: set[int], runtime: str) -> list[str]:
    """Each fact where prediction and observation differ, as `fact (runtime): ...`."""
    observed_caps = target["capabilities"]
    identity = target["identity"]
    facts: dict[str, tuple[Any, Any]] = {
        "uid": (prediction["uid"], identity["uid"]["effective"]),
        "gid": (prediction["gid"], identity["gid"]["effective"]),
        "no_new_privs": (prediction["no_new_privs"], target["no_new_privs"]),
        "seccomp": (prediction["seccomp"], target["seccomp"]),
        "root_readonly": (prediction["root_readonly"], target["filesystem"]["root_readonly"]),
        "ip_unprivileged_port_start": (
            prediction["ip_unprivileged_port_start"],
            target["network"]["sysctls"]["net.ipv4.ip_unprivileged_port_start"]),
    }
    for name in CAP_SETS:
        facts[f"capabilities.{name}"] = (prediction["capabilities"][name], observed_caps[name])
    observed_paths = {p["path"]: p["writable"] for p in target["paths"]}
    for path, writable in prediction["paths"].items():
        if writable is not None and path in observed_paths:
            facts[f"writable {path}"] = (writable, observed_paths[path])
    bound = {x["port"] for x in target["network"]["listeners"]}
    predicted_ports = {int(p.split("/")[1]) for p in prediction["bindable_ports"]}
    uid = identity["uid"]["effective"]
    for port in sorted(ports):
        facts[f"port {port} bindable"] = (port in predicted_ports,
                                          port_bindable(pid, port, uid, bound))
    return [f"{fact} ({runtime}): predicted {want!r}, observed {seen!r}"
            for fact, (want, seen) in facts.items() if want != seen]


def assert_prediction_agrees(report: Mapping[str, Any], pid: int, pod_spec: Path,
                             runtime: str, image: Image) -> None:
    (target,) = report["targets"]
    manifest = yaml.safe_load(pod_spec.read_text())
    prediction = lint_prediction(pod_spec, target["container"]["name"], runtime, image)
    problems = disagreements(prediction, target, pid, promised_ports(manifest), runtime)
    assert problems == [], "\n".join(problems)
