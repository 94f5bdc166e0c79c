"""The audit engine: requests (a pid, and the container it runs in when known) -> observed
snapshots -> findings -> AuditResult.

Shared by `diagnose` (cli) and `run` (`agent.daemon`); `agent.targets` builds the requests
from pods. Network facts are read once per namespace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from agent.collect.errors import CollectError, error_line
from agent.collect.netns import read_many_netns
from agent.collect.process import describe_unreadable, observe_process, with_paths
from agent.collect.procfs import ProcFS
from agent.model import (
    DEFAULT_CONFIG,
    NO_PROCESS,
    AuditConfig,
    AuditResult,
    DeclaredContainer,
    Fact,
    Gap,
    Identity,
    NetnsFacts,
    ObservedProcess,
    Profile,
    TargetResult,
)
from agent.rules.catalogue import CATALOGUE, WITHOUT_PROCESS
from agent.rules.container import judge_container
from agent.rules.entry import Rule
from agent.rules.evaluate import evaluate, findings_of
from agent.rules.paths import required_paths
from agent.rules.profiles import match_profile
from agent.rules.reach import describe, owners_phrase

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuditRequest:
    pid: int  # NO_PROCESS: a running container whose process this host's /proc lacks
    declared: DeclaredContainer | None = None
    # `pid` is the pod's sandbox, standing in for a container with no live process.
    via_sandbox: bool = False
    # Every process of the container (`pid` among them), when the audit knows the container.
    container_pids: tuple[int, ...] = ()
    # Every process of any container of the pod: a listener of the pod's netns held by none
    # of them cannot be placed in a container, so its rules cannot judge it.
    pod_pids: frozenset[int] = frozenset()
    absent: str = ""  # why a NO_PROCESS request has no process


def audit(
    requests: Sequence[AuditRequest],
    *,
    config: AuditConfig = DEFAULT_CONFIG,
    node: str | None = None,
    proc: ProcFS | None = None,
    on_fault: Callable[[str, Exception], None] = lambda stage, exc: None,
) -> AuditResult:
    """Audit every request. An unexpected fault (a bug, an unwrapped OSError) while auditing
    one target makes that target InspectionIncomplete, logged and passed to `on_fault` with
    its stage (the agent counts it): `target`, or, for every target of the cycle (`network`)
    or one netns's (`socket_owners`), their network facts; `container` when judging one
    container as a whole failed. The other targets are audited as usual."""
    procfs = proc or ProcFS()
    with procfs.cycle():  # one handle per pid, one pass over /proc, for the whole audit
        try:
            networks = read_many_netns([r.pid for r in requests if r.pid != NO_PROCESS], procfs,
                                       on_fault=lambda exc: on_fault("socket_owners", exc))
        except Exception as exc:  # noqa: BLE001 - every target loses its network facts, no more
            log.error("cannot read network namespaces", exc_info=True,
                      extra={"error": error_line(exc)})
            on_fault("network", exc)
            failed = CollectError(f"network facts: {error_line(exc)}")
            networks = dict.fromkeys((r.pid for r in requests), failed)
        targets = [_audit_guarded(r, networks.get(r.pid), config, procfs, on_fault)
                   for r in requests]
    return AuditResult(node=node, targets=tuple(by_container(targets, on_fault)))


def by_container(targets: Sequence[TargetResult],
                 on_fault: Callable[[str, Exception], None] = lambda stage, exc: None,
                 ) -> list[TargetResult]:
    """The targets, each container's together, its findings judged as the container's
    (`agent.rules.container`); a process with no declared container is its own group. A
    container whose judgement fails keeps its processes' own findings (logged, `on_fault`)."""
    groups: dict[tuple[str, ...], list[TargetResult]] = {}
    for index, target in enumerate(targets):
        groups.setdefault(target.container_key or ("pid", str(index)), []).append(target)
    judged: list[TargetResult] = []
    for group in groups.values():
        try:
            judged.extend(judge_container(group))
        except Exception as exc:  # noqa: BLE001 - one container's fault must not end the audit
            log.error("cannot judge a container as a whole; its processes' own findings kept",
                      exc_info=True, extra={"error": error_line(exc),
                                            "pids": [t.observed.pid for t in group]})
            on_fault("container", exc)
            judged.extend(group)
    return judged


def _audit_guarded(request: AuditRequest, network: NetnsFacts | CollectError | None,
                   config: AuditConfig, procfs: ProcFS,
                   on_fault: Callable[[str, Exception], None]) -> TargetResult:
    try:
        return audit_one(request, network, config=config, proc=procfs)
    except Exception as exc:  # noqa: BLE001 - one target's fault must not end the audit
        declared = request.declared
        log.error("cannot audit a target; reported as InspectionIncomplete", exc_info=True,
                  extra={"pid": request.pid, "error": error_line(exc),
                         "pod": (f"{declared.pod.namespace}/{declared.pod.name}"
                                 if declared else None),
                         "container": declared.container_name if declared else None})
        on_fault("target", exc)
        try:  # only to name the process in the finding
            comm = procfs.process(request.pid).comm()
        except Exception:  # noqa: BLE001 - the process may be what failed
            comm = ""
        return failed_target(request, exc, config, comm)


