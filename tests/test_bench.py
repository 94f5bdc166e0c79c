"""scripts/bench's staging helpers stage what the benchmark claims (no timing here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from staging import Stage, run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib.conns import LISTENERS, stage_connections  # noqa: E402
from benchlib.timing import Timed, pair_ratio  # noqa: E402


def test_bench_help_lists_the_quick_mode() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout


def test_pair_ratio_is_the_median_of_per_round_ratios() -> None:
    top = Timed("a", (), (1.0, 2.0, 9.0))
    bottom = Timed("b", (), (2.0, 2.0, 3.0))
    assert pair_ratio(top, bottom) == 1.0  # ratios 0.5, 1.0, 3.0


def test_staged_netns_holds_the_connections_and_listeners(stage: Stage) -> None:
    staged = stage_connections(stage, 300, log=None)
    assert staged.tcp_inuse >= 600
    established = run(["ip", "netns", "exec", staged.netns, "ss", "-Htn", "state",
                       "established"]).stdout.splitlines()
    assert len(established) == 600  # both ends of each loopback connection
    listening = run(["ip", "netns", "exec", staged.netns, "ss", "-Htlnp"]).stdout.splitlines()
    owned = [line for line in listening if f"pid={staged.target.pid}," in line]
    assert len(owned) == LISTENERS == len(listening)  # the holders closed their own
    stage.close()
    assert all(h.popen.poll() is not None for h in staged.holders)


def test_a_tiny_fleet_runs_every_phase_and_each_agent_lists_from_the_watch_cache() -> None:
    """Keeps `scripts/bench --fleet` working: two real agents, short phases. It asserts
    what the agents asked for, never how fast (the full-size figures are in the README)."""
    from benchlib.fleet import FleetOptions, node_name, run_fleet
    from benchlib.fleetreport import fleet_tables

    result = run_fleet(FleetOptions(2, jitter=1, window=12, steady=2, downtime=1,
                                    after_restart=12), progress=False)
    pods = [r for r in result.records if r.path == "/api/v1/pods"]
    for i in range(2):
        mine = [r for r in pods if r.params.get("fieldSelector") == f"spec.nodeName={node_name(i)}"]
        assert mine and not mine[0].is_watch and mine[0].params["resourceVersion"] == "0"
        assert mine[0].params["labelSelector"] == "app.kubernetes.io/name=spark-operator"
        assert all(r.params["allowWatchBookmarks"] == "true" for r in mine if r.is_watch)
    assert not [r for r in result.records if r.method != "GET"]  # nothing audited, no write
    tables = fleet_tables(result)
    for phase in ("start, no jitter", "start, --startup-jitter 1", "steady:", "restart (1 s down",
                  "extrapolated to 5,000 nodes", "the kubelets' own pod watches"):
        assert phase in tables, phase
