"""READY means the agent can do its job: `opaudit run` as the DaemonSet
runs it, against the API test server's fault injection. /readyz turns 503 while every Event
write gets 403 and while the API refuses connections, and 200 again once they work; SIGTERM
with Events unsent says how many it dropped."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from agent_run import AgentProcess, assert_json_lines, free_port, http_get, loop_argv, wait_for
from cgroup_staging import KubepodsCgroups
from kube.apiserver import ApiServer
from pod_staging import events_on, expected_rules, stage_pod
from staging import Stage

EVERY = 1_000_000  # a fault for every matching request until cleared


def test_readyz_follows_the_api_and_sigterm_counts_what_it_drops(
    stage: Stage, cgroups: KubepodsCgroups, server: ApiServer, kubeconfig: Path
) -> None:
    first = stage_pod(stage, cgroups, "so-controller-0")
    server.add_pod(first.manifest)
    port = free_port()
    with AgentProcess(loop_argv(kubeconfig, port, 300), stdout=subprocess.DEVNULL) as agent:
        assert wait_for(lambda: http_get(port, "/readyz")[0] == 200, 30), "never ready"

        # Every Event write refused (RBAC): a new pod's Events cannot be posted.
        server.inject("*", r"/events", status=403, count=EVERY)
        refused = stage_pod(stage, cgroups, "so-controller-1")
        server.add_pod(refused.manifest)
        assert wait_for(lambda: http_get(port, "/readyz") == (
            503, "Event writes are refused (403): check the RBAC\n"), 30)
        server.clear_faults()
        assert wait_for(lambda: http_get(port, "/readyz")[0] == 200, 40)
        assert wait_for(lambda: len(events_on(server, refused.uid)) == len(
            expected_rules(refused)), 30)

        # The API refuses every connection: not ready within the grace of 10 s.
        server.stop()
        stopped = time.monotonic()
        assert wait_for(lambda: http_get(port, "/readyz")[0] == 503, 30)
        went_unready = time.monotonic() - stopped
        assert "API server unreachable" in http_get(port, "/readyz")[1]
        server.start()
        assert wait_for(lambda: http_get(port, "/readyz")[0] == 200, 45)
        print(f"\nAPI down -> /readyz 503 after {went_unready:.1f} s")

        # SIGTERM while a new pod's Events cannot be delivered (500 on every write).
        server.inject("*", r"/events", status=500, count=EVERY)
        failed_before = _failed_event_writes(server)
        unsent = stage_pod(stage, cgroups, "so-controller-2")
        server.add_pod(unsent.manifest)
        owed = len(expected_rules(unsent))
        assert wait_for(lambda: _failed_event_writes(server) > failed_before, 30)
        assert agent.terminate(timeout=15) == 0
    stopped_line = [line for line in assert_json_lines(agent.err) if line["msg"] == "stopped"][-1]
    assert stopped_line["flushed"] is False
    assert stopped_line["dropped"] == owed > 0, stopped_line


def _failed_event_writes(server: ApiServer) -> int:
    return sum(r.method == "POST" and "/events" in r.path and r.status == 500
               for r in list(server.request_log))
