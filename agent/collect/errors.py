"""Typed errors for reading /proc: callers handle these three, never errno."""

from __future__ import annotations

import errno


class CollectError(Exception):
    """Base: a fact could not be read. `str()` is one line, fit for a user."""


class ProcessGone(CollectError):
    def __init__(self, pid: int, detail: str = "") -> None:
        self.pid = pid
        super().__init__(f"process {pid} does not exist (or exited){': ' + detail if detail else ''}")


class AccessDenied(CollectError):
    def __init__(self, pid: int | None, what: str, missing: str | None = None) -> None:
        self.pid = pid
        self.what = what
        self.missing = missing  # the capability that would allow it, e.g. "SYS_PTRACE"
        hint = f" (needs CAP_{missing})" if missing else ""
        super().__init__(f"permission denied reading {what}{hint}")


class ParseError(CollectError):
    def __init__(self, what: str, detail: str) -> None:
        self.what = what
        super().__init__(f"cannot parse {what}: {detail}")


def translate_oserror(exc: OSError, pid: int | None, what: str) -> CollectError:
    """Map an OSError from reading /proc/PID/... to ProcessGone / AccessDenied / CollectError."""
    if exc.errno in (errno.ENOENT, errno.ESRCH) and pid is not None:
        return ProcessGone(pid, what)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return AccessDenied(pid, what)
    return CollectError(f"cannot read {what}: {exc.strerror or exc}")
