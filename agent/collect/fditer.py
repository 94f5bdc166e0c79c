"""Which fds of given processes hold given sockets, read in the kernel by a BPF iterator.

Reading `/proc/PID/fd/N` costs ~3 µs of kernel time per fd (a proc dentry, two fd-table
lookups, d_path), so a netns with 100,000 connections costs ~0.3 s however the reads are
ordered or threaded. A `task_file` iterator visits the same fd table inside the kernel: the
program below keeps the fds whose file is a sockfs inode in a hash of wanted inodes and
writes (fd, inode) for each, ~0.1 µs per fd.

What the kernel does with the per-process iterator this module asks for (include/uapi/linux/
bpf.h, kernel/bpf/task_iter.c):

    5.8        task_file iterators exist, but a link takes no iter_info: the link is refused
    5.9 - 6.0  bpf_iter_link_info has only `.map`: the tid is accepted and ignored, and the
               iterator walks every task of the host (each match would be put on each pid)
    6.1        `.task.tid` picks one task ("bpf: Parameterize task iterators")
    6.2        /proc/PID/fd reports the fd count as its size (`sockets._fd_count`)

so below 6.1 it refuses to run (`FdIterUnavailable`), and /proc is read instead.

Loading it needs bpf(2) for a tracing program: CAP_SYS_ADMIN (which the agent holds for
setns) or CAP_BPF + CAP_PERFMON, and a seccomp profile that allows bpf (the runtime default
does with CAP_SYS_ADMIN). Whatever refuses, `FdIterUnavailable` says why and the caller
reads /proc instead. Nothing is pinned or attached: every fd is closed before returning.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
from collections.abc import Collection, Iterable
from functools import lru_cache
from typing import Literal

from agent.collect.bpfprogram import RECORD, iterator_program
from agent.collect.btf import FdIterLayout, read_fd_iter_layout
from agent.collect.errors import CollectError
from agent.collect.fileio import lacking_capabilities, read_own
from agent.collect.libc import libc_function

SYS_BPF = {"x86_64": 321, "aarch64": 280}
_, _, RELEASE, _, MACHINE = os.uname()
FIRST_KERNEL = (6, 1)  # the first whose iterator visits one task only (table above)
# include/uapi/linux/bpf.h
BPF_MAP_CREATE, BPF_MAP_UPDATE_ELEM, BPF_PROG_LOAD = 0, 2, 5
BPF_LINK_CREATE, BPF_ITER_CREATE = 28, 33
BPF_MAP_TYPE_HASH, BPF_PROG_TYPE_TRACING, BPF_TRACE_ITER = 1, 26, 28
ATTR_SIZE = 128
# union bpf_attr, field by field from byte 0, for the commands other than BPF_PROG_LOAD:
MAP_CREATE_ATTR = struct.Struct("<IIIII")  # map_type, key_size, value_size, max_entries, flags
MAP_UPDATE_ATTR = struct.Struct("<I4xQQQ")  # map_fd, (u64 alignment), key, value, flags
LINK_CREATE_ATTR = struct.Struct("<IIIIQI")  # prog_fd, target_fd, attach_type, flags,
#                                              iter_info, iter_info_len
ITER_CREATE_ATTR = struct.Struct("<II")  # link_fd, flags
# union bpf_attr, BPF_PROG_LOAD: byte offsets of the fields set here
LOAD_LOG_LEVEL, LOAD_LOG_SIZE, LOAD_LOG_BUF = 24, 28, 32
LOAD_PROG_NAME, LOAD_ATTACH_TYPE, LOAD_ATTACH_BTF_ID = 48, 68, 108
VERIFIER_LOG_SIZE = 1 << 18  # a rejection's reason is the log's last lines
READ_SIZE = 1 << 16

# long syscall(long number, int cmd, union bpf_attr *attr, unsigned int size)
_syscall = libc_function("syscall", (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint),
                         ctypes.c_long)

# What refused, for the agent's metric label: a few fixed words, never the message.
Cause = Literal["kernel", "btf", "refused", "error"]


class FdIterUnavailable(CollectError):
    """The iterator cannot run here; str() says why, in one line, and `cause` in one word."""

    def __init__(self, reason: str, cause: Cause = "error") -> None:
        super().__init__(reason)
        self.cause: Cause = cause


def _bpf(command: int, attr: bytes | bytearray, what: str) -> int:
    number = SYS_BPF.get(MACHINE)
    if number is None:
        raise FdIterUnavailable(f"bpf(2) number unknown on {MACHINE}", "kernel")
    buffer = ctypes.create_string_buffer(bytes(attr), max(len(attr), ATTR_SIZE))
    result = int(_syscall(number, command, buffer, len(attr)))
    if result < 0:
        code = ctypes.get_errno()
        if code == errno.EPERM:
            raise FdIterUnavailable(f"{what}: {os.strerror(code)}{refusal_hint()}", "refused")
        raise FdIterUnavailable(f"{what}: {os.strerror(code)}")
    return result


def refusal_hint() -> str:
    """Why bpf(2) said EPERM: the capabilities this thread lacks, else (it holds them) what
    else refuses a holder: a seccomp filter (the runtime default allows bpf only with
    CAP_SYS_ADMIN), an LSM's bpf hook (SELinux bpf/prog_load, AppArmor), or lockdown."""
    no_admin = bool(lacking_capabilities(("SYS_ADMIN",)))
    if no_admin and lacking_capabilities(("BPF", "PERFMON")):
        return " (needs CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON)"
    causes = [cause for cause in (_seccomp_filter(), _security_file("lsm", "an LSM"),
                                  _security_file("lockdown", "kernel lockdown")) if cause]
    held = "CAP_BPF and CAP_PERFMON are" if no_admin else "CAP_SYS_ADMIN is"
    return (f" ({held} held: refused by "
            + (" or ".join(causes) if causes else "a seccomp filter, an LSM or kernel lockdown")
            + ")")


