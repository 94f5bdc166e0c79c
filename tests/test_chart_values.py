"""Chart values that used to render something other than what was asked: monitors without
metrics or both at once, an agent left on the namespace's `default` ServiceAccount, a
selector `opaudit run -l` takes but the schema refused; and NOTES.txt's install advice."""

from __future__ import annotations

import json
import random
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cli_run import ROOT, opaudit
from kube.apiserver import ApiServer
from kube.selector_match import label_matcher
from manifests import CHART_DIR, NAMESPACE, RELEASE, by_kind, documents, helm

README = ROOT / "README.md"


def render(tmp_path: Path, values: dict[str, Any], *args: str) -> tuple[bool, str]:
    """helm template with `values` as a file (JSON: `--set` would split a selector's
    commas); (True, the manifests) or (False, helm's error)."""
    path = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(values))
    result = helm("template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE,
                  "--values", str(path), *args)
    return result.returncode == 0, result.stdout if result.returncode == 0 else result.stderr


def kinds(manifests: str) -> list[str]:
    return sorted(d["kind"] for d in documents(manifests))


# --- monitors ----------------------------------------------------------------------------


@pytest.mark.parametrize("monitor", ["podMonitor", "serviceMonitor"])
def test_a_monitor_without_metrics_is_refused(tmp_path: Path, monitor: str) -> None:
    ok, error = render(tmp_path, {"metrics": {"enabled": False}, monitor: {"enabled": True}})
    assert not ok and f"at '/{monitor}/enabled': value must be false" in error, error
    # With metrics, it renders what was asked (and, for a ServiceMonitor, its Service).
    ok, manifests = render(tmp_path, {monitor: {"enabled": True}})
    assert ok, manifests
    wanted = {"podMonitor": ["PodMonitor"], "serviceMonitor": ["Service", "ServiceMonitor"]}
    assert set(wanted[monitor]) <= set(kinds(manifests))


def test_pod_and_service_monitors_together_are_refused(tmp_path: Path) -> None:
    """Both would scrape every agent twice: each series doubled, every rate() too."""
    ok, error = render(tmp_path, {"podMonitor": {"enabled": True},
                                  "serviceMonitor": {"enabled": True}})
    assert not ok and "at '/serviceMonitor/enabled': value must be false" in error, error


# --- service account ---------------------------------------------------------------------


def test_an_existing_service_account_must_be_named(tmp_path: Path) -> None:
    for account in ({"create": False}, {"create": False, "name": ""}):  # name defaults to ""
        ok, error = render(tmp_path, {"serviceAccount": account})
        assert not ok and "at '/serviceAccount/name': minLength: got 0" in error, error
    ok, manifests = render(tmp_path, {"serviceAccount": {"create": False, "name": "audit"}})
    assert ok, manifests
    rendered = documents(manifests)
    assert "ServiceAccount" not in kinds(manifests)
    pod = by_kind(rendered, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "audit"
    assert by_kind(rendered, "ClusterRoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": "audit", "namespace": NAMESPACE}]


# --- selector ----------------------------------------------------------------------------

# Each selector with kube-apiserver's verdict (k8s.io/apimachinery's labels.Parse).
SELECTORS = {
    "": True,
    "app.kubernetes.io/name=spark-operator": True,
    "app in (a,b)": True,
    "app in (a, b), tier notin (db)": True,
    "environment in (production, qa),tier notin (frontend,backend),partition": True,
    "!canary": True,
    "! canary,app": True,
    "app==web,tier!=db": True,
    "app=": True,
    "  app = web  ": True,
    "x in (foo,,baz),y,z notin ()": True,
    "app in (,)": True,
    "release>5,release<10": True,
    "example.com/team in (payments)": True,
    "in in (in)": True,
    "a" * 63 + "=" + "b" * 63: True,
    "app in (a,b": False,
    "app in ()x": False,
    "app in (a b)": False,
    "app in (a,,)": False,
    "app=web,": False,
    ",app=web": False,
    "app=web tier=db": False,
    "!app=web": False,
    "app=-web": False,
    "app=a/b": False,
    "app===web": False,
    "a! =b": False,
    "release>x": False,
    "release>": False,
    "-app=web": False,
    "Example.com/team=x": False,
    "a/b/c=d": False,
    "a" * 64 + "=b": False,
    "app=" + "b" * 64: False,
}


