"""API configuration through the official `kubernetes.config` loaders, each kubeconfig file
read bounded first (agent/kube/apiconfig.py)."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from agent.kube.apiconfig import CREDENTIAL_FILE_LIMIT
from agent.kube.client import load_api
from agent.kube.errors import KubeConfigError


def write_kubeconfig(path: Path, user: dict[str, object] | None,
                     cluster: dict[str, object] | None) -> Path:
    doc: dict[str, object] = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
                              "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}
    if cluster is not None:
        doc["clusters"] = [{"name": "k", "cluster": cluster}]
    if user is not None:
        doc["users"] = [{"name": "u", "user": user}]
    path.write_text(json.dumps(doc))
    return path


def bearer(kubeconfig: str | None) -> tuple[str, str | None, str]:
    api = load_api(kubeconfig)
    try:
        config = api.api_client.configuration
        token = config.get_api_key_with_prefix("BearerToken", alias="authorization")
        return str(config.host), config.ssl_ca_cert, str(token)
    finally:
        api.close()


def test_a_token_kubeconfig_resolves_files_beside_it(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("")
    path = write_kubeconfig(tmp_path / "kc", {"token": "abc"},
                            {"server": "https://192.0.2.1:6443", "certificate-authority": "ca.crt"})
    assert bearer(str(path)) == ("https://192.0.2.1:6443", str(tmp_path / "ca.crt"), "Bearer abc")


def test_an_exec_plugin_gives_the_token(tmp_path: Path) -> None:
    plugin = tmp_path / "credential-plugin"
    plugin.write_text(f"#!{sys.executable}\nimport json\nprint(json.dumps({{"
                      '"apiVersion": "client.authentication.k8s.io/v1beta1", '
                      '"kind": "ExecCredential", "status": {"token": "from-exec"}}))\n')
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                          "command": str(plugin)}}
    path = write_kubeconfig(tmp_path / "kc", exec_user, {"server": "https://192.0.2.1:6443"})
    assert bearer(str(path))[2] == "Bearer from-exec"


def test_kubeconfig_files_are_merged_as_kubectl_does(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    clusters = write_kubeconfig(tmp_path / "clusters", None, {"server": "http://192.0.2.7:8080"})
    users = write_kubeconfig(tmp_path / "users", {"token": "merged"}, None)
    monkeypatch.setenv("KUBECONFIG", f"{clusters}:{tmp_path / 'absent'}:{users}")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert bearer(None) == ("http://192.0.2.7:8080", None, "Bearer merged")


def test_in_a_pod_without_the_service_account_is_one_line(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    if Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists():
        pytest.skip("this machine is a pod with a ServiceAccount")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "192.0.2.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(KubeConfigError) as info:
        load_api()
    message = str(info.value)
    assert message.startswith("cannot load the API config from the in-cluster ServiceAccount")
    assert "\n" not in message


# --- the certificate, key and token files a kubeconfig names: read bounded first ---------


def _refused(kubeconfig: Path) -> str:
    with pytest.raises(KubeConfigError) as info:
        load_api(str(kubeconfig))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("field", "what", "section"), [
    ("certificate-authority", "certificate authority", "cluster"),
    ("client-certificate", "client certificate", "user"),
    ("client-key", "client key", "user"),
])
def test_a_credential_file_that_is_a_fifo_is_one_line(tmp_path: Path, field: str, what: str,
                                                      section: str) -> None:
    """Opened for reading without a writer, a FIFO would block the loader (or ssl at the
    first connection) for ever; relative to the kubeconfig's directory, as the loader has it."""
    os.mkfifo(tmp_path / "pipe")
    cluster: dict[str, object] = {"server": "https://192.0.2.1:6443"}
    user: dict[str, object] = {"token": "abc"}
    (cluster if section == "cluster" else user)[field] = "pipe"
    path = write_kubeconfig(tmp_path / "kc", user, cluster)
    assert _refused(path) == f"{what} {tmp_path / 'pipe'}: not a regular file (a pipe)"


def test_a_device_or_a_huge_certificate_is_refused_at_once(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kc", {"token": "abc"},
                            {"server": "https://192.0.2.1:6443",
                             "certificate-authority": "/dev/zero"})
    assert _refused(path).endswith("/dev/zero: not a regular file (a character device)")
    with open(tmp_path / "ca.crt", "wb") as big:
        big.truncate(CREDENTIAL_FILE_LIMIT + 1)
    write_kubeconfig(path, {"token": "abc"}, {"server": "https://192.0.2.1:6443",
                                              "certificate-authority": "ca.crt"})
    assert _refused(path).endswith(f"ca.crt: larger than {CREDENTIAL_FILE_LIMIT >> 20} MiB")
    # The loader reads a token file whole at once (a FIFO would block it for ever).
    (tmp_path / "token").write_text("from-file")
    write_kubeconfig(path, {"tokenFile": "token"}, {"server": "https://192.0.2.1:6443"})
    assert bearer(str(path))[2] == "Bearer from-file"
    with open(tmp_path / "token", "wb") as big:
        big.truncate(CREDENTIAL_FILE_LIMIT + 1)
    write_kubeconfig(path, {"tokenFile": "token"}, {"server": "https://192.0.2.1:6443"})
    assert _refused(path) == (f"token file {tmp_path / 'token'}: larger than "
                              f"{CREDENTIAL_FILE_LIMIT >> 20} MiB")


def test_only_the_files_the_loader_reads_are_read(tmp_path: Path) -> None:
    """Inline data wins over a file (FileOrData), and another context's files are not the
    current one's: neither is opened, so a FIFO there changes nothing."""
    os.mkfifo(tmp_path / "pipe")
    inline = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    path = write_kubeconfig(tmp_path / "kc", {"token": "abc"},
                            {"server": "https://192.0.2.1:6443", "certificate-authority": "pipe",
                             "certificate-authority-data": inline})
    doc = json.loads(path.read_text())
    doc["contexts"].append({"name": "other", "context": {"cluster": "k2", "user": "u2"}})
    doc["clusters"].append({"name": "k2", "cluster": {"server": "https://192.0.2.2:6443",
                                                      "certificate-authority": "pipe"}})
    doc["users"].append({"name": "u2", "user": {"client-key": "pipe"}})
    path.write_text(json.dumps(doc))
    assert bearer(str(path))[0] == "https://192.0.2.1:6443"
