"""Every bounded read of a file, the one errno mapping, and the capability hints.

A container controls the size of what it shows us (cmdline, environ, /etc/passwd), so no
file is ever read whole. `map_oserror` is the one place errno becomes `ProcessGone` /
`AccessDenied` / `Missing`; an `AccessDenied` names only the capabilities this thread
lacks, which this module reads from our own /proc/thread-self/status (so the error
classes themselves do no I/O).
"""

from __future__ import annotations

import errno
import os

from agent.collect.errors import AccessDenied, CollectError, Missing, ProcessGone
from agent.model import capability_bit

# A container controls its cmdline and environ: never read more than this of either.
PROC_FILE_LIMIT = 1 << 20
# The agent's own process and threads, seen through its own /proc whatever HOST_PROC says.
OWN_PROC = "/proc"
Needs = str | tuple[str, ...] | None  # capabilities that would allow a denied read


def map_oserror(exc: OSError, pid: int | None, what: str, missing: Needs = None) -> CollectError:
    """The one errno mapping: ENOENT/ESRCH of a process -> ProcessGone, EACCES/EPERM ->
    AccessDenied (naming `missing`), ENOENT of anything else -> Missing."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return access_denied(pid, what, missing)
    if exc.errno in (errno.ENOENT, errno.ESRCH):
        return ProcessGone(pid, what) if pid is not None else Missing(f"{what} does not exist")
    return CollectError(f"cannot read {what}: {exc.strerror or exc}")


def access_denied(pid: int | None, what: str, missing: Needs = None) -> AccessDenied:
    """`missing` names the capabilities that would allow the read (e.g. "SYS_PTRACE", or
    several); the message names only those this thread does not hold, so it never blames a
    capability the agent has."""
    needed = (missing,) if isinstance(missing, str) else tuple(missing or ())
    lacking = lacking_capabilities(needed)
    return AccessDenied(pid, what, _hint(needed, lacking), lacking)


def read_bounded(fd: int, limit: int, chunk_size: int = 1 << 16) -> tuple[bytes, bool]:
    """Up to `limit` bytes from `fd`, and whether there was more: a container controls the
    size of what we read, so never read it whole."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, min(chunk_size, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    return data[:limit], len(data) > limit


def read_file(path: str, *, dir_fd: int | None = None, limit: int = PROC_FILE_LIMIT,
              pid: int | None = None, what: str | None = None,
              missing: Needs = None) -> tuple[bytes, bool]:
    """Up to `limit` bytes of `path` (relative to `dir_fd` when given), errno mapped; `what`
    names the file in an error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=dir_fd)
        try:
            return read_bounded(fd, limit)
        finally:
            os.close(fd)
    except OSError as exc:
        raise map_oserror(exc, pid, what or path, missing) from exc


def read_own(name: str, limit: int = PROC_FILE_LIMIT) -> bytes:
    """`name` under the agent's own /proc (`thread-self/status`, `self/fdinfo/3`)."""
    return read_file(f"{OWN_PROC}/{name}", limit=limit)[0]


def own_netns_inode() -> int:
    """The network namespace of the calling thread."""
    return os.stat(f"{OWN_PROC}/thread-self/ns/net").st_ino


def own_thread_count() -> int:
    try:
        return len(os.listdir(f"{OWN_PROC}/self/task"))
    except OSError:
        return 1


# --- what this thread may do ---------------------------------------------------------


def _own_effective_caps() -> int | None:
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
    effective = _own_effective_caps()
    if effective is None:
        return needed
    return tuple(n for n in needed if not effective >> (capability_bit(n) or 0) & 1)


def capability_hint(needed: tuple[str, ...]) -> str:
    """` (needs CAP_SYS_PTRACE)` for what we lack; when we hold them all, say so instead."""
    return _hint(needed, lacking_capabilities(needed))


def _hint(needed: tuple[str, ...], lacking: tuple[str, ...]) -> str:
    if not needed:
        return ""
    if lacking:
        return f" (needs {' and '.join('CAP_' + n for n in lacking)})"
    held = " and ".join("CAP_" + n for n in needed)
    verb = "are" if len(needed) > 1 else "is"
    return f" (although {held} {verb} held: refused by a security module or user namespace)"
