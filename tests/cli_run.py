"""The opaudit command line as a user runs it: a separate process, from the repository root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def opaudit(*args: str, env: dict[str, str] | None = None, stdin_text: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`opaudit ARGS`; stdin is `stdin_text`, or empty when None."""
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env,
                          input=stdin_text if stdin_text is not None else "")


def capsh(mask: str) -> subprocess.CompletedProcess[str]:
    """The oracle for `caps decode`."""
    return subprocess.run(["capsh", f"--decode={mask}"], capture_output=True, text=True)
