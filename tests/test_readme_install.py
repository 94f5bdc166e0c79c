"""The README's install blocks, run as written where this machine can: the `helm install`
line (as `helm template`, same flags) and the Kustomize overlay block (as `kubectl kustomize`).
Not run: `podman push` (no registry) and `kubectl create/label namespace` (the API test
server serves no namespaces)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from manifests import K8S_VERSION, by_kind, documents, need

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
DIGEST = "sha256:" + "ab" * 32
IMAGE = "registry.example/opaudit:0.1.0"


def block_after(heading: str) -> str:
    match = re.search(rf"^{re.escape(heading)}\n.*?```sh\n(.*?)```", README, flags=re.S | re.M)
    assert match is not None, heading
    return match.group(1)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A directory laid out as the repository root, with the digest `podman push` wrote."""
    (tmp_path / "daemonset").symlink_to(REPO / "daemonset")
    (tmp_path / "opaudit.digest").write_text(DIGEST)
    return tmp_path


def run_block(script: str, cwd: Path) -> str:
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_push_block_pushes_the_tag_the_install_blocks_use() -> None:
    push = block_after("## Deployment")
    assert f'podman tag "$(scripts/image)" {IMAGE}' in push
    assert f"podman push --digestfile opaudit.digest {IMAGE}" in push


def test_the_helm_block_renders_the_pushed_image_by_digest(checkout: Path) -> None:
    import kubernetes_validate

    need("helm")
    block = block_after("### Helm").replace("\\\n", " ")
    (install,) = [line for line in block.splitlines() if line.startswith("helm install")]
    rendered = documents(run_block(install.replace("helm install", "helm template", 1),
                                   checkout))
    (container,) = by_kind(rendered, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{IMAGE}@{DIGEST}"
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_kustomize_block_renders_the_pushed_image(checkout: Path) -> None:
    need("kubectl")
    block = block_after("### Kustomize")
    assert "kubectl apply -k opaudit-overlay/" in block
    rendered = documents(run_block(
        block.replace("kubectl apply -k", "kubectl kustomize"), checkout))
    (container,) = by_kind(rendered, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    assert {d["kind"] for d in rendered} >= {"Namespace", "DaemonSet", "NetworkPolicy"}
