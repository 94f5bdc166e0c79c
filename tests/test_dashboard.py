"""The Grafana dashboard (daemonset/grafana/opaudit.json) reads only metrics a running agent
really exports: each PromQL expression's metric names are checked against a scrape of
/metrics of an agent that ran a cycle with the Events and reports sinks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from agent_run import free_port, http_get, run_agent_thread, wait_for
from cgroup_staging import KubepodsCgroups
from kube.apiserver import ApiServer
from pod_staging import NODE, SELECTOR, stage_pod
from prometheus_client.parser import text_string_to_metric_families
from staging import Stage

from agent.daemon import RunContext, RunOptions

DASHBOARD = Path(__file__).resolve().parents[1] / "daemonset" / "grafana" / "opaudit.json"
SAMPLE_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
                   "histogram": ("_bucket", "_sum", "_count", "_created"), "info": ("_info",),
                   "summary": ("", "_sum", "_count", "_created")}
# PromQL words that look like metric names: functions, aggregations, label names, variables.
PROMQL_WORDS = {"sum", "by", "rate", "histogram_quantile", "label_values", "le", "job",
                "instance", "rule", "severity", "reason", "code", "without", "avg", "max",
                "count", "increase", "or", "vector", "outcome", "sink", "stage"}


def expressions(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    return found


def metric_names(expr: str) -> set[str]:
    """Identifiers outside {...} selectors, [...] ranges and "strings" that are not PromQL."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\$\w+", " ", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare))
    return words - PROMQL_WORDS


def exported(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


def test_every_dashboard_expression_names_a_metric_the_agent_exports(
    stage: Stage, cgroups: KubepodsCgroups, embedded_logging: None
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    with ApiServer(report_apis=("openreports.io/v1alpha1",)) as server:
        server.add_pod(stage_pod(stage, cgroups, "so-a").manifest)
        port = free_port()
        options = RunOptions(node=NODE, selector=SELECTOR, interval=0.5,
                             sinks=("events", "reports"), metrics_port=port)
        context = RunContext(metrics_host="127.0.0.1", configuration=server.configuration(),
                             restrict_privileges=False)  # in-process: keep pytest's own caps
        with run_agent_thread(options, context):
            assert wait_for(lambda: http_get(port, "/readyz")[0] == 200, 30)
            status, body = http_get(port, "/metrics")
    assert status == 200
    names = exported(body)
    for needed in ("opaudit_findings", "opaudit_reports_written_total",
                   "opaudit_cycle_outcomes_total", "opaudit_audit_faults_total",
                   "opaudit_sink_errors_total",
                   "process_resident_memory_bytes", "process_cpu_seconds_total"):
        assert needed in names  # what the panels are about is really there
    for expr in expressions(dashboard):
        used = metric_names(expr)
        assert used, expr
        assert used <= names, (expr, used - names)
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("rule", "severity", "scan duration", "events", "reports", "dropped",
                  "api errors", "rss", "cpu", "cannot list pods", "outcome", "faults"):
        assert topic in titles, topic
    # An API outage is a panel of its own, not a quiet "no findings".
    outage = [p for p in dashboard["panels"]
              if any('outcome="api_error"' in t["expr"] for t in p.get("targets", []))]
    assert [p["title"] for p in outage] == [
        "Agents that cannot list pods (API unreachable or refused)"]
