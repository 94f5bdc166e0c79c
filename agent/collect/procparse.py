"""Pure parsers of /proc files: `bytes | str -> dataclass`, ParseError on anything malformed.

No I/O here: `agent.collect.procfs` reads the files (psutil's one function per format).
"""

from __future__ import annotations

import re

from agent.collect.caps import parse_cap_mask
from agent.collect.errors import ParseError
from agent.collect.text import sanitize
from agent.model import Capabilities, IdMapRange, IdQuad, ProcStat, Status

COMM_LIMIT = 64  # characters kept of comm: 15 bytes (TASK_COMM_LEN), escaped
ARG_LIMIT = 4096  # characters kept of one cmdline argument or environ value
MAX_ENTRIES = 4096  # cmdline arguments / environ entries kept
# The kernel shows an id with no mapping in the reader's user namespace as the overflow
# id (/proc/sys/kernel/overflowuid, 65534 by default; kernel/user_namespace.c).
OVERFLOW_ID = 65534
_MAX_ID = (1 << 32) - 1

_DECIMAL = re.compile(r"[0-9]{1,20}")
_SECCOMP_MODES = {"0": "disabled", "1": "strict", "2": "filter"}
_CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd")


def parse_decimal(text: str, what: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise ParseError(what, f"not a decimal number: {text[:40]!r}")
    return int(text)


def _id(text: str, what: str) -> int:
    value = parse_decimal(text, what)
    if value > _MAX_ID:
        raise ParseError(what, f"id {value} is above 2**32-1")
    return value


# --- pure parsers ----------------------------------------------------------------------


def _status_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    # Split on "\n" only: the kernel escapes only "\n" and "\\" in Name
    # (fs/proc/array.c proc_task_name), so a comm may hold \r, \v, \x1c or U+2028,
    # which str.splitlines() would take as line ends.
    for line in text.split("\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ParseError("status", f"line without ':': {line[:40]!r}")
        fields.setdefault(key, value)
    return fields


def _id_quad(fields: dict[str, str], key: str) -> IdQuad:
    if key not in fields:
        raise ParseError("status", f"no {key} line")
    values = fields[key].split()
    if len(values) != 4:
        raise ParseError("status", f"{key} needs 4 ids, got {len(values)}")
    real, effective, saved, fs = (_id(v, f"status {key}") for v in values)
    return IdQuad(real=real, effective=effective, saved=saved, fs=fs)


def _capabilities(fields: dict[str, str], last_cap: int) -> Capabilities:
    masks: dict[str, int] = {}
    for key in _CAP_FIELDS:
        if key not in fields:
            raise ParseError("status", f"no {key} line")
        masks[key] = parse_cap_mask(fields[key])
    # CapAmb exists since Linux 4.3; an older kernel has no ambient set at all.
    ambient = parse_cap_mask(fields["CapAmb"]) if "CapAmb" in fields else 0
    return Capabilities(
        effective=masks["CapEff"], permitted=masks["CapPrm"], inheritable=masks["CapInh"],
        bounding=masks["CapBnd"], ambient=ambient, last_cap=last_cap,
    )


def parse_status(text: str, last_cap: int) -> Status:
    """/proc/PID/status -> Status; `last_cap` is /proc/sys/kernel/cap_last_cap."""
    fields = _status_fields(text)
    if "Name" not in fields:
        raise ParseError("status", "no Name line")
    no_new_privs: bool | None = None  # NoNewPrivs is shown since Linux 4.10
    if "NoNewPrivs" in fields:
        flag = fields["NoNewPrivs"].strip()
        if flag not in ("0", "1"):
            raise ParseError("status", f"NoNewPrivs is {flag[:20]!r}")
        no_new_privs = flag == "1"
    seccomp: str | None = None  # the Seccomp line exists only with CONFIG_SECCOMP
    if "Seccomp" in fields:
        mode = fields["Seccomp"].strip()
        if mode not in _SECCOMP_MODES:
            raise ParseError("status", f"Seccomp mode {mode[:20]!r}")
        seccomp = _SECCOMP_MODES[mode]
    return Status(
        name=sanitize(fields["Name"].removeprefix("\t")),
        uid=_id_quad(fields, "Uid"),
        gid=_id_quad(fields, "Gid"),
        groups=tuple(_id(g, "status Groups") for g in fields.get("Groups", "").split()),
        capabilities=_capabilities(fields, last_cap),
        no_new_privs=no_new_privs,
        seccomp=seccomp,
    )


def parse_id_map(text: str) -> tuple[IdMapRange, ...]:
    """/proc/PID/uid_map or gid_map: `inside outside count` per line (user_namespaces(7))."""
    ranges: list[IdMapRange] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split()
        if len(values) != 3:
            raise ParseError("id map", f"need 3 numbers per line: {line[:60]!r}")
        inside, outside, count = (_id(v, "id map") for v in values)
        if count == 0:
            raise ParseError("id map", f"empty range: {line[:60]!r}")
        ranges.append(IdMapRange(inside=inside, outside=outside, count=count))
    return tuple(ranges)


def translate_id(host_id: int, ranges: tuple[IdMapRange, ...]) -> int:
    """The id the container sees for a host (outside) id.

    An id no range maps is shown as OVERFLOW_ID (65534), as `id` inside the container
    shows it; that is also what an empty map (user namespace not set up yet) gives.
    """
    for r in ranges:
        if r.outside <= host_id < r.outside + r.count:
            return r.inside + (host_id - r.outside)
    return OVERFLOW_ID


PF_KTHREAD = 0x00200000  # include/linux/sched.h: the task is a kernel thread


def parse_stat(raw: bytes) -> ProcStat:
    """comm (field 2), state (3), ppid (4), flags (9) and starttime (22, clock ticks after
    boot) of /proc/PID/stat.

    comm is whatever the process named itself and may hold ') ' and spaces (the kernel does
    not escape it here), so the fields are counted from the LAST ')'.
    """
    opening, closing = raw.find(b"("), raw.rfind(b")")
    if opening < 0 or closing < opening:
        raise ParseError("stat", "no (comm)")
    after_comm = raw[closing + 1 :].split()  # fields 3 (state) onwards
    if len(after_comm) < 20:
        raise ParseError("stat", f"only {len(after_comm) + 2} fields")
    field = [value.decode("ascii", "replace") for value in after_comm[: 22 - 2]]
    return ProcStat(comm=sanitize(raw[opening + 1 : closing], COMM_LIMIT),
                    start_time=parse_decimal(field[22 - 3], "stat starttime"),
                    state=field[3 - 3], ppid=parse_decimal(field[4 - 3], "stat ppid"),
                    kernel_thread=bool(parse_decimal(field[9 - 3], "stat flags") & PF_KTHREAD))


def parse_nul_list(raw: bytes, limit: int = ARG_LIMIT) -> tuple[str, ...]:
    """NUL-separated /proc text (cmdline, environ) as sanitised strings."""
    items = raw.split(b"\0")
    if items and items[-1] == b"":
        items.pop()
    return tuple(sanitize(item, limit) for item in items[:MAX_ENTRIES])


def parse_environ(raw: bytes) -> tuple[tuple[str, str], ...]:
    """/proc/PID/environ as (name, sanitised value) pairs; entries without '=' are dropped."""
    pairs: list[tuple[str, str]] = []
    for item in raw.split(b"\0")[:MAX_ENTRIES]:
        name, sep, value = item.partition(b"=")
        if sep and name:
            pairs.append((sanitize(name, ARG_LIMIT), sanitize(value, ARG_LIMIT)))
    return tuple(pairs)
