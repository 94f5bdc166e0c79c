"""`opaudit lint --image` on archives the real podman writes: `podman build` of an image whose
entrypoint got its file capability from the real setcap, and the lane's own image, each saved
with `podman save --format oci-archive` (the lane's private podman storage)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from e2e.agreement import OPAUDIT
from e2e.image import CERT_DIR, SPARK_UID
from e2e.lane import Lane

from agent.predict.ociarchive import read_image_facts

NET_BIND_SERVICE = 1 << 10
MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: edge, namespace: ingress}}
spec:
  template:
    spec:
      containers:
      - name: edge
        image: {image}
        ports: [{{containerPort: 443}}]
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {{drop: [ALL], add: [NET_BIND_SERVICE]}}
          runAsNonRoot: true
"""


def save(lane: Lane, image: str, path: Path) -> Path:
    lane.podman.cmd("save", "--format", "oci-archive", "-o", str(path), image)
    return path


def test_a_file_capability_set_in_a_podman_build_settles_the_prediction(
        lane: Lane, tmp_path: Path) -> None:
    if shutil.which("setcap") is None:
        pytest.skip("setcap is not installed (scripts/bootstrap installs libcap2-bin)")
    context = tmp_path / "context"
    context.mkdir()
    server = context / "server"
    shutil.copy2("/bin/true", server)
    subprocess.run(["setcap", "cap_net_bind_service+ep", str(server)], check=True)
    (context / "Containerfile").write_text(
        'FROM scratch\nCOPY server /usr/bin/server\nUSER 101:101\nENTRYPOINT ["server"]\n'
        'ENV PATH=/usr/bin\n')
    image = f"localhost/{lane.prefix}-filecaps:1"
    lane.podman.cmd("build", "-q", "-t", image, str(context), timeout=300)
    try:
        archive = save(lane, image, tmp_path / "filecaps.tar")
    finally:
        lane.podman.cmd("rmi", "-f", image, check=False)
    facts = read_image_facts(image, str(archive))
    assert (facts.uid, facts.gid) == (101, 101)
    assert facts.capabilities_of("server", dict(facts.env)) == (NET_BIND_SERVICE, True)
    manifest = tmp_path / "edge.yaml"
    manifest.write_text(MANIFEST.format(image=image))
    done = subprocess.run([str(OPAUDIT), "lint", str(manifest), "-o", "json", "--image",
                           f"{image}=oci-archive:{archive}"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode in (0, 1), done.stderr
    (container,) = json.loads(done.stdout)["containers"]
    rules = {f["rule"] for f in container["findings"]}
    assert "PrivilegedPortNotBindable" not in rules  # uid 101 binds 443 through setcap
    assert "CapabilityAddedButIneffective" not in rules
    assert {p["condition"] for p in container["predicted"]} == {None}
    assert all(p["capabilities"]["effective"] == ["NET_BIND_SERVICE"]
               for p in container["predicted"])


def test_the_lanes_image_as_podman_saves_it(lane: Lane, tmp_path: Path) -> None:
    facts = read_image_facts(lane.podman.image, str(save(lane, lane.podman.image,
                                                         tmp_path / "lane.tar")))
    assert (facts.uid, facts.gid) == (SPARK_UID, SPARK_UID)
    entry = facts.passwd_entry(SPARK_UID)
    assert entry is not None and entry.home == "/nonexistent"
    assert facts.file("/nonexistent") is None
    cert_dir = facts.file(CERT_DIR)
    assert cert_dir is not None and cert_dir.uid == SPARK_UID and cert_dir.is_dir
    tmp = facts.file("/tmp")
    assert tmp is not None and tmp.mode == 0o1777
    assert facts.file_caps == {}
