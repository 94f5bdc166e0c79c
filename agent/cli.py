"""`opaudit` command line (SPEC §2). Heavy modules are imported inside each command.

`diagnose --pid` and `sockets` never import the kubernetes client or PyYAML unless asked.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from agent.audit import AuditRequest
    from agent.model import AuditConfig, Report

SEVERITIES = ("info", "low", "medium", "high", "critical")


class UsageError(Exception):
    """A mistake in how opaudit was called: one line on stderr, exit 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"opaudit: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="opaudit", description=(
        "Compare what a pod declares with what the kernel enforces on its processes."))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    diag = sub.add_parser("diagnose", help="audit processes once and print a report")
    diag.add_argument("--pid", type=int, action="append", default=[], help="process to audit")
    diag.add_argument("--self", dest="audit_self", action="store_true",
                      help="audit opaudit's own process")
    diag.add_argument("--pod", action="append", default=[], metavar="NS/NAME",
                      help="audit a pod's containers on this node (needs the API)")
    diag.add_argument("-l", "--selector", help="label selector for pods on this node")
    diag.add_argument("-n", "--namespace", help="namespace for -l (default: all)")
    diag.add_argument("--node", help="this node's name (default: $NODE_NAME)")
    diag.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or $KUBECONFIG)")
    diag.add_argument("--pod-spec", metavar="FILE",
                      help="declared side offline: a Pod as `kubectl get pod -o yaml|json` prints")
    diag.add_argument("--container", help="container of --pod-spec (default: the first)")
    diag.add_argument("--config", metavar="FILE", help="profiles, waivers, severity overrides")
    diag.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    diag.add_argument("--fail-on", choices=SEVERITIES, default="high",
                      help="exit 1 when a finding is at or above this severity (default: high)")
    diag.set_defaults(func=cmd_diagnose)

    socks = sub.add_parser("sockets", help="listening sockets of PID's netns, like `ss -tulnp`")
    socks.add_argument("--pid", type=int, required=True)
    socks.add_argument("-o", "--output", choices=("table", "json"), default="table")
    socks.set_defaults(func=cmd_sockets)

    caps = sub.add_parser("caps", help="capability helpers")
    caps_sub = caps.add_subparsers(dest="caps_command", required=True, parser_class=Parser)
    decode = caps_sub.add_parser("decode", help="exactly what `capsh --decode=HEX` prints")
    decode.add_argument("hex")
    decode.set_defaults(func=cmd_caps_decode)

    run = sub.add_parser("run", help="the node agent: audit selected pods, post Events")
    run.add_argument("--node", help="this node's name (default: $NODE_NAME)")
    run.add_argument("-l", "--selector", help="label selector for pods to audit")
    run.add_argument("-n", "--namespace", help="only this namespace")
    run.add_argument("--once", action="store_true", help="one audit cycle, then exit")
    run.add_argument("--interval", type=float, default=60.0, help="seconds between cycles")
    run.add_argument("--sink", choices=("events", "stdout"), default="events")
    run.add_argument("--metrics-port", type=int, help="serve /metrics, /healthz, /readyz")
    run.add_argument("--kubeconfig")
    run.add_argument("--config", metavar="FILE")
    run.set_defaults(func=cmd_run)
    return parser


# Commands that read other processes drop every capability but the three they use first.
RESTRICTED_COMMANDS = ("run", "diagnose", "sockets")


def main(argv: Sequence[str] | None = None, *, restrict: bool | None = None) -> int:
    """The program. `restrict` defaults to True only when run as a program (argv None):
    a test calling main([...]) in its own process must not lose that process's caps."""
    args = build_parser().parse_args(argv)
    if (argv is None if restrict is None else restrict) and args.command in RESTRICTED_COMMANDS:
        # Capabilities are per thread: before any thread starts (agent/privilege.py).
        from agent.privilege import restrict_self

        args.privileges = restrict_self()
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the contract is one line, never a traceback
        if os.environ.get("OPAUDIT_DEBUG"):
            raise
        print(f"opaudit: {one_line(exc)}", file=sys.stderr)
        return 2


def one_line(exc: BaseException) -> str:
    from agent.collect.errors import CollectError

    text = " ".join(str(exc).split()) or type(exc).__name__
    known = isinstance(exc, CollectError | UsageError | OSError | ValueError)
    return text if known else f"internal error: {type(exc).__name__}: {text}"


# --- diagnose ------------------------------------------------------------------------


