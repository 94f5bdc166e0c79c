"""`opaudit run`: the DaemonSet's agent, one per node.

Pods (list + watch, `agent.kube.watch`) -> their audit requests (`agent.targets`) ->
`agent.audit.audit` -> the sinks (`agent.output`): metrics always, plus what `--sink` names,
repeatable: Kubernetes Events on the pods, one policy report per audited pod, or one JSON
report per cycle on stdout.

- `options`: what the command line says (`RunOptions`, `SinkKind`) and what the process
  around the loop provides (`RunContext`);
- `run`: start-up (node name, privileges, API client, metrics server), then the loop;
- `sinks`: the sinks `--sink` names, as one;
- `loop`: the loop itself (`NodeAgent`): a cycle each `--interval`, and one per pod the
  watch reports with a new running container.
"""

from agent.daemon.loop import NodeAgent
from agent.daemon.options import RunContext, RunOptions, SinkKind
from agent.daemon.run import run_agent
from agent.daemon.sinks import make_sink

__all__ = ["NodeAgent", "RunContext", "RunOptions", "SinkKind", "make_sink", "run_agent"]
