"""`opaudit lint` inputs: files, directories, stdin, multi-document streams, List kinds, the
pod template of every workload kind (init containers included), other kinds counted and
skipped, the line of each container; bad input is one line and exit 2."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_run import ROOT, opaudit

from agent.predict.manifests import FILE_LIMIT, ManifestError, read_inputs
from agent.predict.yamldoc import MAX_DEPTH

CONTAINER = """\
      containers:
      - name: app
        image: example/app:1
        securityContext:
          runAsUser: 1000
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
          readOnlyRootFilesystem: true
          seccompProfile: {type: RuntimeDefault}
"""


def workload(kind: str, name: str) -> str:
    """A manifest of `kind` whose pod template holds CONTAINER, as helm prints it."""
    head = f"apiVersion: v1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: ns1\n"
    if kind == "Pod":
        return head + "spec:\n" + _dedent(CONTAINER, 4)
    if kind == "CronJob":
        return (head + "spec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n"
                "      template:\n        spec:\n" + _indent(CONTAINER, 4))
    return head + "spec:\n  template:\n    spec:\n" + CONTAINER


def _dedent(text: str, by: int) -> str:
    return "".join(line[by:] + "\n" for line in text.splitlines())


def _indent(text: str, by: int) -> str:
    return "".join(" " * by + line + "\n" for line in text.splitlines())


KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet",
         "ReplicationController", "Job", "CronJob")


def lint_json(*args: str, stdin_text: str | None = None) -> dict[str, Any]:
    done = opaudit("lint", *args, "-o", "json", stdin_text=stdin_text)
    assert done.returncode in (0, 1), done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def test_every_workload_kind_is_read_from_one_multi_document_stream(tmp_path: Path) -> None:
    text = "---\n".join(workload(kind, kind.lower()) for kind in KINDS)
    text += "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc}\n---\n# only a comment\n"
    path = tmp_path / "all.yaml"
    path.write_text(text)
    document = lint_json(str(path))
    seen = [(c["kind"], c["name"], c["container"]) for c in document["containers"]]
    assert seen == [(kind, kind.lower(), "app") for kind in KINDS]
    assert document["objects"] == len(KINDS)
    assert document["skipped"] == {"Service": 1}
    lines = text.splitlines()
    for container in document["containers"]:  # the line is the container's `- name: app`
        assert lines[container["line"] - 1].strip() == "- name: app"
        assert container["file"] == str(path)


def test_init_containers_are_linted_and_said_to_be_init(tmp_path: Path) -> None:
    text = workload("Deployment", "web").replace(
        "      containers:\n",
        "      initContainers:\n      - name: setup\n        image: example/setup:1\n"
        "        securityContext: {privileged: true}\n      containers:\n")
    (tmp_path / "web.yaml").write_text(text)
    document = lint_json(str(tmp_path / "web.yaml"))
    setup, app = document["containers"]
    assert (setup["container"], setup["init"], app["container"], app["init"]) == (
        "setup", True, "app", False)
    assert "PrivilegedContainer" in {f["rule"] for f in setup["findings"]}
    assert "PrivilegedContainer" not in {f["rule"] for f in app["findings"]}


def test_list_kinds_directories_and_stdin(tmp_path: Path) -> None:
    items = [{"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": f"d{i}", "namespace": "ns1"},
              "spec": {"template": {"spec": {"containers": [{"name": "app"}]}}}}
             for i in range(3)]
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "list.json").write_text(listing)
    (tmp_path / "a.yml").write_text(workload("Job", "job"))
    (tmp_path / "notes.txt").write_text("not a manifest: ignored in a directory")
    document = lint_json(str(tmp_path))
    assert [c["name"] for c in document["containers"]] == ["job", "d0", "d1", "d2"]
    piped = lint_json("-", stdin_text=listing)
    assert [(c["name"], c["file"]) for c in piped["containers"]] == [
        ("d0", "stdin"), ("d1", "stdin"), ("d2", "stdin")]


def test_no_argument_reads_stdin() -> None:
    done = opaudit("lint", "-o", "json", stdin_text=workload("Pod", "p"))
    assert done.returncode in (0, 1), done.stderr
    assert [c["name"] for c in json.loads(done.stdout)["containers"]] == ["p"]


def _one_line_exit_2(*args: str, stdin_text: str | None = None) -> str:
    done = opaudit("lint", *args, stdin_text=stdin_text)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    return done.stderr


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    assert "not a regular file (a character device)" in _one_line_exit_2("/dev/null")
    assert "No such file or directory" in _one_line_exit_2(str(tmp_path / "missing.yaml"))
    big = tmp_path / "big.yaml"
    with big.open("wb") as out:
        out.truncate(FILE_LIMIT + 1)
    assert "larger than 32 MiB" in _one_line_exit_2(str(big))
    bad = tmp_path / "bad.yaml"
    bad.write_text(workload("Pod", "p") + "---\nkind: Pod\nmetadata: {name: [unclosed\n")
    line = len(workload("Pod", "p").splitlines()) + 4
    assert f"manifest {bad}:{line}: not valid YAML" in _one_line_exit_2(str(bad))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    assert "a document is a str, not a Kubernetes object" in _one_line_exit_2(str(scalar))
    empty = tmp_path / "empty.yaml"
    empty.write_text("kind: Deployment\nmetadata: {name: e}\nspec: {template: {spec: {}}}\n")
    assert "Deployment 'e' has no containers" in _one_line_exit_2(str(empty))
    assert "stdin (-) can be read only once" in _one_line_exit_2("-", "-")


def test_nesting_beyond_the_limit_is_refused_without_a_crash(tmp_path: Path) -> None:
    # libyaml's own composer recurses in C and dies with SIGSEGV on this input.
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    assert f"{deep}:1: nested deeper than {MAX_DEPTH} levels" in _one_line_exit_2(str(deep))


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file (a pipe)" in _one_line_exit_2(str(fifo))


def test_aliases_and_typed_scalars_read_as_safe_load_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "alias.yaml"
    path.write_text("kind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: &sc\n"
                    "    runAsUser: 0x3e8\n  containers:\n  - name: app\n"
                    "    securityContext: *sc\n")
    (template,) = read_inputs([str(path)]).templates
    assert template.pod["spec"]["containers"][0]["securityContext"] == {"runAsUser": 1000}
    with pytest.raises(ManifestError, match="unknown alias"):
        path.write_text("kind: Pod\nspec: *nowhere\n")
        read_inputs([str(path)])


def test_no_input_on_a_terminal_is_a_usage_error_not_a_wait() -> None:
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "agent.cli", "lint"], stdin=terminal,
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
    finally:
        os.close(controller)
        os.close(terminal)
    assert done.returncode == 2
    assert done.stderr == "opaudit: lint needs FILE, DIR or - (stdin is a terminal)\n"
