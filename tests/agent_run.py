"""`opaudit run` as the tests drive it: the console script as a subprocess (as the DaemonSet
runs it), or the loop in a thread of the test process; its JSON lines, its HTTP endpoints
(/readyz, /healthz, /metrics) and its metrics; waiting for a condition it brings about."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from pod_staging import NODE, SELECTOR

from agent.daemon import NodeAgent, RunContext, RunOptions, run_agent
from agent.output.metrics import AgentMetrics

REPO = Path(__file__).resolve().parents[1]
OPAUDIT = REPO / ".venv" / "bin" / "opaudit"


# --- the console script ------------------------------------------------------------------


def run_once(kubeconfig: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(OPAUDIT), "run", "--once", "--node", NODE, "-l", SELECTOR,
         "--kubeconfig", str(kubeconfig), *extra],
        capture_output=True, text=True, timeout=120,
    )


def loop_argv(kubeconfig: Path | str, port: int, interval: float, *extra: str) -> list[str]:
    """`opaudit run` as a loop on the staged pods' node, serving /metrics on `port` and
    listing at once (no startup jitter)."""
    return [str(OPAUDIT), "run", "--node", NODE, "-l", SELECTOR, "--interval", f"{interval:g}",
            "--startup-jitter", "0", *extra, "--metrics-port", str(port),
            "--kubeconfig", str(kubeconfig)]


class AgentProcess:
    """`opaudit run` as a process, started by `with`. Leaving the block kills it if it still
    runs (a failed test) and collects what it wrote: `out` (stdout, unless `stdout` was
    DEVNULL) and `err`, its JSON log lines."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 stdout: int = subprocess.PIPE) -> None:
        self.argv, self.env, self.stdout = argv, env, stdout
        self.out = self.err = ""

    def __enter__(self) -> AgentProcess:
        self.popen = subprocess.Popen(self.argv, stdout=self.stdout, stderr=subprocess.PIPE,
                                      text=True, env=self.env)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        out, err = self.popen.communicate(timeout=30)
        self.out, self.err = out or "", err or ""

    def terminate(self, timeout: float) -> int:
        """SIGTERM, as the kubelet stops a pod; its exit status."""
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)


def assert_json_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(line, dict) for line in lines)
    return lines


# --- its HTTP endpoints and metrics ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def sample(metrics: AgentMetrics, name: str, **labels: str) -> float:
    """One sample of an in-process agent's metrics, 0 when it was never set."""
    return float(metrics.registry.get_sample_value(name, labels) or 0)


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# --- the loop in a thread ----------------------------------------------------------------


class AgentThread:
    """The agent's loop in a thread of the test process. Leaving the `with` block stops it
    (as SIGTERM does) and joins it, even when the test failed; then `outcome` holds its exit
    status, or `failure` what escaped it."""

    def __init__(self, run: Callable[[], int], stop: Callable[[], None],
                 join_seconds: float = 20) -> None:
        self.outcome: list[int] = []
        self.failure: list[BaseException] = []
        self._run, self._stop, self._join_seconds = run, stop, join_seconds
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            self.outcome.append(self._run())
        except BaseException as exc:  # noqa: BLE001 - the test asserts there is none
            self.failure.append(exc)

    def __enter__(self) -> AgentThread:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop()
        self.thread.join(timeout=self._join_seconds)

    @property
    def stopped_cleanly(self) -> bool:
        """Ended, with exit status 0 and nothing raised."""
        return not self.thread.is_alive() and self.outcome == [0] and not self.failure


def run_agent_thread(options: RunOptions, context: RunContext,
                     metrics: AgentMetrics | None = None) -> AgentThread:
    """`run_agent` as `opaudit run` calls it, with `context` in place of the process's own
    (a test keeps its capabilities with `restrict_privileges=False`)."""
    stop = threading.Event()
    return AgentThread(lambda: run_agent(options, context, metrics=metrics, stop=stop), stop.set)


def loop_thread(agent: NodeAgent) -> AgentThread:
    """A `NodeAgent` a test built itself (its own sink, watcher or /proc) running its loop."""
    return AgentThread(agent.run_forever, agent.request_stop)