def _seccomp_filter() -> str:
    try:
        status = read_own("thread-self/status")
    except CollectError:
        return ""
    return "this process's seccomp filter" if re.search(rb"^Seccomp:\s+2$", status, re.M) else ""


def _security_file(name: str, what: str) -> str:
    """`an LSM (selinux,bpf)` or `kernel lockdown (integrity)` from securityfs, when mounted
    and not saying none; "" when it cannot tell."""
    try:
        with open(f"/sys/kernel/security/{name}", encoding="ascii", errors="replace") as file:
            text = file.read(256).strip()
    except OSError:
        return ""
    if name == "lockdown":  # "none [integrity] confidentiality": the bracketed one is on
        found = re.search(r"\[(\w+)\]", text)
        text = found.group(1) if found and found.group(1) != "none" else ""
    else:  # the capability module refuses nothing a holder asks
        text = ",".join(m for m in text.split(",") if m not in ("capability", ""))
    return f"{what} ({text})" if text else ""


def kernel_refusal(release: str) -> str | None:
    """Why a kernel of `release` cannot run the per-process iterator (the table above)."""
    found = re.match(r"(\d+)\.(\d+)", release)
    if found is None:
        return f"kernel release {release!r} not understood"
    version = (int(found.group(1)), int(found.group(2)))
    if version >= FIRST_KERNEL:
        return None
    if version >= (5, 9):
        return (f"kernel {release}: before 6.1 the iterator ignores the task it is given "
                "and walks every process")
    return f"kernel {release}: before 6.1 the iterator cannot be given one process"


@lru_cache(maxsize=1)
def _layout() -> FdIterLayout | str:
    """Read once per process: the kernel's BTF does not change while it runs. A failure is
    kept as its reason, and each caller raises its own exception: a kept exception would
    keep, in its growing traceback, every frame that ever raised it."""
    try:
        return read_fd_iter_layout()
    except CollectError as exc:
        return f"kernel BTF: {exc}"


def _wanted_map(inodes: Collection[int]) -> int:
    attr = MAP_CREATE_ATTR.pack(BPF_MAP_TYPE_HASH, 8, 1, max(1, len(inodes)), 0)
    map_fd = _bpf(BPF_MAP_CREATE, attr, "BPF map")
    value = ctypes.create_string_buffer(b"\1", 1)
    key = ctypes.create_string_buffer(8)
    try:
        for inode in inodes:
            struct.pack_into("<Q", key, 0, inode)
            _bpf(BPF_MAP_UPDATE_ELEM, MAP_UPDATE_ATTR.pack(map_fd, ctypes.addressof(key),
                                                           ctypes.addressof(value), 0),
                 "BPF map update")
    except BaseException:
        os.close(map_fd)
        raise
    return map_fd


