"""`kubectl opaudit`: the one-shot audit of one pod, through the agent on that pod's node.

    kubectl opaudit diagnose POD [-n NS] [-o table|json|yaml] [--fail-on SEVERITY]

reads the pod's spec.nodeName, finds the opaudit agent pod on that node and runs
`kubectl exec <agent> -- opaudit diagnose --pod NS/POD ...` there, passing its output and
exit status through. With no agent on the node, `--debug-node --image IMAGE` runs the same
audit in a `kubectl debug node/NODE --profile=sysadmin` pod instead (hostPID, root), fed the
pod's manifest (`diagnose --pod-spec`, no API access needed), and deletes that pod after.

Everything goes through the user's own kubectl, so their kubeconfig, context and RBAC apply.
A plugin error is one line on stderr and exit 2: kubectl's own sentence ("The connection to
the server ... was refused", "Error from server (Forbidden): ..."), never the klog lines
kubectl writes before it (`E1207 09:06:13.605781 23906 memcache.go:265] "Unhandled Error"`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

AGENT_SELECTOR = "app.kubernetes.io/name=opaudit,app.kubernetes.io/component=node-agent"
AGENT_CONTAINER = "opaudit"
DEBUG_TIMEOUT_S = 300
SEVERITIES = ("critical", "high", "medium", "low", "info")
_DEBUG_POD = re.compile(r"Creating debugging pod (\S+) with container")
# klog's header (k8s.io/klog/v2): severity letter, mmdd, time, thread id, file:line].
_KLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [^ \]]+:\d+\] ")
# How kubectl words the failure it exits with (k8s.io/kubectl/pkg/cmd/util/helpers.go).
UNREACHABLE = ("The connection to the server", "Unable to connect to the server")
KUBECTL_SENTENCES = ("Error from server", "error:", "Error in configuration", *UNREACHABLE)
KUBECTL_TIMEOUT_S = 60
EXIT_STATUS = """\
exit status:
  0  the audit ran and no finding is at or above --fail-on
  1  a finding is at or above --fail-on
  2  usage error, or the audit could not run: no kubeconfig, API server unreachable, no
     such pod, pod not scheduled, no agent on its node, RBAC forbids the read or the exec
