"""Reading inside a container's root without ever leaving it.

Every open goes through openat2(2) with RESOLVE_IN_ROOT on an O_PATH fd of
/proc/PID/root: an absolute symlink, or `..`, resolves against the container's root, the
way the container itself would see it, never against the node's (openat2(2)).
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import stat
from collections.abc import Sequence

from agent.collect.errors import CollectError, Missing
from agent.collect.fileio import map_oserror, read_bounded, read_own
from agent.collect.libc import libc_function
from agent.collect.mounts import mount_for_path
from agent.collect.procfs import ProcessHandle
from agent.collect.text import sanitize
from agent.model import Capabilities, Mount, ObservedProcess, PasswdEntry, PathAccess

SYS_OPENAT2 = 437  # same number on x86_64 and aarch64 (include/uapi/asm-generic/unistd.h)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
RESOLVE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
# A container writes its own /etc/passwd: read no more than this of any file.
ROOTFS_FILE_LIMIT = 4 << 20
CAP_DAC_OVERRIDE = 1

_syscall = libc_function("syscall")  # int syscall(long number, ...): types per call


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]  # fmt: skip


def openat2(dirfd: int, path: str, flags: int, resolve: int = RESOLVE) -> int:
    """openat2(2); raises OSError like os.open does."""
    how = _OpenHow(flags=flags | os.O_CLOEXEC, mode=0, resolve=resolve)
    encoded = os.fsencode(path)
    fd = int(_syscall(SYS_OPENAT2, dirfd, encoded, ctypes.byref(how), ctypes.sizeof(how)))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return fd


def read_file_in_root(
    root_fd: int, path: str, limit: int = ROOTFS_FILE_LIMIT
) -> tuple[bytes, bool]:
    """Up to `limit` bytes of a regular file inside the root, and whether there was more.

    O_NONBLOCK and the S_ISREG check keep a FIFO or a device planted at the path from
    blocking or being read.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = openat2(root_fd, path, flags)
    except OSError as exc:
        raise _rootfs_error(exc, path) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise CollectError(f"{path} in the container root is not a regular file")
        return read_bounded(fd, limit, chunk_size=1 << 20)
    except OSError as exc:
        raise _rootfs_error(exc, path) from exc
    finally:
        os.close(fd)


def _rootfs_error(exc: OSError, path: str) -> CollectError:
    # Missing when the path does not exist in the container root.
    return map_oserror(exc, None, f"{path} in the container root", "DAC_READ_SEARCH")


# --- /etc/passwd ---------------------------------------------------------------------


def parse_passwd(text: str) -> tuple[PasswdEntry, ...]:
    """passwd(5) lines `name:pw:uid:gid:gecos:home:shell`.

    Malformed lines are skipped, as glibc's files backend skips them for getpwuid(3).
    """
    entries: list[PasswdEntry] = []
    for line in text.split("\n"):
        fields = line.split(":")
        if len(fields) != 7 or not fields[0]:
            continue
        uid, gid = fields[2], fields[3]
        if not (uid.isascii() and uid.isdigit() and gid.isascii() and gid.isdigit()):
            continue
        if len(uid) > 10 or len(gid) > 10:
            continue
        entries.append(PasswdEntry(
            name=sanitize(fields[0]), uid=int(uid), gid=int(gid),
            home=sanitize(fields[5], 4096), shell=sanitize(fields[6], 4096),
        ))  # fmt: skip
    return tuple(entries)


def find_passwd_entry(text: str, uid: int) -> PasswdEntry | None:
    """The first entry for `uid`, as getpwuid(3) returns it."""
    return next((e for e in parse_passwd(text) if e.uid == uid), None)


def read_passwd_entry(process: ProcessHandle, uid: int) -> PasswdEntry | None:
    """`uid`'s entry in the container's own /etc/passwd; None when it has none.

    A root with no /etc/passwd (a scratch image) has no entry, as getpwuid(3) says.
    Raises CollectError when the file cannot be read, or is larger than the cap and the
    uid is not in the part that was read.
    """
    try:
        data, truncated = read_file_in_root(process.root_fd(), "/etc/passwd")
    except Missing:
        return None
    if truncated:
        data = data[: data.rfind(b"\n") + 1]  # drop the line the cap cut in half
    entry = find_passwd_entry(data.decode("utf-8", errors="surrogateescape"), uid)
    if entry is None and truncated:
        raise CollectError(
            f"/etc/passwd is larger than {ROOTFS_FILE_LIMIT} bytes; uid {uid} is not in the "
            "part that was read"
        )
    return entry


# --- can the process write a path? ---------------------------------------------------


def _mount_id_of_fd(fd: int) -> int | None:
    """The global mount id of an open fd (/proc/self/fdinfo `mnt_id:`, Linux 3.15+)."""
    try:
        for line in read_own(f"self/fdinfo/{fd}", limit=4096).split(b"\n"):
            if line.startswith(b"mnt_id:"):
                return int(line.split()[1])
    except (CollectError, ValueError, IndexError):
        return None
    return None


