"""`opaudit` at a user's console, for the output tests: run as a program with no terminal
settings of the test's own (`opaudit`), and what it is pointed at, a root server and the
worker it forked, both holding the same listeners (`root_server`), and `opaudit` on a real
terminal (`on_a_terminal`)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
from pathlib import Path

from staging import STAGE_PYTHON, Stage

from agent.model import CAPABILITY_NAMES

OPAUDIT = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "opaudit")


def on_a_terminal(args: list[str], env: dict[str, str], *, columns: int = 200,
                  rows: int = 50) -> tuple[str, str]:
    """opaudit's stdout on a real tty (a pty) of `columns` x `rows`, with `env` over ours
    (less our own terminal settings), and what `stty size` says on that tty."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    size = subprocess.run(["stty", "size"], stdin=terminal, capture_output=True, text=True,
                          timeout=30).stdout.strip()
    child = subprocess.Popen([OPAUDIT, *args], stdout=terminal, stderr=subprocess.DEVNULL,
                             env={**base, **env})
    os.close(terminal)
    out = b""
    try:
        while select.select([controller], [], [], 30)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        child.wait(timeout=30)
        os.close(controller)
    return out.decode(), size

# A root server that forks a worker after binding: both hold the same sockets, as a
# pre-fork server's master and child do.
FORKING_SERVER = r"""
import os, signal, socket
socks = []
for family, address, port in ((socket.AF_INET6, "::", 8080), (socket.AF_INET, "0.0.0.0", 9000),
                              (socket.AF_INET, "127.0.0.1", 9001)):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((address, port)); s.listen(8); socks.append(s)
child = os.fork()
if child:
    print(child, flush=True)
signal.pause()
"""


def root_bounding() -> list[str]:
    """Every capability of this kernel but two: the same set whatever the machine's own
    bounding set lacks (a CI sandbox may lack SYS_RESOURCE or SYS_MODULE)."""
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    return [n for n in CAPABILITY_NAMES[: last + 1] if n not in ("SYS_MODULE", "SYS_RESOURCE")]


def root_server(stage: Stage) -> tuple[int, int]:
    staged = stage.spawn(netns=stage.netns(), bounding=root_bounding(),
                         argv=[STAGE_PYTHON, "-c", FORKING_SERVER])
    assert staged.popen.stdout is not None
    return staged.pid, int(staged.popen.stdout.readline())


def opaudit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "TERM")}
    return subprocess.run([OPAUDIT, *args], capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})})
