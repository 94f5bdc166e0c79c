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
    """`missing` names the capabilities that would allow the read (e.g. "SYS_PTRACE", or
    several); the message names only those this thread does not hold, so it never blames a
    capability the agent has."""

    def __init__(
        self, pid: int | None, what: str, missing: str | tuple[str, ...] | None = None
    ) -> None:
        self.pid = pid
        self.what = what
        needed = (missing,) if isinstance(missing, str) else tuple(missing or ())
        self.lacking = lacking_capabilities(needed)
        self.missing = self.lacking[0] if self.lacking else None  # first one we lack
        super().__init__(f"permission denied reading {what}{capability_hint(needed)}")


def _own_effective_caps() -> int | None:
    from agent.collect.procfs import read_own  # procfs raises these errors

    try:
        for line in read_own("thread-self/status").split(b"\n"):
            if line.startswith(b"CapEff:"):
                return int(line.split()[1], 16)
    except (CollectError, ValueError, IndexError):
        return None
    return None


def lacking_capabilities(needed: tuple[str, ...]) -> tuple[str, ...]:
    """Of `needed` (names like "SYS_PTRACE"), those not in this thread's effective set."""
    if not needed:
        return ()
    from agent.model import capability_bit

    effective = _own_effective_caps()
    if effective is None:
        return needed
    return tuple(n for n in needed if not effective >> (capability_bit(n) or 0) & 1)


def capability_hint(needed: tuple[str, ...]) -> str:
    """` (needs CAP_SYS_PTRACE)` for what we lack; when we hold them all, say so instead."""
    if not needed:
        return ""
    lacking = lacking_capabilities(needed)
    if lacking:
        return f" (needs {' and '.join('CAP_' + n for n in lacking)})"
    held = " and ".join("CAP_" + n for n in needed)
    verb = "are" if len(needed) > 1 else "is"
    return f" (although {held} {verb} held: refused by a security module or user namespace)"


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
