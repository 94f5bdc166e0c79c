"""Every parser of untrusted or kernel text, fuzzed: a correct parse or a ParseError, nothing else.

One property test per parser (netlink decoding: test_fuzz_netlink.py). Each draws from
three sources (strategies in fuzzing.py), so the fuzz reaches deep:
- well-formed input built from known values, where the parse must give those values back;
- real samples (this machine's /proc, the shared cgroup corpus) and the well-formed input,
  mutated: characters inserted, deleted, duplicated, numbers made huge or negative;
- random text or bytes.

`scripts/fuzz` runs the "fuzz" profile (100,000 examples each, counts printed at the end);
`scripts/test` runs the quick profile.
"""

from __future__ import annotations

import ctypes
from collections import Counter
from pathlib import Path
from typing import Any

from fixture_data import CGROUP_CORPUS
from hardening.fuzzing import (
    MAX_ID,
    any_text,
    assert_printable,
    ids,
    mutated,
    mutated_bytes,
    no_expectation,
    outcome,
)
from hypothesis import given
from hypothesis import strategies as st

from agent.collect.caps import decode_capsh, parse_cap_mask, strtoull_hex
from agent.collect.cgroups import parse_cgroup_file
from agent.collect.mounts import filesystem_from_mounts, parse_mountinfo
from agent.collect.procparse import (
    ARG_LIMIT,
    MAX_ENTRIES,
    parse_environ,
    parse_id_map,
    parse_nul_list,
    parse_stat,
    parse_status,
)
from agent.collect.rootfs import find_passwd_entry, parse_passwd
from agent.collect.text import sanitize
from agent.model import Capabilities, IdMapRange, IdQuad, Mount, PasswdEntry

CORPUS = CGROUP_CORPUS
LAST_CAP = 40


# --- /proc/PID/status -----------------------------------------------------------------

STATUS_NAMES = st.text(
    st.one_of(st.characters(blacklist_characters="\n"), st.sampled_from(["\udcff", "\x1c",
                                                                         "\u2028", "\r"])),
    min_size=0, max_size=16)


