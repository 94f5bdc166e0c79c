"""Every gap names a known fact: the collectors, the lint predictor and the rules share
`agent.model.Fact`, so a rule's missing fact is always explained by the gap that names it.

Checked twice: in the source (every `Gap(...)` written in `agent/`), and on real
collections that record gaps (a kernel thread, a /proc tree without sysctls or pid 1 and 2,
the predictor on a pod spec that leaves the uid to the image)."""

from __future__ import annotations

import ast
import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

from agent.collect.errors import CollectError
from agent.collect.netns import read_netns_facts
from agent.collect.process import observe_process, with_paths
from agent.collect.procfs import ProcFS
from agent.kube.podspec import declared_from_pod
from agent.model import GENERIC_PROFILE, Fact, Gap, is_known_fact, path_fact
from agent.predict.predictor import pod_facts, predict
from agent.predict.runtimes import MODELS
from agent.rules.catalogue import CATALOGUE
from agent.rules.facts import FACTS

AGENT = Path(__file__).resolve().parents[2] / "agent"
# Where a gap must name its fact through `Fact` (or `path_fact`), never as a bare string.
TYPED_LAYERS = ("collect", "predict", "rules", "audit.py")
# A rule that raised is named as its own missing fact (`rule <id>`): not a fact a collector
# reads, and no rule asks for it.
RULE_ERROR = ("rules/evaluate.py", "rule ")


def gap_fact_arguments() -> list[tuple[str, int, ast.expr]]:
    """(module, line, the fact argument) of every `Gap(...)` written in agent/."""
    found = []
    for path in sorted(AGENT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "Gap"):
                continue
            fact = node.args[0] if node.args else next(
                k.value for k in node.keywords if k.arg == "fact")
            found.append((str(path.relative_to(AGENT)), node.lineno, fact))
    return found


def untyped_gap_facts(arguments: list[tuple[str, int, ast.expr]]) -> list[str]:
    """The fact arguments that are neither a `Fact` member, `path_fact(...)` nor a variable
    (mypy types those); outside TYPED_LAYERS, a string literal that is a known fact."""
    bad = []
    for module, line, fact in arguments:
        where = f"{module}:{line}: {ast.unparse(fact)}"
        if isinstance(fact, ast.Attribute) and isinstance(fact.value, ast.Name):
            if fact.value.id != "Fact" or fact.attr not in Fact.__members__:
                bad.append(where)
        elif isinstance(fact, ast.Call):
            if not (isinstance(fact.func, ast.Name) and fact.func.id == "path_fact"):
                bad.append(where)
        elif isinstance(fact, ast.Constant):
            if module.startswith(TYPED_LAYERS) or not is_known_fact(str(fact.value)):
                bad.append(where)
        elif isinstance(fact, ast.JoinedStr):
            text = fact.values[0]
            if not (module == RULE_ERROR[0] and isinstance(text, ast.Constant)
                    and str(text.value).startswith(RULE_ERROR[1])):
                bad.append(where)
        elif not isinstance(fact, ast.Name):
            bad.append(where)
    return bad


def test_every_gap_written_in_agent_names_a_known_fact() -> None:
    arguments = gap_fact_arguments()
    assert len(arguments) > 20  # the scan sees the collectors' and the predictor's gaps
    assert {m.split("/")[0] for m, _, _ in arguments} >= {"collect", "predict", "rules"}
    assert untyped_gap_facts(arguments) == []


def test_a_free_form_fact_is_caught() -> None:
    """The checks above and below could fail: a misspelt or untyped name is reported."""
    written = [(module, 1, ast.parse(source, mode="eval").body) for module, source in (
        ("collect/netns.py", '"network.listeners"'),  # right name, but not through Fact
        ("audit.py", '"network.listener"'),  # misspelt
        ("collect/netns.py", "Fact.LISTENER"),  # no such member
        ("predict/paths.py", 'f"paths.{path}"'),  # path_fact is the one spelling
    )]
    assert len(untyped_gap_facts(written)) == 4
    assert not is_known_fact("network.listener") and is_known_fact(path_fact("/tmp"))


def test_rules_ask_only_for_known_facts() -> None:
    assert all(isinstance(fact, Fact) for fact in FACTS)
    for rule in CATALOGUE:
        assert all(isinstance(fact, Fact) and fact in FACTS for fact in rule.facts), rule.id


def assert_known(gaps: tuple[Gap, ...] | list[Gap]) -> set[str]:
    names = {gap.fact for gap in gaps}
    assert [n for n in names if not is_known_fact(n)] == []
    assert all(type(gap.fact) is str for gap in gaps)  # outputs see plain text
    return names


def kernel_thread() -> int | None:
    """A kernel thread of this pid namespace (kthreadd is pid 2 on a host), if any."""
    proc = ProcFS("/proc")
    with proc.cycle():
        for pid in proc.pids():
            with contextlib.suppress(CollectError):
                if proc.process(pid).stat().kernel_thread:
                    return pid
    return None


def test_a_kernel_thread_records_known_facts() -> None:
    """A kernel thread has no user memory, root or mounts of its own: real gaps."""
    pid = kernel_thread()
    if pid is None:
        pytest.skip("no kernel thread in this pid namespace (a container without hostPID)")
    observed = with_paths(observe_process(pid), pid, ["/tmp"])
    names = assert_known(observed.incomplete)
    assert {Fact.FILESYSTEM, Fact.ENVIRON, path_fact("/tmp")} <= names


def test_a_netns_read_through_a_bare_proc_tree_records_known_facts(tmp_path: Path) -> None:
    """A /proc tree holding only this process: no /proc/sys (the sysctls are absent) and
    no pid 1 or 2 (the node's netns is unknown), read on the real kernel."""
    pid = os.getpid()
    (tmp_path / str(pid)).symlink_to(f"/proc/{pid}")
    facts = read_netns_facts(pid, ProcFS(str(tmp_path)))
    names = assert_known(facts.gaps)
    assert {Fact.BINDV6ONLY, Fact.DISABLE_IPV6, Fact.UNPRIVILEGED_PORT_START,
            Fact.HOST_NETWORK} <= names


def test_the_lint_predictor_records_known_facts() -> None:
    """runAsNonRoot without a uid, no image read, hostNetwork: the predictor's gaps."""
    container: dict[str, Any] = {"name": "app", "image": "example/app:1",
                                 "securityContext": {"runAsNonRoot": True}}
    pod = {"metadata": {"name": "p", "namespace": "ns1"},
           "spec": {"containers": [container], "hostNetwork": True}}
    declared = declared_from_pod(pod, "app")
    names: set[str] = set()
    for prediction in predict(declared, pod_facts(pod, "app"), MODELS["containerd"],
                              GENERIC_PROFILE, seccomp_default=False, image=None):
        observed = prediction.observed
        assert observed.network is not None
        names |= assert_known((*observed.incomplete, *observed.network.gaps))
    assert {Fact.UID, Fact.GID, Fact.HOME, Fact.UNPRIVILEGED_PORT_START} <= names
