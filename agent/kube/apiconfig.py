"""The kubeconfig files `load_api` hands to the official loader, each read first as a
bounded regular file, so a mistake is one line naming the file (`kubernetes.config` would
name none, or read a FIFO forever)."""

from __future__ import annotations

import os
from typing import Any

from agent.userfile import InputFileError, load_user_yaml, read_user_file

# A kubeconfig with inline certificates for many clusters is still far below this.
KUBECONFIG_LIMIT = 16 << 20
# A PEM certificate chain or key, or a token: a few kB. The loader hands these paths to
# ssl, which would read a FIFO or /dev/zero at the first connection.
CREDENTIAL_FILE_LIMIT = 1 << 20
# (section, entry key, file field, its inline field, what it is): the inline one wins, as
# in the official loader's FileOrData, and the file is then never read.
CREDENTIAL_FIELDS = (
    ("clusters", "cluster", "certificate-authority", "certificate-authority-data",
     "certificate authority"),
    ("users", "user", "client-certificate", "client-certificate-data", "client certificate"),
    ("users", "user", "client-key", "client-key-data", "client key"),
    ("users", "user", "tokenFile", "token", "token file"),
)


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


def read_kubeconfigs(paths: list[str]) -> None:
    """Each kubeconfig of `paths`, and each certificate, key and token file that the
    current context uses, read as bounded regular files; InputFileError otherwise."""
    docs = [(path, read_kubeconfig(path)) for path in paths]
    for what, path in credential_files(docs):
        read_user_file(path, what, CREDENTIAL_FILE_LIMIT)


def credential_files(docs: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    """(what, path) of the files the current context's cluster and user name, merged as
    kubectl merges a path list (the first file to set a name wins). A relative path is
    relative to the kubeconfig that holds the entry, as the official loader resolves it."""
    current = next((d["current-context"] for _, d in docs if d.get("current-context")), None)
    context = _entry(docs, "contexts", current)
    if context is None or not isinstance(context[1].get("context"), dict):
        return []  # the official loader says what is missing, in its own words
    names = {"cluster": context[1]["context"].get("cluster"),
             "user": context[1]["context"].get("user")}
    found: list[tuple[str, str]] = []
    for section, key, field, inline, what in CREDENTIAL_FIELDS:
        entry = _entry(docs, section, names[key])
        body = entry[1].get(key) if entry is not None else None
        if entry is None or not isinstance(body, dict) or body.get(inline):
            continue
        named = body.get(field)
        if isinstance(named, str) and named:
            found.append((what, os.path.join(os.path.dirname(entry[0]), named)))
    return found


def _entry(docs: list[tuple[str, dict[str, Any]]], section: str,
           name: object) -> tuple[str, dict[str, Any]] | None:
    """(kubeconfig path, entry) of the first entry of `section` called `name`."""
    for path, doc in docs:
        for item in doc.get(section) or ():
            if isinstance(item, dict) and item.get("name") == name:
                return path, item
    return None