@st.composite
def status_documents(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    uid = IdQuad(*(draw(ids()) for _ in range(4)))
    gid = IdQuad(*(draw(ids()) for _ in range(4)))
    groups = tuple(draw(st.lists(ids(), max_size=6)))
    masks = [draw(st.integers(0, (1 << 64) - 1)) for _ in range(5)]
    nnp = draw(st.sampled_from([None, False, True]))
    seccomp = draw(st.sampled_from([None, "0", "1", "2"]))
    name = draw(STATUS_NAMES)
    lines = [f"Name:\t{name}", "Umask:\t0022", "State:\tS (sleeping)", "Tgid:\t42",
             "NSpid:\t42\t1", f"Uid:\t{uid.real}\t{uid.effective}\t{uid.saved}\t{uid.fs}",
             f"Gid:\t{gid.real}\t{gid.effective}\t{gid.saved}\t{gid.fs}", "FDSize:\t64",
             "Groups:\t" + " ".join(map(str, groups)) + " ", "VmRSS:\t    1234 kB",
             f"CapInh:\t{masks[0]:016x}", f"CapPrm:\t{masks[1]:016x}",
             f"CapEff:\t{masks[2]:016x}", f"CapBnd:\t{masks[3]:016x}",
             f"CapAmb:\t{masks[4]:016x}"]
    if nnp is not None:
        lines.append(f"NoNewPrivs:\t{int(nnp)}")
    if seccomp is not None:
        lines += [f"Seccomp:\t{seccomp}", "Seccomp_filters:\t0"]
    lines.append("voluntary_ctxt_switches:\t12")
    expected = {"name": sanitize(name), "uid": uid, "gid": gid, "groups": groups,
                "caps": Capabilities(effective=masks[2], permitted=masks[1],
                                     inheritable=masks[0], bounding=masks[3],
                                     ambient=masks[4], last_cap=LAST_CAP),
                "nnp": nnp, "seccomp": {None: None, "0": "disabled", "1": "strict",
                                        "2": "filter"}[seccomp]}
    return "\n".join(lines) + "\n", expected


REAL_STATUS = Path("/proc/self/status").read_text(errors="surrogateescape")


@given(st.one_of(
    status_documents(),
    no_expectation(mutated(st.one_of(st.just(REAL_STATUS),
                                     status_documents().map(lambda d: d[0])))),
    no_expectation(any_text()),
))
def test_status(fuzz_counts: Counter[str], case: tuple[str, dict[str, Any] | None]) -> None:
    fuzz_counts["status"] += 1
    text, expected = case
    status = outcome(lambda: parse_status(text, LAST_CAP))
    if expected is not None:
        assert status is not None, text
        assert (status.name, status.uid, status.gid, status.groups, status.capabilities,
                status.no_new_privs, status.seccomp) == (
            expected["name"], expected["uid"], expected["gid"], expected["groups"],
            expected["caps"], expected["nnp"], expected["seccomp"])
    if status is not None:
        assert_printable(status.name)
        for quad in (status.uid, status.gid):
            assert all(0 <= v <= MAX_ID for v in (quad.real, quad.effective, quad.saved,
                                                  quad.fs))
        caps = status.capabilities
        assert all(0 <= m < 1 << 64 for m in (caps.effective, caps.permitted,
                                              caps.inheritable, caps.bounding, caps.ambient))


# --- /proc/PID/mountinfo --------------------------------------------------------------


def kernel_mangle(text: str) -> str:
    """fs/proc_namespace.c mangle(): space, tab, newline and backslash as 3-digit octal."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in text)


PATHS = st.text(st.one_of(st.characters(blacklist_categories=["Cs"]),
                          st.sampled_from([" ", "\t", "\n", "\\", "/", "0", "4"])),
                min_size=1, max_size=30).map(lambda p: "/" + p.lstrip("/"))
OPTIONAL_FIELDS = st.lists(st.sampled_from(["shared:1", "master:12", "propagate_from:3",
                                            "unbindable"]), max_size=3)


@st.composite
def mountinfo_documents(draw: st.DrawFn) -> tuple[str, tuple[Mount, ...]]:
    lines, mounts = [], []
    for index in range(draw(st.integers(1, 6))):
        mount = Mount(mount_id=draw(st.integers(0, 10**9)), parent_id=draw(st.integers(0, 10**9)),
                      root=draw(PATHS), mount_point=draw(PATHS),
                      fstype=draw(st.sampled_from(["ext4", "overlay", "tmpfs", "proc",
                                                   "fuse.sshfs", "cgroup2"])),
                      source=draw(st.one_of(PATHS, st.sampled_from(["none", "overlay",
                                                                    "tmpfs"]))),
                      readonly=draw(st.booleans()))
        options = ("ro" if mount.readonly else "rw") + draw(
            st.sampled_from(["", ",nosuid", ",nodev,relatime", ",noexec"]))
        optional = draw(OPTIONAL_FIELDS)
        lines.append(" ".join([
            str(mount.mount_id), str(mount.parent_id), f"{index}:{draw(st.integers(0, 999))}",
            kernel_mangle(mount.root), kernel_mangle(mount.mount_point), options, *optional,
            "-", mount.fstype, kernel_mangle(mount.source), "rw,seclabel"]))
        mounts.append(mount)
    return "\n".join(lines) + "\n", tuple(mounts)


REAL_MOUNTINFO = Path("/proc/self/mountinfo").read_text(errors="surrogateescape")


@given(st.one_of(
    mountinfo_documents(),
    no_expectation(mutated(st.one_of(st.just(REAL_MOUNTINFO),
                                     mountinfo_documents().map(lambda d: d[0])))),
    no_expectation(any_text()),
))
def test_mountinfo(fuzz_counts: Counter[str], case: tuple[str, tuple[Mount, ...] | None]) -> None:
    fuzz_counts["mountinfo"] += 1
    text, expected = case
    mounts = outcome(lambda: parse_mountinfo(text))
    if expected is not None:
        assert mounts == expected
    if mounts is not None:
        filesystem = filesystem_from_mounts(mounts)
        for point in filesystem.writable_mounts:
            assert_printable(point)


# --- /proc/PID/cgroup (v1, v2, hybrid) ------------------------------------------------

CGROUP_SAMPLES = sorted(p.read_text() for p in CORPUS.glob("*.txt"))
UUID = st.uuids().map(str)
HEX64 = st.binary(min_size=32, max_size=32).map(bytes.hex)


@st.composite
def cgroup_documents(draw: st.DrawFn) -> tuple[str, tuple[str, str]]:
    """A kubepods path in a v1, v2 or hybrid file, with the pod uid and container id in it."""
    uid, cid = draw(UUID), draw(HEX64)
    qos = draw(st.sampled_from(["", "burstable", "besteffort"]))
    runtime = draw(st.sampled_from(["cri-containerd", "crio", "docker"]))
    if draw(st.booleans()):  # systemd driver
        under = uid.replace("-", "_")
        slice_ = f"kubepods-{qos}-pod{under}.slice" if qos else f"kubepods-pod{under}.slice"
        qos_slice = f"kubepods-{qos}.slice/" if qos else ""
        path = f"/kubepods.slice/{qos_slice}{slice_}/{runtime}-{cid}.scope"
    else:  # cgroupfs driver
        path = f"/kubepods/{qos + '/' if qos else ''}pod{uid}/{cid}"
    layout = draw(st.sampled_from(["v1", "v2", "hybrid"]))
    if layout == "v2":
        lines = [f"0::{path}"]
    else:
        lines = [f"{n}:{c}:{path}" for n, c in enumerate(
            ["memory", "cpu,cpuacct", "pids", "name=systemd", "net_cls,net_prio"], start=2)]
        if layout == "hybrid":
            lines.append("0::/system.slice/containerd.service")
    return "\n".join(draw(st.permutations(lines))) + "\n", (uid, cid)


@given(st.one_of(
    cgroup_documents(),
    no_expectation(mutated(st.one_of(st.sampled_from(CGROUP_SAMPLES or ["0::/\n"]),
                                     cgroup_documents().map(lambda d: d[0])))),
    no_expectation(any_text()),
))
def test_cgroup(fuzz_counts: Counter[str], case: tuple[str, tuple[str, str] | None]) -> None:
    fuzz_counts["cgroup"] += 1
    text, expected = case
    membership = outcome(lambda: parse_cgroup_file(text))
    if expected is not None:
        assert membership is not None
        assert (membership.pod_uid, membership.container_id) == expected
    if membership is not None and membership.container_id is not None:
        assert membership.container_path is not None


# --- uid_map / gid_map ----------------------------------------------------------------

RANGES = st.lists(st.builds(IdMapRange, inside=ids(), outside=ids(),
                            count=st.integers(1, MAX_ID)), max_size=5)


def id_map_text(ranges: list[IdMapRange]) -> str:
    # The kernel right-aligns each number in a 10-wide column (kernel/user_namespace.c).
    return "".join(f"{r.inside:>10} {r.outside:>10} {r.count:>10}\n" for r in ranges)


@given(st.one_of(
    RANGES.map(lambda r: (id_map_text(r), tuple(r))),
    no_expectation(mutated(RANGES.map(id_map_text))),
    no_expectation(any_text()),
))
def test_id_map(fuzz_counts: Counter[str], case: tuple[str, tuple[IdMapRange, ...] | None]) -> None:
    fuzz_counts["uid_map/gid_map"] += 1
    text, expected = case
    ranges = outcome(lambda: parse_id_map(text))
    if expected is not None:
        assert ranges == expected
    for r in ranges or ():
        assert 0 <= r.inside <= MAX_ID and 0 <= r.outside <= MAX_ID and r.count >= 1


# --- /etc/passwd (written by the container: never raises, skips what it cannot read) ----

FIELD = st.text(st.characters(blacklist_characters=":\n"), max_size=20)
ENTRIES = st.lists(st.builds(PasswdEntry, name=FIELD.filter(bool), uid=ids(), gid=ids(),
                             home=FIELD, shell=FIELD), min_size=1, max_size=6)


def passwd_text(entries: list[PasswdEntry]) -> str:
    return "".join(f"{e.name}:x:{e.uid}:{e.gid}:gecos:{e.home}:{e.shell}\n" for e in entries)


@given(st.one_of(
    ENTRIES.map(lambda e: (passwd_text(e), e)),
    no_expectation(mutated(ENTRIES.map(passwd_text))),
    no_expectation(any_text()),
))
def test_passwd(fuzz_counts: Counter[str], case: tuple[str, list[PasswdEntry] | None]) -> None:
    fuzz_counts["passwd"] += 1
    text, entries = case
    parsed = parse_passwd(text)  # no ParseError either: glibc skips malformed lines
    if entries is not None:
        for entry in entries:
            first = next(e for e in entries if e.uid == entry.uid)
            found = find_passwd_entry(text, entry.uid)
            assert found == PasswdEntry(sanitize(first.name), first.uid, first.gid,
                                        sanitize(first.home, 4096), sanitize(first.shell, 4096))
    for entry in parsed:
        for field in (entry.name, entry.home, entry.shell):
            assert_printable(field)
        assert 0 <= entry.uid < 10**10


# --- environ / cmdline ----------------------------------------------------------------

ARGS = st.lists(st.binary(max_size=40).filter(lambda b: b"\0" not in b), max_size=8)


@st.composite
def huge_nul_lists(draw: st.DrawFn) -> bytes:
    """Megabytes of arguments, or thousands of them: a container chooses its own argv."""
    chunk = draw(st.binary(min_size=1, max_size=64))
    return chunk * draw(st.integers(1, 40_000))


@given(st.one_of(
    ARGS.map(lambda a: (b"".join(x + b"\0" for x in a), a)),
    no_expectation(mutated_bytes(ARGS.map(lambda a: b"\0".join(a)))),
    no_expectation(st.binary(max_size=2000)),
    no_expectation(huge_nul_lists()),
))
def test_cmdline_environ(fuzz_counts: Counter[str], case: tuple[bytes, list[bytes] | None]) -> None:
    fuzz_counts["environ/cmdline"] += 1
    raw, args = case
    argv = parse_nul_list(raw)
    environ = parse_environ(raw)
    if args is not None:
        assert argv == tuple(sanitize(a, ARG_LIMIT) for a in args)
    assert len(argv) <= MAX_ENTRIES and len(environ) <= MAX_ENTRIES
    for item in (*argv, *(x for pair in environ for x in pair)):
        assert len(item) <= ARG_LIMIT
        assert_printable(item)
    for name, _value in environ:
        assert name and "=" not in name


# --- /proc/PID/stat (comm in parentheses, may hold ") ") -------------------------------

COMMS = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"),
                max_size=15)  # comm is bytes: its surrogates come only from bad UTF-8


def stat_line(comm: str, start: int) -> str:
    fields = ["S", "1", "42", "42", "0", "-1", "4194560", "100", "0", "0", "0", "1", "2",
              "0", "0", "20", "0", "1", "0", str(start), "1000", "200"]
    return f"42 ({comm}) " + " ".join(fields) + "\n"


@given(st.one_of(
    st.tuples(COMMS, st.integers(0, 1 << 63)).map(lambda c: (stat_line(*c), c)),
    no_expectation(mutated(st.tuples(COMMS, st.integers(0, 1 << 40)).map(
        lambda c: stat_line(*c)))),
    no_expectation(any_text()),
))
def test_stat(fuzz_counts: Counter[str], case: tuple[str, tuple[str, int] | None]) -> None:
    fuzz_counts["stat"] += 1
    text, expected = case
    try:
        raw = text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:  # a surrogate outside U+DC80..U+DCFF: invalid UTF-8 bytes
        raw = text.encode("utf-8", errors="surrogatepass")
    stat = outcome(lambda: parse_stat(raw))
    if expected is not None:
        assert stat is not None
        assert (stat.comm, stat.start_time) == (sanitize(expected[0], 64), expected[1])
    if stat is not None:
        assert_printable(stat.comm)


# --- capability masks -----------------------------------------------------------------

_libc = ctypes.CDLL(None)
_libc.strtoull.restype = ctypes.c_ulonglong
_libc.strtoull.argtypes = (ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int)
HEXISH = st.text(st.sampled_from(list("0123456789abcdefABCDEFxX+- \t\n\v\f\rgz")), max_size=24)


@given(st.one_of(
    st.integers(0, (1 << 64) - 1).map(lambda m: (f"{m:016x}", m)),
    no_expectation(mutated(st.integers(0, (1 << 64) - 1).map(lambda m: f"{m:016x}"))),
    no_expectation(HEXISH),
    no_expectation(any_text()),
))
def test_capability_hex(fuzz_counts: Counter[str], case: tuple[str, int | None]) -> None:
    fuzz_counts["capability hex"] += 1
    text, expected = case
    mask = outcome(lambda: parse_cap_mask(text))
    if expected is not None:
        assert mask == expected
    if mask is not None:
        assert 0 <= mask < 1 << 64
    # `caps decode` must read its argument exactly as capsh's strtoull(3) does.
    if "\0" not in text and text.isascii():
        assert strtoull_hex(text) == _libc.strtoull(text.encode(), None, 16)
    assert decode_capsh(text).startswith("0x")
