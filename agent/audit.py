"""The audit engine: pids (+ declared containers) -> observed snapshots -> findings -> Report.

Shared by `diagnose` (cli) and `run` (node). Network facts are read once per namespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from agent.collect.errors import CollectError
from agent.collect.netns import read_many_netns
from agent.collect.process import observe_process, with_paths
from agent.collect.procfs import ProcFS
from agent.model import (
    DEFAULT_CONFIG,
    AuditConfig,
    DeclaredContainer,
    Gap,
    Identity,
    NetnsFacts,
    ObservedProcess,
    Report,
    TargetReport,
)
from agent.rules.evaluate import evaluate
from agent.rules.paths import required_paths
from agent.rules.profiles import match_profile


@dataclass(frozen=True, slots=True)
class AuditRequest:
    pid: int
    declared: DeclaredContainer | None = None


def audit(
    requests: Sequence[AuditRequest],
    *,
    config: AuditConfig = DEFAULT_CONFIG,
    node: str | None = None,
    proc: ProcFS | None = None,
) -> Report:
    procfs = proc or ProcFS()
    networks = read_many_netns([r.pid for r in requests], proc_root=procfs.root)
    targets = tuple(
        audit_one(r, networks.get(r.pid), config=config, proc=procfs) for r in requests
    )
    return Report(node=node, targets=targets)


def audit_one(
    request: AuditRequest,
    network: NetnsFacts | CollectError | None,
    *,
    config: AuditConfig = DEFAULT_CONFIG,
    proc: ProcFS | None = None,
) -> TargetReport:
    procfs = proc or ProcFS()
    profile = match_profile(request.declared, config)
    try:
        observed = observe_process(
            request.pid, proc=procfs, network=network if isinstance(network, NetnsFacts) else None
        )
    except CollectError as exc:
        observed = vanished_process(request.pid, exc)
    else:
        if isinstance(network, CollectError):
            observed = _with_gap(observed, Gap("network", str(network)))
        paths = required_paths(observed, request.declared, profile)
        if paths and observed.start_time is not None:
            observed = with_paths(observed, request.pid, paths, procfs)
    findings = evaluate(observed, request.declared, profile, config)
    return TargetReport(
        observed=observed, declared=request.declared, profile=profile, findings=findings
    )


def vanished_process(pid: int, exc: CollectError) -> ObservedProcess:
    """A snapshot with no facts, for a pid that could not be read at all."""
    return ObservedProcess(
        pid=pid, start_time=None, comm="", cmdline=(),
        identity=Identity(None, None, None, None, None, None),
        capabilities=None, no_new_privs=None, seccomp=None, filesystem=None, network=None,
        incomplete=(Gap("process", str(exc)),),
    )


def _with_gap(observed: ObservedProcess, gap: Gap) -> ObservedProcess:
    return replace(observed, incomplete=(*observed.incomplete, gap))
