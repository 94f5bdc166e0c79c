"""Where results go: every output is a sink (`sink.py`), and a new one changes no rule.

- `table.py`, `document.py`: the terminal table and the `opaudit.report/v1` JSON/YAML
  document (`diagnose`, `run --sink stdout`); `sockets.py` for `sockets`.
- `events/`: Kubernetes Events; `policyreports/`: policy reports (openreports.io or
  wgpolicyk8s.io); both write through `delivery.py` (queue, backoff, drop counting).
- `metrics.py`, `probe_server.py`: the Prometheus metrics and the /healthz, /readyz probes.
- `lintoutput.py`, `sarif.py`, `helmvalues.py`: `opaudit lint`'s table, document and SARIF.
The API calls are injected: nothing here imports `agent.kube`.
"""
