"""`opaudit` command line (README). Heavy modules are imported inside each command.

`diagnose --pid` and `sockets` never import the kubernetes client or PyYAML unless asked.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.arguments import build_parser
from agent.collect.errors import ProcessGone

if TYPE_CHECKING:
    from agent.audit import AuditRequest
    from agent.collect.procfs import ProcFS
    from agent.model import AuditConfig, AuditResult
    from agent.targets.diagnose import PodTargets


class UsageError(Exception):
    """A mistake in how opaudit was called: one line on stderr, exit 2."""


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
        if args.command in RESTRICTED_COMMANDS:
            from agent.collect.sockets import fd_reader_setting

            fd_reader_setting()  # an unknown OPAUDIT_FD_READER is a usage error, not `auto`
        code: int = COMMANDS[args.func](args)
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
    """What `main` prints for a failure: a known one's message (the user's input, the
    environment, the API), else `internal error: Type: message`, a bug. The log form of any
    exception is `agent.collect.errors.error_line`."""
    from agent.api_error import ApiError
    from agent.collect.errors import CollectError

    text = " ".join(str(exc).split()) or type(exc).__name__
    # The API's answers (unreachable, 403, ...) are facts to report, not opaudit's bugs.
    known = isinstance(exc, CollectError | UsageError | OSError | ValueError | ApiError)
    return text if known else f"internal error: {type(exc).__name__}: {text}"


# --- diagnose ------------------------------------------------------------------------


def cmd_diagnose(args: argparse.Namespace) -> int:
    from agent.audit import audit
    from agent.collect.procfs import ProcFS
    from agent.logs import setup_cli_logging
    from agent.targets.node import node_name

    setup_cli_logging()
    check_diagnose_options(args)
    config = load_config_option(args.config)
    proc = ProcFS()  # HOST_PROC, else /proc: for --pid and --pod alike
    with proc.cycle():  # one pass over /proc maps the pods' containers and socket owners
        requests, missing = pid_requests(args, proc)
        node = node_name(args.node)
        if args.pod or args.selector:
            targets = pod_requests(args, node, proc)
            requests, node = [*requests, *targets.requests], targets.node
        elif args.pod_spec and not (args.pid or args.audit_self):
            targets = pod_spec_requests(args, node, proc)
            requests, node = list(targets.requests), targets.node
        if not requests:
            raise ProcessGone(missing[0])
        report = audit(requests, config=config, node=node, proc=proc)
    print_report(report, args.output)
    for pid in missing:  # after the report, so the last line says what was left out
        print(f"opaudit: {ProcessGone(pid)}: not audited", file=sys.stderr)
    return 2 if missing else exit_status(report, args.fail_on)


def check_diagnose_options(args: argparse.Namespace) -> None:
    """Options that would be silently ignored are mistakes."""
    if not (args.pid or args.audit_self or args.pod or args.selector or args.pod_spec):
        raise UsageError("diagnose needs --pid, --self, --pod, -l or --pod-spec")
    if args.pod_spec and (args.pod or args.selector) and not (args.pid or args.audit_self):
        raise UsageError("--pod-spec is the pod of --pid, or alone the pod to find here; "
                         "--pod and -l read theirs from the API")
    if args.namespace is not None and args.selector is None:
        raise UsageError("-n NAMESPACE limits -l; --pod takes NAMESPACE/NAME, --pid none")
    if args.container is not None and not (args.pod_spec or args.pod or args.selector):
        raise UsageError("--container picks a container of --pod-spec, --pod or -l; "
                         "with --pid alone there is none")


def load_config_option(path: str | None) -> AuditConfig:
    from agent.model import DEFAULT_CONFIG

    if path is None:
        return DEFAULT_CONFIG
    from agent.config import load_config

    return load_config(path)


def pid_requests(args: argparse.Namespace,
                 proc: ProcFS) -> tuple[list[AuditRequest], list[int]]:
    """Requests for each distinct --pid (and --self), and the pids that do not exist."""
    from agent.audit import AuditRequest

    pids = list(dict.fromkeys([*args.pid, *([os.getpid()] if args.audit_self else [])]))
    missing = [pid for pid in pids if not proc.exists(pid)]
    present = [pid for pid in pids if pid not in missing]
    if args.pod_spec and present:
        from agent.kube.podspec import load_pod_manifest
        from agent.targets.diagnose import pid_spec_requests

        pod = load_pod_manifest(args.pod_spec)
        return pid_spec_requests(pod, present, args.container, proc), missing
    return [AuditRequest(pid=pid) for pid in present], missing


def pod_requests(args: argparse.Namespace, node: str | None, proc: ProcFS) -> PodTargets:
    """The running containers of --pod/-l pods, mapped to their processes on this host."""
    from agent.kube.client import load_api
    from agent.targets.diagnose import PodSelection, fetch_pods, pod_targets

    selection = PodSelection(pods=tuple(args.pod), selector=args.selector,
                             namespace=args.namespace, container=args.container, node=node)
    api = load_api(args.kubeconfig)
    try:  # a TargetError is a ValueError: main() prints its one line, exit 2
        return pod_targets(fetch_pods(api, selection), selection, proc)
    finally:
        api.close()


def pod_spec_requests(args: argparse.Namespace, node: str | None, proc: ProcFS) -> PodTargets:
    """--pod-spec without --pid: that pod's running containers on this host, found as --pod
    finds them (status.containerStatuses[].containerID), with no API (kubectl debug node)."""
    from agent.kube.podspec import load_pod_manifest
    from agent.targets.diagnose import PodSelection, pod_targets

    pod = load_pod_manifest(args.pod_spec)
    meta = pod.get("metadata") or {}
    selection = PodSelection(pods=((str(meta.get("namespace") or ""), str(meta.get("name"))),),
                             container=args.container, node=node)
    return pod_targets([pod], selection, proc)


def print_report(report: AuditResult, output: str) -> None:
    from agent.output.sink import DocumentSink, TableSink

    if output in ("json", "yaml"):
        DocumentSink(sys.stdout, "json" if output == "json" else "yaml").publish(report)
    else:
        from agent.output.table import colour_wanted, terminal_width

        TableSink(sys.stdout, colour=colour_wanted(os.environ, sys.stdout),
                  width=terminal_width(os.environ, sys.stdout)).publish(report)


def exit_status(report: AuditResult, fail_on: str) -> int:
    from agent.model import Severity

    threshold = Severity.parse(fail_on).rank
    return 1 if any(f.severity.rank >= threshold for f in report.findings) else 0


# --- sockets, caps, run --------------------------------------------------------------


def cmd_sockets(args: argparse.Namespace) -> int:
    from agent.collect.netns import read_netns_facts
    from agent.collect.procfs import ProcFS
    from agent.output.sockets import render_sockets_json, render_sockets_table

    facts = read_netns_facts(args.pid, ProcFS())  # HOST_PROC, else /proc
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
    from agent.daemon import RunContext, RunOptions, SinkKind, run_agent

    options = RunOptions(
        node=args.node, selector=args.selector,
        namespace=args.namespace, once=args.once, interval=args.interval,
        sinks=tuple(args.sink or (SinkKind.EVENTS,)), report_api=args.report_api,
        report_max_results=args.report_max_results,
        metrics_port=args.metrics_port, kubeconfig=args.kubeconfig,
        config=load_config_option(args.config),
        startup_jitter=args.startup_jitter, api_qps=args.api_qps, api_burst=args.api_burst,
    )
    # main() restricted us already when run as a program; not again, and not at all
    # for a caller of main([...]) that keeps its own capabilities.
    context = RunContext(restrict_privileges=False, privileges=getattr(args, "privileges", None))
    return run_agent(options, context)


def cmd_lint(args: argparse.Namespace) -> int:
    from agent.lint_command import run_lint

    return run_lint(args, load_config_option(args.config), sys.stdout)


COMMANDS = {"diagnose": cmd_diagnose, "sockets": cmd_sockets, "caps_decode": cmd_caps_decode,
            "run": cmd_run, "lint": cmd_lint}

if __name__ == "__main__":
    sys.exit(main())
