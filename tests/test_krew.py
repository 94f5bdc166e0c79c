"""daemonset/krew/opaudit.yaml: its sha256 is the archive scripts/krew-archive builds, and
that archive's kubectl-opaudit runs on a bare python3 (no opaudit installed)."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "daemonset" / "krew" / "opaudit.yaml"


def test_the_manifest_names_the_archive_that_scripts_build(tmp_path: Path) -> None:
    archive = tmp_path / "kubectl-opaudit.tar.gz"
    printed = subprocess.run([str(REPO / "scripts" / "krew-archive"), str(archive)],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert printed.strip() == digest
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["kind"] == "Plugin" and manifest["metadata"]["name"] == "opaudit"
    (platform,) = manifest["spec"]["platforms"]
    assert platform["sha256"] == digest, "re-run scripts/krew-archive and update opaudit.yaml"
    version = subprocess.run(["python3", "-c", "import tomllib; print(tomllib.load(open("
                              f"'{REPO / 'pyproject.toml'}', 'rb'))['project']['version'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert manifest["spec"]["version"] == f"v{version}"

    with tarfile.open(archive) as tar:
        assert tar.getnames() == [platform["bin"]]
        tar.extractall(tmp_path / "x", filter="data")
    binary = tmp_path / "x" / platform["bin"]
    # -I: isolated, so nothing installed (no `agent` package) is importable.
    usage = subprocess.run(["python3", "-I", str(binary), "diagnose"], capture_output=True,
                           text=True, timeout=60)
    assert usage.returncode == 2
    assert usage.stderr.strip() == ("kubectl-opaudit: the following arguments are required: "
                                    "POD")
