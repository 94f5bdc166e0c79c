"""Plain API configuration: no `kubernetes.config` (and its requests/oauthlib) when not needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes.client import Configuration

from agent.kube.apiconfig import (
    incluster_configuration,
    kubeconfig_configuration,
    read_kubeconfig,
)

ROOT = Path(__file__).resolve().parents[2]


def write_kubeconfig(path: Path, user: dict[str, object], cluster: dict[str, object]) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    return path


def test_token_kubeconfig_fills_the_official_configuration(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kc", {"token": "abc"},
                            {"server": "https://192.0.2.1:6443", "certificate-authority": "ca.crt"})
    config = Configuration()
    assert kubeconfig_configuration(config, str(path), read_kubeconfig(str(path)))
    assert config.host == "https://192.0.2.1:6443"
    assert config.ssl_ca_cert == str(tmp_path / "ca.crt")
    assert config.get_api_key_with_prefix("BearerToken", alias="authorization") == "Bearer abc"


@pytest.mark.parametrize("user", [{"exec": {"command": "aws"}}, {"client-key-data": "eA=="},
                                  {"auth-provider": {"name": "oidc"}}])
def test_exec_oidc_and_inline_data_go_to_the_official_loader(tmp_path: Path,
                                                             user: dict[str, object]) -> None:
    path = write_kubeconfig(tmp_path / "kc", user, {"server": "https://192.0.2.1:6443"})
    assert not kubeconfig_configuration(Configuration(), str(path), read_kubeconfig(str(path)))


def test_incluster_reads_the_rotating_token_per_request(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("one\n")
    (tmp_path / "ca.crt").write_text("")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "2001:db8::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    config = Configuration()
    assert incluster_configuration(config, str(tmp_path))
    assert config.host == "https://[2001:db8::1]:443"
    assert config.get_api_key_with_prefix("BearerToken", alias="authorization") == "Bearer one"
    (tmp_path / "token").write_text("two\n")
    assert config.get_api_key_with_prefix("BearerToken", alias="authorization") == "Bearer two"


def test_not_in_a_pod_without_the_service_account(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "192.0.2.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert not incluster_configuration(Configuration(), str(tmp_path))


def test_load_api_with_a_plain_kubeconfig_never_imports_kubernetes_config(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kc", {"token": "t"}, {"server": "http://127.0.0.1:1"})
    code = ("import sys; from agent.kube.client import load_api; api = load_api(sys.argv[1]); "
            "print(api.host, 'kubernetes.config' in sys.modules, 'requests' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, cwd=ROOT, check=True).stdout.split()
    assert out == ["http://127.0.0.1:1", "False", "False"]
