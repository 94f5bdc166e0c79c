"""The BPF fd iterator's failure paths on the real kernel: a kept BTF failure that must not
grow, kernels whose iterator would give wrong owners, errors while reading it, and who
refused bpf(2). Each falls back to /proc with the same owners and says why."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from collect.socket_owners import needs_btf, owner_pairs, stage_owners
from seccomp_shim import DENY_BPF, SYS_BPF
from staging import STAGE_PYTHON, Stage

from agent.collect import fditer
from agent.collect.btf import read_fd_iter_layout
from agent.collect.sockets import scan_socket_owners

REPO = Path(__file__).resolve().parents[2]

# --- a BTF that cannot be read: the reason is kept, never the exception -------------------

# 1,000 scans while /sys/kernel/btf/vmlinux reads as empty (a bind mount of /dev/null, in
# a private mount namespace): each raise is a new exception with a traceback as short as the
# first's, and memory stays flat. A kept exception grew by two frames a scan, each keeping
# that scan's arguments (here 300 large ints apiece) alive.
LEAK_PROBE = r"""
import json, os, tracemalloc
from agent.collect import fditer
def depth(exc):
    n, tb = 0, exc.__traceback__
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n
def scan():
    try:
        fditer.socket_fds([os.getpid()], list(range(10**12, 10**12 + 300)))
    except fditer.FdIterUnavailable as exc:
        return exc
    raise SystemExit("the iterator ran")
tracemalloc.start()
first = scan()
depths, ids = {depth(first)}, {id(first)}
base = tracemalloc.get_traced_memory()[0]
for _ in range(1000):
    exc = scan()
    depths.add(depth(exc))
last = exc
print(json.dumps({"message": str(last), "cause": getattr(last, "cause", None),
                  "depths": sorted(depths),
                  "same": first is last, "grown": tracemalloc.get_traced_memory()[0] - base}))
