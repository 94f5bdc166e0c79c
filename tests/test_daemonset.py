"""daemonset/: renders with kustomize, validates against the Kubernetes schemas, grants
exactly the documented RBAC, and passes opaudit's own rules except for what it documents."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from manifests import DAEMONSET_DIR, K8S_VERSION, by_kind, daemonset_pod, kustomize

# What the agent uses, and the only findings its own rules may raise on itself
# (daemonset/README.md explains each).
AGENT_CAPABILITIES = {"SYS_PTRACE", "DAC_READ_SEARCH", "SYS_ADMIN"}
EXPECTED_OWN_FINDINGS = {"RunsAsRoot", "CapabilitiesNotDropped"}
DOCUMENTED_RBAC = {
    ("", "pods"): {"get", "list", "watch"},
    # get: after a 409 on the deterministic name the sink reads series.count to continue it.
    ("events.k8s.io", "events"): {"create", "patch", "get"},
}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return kustomize()


def test_renders_every_object(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "Namespace",
                     "NetworkPolicy", "ServiceAccount"]
    namespaced = [d for d in rendered
                  if d["kind"] in ("ServiceAccount", "DaemonSet", "NetworkPolicy")]
    assert all(d["metadata"]["namespace"] == "opaudit" for d in namespaced)


def test_every_object_validates_against_the_schemas(rendered: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_daemonset(rendered: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    broken = copy.deepcopy(by_kind(rendered, "DaemonSet"))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = "root"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_cluster_role_grants_exactly_the_documented_verbs(
    rendered: list[dict[str, Any]],
) -> None:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in by_kind(rendered, "ClusterRole")["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == DOCUMENTED_RBAC
    binding = by_kind(rendered, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == by_kind(rendered, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "opaudit",
                                    "namespace": "opaudit"}]


def test_daemonset_pod_has_the_agent_settings(rendered: list[dict[str, Any]]) -> None:
    daemonset = by_kind(rendered, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and not pod.get("hostNetwork")
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["serviceAccountName"] == "opaudit"
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    security = container["securityContext"]
    assert security["runAsUser"] == 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) == AGENT_CAPABILITIES
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    assert f"--metrics-port={port}" in container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"]["memory"] == "128Mi"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_network_policy_admits_only_the_metrics_port(rendered: list[dict[str, Any]]) -> None:
    daemonset = by_kind(rendered, "DaemonSet")
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    policy = by_kind(rendered, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == daemonset["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [{"ports": [
        {"protocol": "TCP", "port": p["containerPort"]} for p in container["ports"]]}]


def test_each_added_capability_carries_a_comment_naming_its_kernel_check() -> None:
    text = (DAEMONSET_DIR / "daemonset.yaml").read_text().splitlines()
    for cap in AGENT_CAPABILITIES:
        (line,) = [i for i, ln in enumerate(text) if ln.strip() == f"- {cap}"]
        comment = text[line - 1].strip()
        assert comment.startswith("#") and len(comment) > 20, cap


# --- opaudit's own rules over its own DaemonSet ------------------------------------------


def observed_agent(pod: dict[str, Any]) -> Any:
    """What the kernel shows for the agent's process under that securityContext:
    root, exactly the added capabilities (root gets them effective), no_new_privs (kubelet
    sets it for allowPrivilegeEscalation: false), a seccomp filter (RuntimeDefault), a
    read-only root with the declared emptyDirs writable, and the metrics listener."""
    from agent.model import (
        Capabilities,
        Filesystem,
        Identity,
        IdQuad,
        InterfaceAddress,
        Listener,
        NetnsFacts,
        ObservedProcess,
        PathAccess,
        Sysctls,
        capability_bit,
    )

    container = pod["spec"]["containers"][0]
    security = container["securityContext"]
    mask = 0
    for name in security["capabilities"]["add"]:
        bit = capability_bit(name)
        assert bit is not None
        mask |= 1 << bit
    root_ids = IdQuad(security["runAsUser"], security["runAsUser"], security["runAsUser"],
                      security["runAsUser"])
    mounts = tuple(m["mountPath"] for m in container["volumeMounts"])
    port = container["ports"][0]["containerPort"]
    return ObservedProcess(
        pid=4242, start_time=1000, comm="opaudit",
        cmdline=("/usr/local/bin/python3", "/usr/local/bin/opaudit", *container["args"]),
        identity=Identity(uid=root_ids, gid=root_ids, groups=(0,), user="root", home="/root",
                          env_home="/root"),
        capabilities=Capabilities(effective=mask, permitted=mask, inheritable=0, bounding=mask,
                                  ambient=0, last_cap=40),
        no_new_privs=security["allowPrivilegeEscalation"] is False,
        seccomp="filter" if security["seccompProfile"]["type"] == "RuntimeDefault" else "disabled",
        filesystem=Filesystem(root_readonly=security["readOnlyRootFilesystem"],
                              writable_mounts=mounts, mounts=()),
        network=NetnsFacts(
            inode=4026532285, sysctls=Sysctls(0, 0, 1024),
            addresses=(InterfaceAddress("eth0", 4, "192.0.2.10", 24, "global"),),
            listeners=(Listener("tcp", 4, "0.0.0.0", port, None, 77),),
        ),
        paths=tuple(PathAccess(p, True, True, False, True) for p in ("/", *mounts)),
    )


def test_opaudit_rules_over_its_own_daemonset_find_only_the_documented(
    rendered: list[dict[str, Any]],
) -> None:
    from agent.kube.podspec import declared_from_pod
    from agent.model import DEFAULT_CONFIG, GENERIC_PROFILE
    from agent.rules.evaluate import evaluate, findings_of

    pod = daemonset_pod(rendered)
    declared = declared_from_pod(pod)
    assert declared.read_only_root_filesystem is True
    assert declared.allow_privilege_escalation is False
    assert set(declared.capabilities_add) == AGENT_CAPABILITIES
    findings = findings_of(
        evaluate(observed_agent(pod), declared, GENERIC_PROFILE, DEFAULT_CONFIG))
    assert {f.rule for f in findings} == EXPECTED_OWN_FINDINGS, [
        (f.rule, f.message) for f in findings]
    (not_dropped,) = [f for f in findings if f.rule == "CapabilitiesNotDropped"]
    for cap in AGENT_CAPABILITIES:
        assert cap in not_dropped.message
