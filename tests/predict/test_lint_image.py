"""`--image REF=oci-archive:PATH` and `--image-user`: the image's user, passwd, owners and
modes (whiteouts honoured, symlinks kept inside the image), the entrypoint's file capability
from the layer's pax header, and what they settle in the predictions."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from cli_run import opaudit
from oci_build import NET_BIND_SERVICE, Entry, Layer, spark_image, vfs_cap, write_archive

from agent.predict import ociarchive
from agent.predict.ociarchive import ImageError, parse_vfs_cap, read_image_facts

REF = "ghcr.io/kubeflow/spark-operator/controller:2.5.2"
WEBHOOK_443 = f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: webhook, namespace: spark-operator}}
spec:
  template:
    spec:
      containers:
      - name: webhook
        image: {REF}
        ports: [{{containerPort: 443}}]
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {{drop: [ALL], add: [NET_BIND_SERVICE]}}
          readOnlyRootFilesystem: true
          runAsNonRoot: true
          seccompProfile: {{type: RuntimeDefault}}
"""


def test_user_passwd_groups_modes_whiteouts_and_symlinks(tmp_path: Path) -> None:
    facts = read_image_facts(REF, str(spark_image(tmp_path / "image.tar")))
    assert (facts.uid, facts.gid) == (185, 185)  # USER spark, resolved through /etc/passwd
    entry = facts.passwd_entry(185)
    assert entry is not None and (entry.name, entry.home) == ("spark", "/nonexistent")
    assert facts.groups_of("spark") == (2000,)
    tmp = facts.file("/tmp")
    assert tmp is not None and tmp.is_dir and tmp.mode == 0o1777
    spark = facts.file("/opt/spark")
    assert spark is not None and (spark.uid, spark.mode) == (185, 0o755)
    assert facts.file("/opt/old") is None  # .wh.old in the upper layer
    assert facts.file("/var/cache/stale") is None  # .wh..wh..opq empties the directory
    assert facts.file("/var/cache/fresh") is not None  # what the opaque layer itself adds
    assert facts.resolve("/etc/escape/passwd") == "/etc/passwd"  # ../../../../ stops at /
    assert facts.executable("spark-operator", {"PATH": "/usr/local/bin"}) == \
        "/usr/bin/spark-operator"
    assert facts.file_caps == {}


def test_the_entrypoint_file_capability_from_the_pax_header(tmp_path: Path) -> None:
    archive = spark_image(tmp_path / "image.tar",
                          entrypoint_caps=vfs_cap(NET_BIND_SERVICE, effective=True))
    facts = read_image_facts(REF, str(archive))
    assert facts.capabilities_of("spark-operator", dict(facts.env)) == (NET_BIND_SERVICE, True)


