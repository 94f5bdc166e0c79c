"""Typed errors for reading /proc: callers handle these three, never errno."""

from __future__ import annotations


class CollectError(Exception):
    """Base: a fact could not be read. `str()` is one line, fit for a user."""


class ProcessGone(CollectError):
    def __init__(self, pid: int, detail: str = "") -> None:
        self.pid = pid
        suffix = f": {detail}" if detail else ""
        super().__init__(f"process {pid} does not exist (or exited){suffix}")


class AccessDenied(CollectError):
    """The kernel refused a read. `lacking` names the capabilities that would allow it and
    this thread does not hold (`missing` is the first), `hint` says so in the message; both
    come from `fileio.access_denied`, which reads our own status: the error does no I/O."""

    def __init__(self, pid: int | None, what: str, hint: str = "",
                 lacking: tuple[str, ...] = ()) -> None:
        self.pid = pid
        self.what = what
        self.lacking = lacking
        self.missing = lacking[0] if lacking else None  # first one we lack
        super().__init__(f"permission denied reading {what}{hint}")


class ParseError(CollectError):
    def __init__(self, what: str, detail: str) -> None:
        self.what = what
        super().__init__(f"cannot parse {what}: {detail}")


class Missing(CollectError):
    """A file that does not exist (not a process that exited): an absent sysctl, a path
    missing from a container's root."""


def error_line(exc: BaseException) -> str:
    """`OSError: [Errno 11] ...`: an unexpected exception as one log-friendly line."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
