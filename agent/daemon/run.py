"""`opaudit run`'s start-up: the node name, our own privileges, the API client, the metrics
server and the sinks; then the loop (`agent.daemon.loop`)."""

from __future__ import annotations

import logging
import threading

from agent.collect.procfs import ProcFS
from agent.daemon.loop import NodeAgent
from agent.daemon.options import RunContext, RunOptions
from agent.daemon.sinks import make_sink
from agent.kube.watch import WATCH_SECONDS
from agent.logs import setup_json_logging
from agent.output.metrics import AgentMetrics
from agent.output.probe_server import serve_metrics
from agent.privilege import restrict_self
from agent.targets.node import node_name

log = logging.getLogger(__name__)


def run_agent(
    options: RunOptions,
    context: RunContext = RunContext(),  # noqa: B008 - frozen, never mutated
    *,
    metrics: AgentMetrics | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run the agent; 0 on a clean stop (or a complete --once), 1 when an internal error
    ended the --once cycle or it could not deliver all its Events or reports, 2 for a usage
    or environment error (no node name, no usable kubeconfig, the metrics port taken;
    --once: the pods could not be listed). `RUN_EXIT` in `agent.arguments` says the same in
    `run --help`.

    `metrics` and `stop` are for embedding (tests): setting `stop` ends the loop like
    SIGTERM does, from any thread.
    """
    setup_json_logging(context.log_level)
    node = node_name(options.node)
    if not node:
        log.error("no node name: pass --node or set NODE_NAME (the DaemonSet sets it "
                  "from the downward API spec.nodeName)")
        return 2
    from agent.collect.sockets import fd_reader_setting

    try:
        fd_reader_setting()  # read once; an unknown value is a mistake, not a silent `auto`
    except ValueError as exc:
        log.error("bad environment", extra={"error": str(exc)})
        return 2
    privileges = context.privileges
    if privileges is None and context.restrict_privileges:
        privileges = restrict_self()  # before any thread: capabilities are per thread
    if privileges is not None:
        level = logging.WARNING if privileges.problems else logging.INFO
        log.log(level, "own privileges", extra=privileges.log_fields())
    from agent.kube.client import load_api

    try:
        api = load_api(options.kubeconfig, configuration=context.configuration,
                       qps=options.api_qps, burst=options.api_burst)
    except Exception as exc:  # noqa: BLE001 - bad kubeconfig, no in-cluster env: one line
        log.error("cannot configure the Kubernetes API client", extra={"error": str(exc)})
        return 2
    if metrics is None:
        # Ready needs an API answer within a few intervals; an idle watch answers at its end.
        metrics = AgentMetrics(liveness_window=max(3 * options.interval, 30.0),
                               readiness_window=max(3 * options.interval, WATCH_SECONDS + 60))
    try:
        server = (serve_metrics(metrics, options.metrics_port, context.metrics_host)
                  if options.metrics_port is not None else None)
    except OSError as exc:  # port taken, or below 1024 without NET_BIND_SERVICE
        log.error("cannot serve metrics", extra={"port": options.metrics_port, "error": str(exc)})
        return 2
    sink = make_sink(options.sinks, api, node, metrics,
                     context.event_queue_size, report_api=options.report_api,
                     report_max_results=options.report_max_results)
    agent = NodeAgent(api, node, options, sink, metrics, stop or threading.Event(),
                      ProcFS(context.proc_root))
    try:
        return agent.run_once() if options.once else agent.run_forever()
    finally:
        if server is not None:
            server.close()
