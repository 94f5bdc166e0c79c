"""The README's one-shot block (a hostPID pod, no DaemonSet), as far as this machine can run
it: the pod it applies is valid and has the DaemonSet's securityContext, and its audit line
(`kubectl get pod ... -o yaml | opaudit diagnose --pod-spec -`) runs as written against the
API test server, for a staged pod of that name. Not run here: `kubectl apply`, `wait`,
`exec` and `delete` (the API test server starts no containers)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cgroup_staging import KubepodsCgroups
from kube.apiserver import ApiServer
from manifests import K8S_VERSION
from pod_staging import stage_pod
from staging import Stage

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()



def oneshot_block() -> str:
    match = re.search(r"^### One-shot without the DaemonSet.*?```sh\n(.*?)```", README,
                      flags=re.S | re.M)
    assert match is not None
    return match.group(1)


def oneshot_pod(node: str) -> dict[str, Any]:
    manifest = re.search(r"<<YAML\n(.*?)\nYAML\n", oneshot_block(), flags=re.S)
    assert manifest is not None
    pod: dict[str, Any] = yaml.safe_load(manifest.group(1).replace("$NODE", node))
    return pod


def daemonset_container() -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "daemonset" / "daemonset.yaml").read_text())
    (daemonset,) = [d for d in docs if d and d.get("kind") == "DaemonSet"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_the_oneshot_pod_is_valid_and_as_privileged_as_the_agent() -> None:
    import kubernetes_validate

    pod = oneshot_pod("worker-1")
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert pod["spec"]["hostPID"] is True and pod["spec"]["nodeName"] == "worker-1"
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"] == daemonset_container()["securityContext"]


def test_the_oneshot_audit_line_runs_as_written(stage: Stage, cgroups: KubepodsCgroups,
                                                server: ApiServer, tmp_path: Path) -> None:
    lines = oneshot_block().replace("\\\n", " ").splitlines()
    variables = lines[0]  # NS=... POD=...
    (audit,) = [line for line in lines if "opaudit diagnose" in line]
    local = audit.replace("kubectl exec -i -n opaudit opaudit-oneshot -- ", "")
    namespace, name = re.findall(r"NS=(\S+) POD=(\S+)", variables)[0]
    staged = stage_pod(stage, cgroups, name)
    assert staged.manifest["metadata"]["namespace"] == namespace
    server.add_pod(staged.manifest)
    env = {**os.environ, "KUBECONFIG": server.write_kubeconfig(tmp_path / "kubeconfig"),
           "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-o", "pipefail", "-c", f"{variables}\n{local} -o json"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1, result.stderr  # the staged pod drifted: high findings
    report = json.loads(result.stdout)
    assert [(t["pid"], t["pod"]["name"]) for t in report["targets"]] == [(staged.pid, name)]
    assert "PrivilegeEscalationAllowed" in {f["rule"] for f in report["findings"]}


@pytest.mark.parametrize("name", ["kubectl apply -f - <<YAML", "kubectl wait",
                                  "kubectl delete pod -n opaudit opaudit-oneshot"])
def test_the_block_creates_waits_for_and_deletes_the_pod(name: str) -> None:
    assert name in oneshot_block()
