"""The agent's own least privilege: keep only the capabilities it uses, set no_new_privs.

Call `restrict_self()` at the very top of `main`, before any thread starts: capabilities
are per thread (capabilities(7)), so a thread started earlier (the metrics HTTP server,
a setns worker, the kubernetes client's pool) would keep the full set.

python-prctl changes our own process; decoding uses our own name table
(`agent.model.CAPABILITY_NAMES`), since python-prctl's names stop before
checkpoint_restore. Not being allowed to drop something (not root, no CAP_SETPCAP) is
recorded in the returned state, never raised.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass

from agent.collect.errors import CollectError
from agent.collect.fileio import own_thread_count, read_own
from agent.collect.libc import libc_function
from agent.collect.procfs import ProcFS
from agent.collect.procparse import parse_status
from agent.model import Capabilities, capability_bit, mask_names

# What the agent uses, and the kernel check that needs it:
# SYS_PTRACE: /proc/PID/{environ,root,ns/net,fd} of other uids (PTRACE_MODE_READ, proc(5));
# DAC_READ_SEARCH: files and directories of a container root not readable by root's mode bits;
# SYS_ADMIN: setns(CLONE_NEWNET) into a pod's network namespace (setns(2)).
AGENT_CAPABILITIES = ("SYS_PTRACE", "DAC_READ_SEARCH", "SYS_ADMIN")
# Development opt-out: `OPAUDIT_KEEP_PRIVILEGES=1` leaves the process as it was started.
KEEP_PRIVILEGES_ENV = "OPAUDIT_KEEP_PRIVILEGES"

CAP_SETPCAP = 8  # PR_CAPBSET_DROP needs CAP_SETPCAP in the effective set (prctl(2))
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_CAPBSET_DROP = 24
_prctl = libc_function("prctl")  # int prctl(int option, unsigned long arg2, ...)


@dataclass(frozen=True, slots=True)
class PrivilegeState:
    """What `restrict_self` did, for the start-up log line."""

    kept: tuple[str, ...]  # the permitted set afterwards
    bounding: tuple[str, ...]  # the bounding set afterwards
    dropped_permitted: tuple[str, ...]  # removed from permitted/effective/inheritable
    dropped_bounding: tuple[str, ...]  # removed from the bounding set
    not_dropped: tuple[str, ...]  # unwanted, still in some set (why: in `problems`)
    no_new_privs: bool | None
    skipped: str | None = None  # why nothing was changed (the opt-out)
    problems: tuple[str, ...] = ()  # one line each: what could not be done, and why

    def log_fields(self) -> dict[str, object]:
        """Keys for a JSON log line."""
        return {
            "kept": list(self.kept), "bounding": list(self.bounding),
            "dropped_permitted": list(self.dropped_permitted),
            "dropped_bounding": list(self.dropped_bounding),
            "not_dropped": list(self.not_dropped),
            "no_new_privs": self.no_new_privs, "skipped": self.skipped,
            "problems": list(self.problems),
        }


def restrict_self(
    keep: Sequence[str] = AGENT_CAPABILITIES, *, proc: ProcFS | None = None
) -> PrivilegeState:
    """Drop every capability but `keep` from our bounding, permitted, effective sets;
    clear inheritable and ambient; set no_new_privs. Never raises for lack of privilege.

    `keep` holds names as a securityContext spells them (`SYS_PTRACE`).
    """
    procfs = proc if proc is not None else ProcFS()
    wanted = _bits(keep)
    problems: list[str] = []
    skipped = f"{KEEP_PRIVILEGES_ENV}=1" if os.environ.get(KEEP_PRIVILEGES_ENV) == "1" else None
    try:
        before = _own_caps(procfs)
    except CollectError as exc:
        # Without our own status we cannot tell what to drop; no_new_privs still applies.
        if skipped is None:
            _set_no_new_privs(problems)
        problems.append(f"cannot read our own capabilities, none dropped: {exc}")
        return PrivilegeState((), (), (), (), (), _own_no_new_privs(), skipped, tuple(problems))
    if skipped is not None:
        return _state(before, before, wanted, skipped=skipped, problems=[])
    tasks = own_thread_count()
    if tasks > 1:
        problems.append(f"{tasks - 1} other thread(s) already run and keep their capabilities")
    _clear_ambient(problems)
    _drop_bounding(before, wanted, problems)
    _limit_capsets(before, wanted, problems)
    _set_no_new_privs(problems)
    try:
        after = _own_caps(procfs)
    except CollectError as exc:
        problems.append(f"cannot read our own capabilities back: {exc}")
        after = before
    return _state(before, after, wanted, skipped=None, problems=problems)


def _bits(names: Sequence[str]) -> frozenset[int]:
    bits: set[int] = set()
    for name in names:
        bit = capability_bit(name)
        if bit is None:
            raise ValueError(f"unknown capability {name!r}")
        bits.add(bit)
    return frozenset(bits)


def _own_caps(procfs: ProcFS) -> Capabilities:
    """The calling thread's sets: /proc/thread-self is the thread whose sets we change."""
    text = read_own("thread-self/status").decode("utf-8", errors="surrogateescape")
    return parse_status(text, procfs.read_cap_last_cap()).capabilities