def run_once(kubeconfig: str, selector: str) -> subprocess.CompletedProcess[str]:
    return opaudit("run", "--once", "--node", "worker-1", "-l", selector,
                   "--kubeconfig", kubeconfig, timeout=180)


def test_the_schema_takes_the_selectors_that_opaudit_run_takes(tmp_path: Path,
                                                               server: ApiServer) -> None:
    """Each selector goes to helm (the schema's verdict) and, as the chart renders it without
    the schema, to `opaudit run --once -l` against the test API server, whose selector
    parser is a port of kube-apiserver's: the two verdicts must agree, and be the expected."""
    verdicts: dict[str, bool] = {}
    for selector, expected in SELECTORS.items():
        ok, error = render(tmp_path, {"selector": selector})
        verdicts[selector] = ok
        assert ok == expected, (selector, error)
        ok, manifests = render(tmp_path, {"selector": selector}, "--skip-schema-validation")
        assert ok, manifests
        container = by_kind(documents(manifests), "DaemonSet")["spec"]["template"]["spec"][
            "containers"][0]
        if selector:
            assert container["args"][container["args"].index("-l") + 1] == selector
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = dict(zip(SELECTORS, pool.map(lambda s: run_once(kubeconfig, s), SELECTORS),
                        strict=True))
    for selector, result in runs.items():
        # The API server's 400, or (a selector starting with "-") the agent's own parser.
        refused = re.search(r"400 BadRequest|argument -l/--selector", result.stderr) is not None
        assert refused == (not SELECTORS[selector]), (selector, result.stderr[-600:])
        if not refused:
            assert result.returncode == 0, (selector, result.stderr[-600:])
    assert verdicts == SELECTORS


def test_the_selector_pattern_and_the_api_servers_parser_agree_on_random_selectors() -> None:
    """20,000 selectors made of the grammar's tokens, judged by the schema's pattern (it uses
    only what RE2 and Python's re read alike: classes, groups, bounded repeats) and by the
    test API server's port of apimachinery; helm itself judges the list above."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    pattern = re.compile(schema["definitions"]["labelSelector"]["pattern"])
    tokens = ["a", "app", "in", "notin", "(", ")", ",", "=", "==", "!=", "!", ">", "<", " ",
              "\t", "\n", "5", "-", "_", ".", "x.y/z", "/", "A", "0", "\f", "\u00e9"]
    chance = random.Random(0)
    accepted = 0
    for _ in range(20_000):
        selector = "".join(chance.choice(tokens) for _ in range(chance.randint(0, 9)))
        try:
            label_matcher(selector)
            parsed = True
        except ValueError:
            parsed = False
        accepted += parsed
        assert (pattern.fullmatch(selector) is not None) == parsed, selector
    assert 2_000 < accepted < 18_000  # both verdicts are exercised


# --- NOTES.txt ---------------------------------------------------------------------------


def notes(*settings: str) -> str:
    result = helm("install", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE,
                  "--dry-run=client", *settings)
    assert result.returncode == 0, result.stderr
    return result.stdout[result.stdout.index("NOTES:"):]


def test_notes_install_the_plugin_as_the_readme_does() -> None:
    """Never `pip install opaudit`: that PyPI name is not ours (anyone may publish it)."""
    text = notes()
    readme = README.read_text()
    assert "pip install opaudit" not in text and "pip install opaudit" not in readme
    for method in ("`pip install .`", "daemonset/krew/README.md"):
        assert method in readme, method  # how the README installs `kubectl opaudit`
        assert method in text, method
    assert "keep" not in text
    kept = notes("--set", "reports.enabled=true", "--set", "reports.installCRDs=true")
    assert "reports.openreports.io CRD is kept by `helm uninstall`" in kept
