"""API configuration for the common cases without `kubernetes.config`.

`kubernetes.config.kube_config` imports requests, oauthlib and requests_oauthlib at the
top (~5 MiB of the DaemonSet's 50 MB budget) for exec plugins and OIDC that a ServiceAccount
token or a plain kubeconfig never needs. These loaders fill the official client's
`Configuration` for in-cluster ServiceAccounts and for kubeconfigs with a token, token file
or client certificate files; anything else returns None and the official loader takes over.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from agent.collect.userfile import InputFileError, load_user_yaml, read_user_file

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# User fields only the official loader understands (exec plugins, OIDC, basic auth, inline data).
_OFFICIAL_ONLY = ("exec", "auth-provider", "username", "password", "client-certificate-data",
                  "client-key-data")
# A kubeconfig with inline certificates for many clusters is still far below this.
KUBECONFIG_LIMIT = 16 << 20
TOKEN_LIMIT = 1 << 20


def incluster_configuration(configuration: Any, sa_dir: str = SERVICE_ACCOUNT_DIR) -> bool:
    """Fill `configuration` from the pod's ServiceAccount; False when this is not a pod."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get(
        "KUBERNETES_SERVICE_PORT")
    token_file, ca_file = Path(sa_dir, "token"), Path(sa_dir, "ca.crt")
    if not host or not port or not token_file.is_file() or not ca_file.is_file():
        return False
    host = f"[{host}]" if ":" in host else host
    configuration.host = f"https://{host}:{port}"
    configuration.ssl_ca_cert = str(ca_file)
    _use_token_file(configuration, token_file)
    return True


def kubeconfig_files(explicit: str | None) -> list[str]:
    """--kubeconfig, else the files of $KUBECONFIG (a path list), else ~/.kube/config."""
    if explicit is not None:
        return [explicit]
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return listed or [os.path.expanduser("~/.kube/config")]


def read_kubeconfig(path: str) -> dict[str, Any]:
    """The kubeconfig at `path`, read as a bounded regular file; InputFileError otherwise."""
    doc = load_user_yaml(path, "kubeconfig", KUBECONFIG_LIMIT)
    if not isinstance(doc, dict):
        problem = "empty" if doc is None else f"not a kubeconfig (a {type(doc).__name__})"
        raise InputFileError("kubeconfig", path, problem)
    return doc


def kubeconfig_configuration(configuration: Any, path: str, doc: dict[str, Any]) -> bool:
    """Fill `configuration` from a plain kubeconfig; False when it needs the official loader."""
    context = _named(doc, "contexts", doc.get("current-context"), "context")
    if context is None:
        return False
    cluster = _named(doc, "clusters", context.get("cluster"), "cluster")
    user = _named(doc, "users", context.get("user"), "user") or {}
    if cluster is None or not cluster.get("server") or "certificate-authority-data" in cluster \
            or any(key in user for key in _OFFICIAL_ONLY):
        return False
    base = Path(path).resolve().parent
    configuration.host = str(cluster["server"])
    configuration.verify_ssl = not cluster.get("insecure-skip-tls-verify", False)
    if cluster.get("certificate-authority"):
        configuration.ssl_ca_cert = str(base / cluster["certificate-authority"])
    if user.get("client-certificate") and user.get("client-key"):
        configuration.cert_file = str(base / user["client-certificate"])
        configuration.key_file = str(base / user["client-key"])
    if user.get("token"):
        configuration.api_key = {"authorization": f"Bearer {user['token']}"}
    elif user.get("tokenFile"):
        _use_token_file(configuration, base / user["tokenFile"])
    return True


def _named(doc: dict[str, Any], section: str, name: Any, key: str) -> dict[str, Any] | None:
    for item in doc.get(section) or ():
        if isinstance(item, dict) and item.get("name") == name and isinstance(
                item.get(key), dict):
            found: dict[str, Any] = item[key]
            return found
    return None


def _use_token_file(configuration: Any, token_file: Path) -> None:
    # Bound ServiceAccount tokens expire; the kubelet rewrites the file, so read it per request.
    # An unreadable file keeps the last token; the API answers 401 and the caller backs off.
    def refresh(config: Any) -> None:
        with contextlib.suppress(InputFileError):
            token = read_user_file(str(token_file), "token file", TOKEN_LIMIT).strip()
            config.api_key = {"authorization": f"Bearer {token}"}

    configuration.refresh_api_key_hook = refresh
    refresh(configuration)
