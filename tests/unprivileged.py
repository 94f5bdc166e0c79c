"""Run opaudit's code as uid 65534 (nobody), whatever directory the checkout is in.

A checkout under a 0700 directory (a home directory, /root) is out of reach for another uid,
and so is a venv interpreter that lives there (pyenv under /root/.pyenv). So the tests give
uid 65534 what it needs in a world-readable temporary directory: a copy of `agent/` and of
the few installed modules named, run by the first interpreter that uid 65534 can execute
and that has this interpreter's version (a compiled module such as python-prctl's `_prctl`
is built for one minor version): this venv's own interpreter when it is reachable, else the
system's /usr/bin/python3.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
_CANDIDATES = (os.path.realpath(sys.executable), "/usr/bin/python3")


@contextmanager
def world_readable_copy(*modules: str) -> Iterator[Path]:
    """A 0755 temporary directory holding `agent/` and the installed `modules`, removed after."""
    root = Path(tempfile.mkdtemp(prefix=f"opa{os.getpid()}x"))
    try:
        shutil.copytree(REPO / "agent", root / "agent",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name in modules:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                raise ModuleNotFoundError(f"{name} is not installed: run scripts/bootstrap")
            shutil.copy(spec.origin, root)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield root
    finally:
        shutil.rmtree(root)


@cache
def nobody_python() -> str:
    """An interpreter of this version that uid 65534 can run; the test skips without one."""
    want = str(sys.version_info[:2])
    tried = []
    for candidate in dict.fromkeys(_CANDIDATES):
        probe = subprocess.run([*AS_NOBODY, candidate, "-c",
                                "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=30, cwd="/")
        if probe.returncode == 0 and probe.stdout.strip() == want:
            return candidate
        tried.append(f"{candidate}: {probe.stdout.strip() or probe.stderr.strip()[-80:]}")
    pytest.skip(f"no Python {want} that uid 65534 can run ({'; '.join(tried)})")