def _lint(manifest: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    path = tmp_path / "m.yaml"
    path.write_text(manifest)
    done = opaudit("lint", str(path), "-o", "json", *args)
    assert done.returncode in (0, 1), done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def test_the_image_settles_the_file_capability_condition(tmp_path: Path) -> None:
    unsettled = _lint(WEBHOOK_443, tmp_path)["containers"][0]["findings"]
    port = next(f for f in unsettled if f["rule"] == "PrivilegedPortNotBindable")
    assert set(port["conditions"].values()) == {
        "unless the entrypoint has file capabilities (give --image to settle it)"}
    with_caps = spark_image(tmp_path / "caps.tar",
                            entrypoint_caps=vfs_cap(NET_BIND_SERVICE, effective=True))
    settled = _lint(WEBHOOK_443, tmp_path, "--image", f"{REF}=oci-archive:{with_caps}")
    rules = {f["rule"] for f in settled["containers"][0]["findings"]}
    assert "PrivilegedPortNotBindable" not in rules
    assert "CapabilityAddedButIneffective" not in rules
    facts = settled["containers"][0]["predicted"][0]
    assert facts["capabilities"]["effective"] == ["NET_BIND_SERVICE"] and facts["uid"] == 185
    without = spark_image(tmp_path / "plain.tar")
    plain = _lint(WEBHOOK_443, tmp_path, "--image", f"{REF}=oci-archive:{without}")
    port = next(f for f in plain["containers"][0]["findings"]
                if f["rule"] == "PrivilegedPortNotBindable")
    assert port["conditions"] == {} and port["runtimes"] == ["containerd", "cri-o"]


def test_the_image_gives_home_and_uid(tmp_path: Path) -> None:
    manifest = WEBHOOK_443.replace("ports: [{containerPort: 443}]", "ports: []").replace(
        "add: [NET_BIND_SERVICE]", "add: []").replace("name: webhook, ", "name: ctl, ")
    archive = spark_image(tmp_path / "image.tar")
    document = _lint(manifest, tmp_path, "--image", f"{REF}=oci-archive:{archive}")
    (container,) = document["containers"]
    home = next(f for f in container["findings"] if f["rule"] == "HomeDirectoryUnusable")
    assert "/nonexistent does not exist" in home["message"]
    assert container["predicted"][0]["home"] == "/nonexistent"
    assert "RunAsUserMismatch" not in {u["rule"] for u in container["unknown"]}
    by_user = _lint(manifest, tmp_path, "--image-user", f"{REF}=185:185")
    assert by_user["containers"][0]["predicted"][0]["uid"] == 185
    assert "HomeDirectoryUnusable" in {u["rule"] for u in by_user["containers"][0]["unknown"]}


def test_bad_archives_are_one_line(tmp_path: Path) -> None:
    not_tar = tmp_path / "x.tar"
    not_tar.write_bytes(b"not a tar at all" * 100)
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    zstd = write_archive(tmp_path / "z.tar", {}, [b""], gzipped=False)
    raw = zstd.read_bytes()
    zstd.write_bytes(raw.replace(b"v1.tar\"", b"v1.tar+zstd\""))
    cases = {str(not_tar): "not a readable OCI archive", str(empty): "index.json is missing",
             "/dev/null": "not a regular file", str(tmp_path / "gone.tar"): "No such file"}
    for path, problem in cases.items():
        done = opaudit("lint", "--image", f"r=oci-archive:{path}", stdin_text="")
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
        assert problem in done.stderr and f"image r ({path})" in done.stderr


def test_layers_are_read_within_a_byte_budget(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    archive = spark_image(tmp_path / "image.tar")
    monkeypatch.setattr(ociarchive, "LAYER_BYTES_LIMIT", 4096)
    with pytest.raises(ImageError, match="layers larger than"):
        read_image_facts(REF, str(archive))


def test_vfs_cap_revisions() -> None:
    assert parse_vfs_cap(vfs_cap(NET_BIND_SERVICE, True)) == (NET_BIND_SERVICE, True)
    assert parse_vfs_cap(vfs_cap(1 << 40, False)) == (1 << 40, False)
    revision_1 = struct.pack("<III", 0x01000001, NET_BIND_SERVICE, 0)
    assert parse_vfs_cap(revision_1) == (NET_BIND_SERVICE, True)
    assert parse_vfs_cap(b"short") is None


def test_a_real_setcap_through_gnu_tar_xattrs(tmp_path: Path) -> None:
    """The capability set by the real setcap, written to the layer by GNU tar --xattrs (the
    same SCHILY.xattr pax header buildah writes), is read back."""
    for tool in ("setcap", "tar"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    program = root / "usr" / "bin" / "server"
    program.write_bytes(b"\x7fELF")
    program.chmod(0o755)
    if subprocess.run(["setcap", "cap_net_bind_service+ep", str(program)]).returncode != 0:
        pytest.skip("setcap needs CAP_SETFCAP (run as root)")
    layer = tmp_path / "layer.tar"
    subprocess.run(["tar", "--xattrs", "--xattrs-include=security.capability", "--format=pax",
                    "-cf", str(layer), "-C", str(root), "usr"], check=True)
    archive = write_archive(tmp_path / "image.tar", {"User": "101", "Entrypoint": ["server"]},
                            [layer.read_bytes()], gzipped=False)
    facts = read_image_facts("r", str(archive))
    assert facts.uid == 101
    assert facts.capabilities_of("server", {}) == (NET_BIND_SERVICE, True)


def test_hostile_layers_stay_inside_the_image(tmp_path: Path) -> None:
    layer = Layer([
        Entry("/etc", "d", mode=0o755),
        Entry("../../../outside", data=b"x"),  # a path that climbs out: ignored
        Entry("./.wh.gone", data=b""),  # a whiteout at the top, as `tar -C root .` names it
        Entry("/loop/a", "l", target="/loop/b"), Entry("/loop/b", "l", target="/loop/a"),
        Entry("/etc/passwd", "l", target="/../../../../etc/shadow"),
    ])
    facts = read_image_facts("r", str(write_archive(tmp_path / "x.tar", {"User": "7"},
                                                   [layer.tar()])))
    assert facts.uid == 7 and facts.passwd == ()  # a symlinked passwd is not followed out
    assert set(facts.files) == {"/etc"}  # the climbing entry is nowhere
    assert facts.resolve("/loop/a/x") is None  # a loop ends after 40 links
    assert facts.resolve("/etc/passwd") == "/etc/shadow"  # `..` stops at the image's root
