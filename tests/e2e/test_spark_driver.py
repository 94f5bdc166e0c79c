"""A Spark driver's pod on containerd with `readOnlyRootFilesystem: true` and no emptyDir
(what kubeflow/spark-operator#2313 asks for, done naively): what breaks, and the fix.

The driver-like process is the lane's stand-in (uid 185, home /nonexistent) with the
driver's ports (7078 spark.driver.port, 7079 spark.driver.blockManager.port, 4040
spark.ui.port), `--packages` (Ivy resolves them under HOME) and `$SPARK_LOCAL_DIRS` as Spark
on Kubernetes sets it. The built-in `spark-driver` profile (label `spark-role: driver`)
says it writes /tmp and spark.local.dir. The oracle: a real write as uid 185 in the
container's mount namespace, and containerd's OCI spec.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e.agreement import assert_verdicts, audit_and_check, load_fixture, variant, write_manifest
from e2e.containerd import lint_model
from e2e.cri_pods import KubePod

LOCAL_DIR = "/var/data/spark-6c1e0a4b-3f1d-4c0e-9a55-3d2f7b1e8c90"  # LocalDirsFeatureStep's
PACKAGES = ("--packages", "org.apache.spark:spark-avro_2.13:4.0.0")


def driver(pod: dict[str, Any]) -> None:
    """The operator's driver pod, reduced to what decides the writes and ports."""
    pod["metadata"].update(name="spark-pi-driver", namespace="default", labels={
        "spark-role": "driver", "spark-app-name": "spark-pi",
        "sparkoperator.k8s.io/launched-by-spark-operator": "true"})
    [container] = pod["spec"]["containers"]
    container.update(
        name="spark-kubernetes-driver",
        args=["webhook", "--webhook-port=7078", "--enable-metrics=true",
              "--metrics-bind-address=:4040", "--health-probe-bind-address=:7079", *PACKAGES],
        env=[{"name": "SPARK_LOCAL_DIRS", "value": LOCAL_DIR}],
        ports=[{"containerPort": p, "name": n, "protocol": "TCP"} for p, n in
               ((7078, "driver-rpc-port"), (7079, "blockmanager"), (4040, "spark-ui"))],
        securityContext={"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                         "readOnlyRootFilesystem": True, "runAsUser": 185, "runAsGroup": 185,
                         "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}})
    for probe in ("livenessProbe", "readinessProbe"):
        container.pop(probe)
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "tmp"]
    pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if v["name"] != "tmp"]
    pod["status"]["containerStatuses"][0]["name"] = "spark-kubernetes-driver"


def fixed(pod: dict[str, Any]) -> None:
    """The fix, each write moved by a Spark setting onto an emptyDir: spark.local.dir on
    Spark's own `spark-local-dir-1` volume, /tmp (java.io.tmpdir) on a second, and Ivy
    (`spark.jars.ivy`) into /tmp."""
    driver(pod)
    [container] = pod["spec"]["containers"]
    container["args"] += ["--conf", "spark.jars.ivy=/tmp/ivy2"]
    for name, path in (("spark-local-dir-1", LOCAL_DIR), ("tmp", "/tmp")):
        pod["spec"]["volumes"].append({"name": name, "emptyDir": {"sizeLimit": "1Gi"}})
        container["volumeMounts"].append({"name": name, "mountPath": path})


def audit(pod: KubePod, tmp_path: Path) -> Any:
    assert pod.app.pid is not None, pod.app.exit_output
    return audit_and_check(pod.app.pid, write_manifest(pod.manifest, tmp_path, pod.uid),
                           pod.oci_spec(), runtime=lint_model(pod.runtime),
                           image=pod.runtime.image)


def test_a_driver_with_a_read_only_root_and_no_emptydir(
    play_pod: Callable[..., KubePod], tmp_path: Path
) -> None:
    pod = play_pod(variant(load_fixture("spark-operator-controller.yaml"), driver))
    audited = audit(pod, tmp_path)
    assert audited.ports == {7078, 7079, 4040}
    # Every write Spark makes fails: its temp files, its local dir, Ivy's ~/.ivy2.
    assert_verdicts(audited.verdicts, {"/tmp": False, LOCAL_DIR: False, "/nonexistent": False})
    assert audited.findings == sorted([
        ("HomeDirectoryUnusable", "medium"),  # --packages: Ivy writes under HOME
        ("WritablePathMissing", "high"),  # /tmp
        ("WritablePathMissing", "high"),  # spark.local.dir
    ])


def test_the_driver_fixed_with_emptydirs_and_spark_settings(
    play_pod: Callable[..., KubePod], tmp_path: Path
) -> None:
    pod = play_pod(variant(load_fixture("spark-operator-controller.yaml"), fixed))
    audited = audit(pod, tmp_path)
    assert_verdicts(audited.verdicts, {"/tmp": True, LOCAL_DIR: True, "/tmp/ivy2": True,
                                       "/nonexistent": False})
    # Ivy is served; other writes under HOME would still fail: a low note.
    assert audited.findings == [("HomeDirectoryUnusable", "low")]