def _libc_prctl(option: int, arg2: int) -> int:
    """prctl(2) for what python-prctl cannot name: ambient sets, bits it has no name for."""
    result = int(_prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0),
                        ctypes.c_ulong(0)))
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _clear_ambient(problems: list[str]) -> None:
    try:
        _libc_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as exc:  # EINVAL before Linux 4.3: there is no ambient set to clear
        problems.append(f"cannot clear the ambient set: {exc.strerror}")


def _drop_bounding(before: Capabilities, wanted: frozenset[int], problems: list[str]) -> None:
    import prctl

    extra = [b for b in range(before.last_cap + 1) if before.bounding >> b & 1 and b not in wanted]
    if extra and not before.effective >> CAP_SETPCAP & 1:
        problems.append("cannot shrink the bounding set: CAP_SETPCAP is not effective "
                        "(not root, or dropped by the runtime)")
        return
    for bit in extra:
        try:
            if bit in prctl.ALL_CAPS:
                prctl.capbset_drop(bit)
            else:
                _libc_prctl(PR_CAPBSET_DROP, bit)
        except (OSError, ValueError) as exc:
            problems.append(f"cannot drop bit {bit} from the bounding set: {exc}")


def _limit_capsets(before: Capabilities, wanted: frozenset[int], problems: list[str]) -> None:
    """Permitted and effective keep only `wanted` (what we had of it); inheritable is cleared.

    One capset(2) for all three: the kernel refuses an effective set that is not a subset
    of the permitted set, so lowering them one at a time fails half-way.
    """
    import prctl

    held = before.permitted | before.effective | before.inheritable
    known = set(prctl.ALL_CAPS)
    drop_pe = [b for b in range(before.last_cap + 1) if held >> b & 1 and b not in wanted]
    unknown = [b for b in drop_pe if b not in known]
    if unknown:
        problems.append(f"python-prctl has no name for capability bit(s) {unknown}: not dropped")
    drop_i = [b for b in range(before.last_cap + 1) if before.inheritable >> b & 1 and b in known]
    raise_e = [b for b in wanted if before.permitted >> b & 1 and b in known]
    effective, permitted, inheritable = prctl.CAP_EFFECTIVE, prctl.CAP_PERMITTED, (
        prctl.CAP_INHERITABLE)
    try:
        prctl.set_caps(
            ([b for b in drop_pe if b in known], [effective, permitted], False),
            (drop_i, inheritable, False),
            (raise_e, effective, True),
        )
    except (OSError, ValueError) as exc:
        problems.append(f"cannot limit the permitted/effective/inheritable sets: {exc}")


def _set_no_new_privs(problems: list[str]) -> None:
    import prctl

    try:
        prctl.set_no_new_privs(1)  # needs no privilege (prctl(2) PR_SET_NO_NEW_PRIVS)
    except OSError as exc:
        problems.append(f"cannot set no_new_privs: {exc.strerror}")


def _own_no_new_privs() -> bool | None:
    import prctl

    try:
        return bool(prctl.get_no_new_privs())
    except OSError:
        return None


def _state(
    before: Capabilities, after: Capabilities, wanted: frozenset[int],
    *, skipped: str | None, problems: list[str],
) -> PrivilegeState:
    sets_before = before.permitted | before.effective | before.inheritable | before.ambient
    sets_after = after.permitted | after.effective | after.inheritable | after.ambient
    unwanted = ~sum(1 << b for b in wanted)
    return PrivilegeState(
        kept=mask_names(after.permitted),
        bounding=mask_names(after.bounding),
        dropped_permitted=mask_names(sets_before & ~sets_after),
        dropped_bounding=mask_names(before.bounding & ~after.bounding),
        not_dropped=mask_names((sets_after | after.bounding) & unwanted | after.inheritable),
        no_new_privs=_own_no_new_privs(),
        skipped=skipped,
        problems=tuple(problems),
    )

