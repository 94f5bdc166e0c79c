"""`opaudit lint`: each container of the inputs, predicted under each runtime model, judged by
the same rules as `diagnose` (`agent.rules.evaluate`), merged into one finding per rule and
subject that says under which runtimes (and conditions) it holds."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

from agent.kube.podspec import declared_from_pod
from agent.model import (
    DEFAULT_CONFIG,
    AuditConfig,
    DeclaredContainer,
    Fact,
    Finding,
    Gap,
    LintContainer,
    LintFinding,
    LintResult,
    ObservedProcess,
    Outcome,
    Profile,
    RuntimePrediction,
    Verdict,
)
from agent.predict.imagefacts import ImageFacts
from agent.predict.manifests import Inputs
from agent.predict.predictor import PathMemo, pod_facts, predict
from agent.predict.runtimes import MODELS
from agent.rules.catalogue import CATALOGUE
from agent.rules.evaluate import evaluate
from agent.rules.identity import RUNS_AS_ROOT
from agent.rules.incomplete import INSPECTION_INCOMPLETE
from agent.rules.listeners import (
    DECLARED_PORT_NOT_LISTENING,
    IPV6_LISTENER_WITH_IPV6_DISABLED,
    UNDECLARED_LISTENER,
)
from agent.rules.network import (
    DUAL_STACK_LISTENER_GAP,
    LISTENER_FAMILY_MISMATCH,
    LISTENER_LOOPBACK_ONLY,
    PROBE_PORT_NOT_LISTENING,
)
from agent.rules.ports import promised_ports
from agent.rules.profiles import match_profile

# Rules about what the process really listens on: nothing before it runs can say.
LISTENER_RULES = frozenset(r.id for r in (
    PROBE_PORT_NOT_LISTENING, LISTENER_LOOPBACK_ONLY, LISTENER_FAMILY_MISMATCH,
    DUAL_STACK_LISTENER_GAP, IPV6_LISTENER_WITH_IPV6_DISABLED, DECLARED_PORT_NOT_LISTENING,
    UNDECLARED_LISTENER))
LISTENERS_UNKNOWN = Gap(Fact.LISTENERS, (
    "predicted from a manifest: what the process listens on is known only once it runs "
    "(opaudit diagnose); PrivilegedPortNotBindable and NetBindServiceUnneeded judge the "
    "declared ports and probe ports instead"))
LINT_RULES = tuple(r for r in CATALOGUE
                   if r.id not in LISTENER_RULES and r.id != INSPECTION_INCOMPLETE.id)
KERNEL_PORT_START = 1024  # net.ipv4.ip_unprivileged_port_start's default, the highest model
NET_BIND_SERVICE = 1 << 10
# The rules' messages name the process by pid; a predicted process has none.
_PID = re.compile(r" \(pid 0\)|pid 0, ")
# A prediction's ports are the declared ports and probe ports, not sockets read from the
# kernel: "listens on" (diagnose's wording) becomes "would listen on".
_LISTENS = re.compile(r"\b(it|its container) listens on\b")


@dataclasses.dataclass(frozen=True, slots=True)
class LintOptions:
    runtimes: tuple[str, ...] = tuple(MODELS)
    seccomp_default: bool = False  # the kubelet's --seccomp-default
    config: AuditConfig = DEFAULT_CONFIG
    images: Mapping[str, ImageFacts] = dataclasses.field(default_factory=dict)


def _without_pid(finding: Finding, declared: DeclaredContainer) -> Finding:
    return dataclasses.replace(
        finding, pid=None, pids=(), comms=(),
        message=_LISTENS.sub(r"\1 would listen on", _PID.sub("", finding.message)),
        pod=f"{declared.pod.namespace}/{declared.pod.name}", container=declared.container_name)


def _key(finding: Finding) -> tuple[str, str, str]:
    return (finding.rule, finding.subject, finding.declared or "")


def merge_predictions(declared: DeclaredContainer, verdicts: Sequence[tuple[RuntimePrediction,
                      tuple[Verdict, ...]]]) -> tuple[tuple[LintFinding, ...], tuple[Verdict, ...]]:
    """One LintFinding per rule, subject and text, with the runtimes (and conditions) it
    holds under; and the rules no prediction could judge. Runtimes share a finding only when
    its text is the same on each: NetBindServiceUnneeded names the runtime's own
    ip_unprivileged_port_start (1024 on containerd 1.x, 0 on containerd 2.x)."""
    first: dict[tuple[str, str, str], dict[str, Finding]] = {}
    held: dict[tuple[str, str, str], dict[str, list[str | None]]] = {}
    alternatives: dict[str, int] = {}
    for prediction, runtime_verdicts in verdicts:
        alternatives[prediction.runtime] = alternatives.get(prediction.runtime, 0) + 1
        for verdict in runtime_verdicts:
            for finding in verdict.findings:
                key = _key(finding)
                first.setdefault(key, {}).setdefault(prediction.runtime,
                                                     _without_pid(finding, declared))
                held.setdefault(key, {}).setdefault(prediction.runtime, []).append(
                    prediction.condition)
    merged = []
    for key, per_runtime in first.items():
        texts: dict[tuple[str, str | None], list[str]] = {}
        for runtime, finding in per_runtime.items():
            texts.setdefault((finding.message, finding.observed), []).append(runtime)
        for runtimes in texts.values():
            conditions = tuple((runtime, "; or ".join(c for c in held[key][runtime] if c))
                               for runtime in runtimes
                               if len(held[key][runtime]) < alternatives[runtime])
            merged.append(LintFinding(per_runtime[runtimes[0]], tuple(runtimes), conditions))
    merged.sort(key=lambda f: -f.finding.severity.rank)
    fired = {key[0] for key in first}
    unknown = [v for v in (verdicts[0][1] if verdicts else ())
               if v.outcome is Outcome.UNKNOWN and v.rule not in fired]
    unknown += [Verdict(r.id, Outcome.UNKNOWN, missing=(LISTENERS_UNKNOWN,), category=r.category,
                        severity=r.severity) for r in CATALOGUE if r.id in LISTENER_RULES]
    return tuple(merged), tuple(unknown)


def _judge(prediction: RuntimePrediction, declared: DeclaredContainer, profile: Profile,
           options: LintOptions) -> tuple[Verdict, ...]:
    verdicts = evaluate(prediction.observed, declared, profile, options.config, LINT_RULES)
    if declared.run_as_non_root:
        # The kubelet refuses to start a runAsNonRoot container whose uid would be 0
        # (kuberuntime verifyRunAsNonRoot): the process is not root, whichever uid it is.
        verdicts = tuple(dataclasses.replace(v, outcome=Outcome.PASSED, missing=())
                         if v.rule == RUNS_AS_ROOT.id and v.outcome is Outcome.UNKNOWN else v
                         for v in verdicts)
    return verdicts


_FIELDS = tuple(f.name for f in dataclasses.fields(ObservedProcess) if f.name != "network")


def _equal_but_port_start(one: ObservedProcess, other: ObservedProcess) -> bool:
    if any(getattr(one, name) != getattr(other, name) for name in _FIELDS):
        return False
    a, b = one.network, other.network
    if a is None or b is None:
        return a is b
    return (a.listeners, a.gaps, a.host_network, a.sysctls.disable_ipv6, a.sysctls.bindv6only
            ) == (b.listeners, b.gaps, b.host_network, b.sysctls.disable_ipv6,
                  b.sysctls.bindv6only)


def _same_verdicts(prediction: RuntimePrediction,
                   judged: list[tuple[RuntimePrediction, tuple[Verdict, ...]]],
                   declared: DeclaredContainer) -> tuple[Verdict, ...] | None:
    """The verdicts of an earlier prediction that differs from this one at most in
    ip_unprivileged_port_start where that cannot matter: no NET_BIND_SERVICE held (the
    only rule besides PrivilegedPortNotBindable that reads it) and no promised port below
    1024 (so the same ports are bindable under every model)."""
    caps = prediction.observed.capabilities
    if caps is None or (caps.effective | caps.bounding) & NET_BIND_SERVICE:
        return None
    if any(p.port < KERNEL_PORT_START for p in promised_ports(declared)):
        return None
    for earlier, verdicts in judged:
        if earlier.condition == prediction.condition and \
                _equal_but_port_start(earlier.observed, prediction.observed):
            return verdicts
    return None


def lint(inputs: Inputs, options: LintOptions) -> LintResult:
    containers = []
    for template in inputs.templates:
        for name, init, line in template.containers:
            declared = declared_from_pod(template.pod, name)
            profile = match_profile(declared, options.config)
            facts = pod_facts(template.pod, name)
            image = options.images.get(_image_of(template.pod, name) or "")
            judged: list[tuple[RuntimePrediction, tuple[Verdict, ...]]] = []
            paths_memo: PathMemo = {}
            for runtime in options.runtimes:
                for prediction in predict(declared, facts, MODELS[runtime], profile,
                                          seccomp_default=options.seccomp_default, image=image,
                                          paths_memo=paths_memo):
                    verdicts = _same_verdicts(prediction, judged, declared)
                    if verdicts is None:
                        verdicts = _judge(prediction, declared, profile, options)
                    judged.append((prediction, verdicts))
            findings, unknown = merge_predictions(declared, judged)
            containers.append(LintContainer(
                source=template.source(line), declared=declared, profile=profile, init=init,
                findings=findings, unknown=unknown,
                predictions=tuple(p for p, _ in judged)))
    return LintResult(containers=tuple(containers), runtimes=tuple(options.runtimes),
                      labels=tuple((r, MODELS[r].label) for r in options.runtimes),
                      sources=tuple((r, MODELS[r].sources) for r in options.runtimes),
                      skipped=inputs.skipped, objects=len(inputs.templates))


def _image_of(pod: Mapping[str, object], container: str) -> str | None:
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return None
    entries = [spec.get("initContainers"), spec.get("containers")]
    for entry in [e for group in entries if isinstance(group, list) for e in group]:
        if isinstance(entry, dict) and entry.get("name") == container:
            return str(entry.get("image") or "") or None
    return None