def _mount_of(fd: int, path: str, mounts: tuple[Mount, ...]) -> Mount | None:
    # The kernel's answer sees through symlinks; the path prefix match is the fallback.
    mount_id = _mount_id_of_fd(fd)
    for mount in mounts:
        if mount.mount_id == mount_id:
            return mount
    return mount_for_path(mounts, path)


def mode_allows_write(
    st: os.stat_result, fs_uid: int, fs_gid: int, groups: tuple[int, ...],
    dac_override: bool,
) -> bool:
    """Write (and search, for a directory) by the owner/group/other class, as the kernel checks.

    The kernel picks ONE class (owner, else group, else other), it does not OR them
    (fs/namei.c, acl_permission_check). POSIX ACLs are not read.
    """
    is_dir = stat.S_ISDIR(st.st_mode)
    if dac_override:
        return True  # CAP_DAC_OVERRIDE bypasses write and search permission checks
    if st.st_uid == fs_uid:
        shift = 6
    elif st.st_gid == fs_gid or st.st_gid in groups:
        shift = 3
    else:
        shift = 0
    need = 0o3 if is_dir else 0o2
    return (st.st_mode >> shift) & need == need


def _open_path(root_fd: int, path: str) -> int:
    return openat2(root_fd, path, os.O_PATH)


def _nearest_existing_parent(root_fd: int, path: str) -> tuple[str, int] | None:
    parent = path
    while parent != "/":
        parent = posixpath.dirname(parent)
        try:
            return parent, _open_path(root_fd, parent)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                return None
    return None


def probe_path(
    root_fd: int, path: str, fs_uid: int, fs_gid: int, groups: tuple[int, ...],
    caps: Capabilities | None, mounts: tuple[Mount, ...],
) -> PathAccess:
    """Whether a process with these host fs ids and caps can write `path` in its root."""
    if not path.startswith("/"):
        return PathAccess(path, None, None, None, None, error="not an absolute path")
    clean = "/" + posixpath.normpath(path).lstrip("/")
    dac_override = caps is not None and bool(caps.effective >> CAP_DAC_OVERRIDE & 1)
    try:
        fd = _open_path(root_fd, clean)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            return PathAccess(path, False, None, None, False,
                              error="does not exist: a parent is not a directory")
        if exc.errno != errno.ENOENT:
            return PathAccess(path, None, None, None, None,
                              error=f"cannot open in the container root: {exc.strerror}")
        return _probe_missing(root_fd, path, clean, fs_uid, fs_gid, groups, dac_override, mounts)
    st, readonly = _stat_and_close(fd, clean, mounts)
    allowed = mode_allows_write(st, fs_uid, fs_gid, groups, dac_override)
    return PathAccess(
        path, exists=True, is_dir=stat.S_ISDIR(st.st_mode), on_readonly_mount=readonly,
        writable=None if readonly is None else (not readonly and allowed),
        error=None if readonly is not None else "no mount found for the path",
    )


def _stat_and_close(fd: int, path: str, mounts: tuple[Mount, ...]
                    ) -> tuple[os.stat_result, bool | None]:
    """fstat of `fd` (opened at `path` in the root), and whether its mount is read-only
    (None when no mount holds it); `fd` is closed."""
    try:
        st = os.fstat(fd)
        mount = _mount_of(fd, path, mounts)
    finally:
        os.close(fd)
    return st, mount.readonly if mount is not None else None


def _probe_missing(
    root_fd: int, path: str, clean: str, fs_uid: int, fs_gid: int, groups: tuple[int, ...],
    dac_override: bool, mounts: tuple[Mount, ...],
) -> PathAccess:
    # A path the workload creates on first use (e.g. ~/.ivy2) is writable when its
    # nearest existing parent directory is.
    found = _nearest_existing_parent(root_fd, clean)
    if found is None:
        return PathAccess(path, False, None, None, None, error="no existing parent directory")
    parent, fd = found
    st, readonly = _stat_and_close(fd, parent, mounts)
    if not stat.S_ISDIR(st.st_mode):
        return PathAccess(path, False, False, readonly, False,
                          error=f"does not exist; {parent} is not a directory")
    allowed = mode_allows_write(st, fs_uid, fs_gid, groups, dac_override)
    return PathAccess(
        path, exists=False, is_dir=None, on_readonly_mount=readonly,
        writable=None if readonly is None else (not readonly and allowed),
        error=f"does not exist yet; judged by its nearest existing parent {parent}",
    )


def probe_paths(
    process: ProcessHandle | None, paths: Sequence[str], observed: ObservedProcess,
    error: str = "",
) -> tuple[PathAccess, ...]:
    """probe_path for each path, with the process's host fs ids, caps and mounts; each path
    unknown (with `error`) when there is no process handle."""
    if not paths:
        return ()
    mounts = observed.filesystem.mounts if observed.filesystem is not None else ()
    try:
        if process is None:
            raise CollectError(error or "process unknown")
        # File owners from fstat are host (kernel) ids, so compare host ids, not translated.
        status = process.status()
        root_fd = process.root_fd()
    except CollectError as exc:
        return tuple(PathAccess(p, None, None, None, None, error=str(exc)) for p in paths)
    return tuple(
        probe_path(root_fd, p, status.uid.fs, status.gid.fs, status.groups,
                   observed.capabilities, mounts)
        for p in paths
    )
