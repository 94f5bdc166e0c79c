"""/proc/PID/mountinfo: which mounts a process sees, and which of them it can write.

For a chrooted process the kernel already shows mount points relative to its root and
leaves out mounts outside it (fs/proc_namespace.c, show_mountinfo -> seq_path_root).
"""

from __future__ import annotations

import posixpath
import re
import sys

from agent.collect.errors import ParseError
from agent.collect.text import sanitize
from agent.model import Filesystem, Mount

# Kernel-made filesystems whose writability says nothing about where a workload can keep
# files (and /proc, /sys, /dev below), left out of Filesystem.writable_mounts.
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "securityfs", "debugfs",
    "tracefs", "bpf", "pstore", "configfs", "fusectl", "hugetlbfs", "binfmt_misc",
    "autofs", "nsfs", "devtmpfs",
})  # fmt: skip
PSEUDO_TREES = ("/proc", "/sys", "/dev")

# The kernel's mangle() escapes space, tab, newline and backslash as 3-digit octal.
_OCTAL_ESCAPE = re.compile(rb"\\([0-3][0-7]{2})")
_DECIMAL = re.compile(r"[0-9]{1,10}")
_DEVICE = re.compile(r"[0-9]{1,10}:[0-9]{1,10}")


def unescape_mountinfo(field: str) -> str:
    """`/mnt/my\\040dir` -> `/mnt/my dir` (any 3-digit octal escape, as bytes)."""
    if "\\" not in field:
        return field
    raw = field.encode("utf-8", errors="surrogateescape")
    raw = _OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), raw)
    return raw.decode("utf-8", errors="surrogateescape")


def _number(text: str, line: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise ParseError("mountinfo", f"bad mount id {text[:20]!r} in {line[:80]!r}")
    return int(text)


def parse_mountinfo_line(line: str) -> Mount:
    """`id parent maj:min root mount-point options [optional...] - fstype source super`."""
    # Split on single spaces: an empty source ("") shows as two spaces in a row.
    fields = line.split(" ")
    try:
        separator = fields.index("-", 6)
    except ValueError:
        raise ParseError("mountinfo", f"no ' - ' separator in {line[:80]!r}") from None
    after = fields[separator + 1 :]
    if len(after) < 3:
        raise ParseError("mountinfo", f"need fstype, source, options after ' - ': {line[:80]!r}")
    if not _DEVICE.fullmatch(fields[2]):
        raise ParseError("mountinfo", f"bad major:minor {fields[2][:20]!r}")
    root, mount_point, options = fields[3], fields[4], fields[5]
    if not root or not mount_point or not options:
        raise ParseError("mountinfo", f"empty root, mount point or options: {line[:80]!r}")
    # Interned: containers of one node repeat the same paths, fstypes and sources, and a
    # daemon cycle holds every target's table at once (a copy of the host's is 200+ lines).
    return Mount(
        mount_id=_number(fields[0], line),
        parent_id=_number(fields[1], line),
        root=sys.intern(unescape_mountinfo(root)),
        mount_point=sys.intern(unescape_mountinfo(mount_point)),
        fstype=sys.intern(after[0]),
        source=sys.intern(unescape_mountinfo(after[1])),
        readonly="ro" in options.split(","),  # per-mount flags (field 6), not super options
    )


def parse_mountinfo(text: str) -> tuple[Mount, ...]:
    return tuple(parse_mountinfo_line(line) for line in text.split("\n") if line)


def _topmost(candidates: list[Mount]) -> Mount:
    """Of mounts at one mount point, the one stacked last (no other one is mounted on it)."""
    ids_with_children = {m.parent_id for m in candidates}
    tops = [m for m in candidates if m.mount_id not in ids_with_children]
    return tops[-1] if tops else candidates[-1]


def _under(path: str, mount_point: str) -> bool:
    return mount_point == "/" or path == mount_point or path.startswith(mount_point + "/")


def mount_for_path(mounts: tuple[Mount, ...], path: str) -> Mount | None:
    """The mount a path lives on: longest mount point that is a whole-component prefix.

    Symlinks in `path` are not resolved here; rootfs.probe_path asks the kernel instead.
    """
    if not path.startswith("/"):
        return None
    path = posixpath.normpath(path)
    path = "/" + path.lstrip("/")  # normpath keeps a leading '//' (POSIX allows it)
    matches = [m for m in mounts if _under(path, m.mount_point)]
    if not matches:
        return None
    longest = max(len(m.mount_point) for m in matches)
    return _topmost([m for m in matches if len(m.mount_point) == longest])


def _is_pseudo(mount: Mount) -> bool:
    return mount.fstype in PSEUDO_FILESYSTEMS or any(
        _under(mount.mount_point, tree) for tree in PSEUDO_TREES
    )


def filesystem_from_mounts(mounts: tuple[Mount, ...]) -> Filesystem:
    """Whether `/` is read-only, and the mount points (sanitised for display) one can write."""
    stacked: dict[str, list[Mount]] = {}
    for mount in mounts:
        stacked.setdefault(mount.mount_point, []).append(mount)
    visible = {point: _topmost(group) for point, group in stacked.items()}
    root = visible.get("/")
    writable = tuple(
        sys.intern(sanitize(point, 4096))
        for point, mount in visible.items()
        if not mount.readonly and not _is_pseudo(mount)
    )
    return Filesystem(
        root_readonly=root.readonly if root is not None else None,
        writable_mounts=writable,
        mounts=mounts,
    )
