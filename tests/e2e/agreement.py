"""Running opaudit on a container's process, and checking every fact it reports with the oracle."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from e2e.image import Image
from e2e.oracle import SsListener, can_write, capability_sets, ss_listeners
from fixture_data import pod_fixture

OPAUDIT = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "opaudit"

NODE = "k8s-node-01"  # the fixtures' spec.nodeName
SELECTOR = "app.kubernetes.io/name=spark-operator"

Findings = list[tuple[str, str]]  # sorted (rule, severity)
HOME_MEDIUM = ("HomeDirectoryUnusable", "medium")  # the controller profile: HOME matters
HOME_LOW = ("HomeDirectoryUnusable", "low")  # HOME unusable, but Ivy is pointed elsewhere
HOME_INFO = ("HomeDirectoryUnusable", "info")  # the webhook profile writes nothing under HOME


def load_fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(pod_fixture(name).read_text())
    return loaded


def variant(manifest: Mapping[str, Any], change: Callable[[dict[str, Any]], None]
            ) -> dict[str, Any]:
    """A copy of a pod manifest with a seed case's change applied to it."""
    copied = copy.deepcopy(dict(manifest))
    change(copied)
    return copied


def webhook_on_443(with_capability: bool) -> dict[str, Any]:
    """The chart's default webhook with `webhook.port=443` (kubeflow/spark-operator#2331),
    optionally with `webhook.securityContext.capabilities.add: [NET_BIND_SERVICE]`."""
    def change(pod: dict[str, Any]) -> None:
        container = pod["spec"]["containers"][0]
        container["args"] = [a.replace("--webhook-port=9443", "--webhook-port=443")
                             for a in container["args"]]
        container["ports"][0]["containerPort"] = 443
        if with_capability:
            container["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]

    return variant(load_fixture("spark-operator-webhook.yaml"), change)


def other_app(pod: dict[str, Any]) -> None:
    """A pod the lane's selector does not pick: it must never be audited."""
    pod["metadata"]["name"] = "another-app-5d8f7c9b6-k2x4q"
    pod["metadata"]["labels"]["app.kubernetes.io/name"] = "another-app"


def write_manifest(manifest: Mapping[str, Any], directory: Path, name: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(manifest)))
    return path


def diagnose(pid: int, pod_spec: Path) -> dict[str, Any]:
    result = subprocess.run([str(OPAUDIT), "diagnose", "--pid", str(pid), "--pod-spec",
                             str(pod_spec), "-o", "json", "--fail-on", "critical"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def run_once(kubeconfig: str, sink: str) -> str:
    """`opaudit run --once` as the DaemonSet runs it; returns what it printed."""
    result = subprocess.run([str(OPAUDIT), "run", "--once", "--node", NODE, "-l", SELECTOR,
                             "--kubeconfig", kubeconfig, "--sink", sink],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def findings(report: Mapping[str, Any]) -> Findings:
    return sorted((f["rule"], f["severity"]) for f in report["findings"])


def reported_listeners(target: Mapping[str, Any]) -> list[SsListener]:
    return sorted(SsListener(x["protocol"], x["address"], x["port"], x["v6only"],
                             tuple(sorted(x["pids"])))
                  for x in target["network"]["listeners"])


@dataclass(frozen=True)
class Audited:
    """opaudit's findings, and the oracle's facts that justify them."""

    findings: Findings
    verdicts: dict[str, bool]  # path -> a real write as the process succeeded
    caps: dict[str, list[str]]  # set -> capsh --decode of /proc/PID/status
    listeners: list[SsListener]  # ss in the process's netns

    @property
    def ports(self) -> set[int]:
        return {x.port for x in self.listeners}


def assert_oracle_agrees(report: Mapping[str, Any], pid: int) -> Audited:
    """Every capability set, listener and path verdict of the report, found again without
    opaudit; returns them with the findings, for the caller's expected set."""
    (target,) = report["targets"]
    assert target["incomplete"] == []
    caps, listeners = capability_sets(pid), ss_listeners(pid)
    assert target["capabilities"] == caps
    assert reported_listeners(target) == listeners
    verdicts = {p["path"]: can_write(pid, p["path"]) for p in target["paths"]}
    assert {p["path"]: p["writable"] for p in target["paths"]} == verdicts
    return Audited(findings(report), verdicts, caps, listeners)


def assert_spec_agrees(report: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    """The second witness: the OCI spec containerd generated for the container (its
    ContainerStatus verbose info), for what runc sets before exec: the bounding set (the
    process's other sets then follow the kernel's execve rules, which capsh checked),
    no_new_privs, a seccomp filter or none, a read-only root, and which mounts are writable."""
    (target,) = report["targets"]
    process, linux = spec["process"], spec.get("linux", {})
    caps = process.get("capabilities", {})  # containerd leaves out an empty set
    bounding = sorted(c.removeprefix("CAP_") for c in caps.get("bounding", []))
    assert target["capabilities"]["bounding"] == bounding
    assert target["no_new_privs"] is bool(process.get("noNewPrivileges"))
    assert (target["seccomp"] == "filter") is ("seccomp" in linux)
    assert target["filesystem"]["root_readonly"] is bool(spec["root"].get("readonly"))
    # The writable places opaudit lists: the root when it is not read-only, and every
    # read-write bind mount but the runtime's /dev ones (containerd binds the sandbox's /dev/shm).
    rw = {m["destination"] for m in spec["mounts"]
          if m["type"] == "bind" and "ro" not in m.get("options", [])
          and not m["destination"].startswith("/dev/")}
    root = set() if spec["root"].get("readonly") else {"/"}
    assert set(target["filesystem"]["writable_mounts"]) == rw | root


def assert_verdicts(verdicts: dict[str, bool], expected: dict[str, bool]) -> None:
    """The oracle's verdicts on the paths that decide the findings (opaudit also reports
    their ancestors, which the oracle checked too)."""
    assert {path: verdicts.get(path) for path in expected} == expected


def audit_and_check(pid: int, pod_spec: Path,
                    oci_spec: Mapping[str, Any] | None = None, *,
                    runtime: str | None = None, image: Image | None = None) -> Audited:
    """diagnose checked by the oracle (and by the OCI spec the runtime generated, when given);
    with `runtime` and `image`, also `opaudit lint`'s prediction of the same manifest under
    that runtime model, fact by fact."""
    report = diagnose(pid, pod_spec)
    if oci_spec is not None:
        assert_spec_agrees(report, oci_spec)
    audited = assert_oracle_agrees(report, pid)
    if runtime is not None and image is not None:
        from e2e.prediction import assert_prediction_agrees

        assert_prediction_agrees(report, pid, pod_spec, runtime, image)
    return audited
