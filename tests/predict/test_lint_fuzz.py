"""`opaudit lint` on hostile input, fuzzed with Hypothesis: the chart's render and a small
workload mutated (characters inserted, deleted, duplicated; values swapped for other types),
and random text. Reading, predicting and every output either work or raise the one-line
ValueError the command prints (exit 2); nothing else escapes."""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from agent.output.helmvalues import render_helm_values
from agent.output.lintoutput import render_lint_document, render_lint_table
from agent.output.sarif import render_sarif
from agent.predict.lint import LintOptions, lint
from agent.predict.manifests import parse_manifests

WORKLOAD = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {app.kubernetes.io/name: spark-operator,
  app.kubernetes.io/component: webhook}}
spec:
  template:
    metadata: {labels: {app.kubernetes.io/name: spark-operator,
      app.kubernetes.io/component: webhook}}
    spec:
      hostNetwork: false
      securityContext: {runAsUser: 185, fsGroup: 185, supplementalGroups: [1, 2],
        sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "80"}]}
      initContainers: [{name: init, image: busybox, command: [sh, -c, "true"]}]
      containers:
      - name: web
        image: example/web:1
        command: [/server]
        args: [--port=443]
        env: [{name: HOME, value: /tmp}, {name: TMPDIR, value: /scratch}]
        ports: [{containerPort: 443, name: https}, {containerPort: 53, protocol: UDP}]
        readinessProbe: {httpGet: {port: https}}
        livenessProbe: {tcpSocket: {port: 8080}}
        volumeMounts: [{name: tmp, mountPath: /tmp}, {name: cfg, mountPath: /etc/cfg}]
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL], add: [NET_BIND_SERVICE, CAP_KILL]}
          readOnlyRootFilesystem: true
          seccompProfile: {type: RuntimeDefault}
      volumes: [{name: tmp, emptyDir: {}}, {name: cfg, configMap: {name: c}}]
"""
ODD_VALUES = [None, 0, -1, 2**70, "", "x", [], {}, [None], {"a": []}, True, 1.5, "ALL"]


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    text = WORKLOAD
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "duplicate"]))
        if action == "insert":
            text = text[:at] + draw(st.text(max_size=4)) + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)):]
        else:
            text = text[:at] + text[at:at + 12] + text[at:]
    return text


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def retyped_text(draw: st.DrawFn) -> str:
    """The workload with one value anywhere replaced by a value of another type."""
    document = yaml.safe_load(WORKLOAD)
    path = draw(st.sampled_from(_paths(document)[1:]))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = draw(st.sampled_from(ODD_VALUES))
    return json.dumps(document) if draw(st.booleans()) else yaml.safe_dump(document)


def lint_everything(text: str) -> None:
    try:
        report = lint(parse_manifests(text, "fuzz.yaml"), LintOptions())
        render_lint_table(report)
        render_lint_document(report, "json")
        render_lint_document(report, "yaml")
        render_sarif(report, [], "0")
        render_helm_values(report)
    except ValueError as exc:  # what `opaudit lint` prints as one line, exit 2
        assert str(exc) and "\n" not in str(exc)


@given(st.one_of(mutated_text(), retyped_text(), st.text(max_size=200)))
def test_lint_never_raises_anything_but_its_one_line_error(text: str) -> None:
    lint_everything(text)


def test_the_cases_the_fuzz_found() -> None:
    """Each once crashed: a volume named by a list (the pod-spec reader's lookup), and
    supplementalGroups / command of the wrong type (the predictor)."""
    document = yaml.safe_load(WORKLOAD)
    spec = document["spec"]["template"]["spec"]
    spec["volumes"][1]["name"] = []
    spec["securityContext"]["supplementalGroups"] = -1
    spec["containers"][0]["command"] = -1
    report = lint(parse_manifests(yaml.safe_dump(document), "found.yaml"), LintOptions())
    assert [c.declared.container_name for c in report.containers] == ["init", "web"]
