"""The predictor: runtime models as data, the facts each predicts from a pod spec, the gaps
it cannot fill (unknown, never passed), and alternatives named by their condition."""

from __future__ import annotations

from typing import Any

from agent.kube.podspec import declared_from_pod
from agent.model import GENERIC_PROFILE, Outcome, mask_names
from agent.predict.imagefacts import ImageFacts
from agent.predict.lint import LISTENER_RULES, LintOptions, lint
from agent.predict.manifests import Inputs, PodTemplate
from agent.predict.predictor import (
    IF_NOT_ROOT,
    IF_ROOT,
    NO_FILE_CAPS,
    command_line,
    pod_facts,
    predict,
)
from agent.predict.runtimes import CONTAINERD_CAPABILITIES, CRIO_CAPABILITIES, MODELS


def pod(security: dict[str, Any] | None = None, *, pod_security: dict[str, Any] | None = None,
        ports: tuple[int, ...] = (), host_network: bool = False,
        mounts: tuple[tuple[str, dict[str, Any], bool], ...] = ()) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "example/app:1",
                                 "ports": [{"containerPort": p} for p in ports]}
    if security is not None:
        container["securityContext"] = security
    container["volumeMounts"] = [{"name": f"v{i}", "mountPath": path, "readOnly": ro}
                                 for i, (path, _, ro) in enumerate(mounts)]
    spec: dict[str, Any] = {"containers": [container], "hostNetwork": host_network,
                            "volumes": [{"name": f"v{i}", **source}
                                        for i, (_, source, _) in enumerate(mounts)]}
    if pod_security:
        spec["securityContext"] = pod_security
    return {"metadata": {"name": "p", "namespace": "ns1"}, "spec": spec}


def predicted(manifest: dict[str, Any], runtime: str = "containerd", *,
              seccomp_default: bool = False, image: ImageFacts | None = None) -> list[Any]:
    declared = declared_from_pod(manifest, "app")
    return list(predict(declared, pod_facts(manifest, "app"), MODELS[runtime],
                        GENERIC_PROFILE, seccomp_default=seccomp_default, image=image))


def only(manifest: dict[str, Any], runtime: str = "containerd", **kwargs: Any) -> Any:
    (prediction,) = predicted(manifest, runtime, **kwargs)
    return prediction.observed


def first(manifest: dict[str, Any], runtime: str = "containerd", **kwargs: Any) -> Any:
    """The first alternative, for a fact that is the same in every one."""
    return predicted(manifest, runtime, **kwargs)[0].observed


HARDENED = {"runAsUser": 185, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
            "seccompProfile": {"type": "RuntimeDefault"}}


def test_every_model_states_its_sources_and_the_default_sets_differ_as_cited() -> None:
    assert set(MODELS) == {"containerd", "containerd-2", "cri-o"}
    for model in MODELS.values():
        assert model.sources and all(model.sources)
    assert set(CRIO_CAPABILITIES) < set(CONTAINERD_CAPABILITIES)
    assert set(CONTAINERD_CAPABILITIES) - set(CRIO_CAPABILITIES) == {
        "MKNOD", "NET_RAW", "SYS_CHROOT", "SETFCAP", "AUDIT_WRITE"}
    assert [MODELS[m].unprivileged_port_start for m in ("containerd", "containerd-2", "cri-o")
            ] == [1024, 0, 1024]


def test_root_with_nothing_declared_gets_the_runtime_default_set_everywhere() -> None:
    for runtime, expected in (("containerd", CONTAINERD_CAPABILITIES),
                              ("cri-o", CRIO_CAPABILITIES)):
        observed = only(pod({"runAsUser": 0}), runtime)
        caps = observed.capabilities
        assert set(mask_names(caps.bounding)) == set(expected)
        assert caps.effective == caps.permitted == caps.bounding
        assert caps.inheritable == caps.ambient == 0
        assert observed.no_new_privs is False and observed.seccomp == "disabled"
        assert observed.filesystem.root_readonly is False


def test_a_non_root_uid_keeps_added_capabilities_only_in_the_bounding_set() -> None:
    security = {**HARDENED, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}
    alternatives = predicted(pod(security))
    assert alternatives[0].condition == NO_FILE_CAPS
    without, with_file_caps = (p.observed.capabilities for p in alternatives)
    assert mask_names(without.bounding) == ("NET_BIND_SERVICE",)
    assert without.effective == without.permitted == without.ambient == 0
    assert mask_names(with_file_caps.effective) == ("NET_BIND_SERVICE",)
    assert "setcap cap_net_bind_service+ep" in (alternatives[1].condition or "")


def test_the_cri_order_of_add_and_drop() -> None:
    # add ALL, then drop ALL, then each add, then each drop (containerd WithCapabilities).
    observed = only(pod({"runAsUser": 0, "capabilities": {"add": ["ALL"], "drop": ["CHOWN"]}}))
    assert "CHOWN" not in mask_names(observed.capabilities.bounding)
    assert len(mask_names(observed.capabilities.bounding)) == 40
    observed = only(pod({"runAsUser": 0, "capabilities": {"drop": ["ALL"], "add": ["KILL"]}}))
    assert mask_names(observed.capabilities.bounding) == ("KILL",)


def test_no_new_privs_only_from_an_explicit_false_and_never_when_privileged() -> None:
    assert first(pod(HARDENED)).no_new_privs is True
    assert first(pod({**HARDENED, "allowPrivilegeEscalation": None})).no_new_privs is False
    assert first(pod({**HARDENED, "privileged": True})).no_new_privs is False
    # The kubelet sets it whenever allowPrivilegeEscalation is false; the API refuses that
    # with "CAP_SYS_ADMIN" spelled so, and accepts it with "SYS_ADMIN" (this project's
    # DaemonSet adds SYS_ADMIN and runs with no_new_privs).
    sys_admin = {**HARDENED, "capabilities": {"add": ["SYS_ADMIN"]}}
    assert all(p.observed.no_new_privs is True for p in predicted(pod(sys_admin)))
    cap_sys_admin = {**HARDENED, "capabilities": {"add": ["CAP_SYS_ADMIN"]}}
    assert all(p.observed.no_new_privs is False for p in predicted(pod(cap_sys_admin)))


