"""One object owning the /proc root; one reader and one pure parser per /proc file.

Readers map errno to ProcessGone / AccessDenied (psutil's habit); parsers are pure
`str -> dataclass` functions that raise ParseError on anything malformed.
"""

from __future__ import annotations

import errno
import os
import re

from agent.collect.caps import parse_cap_mask
from agent.collect.errors import AccessDenied, CollectError, ParseError, translate_oserror
from agent.collect.text import sanitize
from agent.model import Capabilities, IdMapRange, IdQuad, Status

# A container controls its cmdline and environ: never read more than this of either.
PROC_FILE_LIMIT = 1 << 20
# mountinfo is written by the kernel, but a node can hold many thousands of mounts.
MOUNTINFO_LIMIT = 16 << 20
ARG_LIMIT = 4096  # characters kept of one cmdline argument or environ value
MAX_ENTRIES = 4096  # cmdline arguments / environ entries kept
# The kernel shows an id with no mapping in the reader's user namespace as the overflow
# id (/proc/sys/kernel/overflowuid, 65534 by default; kernel/user_namespace.c).
OVERFLOW_ID = 65534
_MAX_ID = (1 << 32) - 1

_DECIMAL = re.compile(r"[0-9]{1,20}")
_SECCOMP_MODES = {"0": "disabled", "1": "strict", "2": "filter"}
_CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd")


def _decimal(text: str, what: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise ParseError(what, f"not a decimal number: {text[:40]!r}")
    return int(text)


def _id(text: str, what: str) -> int:
    value = _decimal(text, what)
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
        nspid=tuple(_decimal(p, "status NSpid") for p in fields.get("NSpid", "").split()),
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


def parse_stat_start_time(text: str) -> int:
    """Field 22 (starttime, clock ticks since boot) of /proc/PID/stat.

    comm (field 2) is in parentheses and may itself hold ') ' and spaces, so the fields
    are counted from the LAST ')'.
    """
    close = text.rfind(")")
    if close < 0:
        raise ParseError("stat", "no ')' after comm")
    after_comm = text[close + 1 :].split()  # fields 3 (state) onwards
    if len(after_comm) < 20:
        raise ParseError("stat", f"only {len(after_comm) + 2} fields")
    return _decimal(after_comm[22 - 3], "stat starttime")


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


# --- readers -------------------------------------------------------------------------


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


class ProcFS:
    """The /proc tree of the node: `HOST_PROC` when set (tests, containers), else /proc."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root if root is not None else os.environ.get("HOST_PROC", "/proc")
        self._last_cap: int | None = None

    def path(self, pid: int, name: str) -> str:
        return f"{self.root}/{pid}/{name}"

    def read_bytes(
        self, pid: int | None, path: str, *, limit: int = PROC_FILE_LIMIT,
        missing: str | tuple[str, ...] | None = None,
    ) -> tuple[bytes, bool]:
        """Up to `limit` bytes of `path`, and whether there was more; errno mapped.

        `missing` names the capability that would allow a denied read (for the Gap).
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
            try:
                return read_bounded(fd, limit)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _denied_or_gone(exc, pid, path, missing) from exc

    def read_text(self, pid: int, name: str, *, limit: int = PROC_FILE_LIMIT) -> str:
        data, truncated = self.read_bytes(pid, self.path(pid, name), limit=limit)
        if truncated:
            raise CollectError(f"{self.path(pid, name)} is larger than {limit} bytes")
        return data.decode("utf-8", errors="surrogateescape")

    def read_cap_last_cap(self) -> int:
        if self._last_cap is None:
            data, _ = self.read_bytes(None, f"{self.root}/sys/kernel/cap_last_cap", limit=64)
            self._last_cap = _decimal(data.decode("ascii", "replace").strip(), "cap_last_cap")
        return self._last_cap

    def read_status(self, pid: int) -> Status:
        return parse_status(self.read_text(pid, "status"), self.read_cap_last_cap())

    def read_start_time(self, pid: int) -> int:
        return parse_stat_start_time(self.read_text(pid, "stat"))

    def read_comm(self, pid: int) -> str:
        data, _ = self.read_bytes(pid, self.path(pid, "comm"), limit=256)
        return sanitize(data.removesuffix(b"\n"), 64)

    def read_cmdline(self, pid: int) -> tuple[str, ...]:
        data, _ = self.read_bytes(pid, self.path(pid, "cmdline"))
        return parse_nul_list(data)

    def read_environ(self, pid: int) -> tuple[tuple[str, str], ...]:
        # environ is mode 0400 for its owner and also needs PTRACE_MODE_READ access (proc(5)).
        path = self.path(pid, "environ")
        data, _ = self.read_bytes(pid, path, missing=("SYS_PTRACE", "DAC_READ_SEARCH"))
        return parse_environ(data)

    def read_uid_map(self, pid: int) -> tuple[IdMapRange, ...]:
        return parse_id_map(self.read_text(pid, "uid_map"))

    def read_gid_map(self, pid: int) -> tuple[IdMapRange, ...]:
        return parse_id_map(self.read_text(pid, "gid_map"))

    def read_mountinfo(self, pid: int) -> str:
        return self.read_text(pid, "mountinfo", limit=MOUNTINFO_LIMIT)

    def open_root(self, pid: int) -> int:
        """An O_PATH directory fd of /proc/PID/root: the process's root, in its mount ns."""
        path = self.path(pid, "root")
        try:
            return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            # Following /proc/PID/root needs PTRACE_MODE_READ_FSCREDS (proc(5)).
            raise _denied_or_gone(exc, pid, path, "SYS_PTRACE") from exc


def _denied_or_gone(
    exc: OSError, pid: int | None, what: str, missing: str | tuple[str, ...] | None
) -> CollectError:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return AccessDenied(pid, what, missing)
    return translate_oserror(exc, pid, what)
