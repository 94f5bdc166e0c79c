"""`podman kube play` of every chart pod fixture and of the seed's cases, audited with
`opaudit diagnose --pid --pod-spec <the original manifest>`, every fact checked by the oracle.

podman's semantics are not Kubernetes': an added capability lands in the ambient set of a
non-root process; an emptyDir is a named volume that takes the image directory's owner and
mode (or the container user's, 0755, where the image has none), whatever fsGroup says;
runAsNonRoot is not enforced; pod sysctls are not applied. Each expected set below is
justified by the oracle facts asserted before it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e.agreement import (
    HOME_INFO,
    HOME_LOW,
    HOME_MEDIUM,
    Audited,
    assert_verdicts,
    audit_and_check,
    load_fixture,
    variant,
    webhook_on_443,
    write_manifest,
)
from e2e.image import CERT_DIR
from e2e.lane import Lane


def play_and_audit(lane: Lane, manifest: dict[str, Any], tmp_path: Path, name: str) -> Audited:
    played = lane.podman.play(manifest)
    try:
        return audit_and_check(played.pid, write_manifest(manifest, tmp_path, name))
    finally:
        lane.podman.remove(played)


def test_default_controller(lane: Lane, tmp_path: Path) -> None:
    manifest = load_fixture("spark-operator-controller.yaml")
    audited = play_and_audit(lane, manifest, tmp_path, "controller")
    # /tmp: the volume took the image's /tmp (1777); HOME /nonexistent does not exist.
    assert_verdicts(audited.verdicts, {"/tmp": True, "/nonexistent": False})
    assert audited.findings == [HOME_MEDIUM]


def test_default_webhook(lane: Lane, tmp_path: Path) -> None:
    manifest = load_fixture("spark-operator-webhook.yaml")
    audited = play_and_audit(lane, manifest, tmp_path, "webhook")
    # The volume took the image's cert dir, owned by 185.
    assert_verdicts(audited.verdicts, {CERT_DIR: True, "/nonexistent": False})
    assert audited.findings == [HOME_INFO]


def test_hardened_controller(lane: Lane, tmp_path: Path) -> None:
    manifest = load_fixture("spark-operator-controller-hardened.yaml")
    audited = play_and_audit(lane, manifest, tmp_path, "controller-hardened")
    # Ivy is pointed at /tmp/ivy2, which uid 185 can create: HOME no longer breaks
    # `spark-submit --packages`, so the unusable HOME is low.
    assert_verdicts(audited.verdicts, {"/tmp": True, "/tmp/ivy2": True, "/nonexistent": False})
    assert audited.findings == [HOME_LOW]


def test_hardened_webhook(lane: Lane, tmp_path: Path) -> None:
    manifest = load_fixture("spark-operator-webhook-hardened.yaml")
    audited = play_and_audit(lane, manifest, tmp_path, "webhook-hardened")
    assert_verdicts(audited.verdicts, {CERT_DIR: True, "/tmp": True, "/nonexistent": False})
    assert audited.findings == [HOME_INFO]


def test_netbind_controller_gets_an_ambient_capability(lane: Lane, tmp_path: Path) -> None:
    manifest = load_fixture("spark-operator-controller-netbind.yaml")
    audited = play_and_audit(lane, manifest, tmp_path, "netbind")
    # podman, unlike the CRI, raises an added capability into ambient for a non-root user:
    # it is effective, so CapabilityAddedButIneffective does not fire; still no port < 1024.
    assert audited.caps["ambient"] == audited.caps["effective"] == ["NET_BIND_SERVICE"]
    assert audited.ports == {8080, 8081}
    assert_verdicts(audited.verdicts, {"/tmp": True, "/nonexistent": False})
    assert audited.findings == sorted([HOME_MEDIUM, ("NetBindServiceUnneeded", "medium")])


def test_webhook_on_443_with_the_capability_binds_through_ambient(
    lane: Lane, tmp_path: Path
) -> None:
    audited = play_and_audit(lane, webhook_on_443(with_capability=True), tmp_path, "443")
    # Only podman's ambient set makes this work: 443 < ip_unprivileged_port_start (1024).
    # Under the CRI the same pod crash-loops (test_privileged_port.py).
    assert audited.caps["effective"] == ["NET_BIND_SERVICE"]
    assert audited.ports == {443, 8080, 8081}
    assert_verdicts(audited.verdicts, {CERT_DIR: True, "/nonexistent": False})
    assert audited.findings == [HOME_INFO]


def test_podman_does_not_enforce_run_as_non_root(lane: Lane, tmp_path: Path) -> None:
    def as_root(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0

    # runAsNonRoot: true with runAsUser: 0 is refused by the kubelet; podman starts it.
    manifest = variant(load_fixture("spark-operator-controller.yaml"), as_root)
    played = lane.podman.play(manifest)
    try:
        with open(f"/proc/{played.pid}/status") as status:
            uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
        audited = audit_and_check(played.pid, write_manifest(manifest, tmp_path, "root"))
    finally:
        lane.podman.remove(played)
    assert uids == ["0", "0", "0", "0"]
    # HOME /root is not in the image; root without capabilities writes the 1777 /tmp.
    assert_verdicts(audited.verdicts, {"/tmp": True, "/root": False})
    assert audited.findings == sorted([("RunsAsRoot", "high"), HOME_MEDIUM])