"""


class PluginError(Exception):
    """One line for stderr; the plugin exits 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"kubectl-opaudit: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="kubectl opaudit", description=(
        "Audit a pod through the opaudit agent on its node."), epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    diag = sub.add_parser(
        "diagnose", help="audit one pod's processes on its node", epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Audit one pod's processes through the opaudit agent on the pod's node\n"
                    "(`opaudit diagnose --pod NS/POD`, run there by `kubectl exec`).")
    diag.add_argument("pod", metavar="POD", help="the name of the pod to audit")
    diag.add_argument("-n", "--namespace", help="the pod's namespace (default: the context's)")
    diag.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table",
                      help="report format (default: table); json and yaml are the "
                           "opaudit.report/v1 document")
    diag.add_argument("--fail-on", choices=SEVERITIES, default="high",
                      help="exit 1 when a finding is at or above this severity "
                           "(default: high)")
    diag.add_argument("--agent-namespace",
                      help="where the agent runs (default: look in every namespace)")
    diag.add_argument("--agent-selector", default=AGENT_SELECTOR,
                      help=f"labels of the agent's pods (default: {AGENT_SELECTOR})")
    diag.add_argument("--debug-node", action="store_true",
                      help="no agent on the node: audit from a `kubectl debug node` pod")
    diag.add_argument("--image", help="the opaudit image for --debug-node")
    diag.add_argument("--kubeconfig", help="kubeconfig file for kubectl")
    diag.add_argument("--context", help="kubeconfig context for kubectl")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug_node and not args.image:  # a usage error: say it before any API call
        parser.error("--debug-node needs --image (the opaudit image, as the DaemonSet uses)")
    try:
        return diagnose(args)
    except PluginError as exc:
        print(f"kubectl-opaudit: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# --- kubectl -----------------------------------------------------------------------------


def kubectl_base(args: argparse.Namespace) -> list[str]:
    base = ["kubectl"]
    if args.kubeconfig:
        base.append(f"--kubeconfig={args.kubeconfig}")
    if args.context:
        base.append(f"--context={args.context}")
    return base


def kubectl_json(args: argparse.Namespace, *argv: str) -> dict[str, Any]:
    try:
        result = subprocess.run([*kubectl_base(args), *argv, "-o", "json"],
                                capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S)
    except FileNotFoundError:
        raise PluginError("kubectl is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise PluginError(f"kubectl {' '.join(argv[:3])} did not finish within "
                          f"{KUBECTL_TIMEOUT_S} s") from None
    if result.returncode != 0:
        message = kubectl_error(result.stderr)
        if message.startswith(UNREACHABLE) and not has_cluster(args):
            raise PluginError(f"no kubeconfig: {kubeconfig_searched(args)}; give --kubeconfig "
                              f"FILE or set KUBECONFIG ({message})")
        raise PluginError(message)
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def kubectl_lines(stderr: str) -> list[str]:
    """kubectl's stderr without klog's lines (client-go logs its retries there first)."""
    return [ln.strip() for ln in stderr.splitlines() if ln.strip() and not _KLOG.match(ln)]


def kubectl_error(stderr: str) -> str:
    """kubectl's own error, on one line ("Error from server (Forbidden): ..." as it is)."""
    lines = kubectl_lines(stderr)
    errors = [ln for ln in lines if ln.startswith(KUBECTL_SENTENCES)]
    return " ".join((errors or lines or ["kubectl failed"])[0].split())


def has_cluster(args: argparse.Namespace) -> bool:
    """Whether kubectl has any cluster to talk to. With no kubeconfig, kubectl falls back to
    in-cluster config in a pod, else to http://localhost:8080, and only says the latter
    refused the connection (k8s.io/client-go/tools/clientcmd: ErrEmptyConfig)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    try:
        result = subprocess.run([*kubectl_base(args), "config", "view", "-o",
                                 "jsonpath={.clusters[*].name}"],
                                capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return True  # cannot tell: kubectl's own sentence stands
    return result.returncode != 0 or bool(result.stdout.strip())


def kubeconfig_searched(args: argparse.Namespace) -> str:
    """Where kubectl looked (--kubeconfig, else every file of KUBECONFIG, else
    ~/.kube/config), and whether that exists at all."""
    if args.kubeconfig:
        label, paths = f"--kubeconfig {args.kubeconfig}", [args.kubeconfig]
    elif os.environ.get("KUBECONFIG"):
        label = f"KUBECONFIG={os.environ['KUBECONFIG']}"
        paths = [p for p in os.environ["KUBECONFIG"].split(os.pathsep) if p]
    else:
        label, paths = "~/.kube/config", [os.path.expanduser("~/.kube/config")]
    exists = any(os.path.isfile(p) for p in paths)
    return f"{label} {'names no cluster' if exists else 'does not exist'}"


def context_namespace(args: argparse.Namespace) -> str:
    """The namespace kubectl uses without -n: the context's, else `default`."""
    try:
        result = subprocess.run([*kubectl_base(args), "config", "view", "--minify", "-o",
                                 "jsonpath={.contexts[0].context.namespace}"],
                                capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return "default"
    return (result.stdout.strip() if result.returncode == 0 else "") or "default"


# --- pod -> node -> agent ----------------------------------------------------------------


def target_pod(args: argparse.Namespace) -> dict[str, Any]:
    scope = ["-n", args.namespace] if args.namespace else []
    try:
        return kubectl_json(args, "get", "pod", args.pod, *scope)
    except PluginError as exc:
        if "(NotFound)" in str(exc):
            if args.namespace:
                raise PluginError(f"no such pod: {args.namespace}/{args.pod}") from None
            namespace = context_namespace(args)
            raise PluginError(f"no such pod: {namespace}/{args.pod} (the context's namespace; "
                              "give -n NAMESPACE for another)") from None
        raise


def agents_on(args: argparse.Namespace, node: str) -> list[dict[str, Any]]:
    scope = ["-n", args.agent_namespace] if args.agent_namespace else ["--all-namespaces"]
    listing = kubectl_json(args, "get", "pods", *scope, "-l", args.agent_selector,
                           "--field-selector", f"spec.nodeName={node}")
    running = [p for p in listing.get("items", [])
               if (p.get("status") or {}).get("phase") == "Running"
               and not (p.get("metadata") or {}).get("deletionTimestamp")]
    # Ready first: an agent still starting answers the same diagnose, but a ready one is sure.
    return sorted(running, key=lambda p: not is_ready(p))


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def diagnose(args: argparse.Namespace) -> int:
    pod = target_pod(args)
    namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        raise PluginError(f"pod {namespace}/{name} is not scheduled on a node yet "
                          "(spec.nodeName is empty): nothing runs to audit")
    remote = ["opaudit", "diagnose", "-o", args.output, "--fail-on", args.fail_on]
    agents = agents_on(args, node)
    if agents:
        return exec_in_agent(args, agents[0], [*remote, "--pod", f"{namespace}/{name}"])
    if not args.debug_node:
        image = args.image or "<opaudit image>"
        raise PluginError(
            f"no opaudit agent runs on node {node} (no Running pod with labels "
            f"{args.agent_selector}); to audit from a one-off debug pod instead: "
            f"kubectl opaudit diagnose {name} -n {namespace} --debug-node --image {image}")
    return debug_node(args, node, pod, remote)


def exec_in_agent(args: argparse.Namespace, agent: dict[str, Any], remote: list[str]) -> int:
    """`kubectl exec`: stdout streams through; stderr is read to tell kubectl's own errors
    (RBAC, connection) from the remote diagnose's, whose exit status passes through."""
    meta = agent["metadata"]
    argv = [*kubectl_base(args), "exec", "-n", meta["namespace"], meta["name"],
            "-c", AGENT_CONTAINER, "--", *remote]
    result = subprocess.run(argv, stdout=None, stderr=subprocess.PIPE, text=True)
    stderr = [ln for ln in result.stderr.splitlines()
              if not ln.startswith("command terminated with exit code") and not _KLOG.match(ln)]
    kubectl_said = [ln for ln in stderr if ln.startswith(KUBECTL_SENTENCES)]
    if result.returncode != 0 and kubectl_said:
        message = " ".join(kubectl_said[0].split())
        if "(Forbidden)" in message:
            raise PluginError(f"RBAC forbids exec into the agent pod "
                              f"{meta['namespace']}/{meta['name']}: {message}")
        raise PluginError(f"cannot exec into the agent pod {meta['namespace']}/{meta['name']}: "
                          f"{message}")
    for line in stderr:
        print(line, file=sys.stderr)
    return result.returncode


# --- no agent: kubectl debug node --------------------------------------------------------


def debug_node(args: argparse.Namespace, node: str, pod: dict[str, Any],
               remote: list[str]) -> int:
    """Run diagnose in a `kubectl debug node` pod, given the target's manifest in an
    environment variable (the debug pod has no API credentials of its own); its log is the
    report and its exit code the status. The debug pod is deleted whatever happens."""
    manifest = json.dumps(pod, separators=(",", ":"))
    script = ('printf %s "$OPAUDIT_POD" > /tmp/pod.json && exec "$@" --pod-spec /tmp/pod.json')
    argv = [*kubectl_base(args), "debug", f"node/{node}", "--profile=sysadmin",
            f"--image={args.image}", f"--env=OPAUDIT_POD={manifest}", "--",
            "sh", "-c", script, "opaudit", *remote]
    created = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    match = _DEBUG_POD.search(created.stdout + created.stderr)
    if created.returncode != 0 or match is None:
        raise PluginError(f"kubectl debug node/{node}: {kubectl_error(created.stderr)}")
    debug_pod = match.group(1)
    namespace = debug_namespace(args, debug_pod)
    try:
        code = wait_for_exit(args, namespace, debug_pod)
        logs = subprocess.run([*kubectl_base(args), "logs", "-n", namespace, debug_pod],
                              capture_output=True, text=True, timeout=60)
        sys.stdout.write(logs.stdout)
        return code
    finally:
        subprocess.run([*kubectl_base(args), "delete", "pod", "-n", namespace, debug_pod,
                        "--wait=false", "--ignore-not-found"],
                       capture_output=True, text=True, timeout=60)


def debug_namespace(args: argparse.Namespace, debug_pod: str) -> str:
    """kubectl debug node creates its pod in the context's namespace."""
    listing = kubectl_json(args, "get", "pods", "--all-namespaces",
                           "--field-selector", f"metadata.name={debug_pod}")
    for item in listing.get("items", []):
        return str(item["metadata"]["namespace"])
    raise PluginError(f"the debug pod {debug_pod} disappeared")


def wait_for_exit(args: argparse.Namespace, namespace: str, debug_pod: str) -> int:
    deadline = time.monotonic() + DEBUG_TIMEOUT_S
    while time.monotonic() < deadline:
        status = kubectl_json(args, "get", "pod", "-n", namespace, debug_pod).get("status", {})
        for container in status.get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if terminated is not None:
                return int(terminated.get("exitCode", 2))
        time.sleep(1)
    raise PluginError(f"the debug pod {namespace}/{debug_pod} did not finish within "
                      f"{DEBUG_TIMEOUT_S} s")


if __name__ == "__main__":  # the krew archive runs this file as a zipapp
    sys.exit(main())
