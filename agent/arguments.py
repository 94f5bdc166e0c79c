"""The command line's grammar (README): the parser, its help, and every value checked at
parse time, so a mistake is one line and exit 2 before anything runs."""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import NoReturn

from agent import __version__

SEVERITIES = ("info", "low", "medium", "high", "critical")
# capsh reads --decode with strtoull(): it decodes "zzz", "" and "-" as 0 and saturates
# more than 64 bits (libcap progs/capsh.c); the README takes 1-16 hex digits, optional 0x.
CAPS_HEX = re.compile(r"(0[xX])?[0-9a-fA-F]{1,16}")
# One cycle a second at most (the watch wakes a cycle sooner for a new pod); a day at most.
INTERVAL_RANGE = (1.0, 86400.0)
# `run`'s API defaults are agent.kube's (STARTUP_JITTER, DEFAULT_QPS, DEFAULT_BURST; a test
# checks they agree): this module imports nothing of the agent, so it repeats them.
RUN_STARTUP_JITTER, RUN_API_QPS, RUN_API_BURST = 10.0, 50.0, 100
# `run --sink`: the values of `agent.daemon.options.SinkKind` (a test checks they agree).
RUN_SINKS = ("events", "reports", "stdout")
# At most an hour of start-up jitter; a QPS up to the API server's own default
# max-requests-inflight (400): beyond either, a typo rather than a choice. The chart's
# values.schema.json has the same bounds.
JITTER_RANGE = (0.0, 3600.0)
QPS_RANGE = (0.01, 400.0)
# A namespace is an RFC 1123 label, a pod name an RFC 1123 subdomain (k8s apimachinery
# validation: IsDNS1123Label, IsDNS1123Subdomain).
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_NAMESPACE = re.compile(_DNS_LABEL)
_POD_NAME = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")

DIAGNOSE_EXIT = """exit status:
  0  no finding at or above --fail-on
  1  a finding at or above --fail-on
  2  a usage error, or a target that could not be read (one line on stderr)"""
PROGRAM_EXIT = """exit status:
  0  success (diagnose: no finding at or above --fail-on)
  1  diagnose: a finding at or above --fail-on; run --once: see `opaudit run --help`
  2  a usage error, or a target that could not be read (one line on stderr)"""
RUN_EXIT = """exit status:
  0  stopped by SIGTERM/SIGINT; --once: the cycle ran and everything was delivered
  1  --once: the cycle ran, but an internal error ended it or some Events or policy
     reports were not delivered within 10 s (logged)
  2  a usage or environment error, one line on stderr: no node name, no usable
     kubeconfig, the metrics port taken; --once: the pods could not be listed (the API
     server unreachable or refusing), so nothing was audited
Without --once, an API outage is not an exit: the agent retries, logs each cycle that
could not list pods, and counts it in opaudit_cycle_outcomes_total{outcome="api_error"}."""
COMMAND_EXIT = """exit status:
  0  success
  2  a usage error, or a target that could not be read (one line on stderr)"""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"opaudit: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def pid_value(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"a pid is a positive integer, not {text!r}")
    return int(text)


def caps_hex(text: str) -> str:
    if not CAPS_HEX.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"takes 1-16 hex digits with an optional 0x, not {text!r}")
    return text


def interval_seconds(text: str) -> float:
    return _bounded_float(text, INTERVAL_RANGE, "seconds between cycles")


def _bounded_float(text: str, bounds: tuple[float, float], what: str) -> float:
    low, high = bounds
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # also false for nan
        raise argparse.ArgumentTypeError(f"{what}, from {low:g} to {high:g}, not {text!r}")
    return value


def jitter_seconds(text: str) -> float:
    return _bounded_float(text, JITTER_RANGE, "seconds")


def qps_value(text: str) -> float:
    return _bounded_float(text, QPS_RANGE, "requests per second")


