"""Built-in workload profiles and how a pod's labels pick one."""

from __future__ import annotations

from agent.model import GENERIC_PROFILE, AuditConfig, DeclaredContainer, Profile

# kubeflow/spark-operator chart 2.5.2: pods carry only these selector labels, the image runs
# as USER 185:185, the webhook writes its serving certs into this directory at start.
SPARK_OPERATOR_UID = 185
WEBHOOK_CERT_DIR = "/etc/k8s-webhook-server/serving-certs"

SPARK_OPERATOR_CONTROLLER = Profile(
    name="spark-operator-controller",
    selector=(("app.kubernetes.io/name", "spark-operator"),
              ("app.kubernetes.io/component", "controller")),
    writable_paths=("/tmp",),
    ports=(8080, 8081),
    expected_uid=SPARK_OPERATOR_UID,
    helm_values_prefix="controller",
    # Pod templates under /tmp/spark/, spark-submit's JVM temp files, Ivy under ~/.ivy2.
    temp_matters=True,
    home_matters=True,
)

SPARK_OPERATOR_WEBHOOK = Profile(
    name="spark-operator-webhook",
    selector=(("app.kubernetes.io/name", "spark-operator"),
              ("app.kubernetes.io/component", "webhook")),
    writable_paths=(WEBHOOK_CERT_DIR,),
    ports=(8080, 8081, 9443),
    expected_uid=SPARK_OPERATOR_UID,
    helm_values_prefix="webhook",
    # The Go binary in webhook mode writes only tls.crt/tls.key into its cert dir
    # (cmd/operator/webhook/start.go, pkg/certificate): no temp files, nothing under HOME.
    temp_matters=False,
    home_matters=False,
)

# The pods of a Spark application on Kubernetes (apache/spark resource-managers/kubernetes:
# Constants.scala SPARK_ROLE_LABEL `spark-role`, launched by spark-submit or the operator),
# JVMs running as the image's uid 185. Both write spark.local.dir (default /tmp; on
# Kubernetes $SPARK_LOCAL_DIRS, LocalDirsFeatureStep), which writes_needed adds.
SPARK_DRIVER = Profile(
    name="spark-driver",
    selector=(("spark-role", "driver"),),
    writable_paths=("/tmp",),
    # spark.driver.port and spark.driver.blockManager.port as the operator sets them
    # (DEFAULT_DRIVER_PORT 7078, DEFAULT_BLOCKMANAGER_PORT 7079), spark.ui.port 4040.
    ports=(7078, 7079, 4040),
    expected_uid=SPARK_OPERATOR_UID,
    temp_matters=True,
    # Only Ivy writes under HOME, for spark.jars.packages / --packages (identity.py checks
    # the process for them): otherwise an unusable HOME is a note.
    home_matters=False,
)

SPARK_EXECUTOR = Profile(
    name="spark-executor",
    selector=(("spark-role", "executor"),),
    writable_paths=("/tmp",),
    expected_uid=SPARK_OPERATOR_UID,
    temp_matters=True,
    home_matters=False,  # executors fetch the jars the driver resolved: no Ivy of their own
)

BUILTIN_PROFILES = (SPARK_OPERATOR_CONTROLLER, SPARK_OPERATOR_WEBHOOK, SPARK_DRIVER,
                    SPARK_EXECUTOR)


def selector_matches(selector: tuple[tuple[str, str], ...],
                     labels: tuple[tuple[str, str], ...]) -> bool:
    """Equality-based label selector: every key=value must be on the pod."""
    have = dict(labels)
    return all(have.get(key) == value for key, value in selector)


def match_profile(declared: DeclaredContainer | None, config: AuditConfig) -> Profile:
    """The first profile whose selector matches: --config profiles first, then the built-ins.
    A profile with an empty selector never matches (it would swallow every pod)."""
    if declared is None:
        return GENERIC_PROFILE
    for profile in (*config.profiles, *BUILTIN_PROFILES):
        if profile.selector and selector_matches(profile.selector, declared.labels):
            return profile
    return GENERIC_PROFILE
