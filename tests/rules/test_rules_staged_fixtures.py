"""Every chart pod fixture staged as a Kubernetes runtime starts it, and its exact finding set.

As containerd + runc start the chart 2.5.2 pods (tests/fixtures/pods/README.md): uid/gid 185
from the image (passwd home /nonexistent, HOME set from it), no_new_privs, a seccomp filter,
a read-only root, each emptyDir writable (the kubelet makes it 0777, group 185 setgid; a
tmpfs here), the bounding set empty or NET_BIND_SERVICE alone, Go's dual-stack listeners.
The oracle for the paths behind each finding: a real write as uid 185 in the process's root.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest
from rules.rule_snapshots import CERTS, declared
from rules.rule_staging import can_write_as
from staging import Sock, Stage

from agent.audit import AuditRequest, audit

PASSWD = "spark:x:185:185:spark:/nonexistent:/bin/sh\n"
CONTROLLER_SOCKETS = (Sock("tcp", 6, "::", 8080, v6only=0), Sock("tcp", 6, "::", 8081, v6only=0))
WEBHOOK_SOCKETS = (Sock("tcp", 6, "::", 9443, v6only=0), *CONTROLLER_SOCKETS)
IVY = "-Divy.cache.dir=/tmp/ivy2/cache -Divy.home=/tmp/ivy2"


@dataclasses.dataclass(frozen=True)
class Fixture:
    file: str
    tmpfs: tuple[str, ...]
    sockets: tuple[Sock, ...]
    expected: frozenset[tuple[str, str]]  # (rule, severity), info included
    bounding: tuple[str, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)


HOME_MEDIUM = ("HomeDirectoryUnusable", "medium")
HOME_INFO = ("HomeDirectoryUnusable", "info")
FIXTURES = (
    # /nonexistent cannot be created on the read-only root: Ivy's ~/.ivy2 fails (#2208).
    Fixture("spark-operator-controller.yaml", ("/tmp",), CONTROLLER_SOCKETS,
            frozenset({HOME_MEDIUM})),
    # The webhook writes only its cert dir (writable): no /tmp, HOME is only a note.
    Fixture("spark-operator-webhook.yaml", (CERTS,), WEBHOOK_SOCKETS, frozenset({HOME_INFO})),
    # The #1132 workaround points Ivy at /tmp/ivy2: the home is still unusable, but low.
    Fixture("spark-operator-controller-hardened.yaml", ("/tmp",), CONTROLLER_SOCKETS,
            frozenset({("HomeDirectoryUnusable", "low")}), env={"SPARK_SUBMIT_OPTS": IVY}),
    Fixture("spark-operator-webhook-hardened.yaml", ("/tmp", CERTS), WEBHOOK_SOCKETS,
            frozenset({HOME_INFO})),
    # The CRI puts the added capability in the bounding set only; no port is below 1024.
    Fixture("spark-operator-controller-netbind.yaml", ("/tmp",), CONTROLLER_SOCKETS,
            frozenset({HOME_MEDIUM, ("NetBindServiceUnneeded", "medium"),
                       ("CapabilityAddedButIneffective", "low")}),
            bounding=("NET_BIND_SERVICE",)),
)


def spawn(stage: Stage, fixture: Fixture) -> int:
    root = stage.rootfs({"etc/passwd": PASSWD, f"{CERTS.lstrip('/')}/.keep": ""})
    options: dict[str, Any] = {
        "uid": 185, "gid": 185, "groups": [185], "bounding": list(fixture.bounding),
        "no_new_privs": True, "seccomp": True, "readonly_root": True, "tmpfs": fixture.tmpfs,
        "root": root, "comm": "spark-operator",
        "env": {"HOME": "/nonexistent", **fixture.env}}
    return stage.spawn(fixture.sockets, netns=stage.netns(), **options).pid


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.file.removesuffix(".yaml") for f in FIXTURES])
def test_chart_fixture_exact_findings(stage: Stage, fixture: Fixture) -> None:
    pid = spawn(stage, fixture)
    decl = declared(fixture.file, pod_ips=("192.0.2.10", "2001:db8::10"))
    [target] = audit([AuditRequest(pid, decl)]).targets
    found = {(f.rule, f.severity.value) for f in target.findings}
    assert found == fixture.expected, [f.message for f in target.findings]
    # Oracle: HOME cannot be created as uid 185; every path the profile needs can be written.
    assert not can_write_as(pid, 185, "/nonexistent") and not can_write_as(pid, 185, "/")
    for path in fixture.tmpfs:
        assert can_write_as(pid, 185, path)