def test_seccomp_unconfined_unless_declared_or_the_kubelet_flag_and_never_when_privileged(
) -> None:
    bare = {"runAsUser": 1000}
    assert first(pod(bare)).seccomp == "disabled"
    assert first(pod(bare), seccomp_default=True).seccomp == "filter"
    assert first(pod(bare, pod_security={"seccompProfile": {"type": "RuntimeDefault"}})
                ).seccomp == "filter"
    assert first(pod({**bare, "seccompProfile": {"type": "Unconfined"}}),
                seccomp_default=True).seccomp == "disabled"
    assert first(pod({**bare, "privileged": True, "seccompProfile": {"type": "RuntimeDefault"}})
                ).seccomp == "disabled"


def test_unprivileged_port_start_per_runtime_sysctl_and_host_network() -> None:
    assert only(pod(HARDENED), "containerd").network.sysctls.ip_unprivileged_port_start == 1024
    assert only(pod(HARDENED), "containerd-2").network.sysctls.ip_unprivileged_port_start == 0
    assert only(pod(HARDENED), "cri-o").network.sysctls.ip_unprivileged_port_start == 1024
    sysctl = {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "80"}]}
    assert only(pod(HARDENED, pod_security=sysctl), "containerd-2"
                ).network.sysctls.ip_unprivileged_port_start == 80
    host = only(pod(HARDENED, host_network=True))
    assert host.network.sysctls.ip_unprivileged_port_start is None
    assert [g.fact for g in host.network.gaps] == ["net.ipv4.ip_unprivileged_port_start"]


def test_declared_ports_are_bindable_only_at_or_above_the_start_without_the_capability() -> None:
    ports = (443, 8443)
    for runtime, bindable in (("containerd", {8443}), ("containerd-2", {443, 8443}),
                              ("cri-o", {8443})):
        observed = only(pod(HARDENED, ports=ports), runtime)
        assert {s.port for s in observed.network.listeners} == bindable
    root = only(pod({"runAsUser": 0}, ports=ports), "containerd")  # NET_BIND_SERVICE effective
    assert {s.port for s in root.network.listeners} == {443, 8443}


def test_uid_from_the_spec_the_image_or_run_as_non_root_else_both_alternatives() -> None:
    assert only(pod(HARDENED)).identity.uid.effective == 185
    image = ImageFacts(ref="example/app:1", uid=101, gid=101)
    assert first(pod({"allowPrivilegeEscalation": False}), image=image).identity.uid.effective \
        == 101
    nonroot = only(pod({"runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}))
    assert nonroot.identity.uid is None
    assert "identity.uid" in {g.fact for g in nonroot.incomplete}
    unknown = predicted(pod({"capabilities": {"drop": ["ALL"]}}))
    assert [p.condition for p in unknown] == [IF_ROOT, IF_NOT_ROOT]
    assert unknown[0].observed.identity.uid.effective == 0


def test_writability_from_volume_types_and_the_root_mount() -> None:
    mounts = (("/tmp", {"emptyDir": {}}, False),
              ("/etc/conf", {"configMap": {"name": "c"}}, False),
              ("/data", {"emptyDir": {}}, True))
    observed = only(pod({**HARDENED, "readOnlyRootFilesystem": True}, mounts=mounts))
    assert observed.filesystem.writable_mounts == ("/tmp",)
    manifest = pod({**HARDENED, "readOnlyRootFilesystem": True}, mounts=mounts)
    report = lint(Inputs((PodTemplate(manifest, "Pod", "p.yaml", (("app", False, 9),)),), ()),
                  LintOptions(runtimes=("containerd",)))
    paths = report.containers[0].predictions[0].observed.paths
    assert {p.path: p.writable for p in paths}["/tmp"] is True


def test_listener_rules_are_unknown_with_the_reason_never_passed() -> None:
    manifest = pod(HARDENED, ports=(8080,))
    report = lint(Inputs((PodTemplate(manifest, "Pod", "p.yaml", (("app", False, 9),)),), ()),
                  LintOptions())
    (container,) = report.containers
    unknown = {v.rule: v for v in container.unknown}
    assert set(unknown) >= LISTENER_RULES
    for rule in LISTENER_RULES:
        assert unknown[rule].outcome is Outcome.UNKNOWN
        assert "known only once it runs" in unknown[rule].missing[0].reason
    assert "RunsAsRoot" not in unknown  # runAsUser 185 settles it


def test_the_command_line_as_kubernetes_composes_it() -> None:
    image = ImageFacts(ref="r", uid=1, gid=1, entrypoint=("/entry",), cmd=("serve", "--x"))

    def line(container: dict[str, Any], given: ImageFacts | None = image) -> tuple[str, ...]:
        manifest = {"spec": {"containers": [{"name": "app", **container}]}}
        return command_line(pod_facts(manifest, "app"), given)

    assert line({}) == ("/entry", "serve", "--x")
    assert line({"args": ["webhook", "start"]}) == ("/entry", "webhook", "start")
    assert line({"command": ["/bin/sh"]}) == ("/bin/sh",)  # a command drops the CMD too
    assert line({"command": ["/bin/sh"], "args": ["-c", "x"]}) == ("/bin/sh", "-c", "x")
    assert line({"args": ["webhook"]}, None) == ()  # the executable is the image's: unknown
