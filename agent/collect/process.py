"""One process, observed: identity, capabilities, seccomp, filesystem, paths.

Only a process that is gone at the start raises (ProcessGone); every later failure
becomes a None fact plus a Gap naming it, so a rule says "unknown", never "pass".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TypeVar

from agent.collect.errors import CollectError, ProcessGone
from agent.collect.mounts import filesystem_from_mounts, parse_mountinfo
from agent.collect.procfs import ProcFS, translate_id
from agent.collect.rootfs import probe_paths, read_passwd_entry
from agent.model import (
    Filesystem,
    Gap,
    Identity,
    IdMapRange,
    IdQuad,
    NetnsFacts,
    ObservedProcess,
    PasswdEntry,
    Status,
)

T = TypeVar("T")


class _Reader:
    """Runs each read for one pid, turning a CollectError into a Gap for the named facts."""

    def __init__(self, pid: int, proc: ProcFS) -> None:
        self.pid = pid
        self.proc = proc
        self.gaps: list[Gap] = []

    def attempt(self, facts: Sequence[str], read: Callable[[], T]) -> T | None:
        try:
            return read()
        except CollectError as exc:
            self.gaps.extend(Gap(fact, str(exc)) for fact in facts)
            return None


def _translate(quad: IdQuad, ranges: tuple[IdMapRange, ...]) -> IdQuad:
    return IdQuad(
        real=translate_id(quad.real, ranges), effective=translate_id(quad.effective, ranges),
        saved=translate_id(quad.saved, ranges), fs=translate_id(quad.fs, ranges),
    )


def _container_ids(reader: _Reader, status: Status | None) -> Identity:
    """uid, gid and groups as the container sees them; user and home still unknown."""
    pid, proc = reader.pid, reader.proc
    uid = gid = None
    groups = None
    if status is not None:
        uid_map = reader.attempt(["identity.uid"], lambda: proc.read_uid_map(pid))
        gid_map = reader.attempt(
            ["identity.gid", "identity.groups"], lambda: proc.read_gid_map(pid)
        )
        uid = _translate(status.uid, uid_map) if uid_map is not None else None
        if gid_map is not None:
            gid = _translate(status.gid, gid_map)
            groups = tuple(translate_id(g, gid_map) for g in status.groups)
    return Identity(uid=uid, gid=gid, groups=groups, user=None, home=None, env_home=None)


def _with_passwd(
    reader: _Reader, ids: Identity, environ: tuple[tuple[str, str], ...] | None
) -> Identity:
    """`ids` plus the passwd name and home of the effective uid, and $HOME."""
    pid, proc, uid = reader.pid, reader.proc, ids.uid
    entry: PasswdEntry | None = None
    if uid is not None:
        effective = uid.effective
        entry = reader.attempt(
            ["identity.user", "identity.home"], lambda: read_passwd_entry(pid, effective, proc)
        )
    else:
        reason = "the effective uid could not be read"
        reader.gaps.extend((Gap("identity.user", reason), Gap("identity.home", reason)))
    env_home = next((value for key, value in environ or () if key == "HOME"), None)
    return dataclasses.replace(
        ids,
        user=entry.name if entry is not None else None,
        home=entry.home if entry is not None else None,
        env_home=env_home,
    )


def _status_gaps(reader: _Reader, status: Status) -> None:
    if status.no_new_privs is None:
        reader.gaps.append(Gap("no_new_privs", "this kernel shows no NoNewPrivs (< Linux 4.10)"))
    if status.seccomp is None:
        reader.gaps.append(Gap("seccomp", "this kernel shows no Seccomp (no CONFIG_SECCOMP)"))


def _filesystem(reader: _Reader) -> Filesystem | None:
    pid, proc = reader.pid, reader.proc
    return reader.attempt(
        ["filesystem"],
        lambda: filesystem_from_mounts(parse_mountinfo(proc.read_mountinfo(pid))),
    )


def _check_same_process(reader: _Reader, start_time: int | None, status: Status | None) -> None:
    """Raise ProcessGone if the pid now names another process, or vanished before any fact."""
    try:
        now = reader.proc.read_start_time(reader.pid)
    except ProcessGone:
        if status is None:
            raise ProcessGone(reader.pid, "exited during inspection") from None
        reader.gaps.append(Gap("process", "exited during inspection; facts read before are kept"))
        return
    except CollectError:
        return
    if start_time is not None and now != start_time:
        raise ProcessGone(reader.pid, "the pid was reused by another process during inspection")


def observe_process(
    pid: int,
    *,
    proc: ProcFS | None = None,
    paths: Sequence[str] = (),
    network: NetnsFacts | None = None,
) -> ObservedProcess:
    """Everything about `pid` that the kernel shows; raises ProcessGone only if it is gone."""
    proc = proc if proc is not None else ProcFS()
    reader = _Reader(pid, proc)
    try:
        start_time: int | None = proc.read_start_time(pid)
    except ProcessGone:
        raise
    except CollectError as exc:
        start_time = None
        reader.gaps.append(Gap("start_time", str(exc)))
    comm = reader.attempt(["comm"], lambda: proc.read_comm(pid))
    cmdline = reader.attempt(["cmdline"], lambda: proc.read_cmdline(pid))
    status = reader.attempt(
        ["identity.uid", "identity.gid", "identity.groups", "capabilities", "no_new_privs",
         "seccomp"],
        lambda: proc.read_status(pid),
    )
    if status is not None:
        _status_gaps(reader, status)
    ids = _container_ids(reader, status)  # right after status: identity matters most
    environ = reader.attempt(["environ"], lambda: proc.read_environ(pid))
    identity = _with_passwd(reader, ids, environ)
    observed = ObservedProcess(
        pid=pid,
        start_time=start_time,
        comm=comm if comm is not None else (status.name if status is not None else ""),
        cmdline=cmdline or (),
        identity=identity,
        capabilities=status.capabilities if status is not None else None,
        no_new_privs=status.no_new_privs if status is not None else None,
        seccomp=status.seccomp if status is not None else None,
        filesystem=_filesystem(reader),
        network=network,
        environ=environ or (),
    )
    observed = with_paths(observed, pid, paths, proc) if paths else observed
    _check_same_process(reader, start_time, status)
    return dataclasses.replace(observed, incomplete=_merge(reader.gaps, observed.incomplete))


def _merge(*gap_lists: Sequence[Gap]) -> tuple[Gap, ...]:
    return tuple(dict.fromkeys(gap for gaps in gap_lists for gap in gaps))


def with_paths(
    observed: ObservedProcess, pid: int, paths: Sequence[str], proc: ProcFS | None = None,
) -> ObservedProcess:
    """`observed` with `paths` probed (the engine's second pass, once it knows the paths).

    A path whose writability could not be told is also named in `incomplete` as `paths.<path>`.
    """
    proc = proc if proc is not None else ProcFS()
    probed = probe_paths(pid, paths, observed, proc)
    unknown = [Gap(f"paths.{p.path}", p.error or "unknown") for p in probed if p.writable is None]
    return dataclasses.replace(
        observed, paths=probed, incomplete=_merge(observed.incomplete, unknown)
    )
