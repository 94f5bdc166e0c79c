"""`opaudit lint` on the real Spark Operator chart (tests/fixtures/charts/spark-operator-2.5.2,
as released), rendered by the real helm with the values users set: the exact findings under
each runtime, the line of each container, and the closed loop (lint -> -o helm-values ->
helm template -f overlay -> lint: the findings are gone).

The README's "lint on the Spark Operator chart" table is this test's EXPECTED, checked below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_run import ROOT
from fixture_data import FIXTURES
from manifests import need

CHART = FIXTURES / "charts" / "spark-operator-2.5.2"
IMAGE = "ghcr.io/kubeflow/spark-operator/controller:2.5.2"
ALL = ("containerd", "containerd-2", "cri-o")
CTRL, HOOK = "spark-operator-controller", "spark-operator-webhook"
IF_ROOT = "if the image's USER is root (give --image or --image-user to settle it)"
NO_FILE_CAPS = "unless the entrypoint has file capabilities (give --image to settle it)"
SYSCTL_443 = {"webhook": {"port": 443, "podSecurityContext": {"fsGroup": 185, "sysctls": [
    {"name": "net.ipv4.ip_unprivileged_port_start", "value": "443"}]}}}

# values -> {(container, rule): (severity, runtimes, condition or None)}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "controller.securityContext.capabilities.add[0]=NET_BIND_SERVICE": {"controller": {
        "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}},
    "webhook.port=443": {"webhook": {"port": 443}},
    "webhook.port=443 + sysctl": SYSCTL_443,
    "controller.securityContext=null": {"controller": {"securityContext": None}},
}
EXPECTED: dict[str, dict[tuple[str, str], tuple[str, tuple[str, ...], str | None]]] = {
    "defaults": {},
    "controller.securityContext.capabilities.add[0]=NET_BIND_SERVICE": {
        (CTRL, "NetBindServiceUnneeded"): ("medium", ALL, None),
        (CTRL, "CapabilityAddedButIneffective"): ("low", ALL, NO_FILE_CAPS),
    },
    "webhook.port=443": {
        (HOOK, "PrivilegedPortNotBindable"): ("high", ("containerd", "cri-o"), None),
    },
    "webhook.port=443 + sysctl": {},
    "controller.securityContext=null": {
        (CTRL, "RunsAsRoot"): ("high", ALL, IF_ROOT),
        (CTRL, "RunAsUserMismatch"): ("high", ALL, IF_ROOT),
        (CTRL, "PrivilegeEscalationAllowed"): ("high", ALL, None),
        (CTRL, "CapabilitiesNotDropped"): ("high", ALL, None),
        (CTRL, "SeccompUnconfined"): ("high", ALL, None),
        (CTRL, "NetBindServiceUnneeded"): ("medium", ALL, None),
        (CTRL, "RootFilesystemWritable"): ("medium", ALL, None),
    },
}


SYSCTLS = "webhook.podSecurityContext.sysctls[0]"
SYSCTL_SET = ("--set", "webhook.port=443",
              "--set", f"{SYSCTLS}.name=net.ipv4.ip_unprivileged_port_start",
              "--set-string", f"{SYSCTLS}.value=443")


def set_flags(name: str) -> tuple[str, ...]:
    """The value set as users type it: `--set` flags (the name is the flag for all but one)."""
    if name == "defaults":
        return ()
    if name == "webhook.port=443 + sysctl":
        return SYSCTL_SET
    return ("--set", name)


def render(tmp_path: Path, *value_files: Path, flags: tuple[str, ...] = ()) -> Path:
    args = [a for f in value_files for a in ("-f", str(f))] + list(flags)
    done = subprocess.run([need("helm"), "template", "spark-operator", str(CHART),
                           "--namespace", "spark-operator", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = tmp_path / f"rendered-{len(list(tmp_path.iterdir()))}.yaml"
    out.write_text(done.stdout)
    return out


def lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "lint", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"})


def findings(rendered: Path, *extra: str) -> dict[tuple[str, str], tuple[str, tuple[str, ...],
                                                                          str | None]]:
    done = lint(str(rendered), "-o", "json", *extra)
    assert done.returncode in (0, 1), done.stderr
    document = json.loads(done.stdout)
    found: dict[tuple[str, str], tuple[str, tuple[str, ...], str | None]] = {}
    for container in document["containers"]:
        for f in container["findings"]:
            conditions = set(f["conditions"].values())
            assert len(conditions) <= 1, conditions
            key = (container["container"], f["rule"])
            # A finding whose text differs between runtimes (each runtime's threshold) is
            # one finding per text: here, the runtimes of all of them.
            earlier = found.get(key, (f["severity"], (), None))
            runtimes = set(earlier[1]) | set(f["runtimes"])
            found[key] = (f["severity"], tuple(r for r in document["runtimes"] if r in runtimes),
                          next(iter(conditions), None) or earlier[2])
    return found


def values_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(VALUE_SETS[name]))
    return path


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_the_chart_gives_exactly_its_findings_under_each_runtime(tmp_path: Path,
                                                                 name: str) -> None:
    rendered = render(tmp_path, flags=set_flags(name))
    found = findings(rendered)
    assert found == EXPECTED[name]
    # The values files the closed loop uses render the same objects as the --set flags.
    assert list(yaml.safe_load_all(rendered.read_text())) == list(yaml.safe_load_all(
        render(tmp_path, values_file(tmp_path, name)).read_text()))
    if name == "defaults":
        assert lint(str(rendered)).returncode == 0  # no HIGH: --fail-on high passes
    for runtime in ALL:  # --runtime picks one model: the same findings, restricted to it
        only = {k: v for k, v in EXPECTED[name].items() if runtime in v[1]}
        assert set(findings(rendered, "--runtime", runtime)) == set(only)


def test_webhook_port_443_fails_on_containerd_1_and_cri_o_but_binds_on_containerd_2(
        tmp_path: Path) -> None:
    rendered = render(tmp_path, values_file(tmp_path, "webhook.port=443"))
    done = lint(str(rendered))
    assert done.returncode == 1  # a HIGH finding
    held = "PrivilegedPortNotBindable  [on containerd 1.x, CRI-O; not on containerd 2.x]"
    assert held in done.stdout
    assert lint(str(rendered), "--runtime", "containerd-2").returncode == 0


def test_each_container_is_located_at_its_line_in_the_render(tmp_path: Path) -> None:
    rendered = render(tmp_path, values_file(tmp_path, "controller.securityContext=null"))
    lines = rendered.read_text().splitlines()
    document = json.loads(lint(str(rendered), "-o", "json").stdout)
    for container in document["containers"]:
        assert lines[container["line"] - 1].strip() == f"- name: {container['container']}"
        assert container["kind"] == "Deployment" and container["file"] == str(rendered)


def test_the_image_user_settles_the_root_alternative(tmp_path: Path) -> None:
    rendered = render(tmp_path, values_file(tmp_path, "controller.securityContext=null"))
    found = findings(rendered, "--image-user", f"{IMAGE}=185:185")
    assert (CTRL, "RunsAsRoot") not in found and (CTRL, "RunAsUserMismatch") not in found
    assert found[(CTRL, "PrivilegeEscalationAllowed")] == ("high", ALL, None)


@pytest.mark.parametrize("name", [n for n in VALUE_SETS if EXPECTED[n]])
def test_the_helm_values_overlay_closes_the_loop(tmp_path: Path, name: str) -> None:
    original = values_file(tmp_path, name)
    rendered = render(tmp_path, original)
    done = lint(str(rendered), "-o", "helm-values")
    assert done.returncode in (0, 1), done.stderr
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(done.stdout)
    values = yaml.safe_load(done.stdout)
    assert set(values) <= {"controller", "webhook"}
    assert "NOT fixed" not in done.stdout
    fixed = render(tmp_path, original, overlay)
    assert findings(fixed) == {}


def test_the_readme_table_is_the_expected_findings() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- lint-chart:begin -->")[1].split("<!-- lint-chart:end -->")[0]
    assert table.strip() == readme_table().strip()


def readme_table() -> str:
    rows = ["| values | container | finding | severity | containerd | containerd-2 | cri-o |",
            "|---|---|---|---|---|---|---|"]
    for name in VALUE_SETS:
        if not EXPECTED[name]:
            rows.append(f"| `{name}` | both | none | | | | |")
        for (container, rule), (severity, runtimes, condition) in EXPECTED[name].items():
            mark = "yes" if condition is None else re.sub(r" \(give .*\)$", "", condition)
            cells = [mark if r in runtimes else "no" for r in ALL]
            short = container.removeprefix("spark-operator-")
            rows.append(f"| `{name}` | {short} | `{rule}` | {severity} | " + " | ".join(cells)
                        + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(readme_table())


def test_the_readme_example_is_what_lint_prints(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("<!-- lint-example:begin -->\n```text\n")[1].split("```")[0]
    rendered = render(tmp_path, flags=("--set", "webhook.port=443"))
    done = subprocess.run([sys.executable, "-m", "agent.cli", "lint", "-"],
                          input=rendered.read_text(), capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "COLUMNS": "100"})
    printed = done.stdout.splitlines()
    start = printed.index("Deployment spark-operator-webhook  (stdin)")
    end = next(i for i in range(start, len(printed)) if "securityContext.sysctls" in printed[i])
    assert "\n".join(printed[start:end + 1]) + "\n" == shown