def _load(layout: FdIterLayout, map_fd: int) -> int:
    """The program's fd. A rejection other than EPERM is loaded again with the verifier's
    log, whose last line says why (a kernel whose struct layout or rules changed)."""
    code = iterator_program(layout, map_fd)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"GPL")  # bpf_seq_write is GPL-only
    attr = bytearray(ATTR_SIZE)
    struct.pack_into("<IIQQ", attr, 0, BPF_PROG_TYPE_TRACING, len(code) // 8,
                     ctypes.addressof(insns), ctypes.addressof(license_))
    struct.pack_into("<16s", attr, LOAD_PROG_NAME, b"opaudit_fds")
    struct.pack_into("<I", attr, LOAD_ATTACH_TYPE, BPF_TRACE_ITER)
    struct.pack_into("<I", attr, LOAD_ATTACH_BTF_ID, layout.attach_btf_id)
    try:
        return _bpf(BPF_PROG_LOAD, attr, "BPF program load")
    except FdIterUnavailable as exc:
        if exc.cause == "refused":
            raise
    log = ctypes.create_string_buffer(VERIFIER_LOG_SIZE)
    struct.pack_into("<IIQ", attr, LOAD_LOG_LEVEL, 1, VERIFIER_LOG_SIZE, ctypes.addressof(log))
    try:
        return _bpf(BPF_PROG_LOAD, attr, "BPF program load")
    except FdIterUnavailable as exc:
        raise FdIterUnavailable(f"{exc}{verifier_says(log.value)}", exc.cause) from None


def verifier_says(log: bytes) -> str:
    """`; verifier: <its last line>`, the reason of a rejection, or "" without a log."""
    lines = [line for line in log.decode("utf-8", "replace").splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(("processed ", "verification "))]
    return f"; verifier: {' '.join(reasons[-1].split())}" if reasons else ""


def _read_iterator(prog_fd: int, tgid: int) -> bytes:
    """One process's matches: a link whose iter_info names the task (Linux 6.1), then read.

    It names the main thread (`tid`), not the thread group (`pid`): /proc/PID/fd is the main
    thread's table, and a thread that unshared its fds is not in it, nor in `ss -p`."""
    info = ctypes.create_string_buffer(16)  # union bpf_iter_link_info
    struct.pack_into("<I", info, 0, tgid)  # .task = {tid, pid, pid_fd}
    link_attr = LINK_CREATE_ATTR.pack(prog_fd, 0, BPF_TRACE_ITER, 0, ctypes.addressof(info),
                                      ctypes.sizeof(info))
    link_fd = _bpf(BPF_LINK_CREATE, link_attr, "BPF iterator link")
    try:
        iter_fd = _bpf(BPF_ITER_CREATE, ITER_CREATE_ATTR.pack(link_fd, 0), "BPF iterator")
    finally:
        os.close(link_fd)
    chunks: list[bytes] = []
    try:
        while chunk := os.read(iter_fd, READ_SIZE):
            chunks.append(chunk)
    except OSError as exc:  # EAGAIN, ENOMEM, EFAULT from the program's run: not a crash
        raise FdIterUnavailable(f"reading the BPF iterator of pid {tgid}: "
                                f"{exc.strerror or exc}") from None
    finally:
        os.close(iter_fd)
    return b"".join(chunks)


def socket_fds(tgids: Iterable[int], inodes: Collection[int]) -> dict[int, list[tuple[int, int]]]:
    """tgid -> [(fd, socket inode)] for each fd of those processes holding a wanted socket.

    A process that exited is simply absent (as an empty fd table would be). Raises
    FdIterUnavailable when the iterator cannot be loaded or run; then nothing was read.
    """
    refusal = kernel_refusal(RELEASE)
    if refusal is not None:
        raise FdIterUnavailable(refusal, "kernel")
    layout = _layout()
    if isinstance(layout, str):
        raise FdIterUnavailable(layout, "btf")
    held: dict[int, list[tuple[int, int]]] = {}
    map_fd = _wanted_map(inodes)
    try:
        prog_fd = _load(layout, map_fd)
    finally:
        os.close(map_fd)  # the loaded program holds its own reference
    try:
        for tgid in tgids:  # one that exited meanwhile has no fd table: no records
            data = _read_iterator(prog_fd, tgid)
            for fd, inode in RECORD.iter_unpack(data[: len(data) - len(data) % RECORD.size]):
                held.setdefault(tgid, []).append((fd, inode))
    finally:
        os.close(prog_fd)
    return held