"""


@needs_btf
def test_a_btf_failure_leaks_nothing_over_1000_scans() -> None:
    script = (f"mount --bind /dev/null {fditer_btf()} && "
              f'exec "$0" -c "$1"')
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                          sys.executable, LEAK_PROBE],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["message"].startswith("kernel BTF: cannot parse /sys/kernel/btf/vmlinux")
    assert len(result["depths"]) == 1, result["depths"]  # 2, 4, ..., 2002 when kept
    assert result["grown"] < 64 << 10, result["grown"]  # 12.8 MB when kept (15 kB here)
    assert result["same"] is False and result["cause"] == "btf"


def fditer_btf() -> str:
    from agent.collect.btf import VMLINUX_BTF

    return VMLINUX_BTF


# --- kernels whose iterator cannot be given one process ------------------------------------


@pytest.mark.parametrize(("release", "refusal"), [
    ("5.8.18", "cannot be given one process"),
    ("5.10.0-28-amd64", "ignores the task it is given"),
    ("5.15.0-91-generic", "ignores the task it is given"),
    ("6.0.19", "ignores the task it is given"),
    ("6.1.0-18-amd64", None),
    ("6.18.44-fc-v1272", None),
    ("7.0.0", None),
    ("vendor-kernel", "not understood"),
])
def test_the_kernel_table(release: str, refusal: str | None) -> None:
    said = fditer.kernel_refusal(release)
    assert said == refusal if refusal is None else (said is not None and refusal in said)


@pytest.mark.parametrize("release", ["5.15.0-91-generic", "6.0.19"])
def test_forced_bpf_below_6_1_reads_proc_instead(stage: Stage, release: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """On 5.9-6.0 the iterator would walk every task and put each match on each pid asked
    for; the staged netns has three processes holding sockets (one a forked child sharing
    its parent's), so such owners would be wrong. Forced, it still reads /proc."""
    _, inodes, ns_ino, _ = stage_owners(stage)
    monkeypatch.setattr(fditer, "RELEASE", release)
    forced = scan_socket_owners(inodes, ns_ino, reader="bpf")
    assert forced.fd_reader == "proc"
    assert forced.reader.fallback == "kernel"
    assert forced.iterator_error and f"kernel {release}: before 6.1" in forced.iterator_error
    assert owner_pairs(forced) == owner_pairs(scan_socket_owners(inodes, ns_ino, reader="proc"))


# --- an error while reading the iterator ---------------------------------------------------


def failing_read(code: int, real: Callable[[int, int], bytes]) -> Callable[[int, int], bytes]:
    """os.read, but `code` from the fds that are BPF iterators (what read(2) on one can
    return when its program's seq_file fails: EAGAIN, ENOMEM)."""
    def read(fd: int, size: int) -> bytes:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target == "anon_inode:bpf_iter":
            raise OSError(code, os.strerror(code))
        return real(fd, size)
    return read


@needs_btf
@pytest.mark.parametrize("code", [errno.EAGAIN, errno.ENOMEM])
def test_a_read_error_of_the_iterator_falls_back_to_proc(stage: Stage, code: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _, inodes, ns_ino, _ = stage_owners(stage)
    expected = scan_socket_owners(inodes, ns_ino, reader="proc")
    monkeypatch.setattr(os, "read", failing_read(code, os.read))
    scan = scan_socket_owners(inodes, ns_ino, reader="bpf")
    assert (scan.fd_reader, scan.reader.fallback) == ("proc", "error")
    assert scan.iterator_error and "reading the BPF iterator of pid" in scan.iterator_error
    assert os.strerror(code) in scan.iterator_error
    assert owner_pairs(scan) == owner_pairs(expected)


# --- EPERM: the capability, or what else refused --------------------------------------------

SCAN = ("import json, sys; from agent.collect.sockets import scan_socket_owners as s; "
        "r = s(json.loads(sys.argv[1]), int(sys.argv[2]), reader='bpf'); "
        "print(json.dumps([r.fd_reader, getattr(getattr(r, 'reader', None), 'fallback', None), "
        "r.iterator_error, "
        "sorted([i, o.pid, o.fd] for i, h in r.owners.items() for o in h)]))")


@needs_btf
@pytest.mark.skipif(SYS_BPF is None, reason="no bpf(2) number for this machine")
@pytest.mark.parametrize(("bounding", "held"), [
    ("+all", "CAP_SYS_ADMIN is held"),
    ("-sys_admin", "CAP_BPF and CAP_PERFMON are held"),
])
def test_a_seccomp_refusal_with_the_capability_held_names_the_other_causes(
        stage: Stage, bounding: str, held: str) -> None:
    """A real seccomp filter says EPERM to bpf(2) while the capabilities that allow it are
    held: the reason must not send anyone after a capability."""
    _, inodes, ns_ino, _ = stage_owners(stage)
    # no_new_privs: without CAP_SYS_ADMIN, only it lets a process install a seccomp filter
    out = subprocess.run(["setpriv", f"--bounding-set={bounding}", "--no-new-privs", "--",
                          STAGE_PYTHON, "-c", DENY_BPF,
                          sys.executable, "-c", SCAN, json.dumps(inodes), str(ns_ino)],
                         capture_output=True, text=True, timeout=60, cwd=REPO, check=True)
    reader, fallback, error, owners = json.loads(out.stdout)
    assert reader == "proc" and "Operation not permitted" in error
    assert "needs" not in error
    assert f"{held}: refused by this process's seccomp filter" in error
    assert fallback == "refused"
    assert {tuple(o) for o in owners} == owner_pairs(scan_socket_owners(inodes, ns_ino,
                                                                   reader="proc"))


@needs_btf
def test_cap_bpf_and_cap_perfmon_run_the_iterator_without_cap_sys_admin(stage: Stage) -> None:
    """The other way bpf(2) lets a tracing program load (kernel/bpf/syscall.c,
    bpf_prog_load: bpf_capable() and perfmon_capable()): the hint names it for a reason."""
    _, inodes, ns_ino, _ = stage_owners(stage)
    out = subprocess.run(["setpriv", "--bounding-set=-sys_admin", "--", sys.executable, "-c",
                          SCAN, json.dumps(inodes), str(ns_ino)],
                         capture_output=True, text=True, timeout=60, cwd=REPO, check=True)
    reader, fallback, error, owners = json.loads(out.stdout)
    assert (reader, fallback, error) == ("bpf", "", None)
    assert {tuple(o) for o in owners} == owner_pairs(scan_socket_owners(inodes, ns_ino,
                                                                   reader="proc"))


# --- a program the verifier rejects says why ------------------------------------------------


@needs_btf
def test_a_verifier_rejection_carries_the_verifiers_reason() -> None:
    """A struct layout the kernel disagrees with (f_inode far past struct file's end), as a
    new kernel could bring: the load fails, and the message ends with the verifier's line."""
    layout = read_fd_iter_layout()
    wrong = type(layout)(**{**{f: getattr(layout, f) for f in layout.__slots__},
                            "file_inode": 30_000})
    map_fd = fditer._wanted_map([1])
    try:
        with pytest.raises(fditer.FdIterUnavailable) as caught:
            os.close(fditer._load(wrong, map_fd))
    finally:
        os.close(map_fd)
    message = str(caught.value)
    assert message.startswith("BPF program load: Permission denied; verifier: "), message
    assert "\n" not in message and "30000" in message
    assert caught.value.cause == "error"


def test_syscall_has_its_argument_types() -> None:
    """Without argtypes ctypes passes Python ints as C int: a command or size above 2**31
    would be cut, and an address as int would be truncated on 64-bit."""
    assert fditer._syscall.argtypes is not None and len(fditer._syscall.argtypes) == 4


