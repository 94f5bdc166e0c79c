"""daemonset/'s pod under podman, with the settings the kubelet would give it (tests/e2e).

podman 4.3's `kube play` cannot play three of the DaemonSet's fields: it ignores `hostPID`
(the container got a pid namespace of its own: /proc/1/ns/pid differed from the host's), it
refuses the downward API's `spec.nodeName` ("fieldPath spec.nodeName is either not valid or
not supported"), and it cannot join a network namespace by path ("pods presently do not
support network mode path"). So the rendered pod template is translated field by field
into `podman run` settings. A field this translation does not know fails the test: a change
to the DaemonSet cannot slip past it.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(REPO / "scripts" / "containers.conf")}
_counter = itertools.count()

# Pod fields that decide where and under which identity the kubelet runs the pod, not how
# the runtime sets the container up on the node.
POD_FIELDS_NOT_FOR_THE_RUNTIME = {"serviceAccountName", "priorityClassName", "nodeSelector",
                                  "tolerations", "affinity", "terminationGracePeriodSeconds"}
# Container fields the kubelet handles itself: probes are its own HTTP calls, and a
# containerPort without hostPort publishes nothing. The image is the test's local build.
CONTAINER_FIELDS_NOT_FOR_THE_RUNTIME = {"name", "image", "imagePullPolicy", "ports",
                                        "livenessProbe", "readinessProbe"}
QUANTITY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def unique_name() -> str:
    return f"opa{os.getpid()}x{next(_counter)}"


def podman(*args: str, input_text: str | None = None, timeout: float = 120,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, input=input_text,
                            timeout=timeout, env=PODMAN_ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.stderr.strip()}")
    return result


def build_image() -> str:
    """scripts/image: builds the image once per change of its inputs; prints its name."""
    result = subprocess.run([str(REPO / "scripts" / "image")], capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def main_pid(container: str) -> int:
    return int(podman("inspect", "--format", "{{.State.Pid}}", container).stdout)


def _bytes(quantity: str) -> int:
    for suffix, factor in QUANTITY.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def _security(security: dict[str, Any]) -> list[str]:
    args: list[str] = []
    known = {"runAsUser", "runAsGroup", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
             "privileged", "seccompProfile", "capabilities"}
    unknown = set(security) - known
    assert not unknown, f"securityContext fields not translated: {unknown}"
    if "runAsUser" in security:
        args.append(f"--user={security['runAsUser']}:{security.get('runAsGroup', 0)}")
    if security.get("readOnlyRootFilesystem"):
        # Only the declared volumes are writable, as in Kubernetes (no implicit tmpfs).
        args += ["--read-only", "--read-only-tmpfs=false"]
    if security.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    if security.get("privileged"):
        args.append("--privileged")
    profile = (security.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    assert profile == "RuntimeDefault", profile  # podman's default profile
    for cap in (security.get("capabilities") or {}).get("drop", []):
        args.append(f"--cap-drop={cap}")
    for cap in (security.get("capabilities") or {}).get("add", []):
        args.append(f"--cap-add={cap}")
    return args


def run_args(pod_spec: dict[str, Any], *, name: str, image: str, node: str, netns: str,
             entrypoint: list[str]) -> list[str]:
    """`podman run` arguments for the pod's one container. `entrypoint` replaces the
    container's command and args (the tests keep its main process independent of opaudit)."""
    unknown = (set(pod_spec) - POD_FIELDS_NOT_FOR_THE_RUNTIME
               - {"hostPID", "hostNetwork", "securityContext", "containers", "volumes"})
    assert not unknown, f"pod fields not translated: {unknown}"
    args = ["run", "--detach", f"--name={name}", f"--label=opaudit-test={name}"]
    args.append("--pid=host" if pod_spec.get("hostPID") else "--pid=private")
    args.append("--network=host" if pod_spec.get("hostNetwork") else
                f"--network=ns:/run/netns/{netns}")
    pod_security = dict(pod_spec.get("securityContext") or {})
    assert pod_security.pop("seccompProfile", {"type": "RuntimeDefault"}) == {
        "type": "RuntimeDefault"}
    assert not pod_security, f"pod securityContext fields not translated: {pod_security}"

    (container,) = pod_spec["containers"]
    known = CONTAINER_FIELDS_NOT_FOR_THE_RUNTIME | {
        "args", "command", "env", "resources", "securityContext", "volumeMounts"}
    assert not set(container) - known, f"container fields not translated: {set(container) - known}"
    for env in container.get("env", []):
        if "value" in env:
            args.append(f"--env={env['name']}={env['value']}")
        else:  # the downward API: the kubelet resolves spec.nodeName to its node's name
            assert env["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}, env
            args.append(f"--env={env['name']}={node}")
    limits = (container.get("resources") or {}).get("limits", {})
    if "memory" in limits:
        args.append(f"--memory={_bytes(limits['memory'])}")
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        args.append(f"--cpus={int(cpu[:-1]) / 1000 if cpu.endswith('m') else float(cpu)}")
    args += _security(container.get("securityContext") or {})

    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        empty_dir = volumes[mount["name"]].get("emptyDir")
        assert empty_dir is not None and empty_dir.get("medium") == "Memory", mount
        size = _bytes(empty_dir["sizeLimit"])
        args.append(f"--mount=type=tmpfs,destination={mount['mountPath']},tmpfs-size={size}")
    args += [f"--entrypoint={entrypoint[0]}", image, *entrypoint[1:]]
    return args
