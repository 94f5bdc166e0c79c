"""One process, observed: identity, capabilities, seccomp, filesystem, paths.

Only a process that is gone before its identity could be read raises (ProcessGone); every
later failure becomes a None fact plus a Gap naming it, so a rule says "unknown", never
"pass". Every read goes through one `ProcessHandle`, so a pid reused meanwhile is never
read as if it were the same process: the reads after its exit fail instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TypeVar

from agent.collect.errors import CollectError, ProcessGone
from agent.collect.mounts import filesystem_from_mounts, parse_mountinfo
from agent.collect.procfs import ProcessHandle, ProcFS
from agent.collect.procparse import translate_id
from agent.collect.rootfs import probe_paths, read_passwd_entry
from agent.model import (
    Fact,
    Filesystem,
    Gap,
    Identity,
    IdMapRange,
    IdQuad,
    NetnsFacts,
    ObservedProcess,
    PasswdEntry,
    ProcStat,
    Status,
    path_fact,
)

T = TypeVar("T")


class _Reader:
    """Runs each read for one pid, turning a CollectError into a Gap for the named facts."""

    def __init__(self, process: ProcessHandle) -> None:
        self.process = process
        self.gaps: list[Gap] = []
        self.exited = False  # a read found the process gone

    def attempt(self, facts: Sequence[Fact], read: Callable[[], T]) -> T | None:
        try:
            return read()
        except CollectError as exc:
            kind = process_kind(self.process)  # a zombie's or kernel thread's reads fail
            self.exited = self.exited or (isinstance(exc, ProcessGone) and kind is None)
            self.gaps.extend(Gap(fact, kind or str(exc)) for fact in facts)
            return None


def process_kind(process: ProcessHandle) -> str | None:
    """What a process with no memory, root or namespaces to read is, in a user's words:
    a zombie or a kernel thread (its stat says so); None for any other process."""
    try:
        stat = process.stat()
    except CollectError:
        return None
    if stat.kernel_thread:
        return (f"pid {process.pid} is a kernel thread: it has no user memory, environment, "
                "container root or namespaces of its own to read")
    if stat.state == "Z":
        # proc(5): a zombie keeps its status; environ, root, mountinfo and ns are gone.
        return (f"process {process.pid} is a zombie: it exited and its parent (pid "
                f"{stat.ppid}) has not reaped it, so only its status is left")
    return None


def describe_unreadable(pid: int, proc: ProcFS) -> str | None:
    """`process_kind` of `pid` (through the cycle's handle, when inside one)."""
    try:
        with proc.cycle():
            return process_kind(proc.process(pid))
    except CollectError:
        return None


def _translate(quad: IdQuad, ranges: tuple[IdMapRange, ...]) -> IdQuad:
    return IdQuad(
        real=translate_id(quad.real, ranges), effective=translate_id(quad.effective, ranges),
        saved=translate_id(quad.saved, ranges), fs=translate_id(quad.fs, ranges),
    )


def _container_ids(reader: _Reader, status: Status | None) -> Identity:
    """uid, gid and groups as the container sees them; user and home still unknown."""
    process = reader.process
    uid = gid = None
    groups = None
    if status is not None:
        uid_map = reader.attempt([Fact.UID], process.uid_map)
        gid_map = reader.attempt([Fact.GID, Fact.GROUPS], process.gid_map)
        uid = _translate(status.uid, uid_map) if uid_map is not None else None
        if gid_map is not None:
            gid = _translate(status.gid, gid_map)
            groups = tuple(translate_id(g, gid_map) for g in status.groups)
    return Identity(uid=uid, gid=gid, groups=groups, user=None, home=None, env_home=None)


def _with_passwd(
    reader: _Reader, ids: Identity, environ: tuple[tuple[str, str], ...] | None
) -> Identity:
    """`ids` plus the passwd name and home of the effective uid, and $HOME."""
    uid = ids.uid
    entry: PasswdEntry | None = None
    if uid is not None:
        effective = uid.effective
        entry = reader.attempt([Fact.USER, Fact.HOME],
                               lambda: read_passwd_entry(reader.process, effective))
    else:
        reason = "the effective uid could not be read"
        reader.gaps.extend((Gap(Fact.USER, reason), Gap(Fact.HOME, reason)))
    env_home = next((value for key, value in environ or () if key == "HOME"), None)
    return dataclasses.replace(
        ids,
        user=entry.name if entry is not None else None,
        home=entry.home if entry is not None else None,
        env_home=env_home,
    )


def _status_gaps(reader: _Reader, status: Status) -> None:
    if status.no_new_privs is None:
        reader.gaps.append(Gap(Fact.NO_NEW_PRIVS,
                               "this kernel shows no NoNewPrivs (< Linux 4.10)"))
    if status.seccomp is None:
        reader.gaps.append(Gap(Fact.SECCOMP, "this kernel shows no Seccomp (no CONFIG_SECCOMP)"))


def _filesystem(reader: _Reader, stat: ProcStat | None) -> Filesystem | None:
    process = reader.process
    if stat is not None and stat.kernel_thread:
        # A kernel thread's /proc/PID/mountinfo is the initial mount namespace's: the host's
        # mounts, not a root of its own to judge.
        reader.gaps.append(Gap(Fact.FILESYSTEM, process_kind(process) or "a kernel thread"))
        return None
    return reader.attempt(
        [Fact.FILESYSTEM], lambda: filesystem_from_mounts(parse_mountinfo(process.mountinfo()))
    )


def observe_process(
    pid: int,
    *,
    proc: ProcFS | None = None,
    paths: Sequence[str] = (),
    network: NetnsFacts | None = None,
) -> ObservedProcess:
    """Everything about `pid` that the kernel shows; raises ProcessGone only if it is gone
    before its identity could be read. Inside `proc.cycle()` its reads are shared."""
    procfs = proc if proc is not None else ProcFS()
    with procfs.cycle():
        return _observe(procfs.process(pid), paths, network)


def _observe(
    process: ProcessHandle, paths: Sequence[str], network: NetnsFacts | None
) -> ObservedProcess:
    reader = _Reader(process)
    stat = reader.attempt([Fact.START_TIME, Fact.COMM], process.stat)
    if stat is None and reader.exited:
        raise ProcessGone(process.pid, "exited before it could be read")
    cmdline = reader.attempt([Fact.CMDLINE], process.cmdline)
    exe = reader.attempt([Fact.EXE], process.exe)
    status = reader.attempt(
        [Fact.UID, Fact.GID, Fact.GROUPS, Fact.CAPABILITIES, Fact.NO_NEW_PRIVS, Fact.SECCOMP],
        process.status,
    )
    if status is not None:
        _status_gaps(reader, status)
    ids = _container_ids(reader, status)  # right after status: identity matters most
    environ = reader.attempt([Fact.ENVIRON], process.environ)
    identity = _with_passwd(reader, ids, environ)
    observed = ObservedProcess(
        pid=process.pid,
        start_time=stat.start_time if stat is not None else None,
        comm=stat.comm if stat is not None else (status.name if status is not None else ""),
        cmdline=cmdline or (),
        identity=identity,
        capabilities=status.capabilities if status is not None else None,
        no_new_privs=status.no_new_privs if status is not None else None,
        seccomp=status.seccomp if status is not None else None,
        filesystem=_filesystem(reader, stat),
        network=network,
        environ=environ or (),
        exe=exe,
    )
    observed = _with_paths(observed, process, paths) if paths else observed
    if reader.exited:
        if status is None:
            raise ProcessGone(process.pid, "exited during inspection")
        reader.gaps.append(Gap(Fact.PROCESS,
                               "exited during inspection; facts read before are kept"))
    return dataclasses.replace(observed, incomplete=_merge(reader.gaps, observed.incomplete))


def _merge(*gap_lists: Sequence[Gap]) -> tuple[Gap, ...]:
    return tuple(dict.fromkeys(gap for gaps in gap_lists for gap in gaps))


def with_paths(
    observed: ObservedProcess, pid: int, paths: Sequence[str], proc: ProcFS | None = None,
) -> ObservedProcess:
    """`observed` with `paths` probed (the engine's second pass, once it knows the paths).

    A path whose writability could not be told is also named in `incomplete` as `paths.<path>`.
    Inside `proc.cycle()` the process's status and root are those `observe_process` read.
    """
    procfs = proc if proc is not None else ProcFS()
    with procfs.cycle():
        try:
            process = procfs.process(pid)
        except CollectError as exc:
            return _with_paths(observed, None, paths, str(exc))
        return _with_paths(observed, process, paths)


def _with_paths(observed: ObservedProcess, process: ProcessHandle | None,
                paths: Sequence[str], error: str = "") -> ObservedProcess:
    probed = probe_paths(process, paths, observed, error)
    unprobed = [p for p in probed if p.writable is None]
    kind = process_kind(process) if unprobed and process is not None else None
    unknown = [Gap(path_fact(p.path), kind or p.error or "unknown") for p in unprobed]
    return dataclasses.replace(
        observed, paths=probed, incomplete=_merge(observed.incomplete, unknown)
    )