def port_number(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port from 1 to 65535, not {text!r}")
    return int(text)


def positive_count(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"a positive integer, not {text!r}")
    return int(text)


def pod_reference(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not _NAMESPACE.fullmatch(namespace) or len(name) > 253 \
            or not _POD_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"takes NAMESPACE/NAME, not {text!r}")
    return namespace, name


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="opaudit", epilog=PROGRAM_EXIT, description=(
        "Compare what a pod declares with what the kernel enforces on its processes."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"opaudit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_diagnose(sub)
    add_sockets(sub)
    add_caps(sub)
    add_run(sub)
    add_lint(sub)
    return parser


def _command(sub: argparse._SubParsersAction[Parser], name: str, text: str,
             epilog: str = COMMAND_EXIT) -> Parser:
    return sub.add_parser(name, help=text, description=text, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def add_diagnose(sub: argparse._SubParsersAction[Parser]) -> None:
    diag = _command(sub, "diagnose", "audit processes once and print a report", DIAGNOSE_EXIT)
    diag.add_argument("--pid", type=pid_value, action="append", default=[],
                      help="process to audit; repeat for several")
    diag.add_argument("--self", dest="audit_self", action="store_true",
                      help="audit opaudit's own process")
    diag.add_argument("--pod", type=pod_reference, action="append", default=[],
                      metavar="NS/NAME",
                      help="a pod whose containers run on this node (needs the API); repeatable")
    diag.add_argument("-l", "--selector",
                      help="label selector for pods on this node (needs the API)")
    diag.add_argument("-n", "--namespace", help="only pods of this namespace, for -l "
                      "(default: every namespace)")
    diag.add_argument("--node", help="this node's name, for -l (default: $NODE_NAME, else the "
                      "node of the selected pods whose containers run on this host)")
    diag.add_argument("--kubeconfig", metavar="FILE", help=KUBECONFIG_HELP)
    diag.add_argument("--pod-spec", metavar="FILE", help=(
        "the declared side of --pid offline: a Pod as `kubectl get pod -o yaml|json` prints "
        "it; - reads stdin. Without --pid: that pod's running containers on this host"))
    diag.add_argument("--container", metavar="NAME", help=(
        "only this container: of --pod-spec (default: its first), or of the --pod/-l pods "
        "(default: all)"))
    diag.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    diag.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table",
                      help="report format (default: table)")
    diag.add_argument("--fail-on", choices=SEVERITIES, default="high", help=(
        "exit 1 when a finding is at or above this severity (default: high)"))
    diag.set_defaults(func="diagnose")


KUBECONFIG_HELP = "kubeconfig file (default: in-cluster, else $KUBECONFIG, else ~/.kube/config)"
CONFIG_HELP = "YAML file of extra profiles, waivers and severity overrides (see README)"


def add_sockets(sub: argparse._SubParsersAction[Parser]) -> None:
    socks = _command(sub, "sockets", "listening sockets of PID's netns, like `ss -tulnp`, "
                     "with each socket's V6Only")
    socks.add_argument("--pid", type=pid_value, required=True,
                       help="any process of the network namespace to list")
    socks.add_argument("-o", "--output", choices=("table", "json"), default="table",
                       help="table as `ss -tulnp` prints it, or JSON (default: table)")
    socks.set_defaults(func="sockets")


def add_caps(sub: argparse._SubParsersAction[Parser]) -> None:
    caps = _command(sub, "caps", "capability helpers")
    caps_sub = caps.add_subparsers(dest="caps_command", required=True, parser_class=Parser)
    decode = _command(caps_sub, "decode", "exactly what `capsh --decode=HEX` prints")
    decode.add_argument("hex", metavar="HEX", type=caps_hex, help=(
        "a capability mask as /proc/PID/status shows it: 1-16 hex digits, optional 0x"))
    decode.set_defaults(func="caps_decode")


def add_run(sub: argparse._SubParsersAction[Parser]) -> None:
    run = _command(sub, "run", "the node agent: audit the selected pods on this node and "
                   "post Events (and policy reports)", RUN_EXIT)
    run.add_argument("--node", help="this node's name (default: $NODE_NAME)")
    run.add_argument("-l", "--selector", help="label selector for pods to audit "
                     "(default: every pod on the node)")
    run.add_argument("-n", "--namespace", help="only pods of this namespace "
                     "(default: every namespace)")
    run.add_argument("--once", action="store_true", help="one audit cycle, then exit")
    low, high = INTERVAL_RANGE
    run.add_argument("--interval", type=interval_seconds, default=60.0, metavar="SECONDS",
                     help=f"seconds between cycles, {low:g} to {high:g} (default: 60)")
    run.add_argument("--sink", choices=RUN_SINKS, action="append", help=(
        "where findings go, repeatable: Kubernetes Events on the pods, one policy report per "
        "audited pod (openreports.io Report, else wgpolicyk8s.io PolicyReport), or one JSON "
        "report per cycle on stdout (default: events)"))
    run.add_argument("--report-api", choices=("openreports", "wgpolicyk8s"), help=(
        "the policy-report API to write (default: openreports.io/v1alpha1 when the API "
        "server serves it, else wgpolicyk8s.io/v1alpha2)"))
    run.add_argument("--report-max-results", type=positive_count, default=100, metavar="N",
                     help="results kept per policy report, most severe first (default: 100)")
    run.add_argument("--metrics-port", type=port_number, metavar="PORT", help=(
        "serve /metrics, /healthz and /readyz on this port (default: no server; the "
        "DaemonSet uses 9090)"))
    run.add_argument("--kubeconfig", metavar="FILE", help=KUBECONFIG_HELP)
    run.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    run.add_argument("--startup-jitter", type=jitter_seconds, default=RUN_STARTUP_JITTER,
                     metavar="SECONDS", help=(
                         "wait a random delay up to this long before the first pod list, so "
                         "a fleet started together does not list at once; --once lists at "
                         "once (default: 10)"))
    run.add_argument("--api-qps", type=qps_value, default=RUN_API_QPS, metavar="QPS", help=(
        "client-side limit on Kubernetes API requests per second, after --api-burst "
        "(default: 50, as the kubelet's)"))
    run.add_argument("--api-burst", type=positive_count, default=RUN_API_BURST, metavar="N",
                     help=("requests that may go at once before --api-qps applies (default: 100)"))
    run.set_defaults(func="run")


LINT_EXIT = """exit status:
  0  no predicted finding at or above --fail-on
  1  a predicted finding at or above --fail-on
  2  a usage error, or input that could not be read (one line on stderr)"""
RUNTIME_CHOICES = ("containerd", "containerd-2", "cri-o", "all")
LINT_OUTPUTS = ("table", "json", "yaml", "sarif", "helm-values")


def image_archive(text: str) -> tuple[str, str]:
    ref, sep, archive = text.partition("=")
    if not sep or not ref or not archive.startswith("oci-archive:") or \
            len(archive) == len("oci-archive:"):
        raise argparse.ArgumentTypeError(f"takes REF=oci-archive:PATH, not {text!r}")
    return ref, archive.removeprefix("oci-archive:")


def image_user(text: str) -> tuple[str, int, int | None]:
    ref, sep, user = text.rpartition("=")
    uid, _, gid = user.partition(":")
    if not sep or not ref or not uid.isascii() or not uid.isdigit() or \
            (gid and not (gid.isascii() and gid.isdigit())):
        raise argparse.ArgumentTypeError(f"takes REF=UID[:GID], not {text!r}")
    return ref, int(uid), int(gid) if gid else None


def add_lint(sub: argparse._SubParsersAction[Parser]) -> None:
    lint = _command(sub, "lint", "predict, from manifests, what the kernel will enforce on "
                    "each container under each runtime, and judge it with the same rules",
                    LINT_EXIT)
    lint.add_argument("inputs", nargs="*", metavar="FILE|DIR|-", help=(
        "manifests as `helm template` or `kubectl kustomize` print them; a directory is read "
        "recursively (*.yaml, *.yml, *.json); - or nothing reads stdin"))
    lint.add_argument("--runtime", choices=RUNTIME_CHOICES, default="all", help=(
        "the runtime model: containerd (1.x), containerd-2, cri-o, or all of them, each "
        "finding saying under which it holds (default: all)"))
    lint.add_argument("--seccomp-default", action="store_true", help=(
        "the kubelet runs with --seccomp-default: a container without seccompProfile gets "
        "RuntimeDefault instead of Unconfined"))
    lint.add_argument("--image", type=image_archive, action="append", default=[],
                      metavar="REF=oci-archive:PATH", help=(
                          "read the image's user, /etc/passwd, file owners and the "
                          "entrypoint's file capabilities from an OCI archive; repeatable"))
    lint.add_argument("--image-user", type=image_user, action="append", default=[],
                      metavar="REF=UID[:GID]", help="the user an image runs as; repeatable")
    lint.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    lint.add_argument("-o", "--output", choices=LINT_OUTPUTS, default="table", help=(
        "table, json, yaml, sarif (GitHub code scanning), or helm-values (a values overlay "
        "fixing the Spark Operator chart's findings) (default: table)"))
    lint.add_argument("--fail-on", choices=SEVERITIES, default="high", help=(
        "exit 1 when a predicted finding is at or above this severity (default: high)"))
    lint.set_defaults(func="lint")