def failed_target(request: AuditRequest, exc: Exception, config: AuditConfig,
                  comm: str = "") -> TargetResult:
    """The target whose audit raised: no facts, the reason as a gap, so every rule that
    needs a fact is unknown and InspectionIncomplete says why (silence is not a pass)."""
    reason = f"the audit failed: {error_line(exc)}"
    observed = replace(vanished_process(request.pid, CollectError(reason)), comm=comm,
                       incomplete=(Gap(Fact.AUDIT, reason),))
    return judged(request, observed, match_profile(request.declared, config), config)


def judged(request: AuditRequest, observed: ObservedProcess, profile: Profile,
           config: AuditConfig, rules: tuple[Rule, ...] = CATALOGUE) -> TargetResult:
    """The target: `observed` judged against its declaration by `rules` (default: all)."""
    verdicts = evaluate(observed, request.declared, profile, config, rules)
    return TargetResult(observed=observed, declared=request.declared, profile=profile,
                        findings=findings_of(verdicts), verdicts=verdicts)


def audit_one(
    request: AuditRequest,
    network: NetnsFacts | CollectError | None,
    *,
    config: AuditConfig = DEFAULT_CONFIG,
    proc: ProcFS | None = None,
) -> TargetResult:
    procfs = proc or ProcFS()
    profile = match_profile(request.declared, config)
    if request.pid == NO_PROCESS:
        observed = vanished_process(NO_PROCESS, CollectError(request.absent or "no process"))
        return judged(request, observed, profile, config)
    if request.via_sandbox:
        observed = sandbox_stand_in(request, network, procfs)
        return judged(request, observed, profile, config, WITHOUT_PROCESS)
    try:
        observed = observe_process(
            request.pid, proc=procfs, network=network if isinstance(network, NetnsFacts) else None
        )
    except CollectError as exc:
        observed = vanished_process(request.pid, exc)
    else:
        if isinstance(network, CollectError):
            reason = describe_unreadable(request.pid, procfs) or str(network)
            observed = _with_gap(observed, Gap(Fact.NETWORK, reason))
        observed = replace(observed, container_pids=request.container_pids)
        stray = unplaced_listeners(observed, request)
        if stray is not None:
            observed = _with_gap(observed, stray)
        paths = required_paths(observed, request.declared, profile)
        if paths and observed.start_time is not None:
            observed = with_paths(observed, request.pid, paths, procfs)
    return judged(request, observed, profile, config)


def unplaced_listeners(observed: ObservedProcess, request: AuditRequest) -> Gap | None:
    """The pod's listeners that no process of its containers holds: no container's rules can
    judge them (whose port is it?), so the rules about listener owners are unknown, never a
    silent pass. A hostNetwork pod shares the host's netns, whose other sockets are the
    host's, not the pod's."""
    network = observed.network
    host = network is not None and network.host_network or (
        request.declared is not None and request.declared.host_network)
    if network is None or host or not request.pod_pids:
        return None
    stray = [s for s in network.listeners if s.owners and not request.pod_pids & set(s.pids)]
    if not stray:
        return None
    pod = request.declared.pod if request.declared is not None else None
    where = f"pod {pod.namespace}/{pod.name}" if pod is not None else "the pod"
    held = "; ".join(f"{describe(s, network)} held by {owners_phrase(s)}" for s in stray)
    return Gap(Fact.OWNERS,
               f"{held}: a process in no container of {where}, so no container's rules judge it")


def sandbox_stand_in(request: AuditRequest, network: NetnsFacts | CollectError | None,
                     procfs: ProcFS) -> ObservedProcess:
    """The pod's netns, read through its sandbox, for a container with no live process.

    Nothing of the sandbox but its netns is the container's: identity and capabilities stay
    unknown, and the rules that run on it take those from the declared side.
    """
    name = request.declared.container_name if request.declared else "the container"
    with procfs.cycle():  # the handle is the audit's, or closed right here
        try:
            comm = procfs.process(request.pid).comm()
        except CollectError:
            comm = ""
    gaps = [Gap(Fact.PROCESS, f"container {name} has no live process (it is restarting); its "
                           f"pod's network namespace was read through the pod's sandbox "
                           f"(pid {request.pid}{', ' + comm if comm else ''})")]
    if isinstance(network, CollectError):
        gaps.append(Gap(Fact.NETWORK, str(network)))
    return ObservedProcess(
        pid=request.pid, start_time=None, comm=comm, cmdline=(),
        identity=Identity(None, None, None, None, None, None),
        capabilities=None, no_new_privs=None, seccomp=None, filesystem=None,
        network=network if isinstance(network, NetnsFacts) else None,
        incomplete=tuple(gaps), via_sandbox=True,
    )


def vanished_process(pid: int, exc: CollectError) -> ObservedProcess:
    """A snapshot with no facts, for a pid that could not be read at all."""
    return ObservedProcess(
        pid=pid, start_time=None, comm="", cmdline=(),
        identity=Identity(None, None, None, None, None, None),
        capabilities=None, no_new_privs=None, seccomp=None, filesystem=None, network=None,
        incomplete=(Gap(Fact.PROCESS, str(exc)),),
    )


def _with_gap(observed: ObservedProcess, gap: Gap) -> ObservedProcess:
    return replace(observed, incomplete=(*observed.incomplete, gap))