def cmd_diagnose(args: argparse.Namespace) -> int:
    from agent.audit import audit

    config = load_config_option(args.config)
    requests = pid_requests(args) + kube_requests(args)
    if not requests:
        raise UsageError("diagnose needs --pid, --self, --pod or -l")
    report = audit(requests, config=config, node=args.node or os.environ.get("NODE_NAME"))
    print_report(report, args.output)
    return exit_status(report, args.fail_on)


def load_config_option(path: str | None) -> AuditConfig:
    from agent.model import DEFAULT_CONFIG

    if path is None:
        return DEFAULT_CONFIG
    from agent.config import load_config

    return load_config(path)


def pid_requests(args: argparse.Namespace) -> list[AuditRequest]:
    from agent.audit import AuditRequest
    from agent.collect.errors import ProcessGone
    from agent.collect.procfs import ProcFS

    pids = [*args.pid, *([os.getpid()] if args.audit_self else [])]
    if args.pod_spec and not pids:
        raise UsageError("--pod-spec describes the pod of --pid; give --pid too")
    declared = None
    if args.pod_spec:
        from agent.kube.podspec import declared_from_pod, load_pod_manifest

        declared = declared_from_pod(load_pod_manifest(args.pod_spec), args.container)
    proc_root = ProcFS().root  # HOST_PROC, as the audit reads it
    for pid in pids:
        if pid <= 0 or not os.path.exists(f"{proc_root}/{pid}"):
            raise ProcessGone(pid)
    return [AuditRequest(pid=pid, declared=declared) for pid in pids]


def kube_requests(args: argparse.Namespace) -> list[AuditRequest]:
    """The running containers of --pod/-l pods, mapped to their processes on this node."""
    if not args.pod and not args.selector:
        return []
    from agent.audit import container_requests, declared_containers
    from agent.collect.procfs import ProcFS
    from agent.kube.client import load_api

    node = args.node or os.environ.get("NODE_NAME")
    api = load_api(args.kubeconfig)
    pods = []
    for ref in args.pod:
        namespace, sep, name = ref.partition("/")
        if not sep or not namespace or not name:
            raise UsageError(f"--pod takes NAMESPACE/NAME, not {ref!r}")
        pod = api.get_pod(namespace, name)
        where = (pod.get("spec") or {}).get("nodeName")
        if node and where and where != node:
            raise UsageError(f"pod {ref} runs on node {where}, not on {node}: "
                             f"run opaudit on {where}")
        pods.append(pod)
    if args.selector:
        pods += api.list_pods(node, args.selector, args.namespace)[0]
    requests = container_requests(declared_containers(pods), ProcFS())
    if not requests:
        raise UsageError("no running container of the selected pods has a process on this "
                         "node (opaudit needs hostPID to see them)")
    return requests


def print_report(report: Report, output: str) -> None:
    from agent.report.sink import DocumentSink, TableSink

    if output in ("json", "yaml"):
        DocumentSink(sys.stdout, "json" if output == "json" else "yaml").publish(report)
    else:
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        TableSink(sys.stdout, colour=colour).publish(report)


def exit_status(report: Report, fail_on: str) -> int:
    from agent.model import Severity

    threshold = Severity.parse(fail_on).rank
    return 1 if any(f.severity.rank >= threshold for f in report.findings) else 0


# --- sockets, caps, run --------------------------------------------------------------


def cmd_sockets(args: argparse.Namespace) -> int:
    from agent.collect.netns import read_netns_facts
    from agent.report.sockets import render_sockets_json, render_sockets_table

    facts = read_netns_facts(args.pid)
    if args.output == "json":
        sys.stdout.write(render_sockets_json(args.pid, facts))
    else:
        sys.stdout.write(render_sockets_table(facts))
    for gap in facts.gaps:  # e.g. owners unknown without CAP_DAC_READ_SEARCH: not "no owner"
        print(f"opaudit: incomplete: {gap.fact}: {gap.reason}", file=sys.stderr)
    return 0


def cmd_caps_decode(args: argparse.Namespace) -> int:
    from agent.collect.caps import decode_capsh

    sys.stdout.write(decode_capsh(args.hex))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.node import RunOptions, run_agent

    options = RunOptions(
        node=args.node or os.environ.get("NODE_NAME"), selector=args.selector,
        namespace=args.namespace, once=args.once, interval=args.interval, sink=args.sink,
        metrics_port=args.metrics_port, kubeconfig=args.kubeconfig,
        config=load_config_option(args.config),
        # main() restricted us already when run as a program; not again, and not at all
        # for a caller of main([...]) that keeps its own capabilities.
        restrict_privileges=False, privileges=getattr(args, "privileges", None),
    )
    return run_agent(options)


if __name__ == "__main__":
    sys.exit(main())
