"""The tables `scripts/bench --fleet` prints: per agent, and extrapolated to 5,000 nodes."""

from __future__ import annotations

import os
import statistics

from benchlib.fleet import FleetResult, Phase
from benchlib.nodestage import PODS, SELECTED
from benchlib.table import Row, render

FLEET_NODES = 5_000
# The kubelet's own pod watch (pkg/kubelet/config/apiserver.go: a client-go reflector on
# pods with spec.nodeName=<node>): one watch per node, re-opened after a random 5-10 min
# (reflector.go minWatchTimeout), so 3600 / 450 s = 8 watch requests per node per hour.
KUBELET_WATCHES_PER_HOUR = 3600 / 450


def _mean_max(phase: Phase, kind: str | None = None) -> str:
    mean, most = phase.per_agent(kind)
    return f"{mean:.2f} / {most}"


def _spread(seconds: list[float], agents: int) -> str:
    if not seconds:
        return "no agent listed"
    listed = "" if len(seconds) == agents else f" ({len(seconds)} of {agents} listed)"
    return (f"{min(seconds):.0f} / {statistics.median(seconds):.0f} / {max(seconds):.0f} s"
            f"{listed}")


def _start_rows(result: FleetResult, key: str, label: str) -> list[Row]:
    phase, opts = result.phases[key], result.options
    bound = phase.agents / opts.jitter * 2
    aligned = phase.aligned_peak_lists_per_second()
    return [
        Row(f"{label}: requests per agent in its first {opts.window:g} s (mean / max)",
            _mean_max(phase)),
        Row("  of which LIST / watch / writes (mean per agent)",
            " / ".join(f"{phase.per_agent(k)[0]:.2f}" for k in ("list", "watch", "write"))),
        Row(f"  agents up after spawn, min / median / max ({phase.agents} interpreters "
            f"starting at once on {os.cpu_count()} shared cores)",
            _spread(result.up_after_spawn[key], phase.agents)),
        Row("  peak LISTs per second at the server, as recorded (paced by those start-ups)",
            str(phase.peak_lists_per_second())),
        Row("  peak LISTs per second, each agent's start-up taken out (all up at once)",
            str(aligned), f"<= N / jitter x 2 = {bound:g}" if key == "jitter" else "",
            aligned <= bound if key == "jitter" else None),
    ]


def watches_per_hour(result: FleetResult) -> float:
    """Per agent in steady state: one watch per timeout asked (3600 / their mean)."""
    return 3600 / statistics.fmean(result.watch_timeouts) if result.watch_timeouts else 0.0


def fleet_rows(result: FleetResult) -> list[Row]:
    opts, steady, restart = result.options, result.phases["steady"], result.phases["restart"]
    per_hour = 3600 / opts.steady
    lists = steady.per_agent("list")[0]
    writes = steady.per_agent("write")[0]
    bookmarks = result.bookmarks_in_steady / opts.agents * per_hour
    timeouts = result.watch_timeouts
    rows = _start_rows(result, "cold", "start, no jitter")
    rows += _start_rows(result, "jitter", f"start, --startup-jitter {opts.jitter:g}")
    rows += [
        Row(f"steady: requests per agent in {opts.steady:g} s (mean / max)",
            _mean_max(steady)),
        Row("steady: LIST per agent per hour", f"{lists * per_hour:.2f}", "0", lists == 0),
        Row("steady: writes per agent per hour (no Events: nothing audited here)",
            f"{writes * per_hour:.2f}", "0", writes == 0),
        Row(f"steady: watch requests per agent per hour (3600 / mean timeoutSeconds asked, "
            f"{min(timeouts, default=0)}-{max(timeouts, default=0)} s)",
            f"{watches_per_hour(result):.1f}"),
        Row("steady: bookmarks received per agent per hour (events on the open watch)",
            f"{bookmarks:.1f}"),
        Row(f"restart ({opts.downtime:g} s down, history gone): requests per agent in "
            f"{opts.downtime + opts.after_restart:g} s (mean / max)", _mean_max(restart)),
        Row("  of which LIST / watch (mean per agent)",
            " / ".join(f"{restart.per_agent(k)[0]:.2f}" for k in ("list", "watch"))),
        Row("  peak LISTs per second at the server", str(restart.peak_lists_per_second()),
            f"<= N / jitter x 2 = {opts.agents / opts.jitter * 2:g}",
            restart.peak_lists_per_second() <= opts.agents / opts.jitter * 2),
        Row("  failed attempts per agent (refused while down; agents' logs)",
            f"{restart.failures / opts.agents:.2f}"),
        Row("agent RSS (mean, steady)", f"{result.rss_mib:.1f} MiB"),
    ]
    return rows


def extrapolation_rows(result: FleetResult) -> list[Row]:
    opts, n = result.options, FLEET_NODES
    watches = watches_per_hour(result)
    bookmarks = result.bookmarks_in_steady / opts.agents * 3600 / opts.steady
    restart_lists = result.phases["restart"].per_agent("list")[0]
    return [
        Row(f"start of {n:,} agents with --startup-jitter {opts.jitter:g}: LISTs per second",
            f"{n:,} / {opts.jitter:g} s = {n / opts.jitter:,.0f} "
            f"(at most {2 * n / opts.jitter:,.0f})"),
        Row("  each LIST: one node's pods from the watch cache (resourceVersion=0)",
            f"{SELECTED} of {PODS} pods"),
        Row("steady: watch requests per second, fleet-wide",
            f"{n:,} x {watches:.1f} / 3600 = {n * watches / 3600:.1f}"),
        Row("steady: LISTs and writes per second", "0"),
        Row("steady: bookmarks per second, fleet-wide (on open watches)",
            f"{n:,} x {bookmarks:.0f} / 3600 = {n * bookmarks / 3600:.0f}"),
        Row("API server restart: LISTs, spread by the jitter",
            f"{n:,} x {restart_lists:.2f} over {opts.jitter:g} s = "
            f"{n * restart_lists / opts.jitter:,.0f}/s"),
        Row(f"reference: the kubelets' own pod watches ({n:,}, re-opened every 5-10 min)",
            f"{n:,} x {KUBELET_WATCHES_PER_HOUR:.0f} / 3600 = "
            f"{n * KUBELET_WATCHES_PER_HOUR / 3600:.1f} watch requests/s"),
    ]


def fleet_tables(result: FleetResult) -> str:
    opts = result.options
    load = " ".join(f"{x:.1f}" for x in result.load)
    title = (f"fleet: {opts.agents} `opaudit run` agents (one NODE_NAME each) against the test "
             f"API server holding {opts.agents} nodes x {PODS} pods ({SELECTED} selected per "
             f"node); load average {load} at the end")
    note = ("API traffic only: the pods are Pending (their containers cannot run on this "
            "one host), so the agents audit nothing and write no Event.")
    return (render(title, fleet_rows(result)) + "\n" + note + "\n\n"
            + render(f"fleet: extrapolated to {FLEET_NODES:,} nodes",
                     extrapolation_rows(result)))
