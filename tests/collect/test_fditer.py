"""The BPF fd iterator: its BTF layout against bpftool, its owners against /proc and `ss`,
and what happens when the kernel's BTF is malformed or bpf(2) is refused."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from collect.socket_owners import needs_btf, owner_pairs, socket_inode, ss_sockets, stage_owners
from hypothesis import given, settings
from hypothesis import strategies as st
from staging import Sock, Stage, run

from agent.collect import bpfprogram, btf, fditer
from agent.collect.btf import FdIterLayout, read_fd_iter_layout
from agent.collect.errors import CollectError, Missing, ParseError
from agent.collect.procfs import ProcFS
from agent.collect.sockets import (
    ITERATOR_MIN_FDS,
    fd_reader_setting,
    scan_socket_owners,
)

REPO = Path(__file__).resolve().parents[2]


# --- the layout ---------------------------------------------------------------------------


@needs_btf
def test_layout_matches_bpftool() -> None:
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool is not installed (scripts/bootstrap installs it as root)")
    raw = run(["bpftool", "btf", "dump", "file", btf.VMLINUX_BTF, "format", "raw"]).stdout

    def member_offset(struct_name: str, field: str) -> int:
        block = re.search(rf"^\[\d+\] STRUCT '{struct_name}' .*\n((?:\t.*\n)+)", raw, re.M)
        assert block, struct_name
        bits = re.search(rf"^\t'{field}' type_id=\d+ bits_offset=(\d+)", block.group(1), re.M)
        assert bits, field
        return int(bits.group(1)) // 8

    func = re.search(r"^\[(\d+)\] FUNC 'bpf_iter_task_file' ", raw, re.M)
    assert func
    assert read_fd_iter_layout() == FdIterLayout(
        attach_btf_id=int(func.group(1)),
        file_inode=member_offset("file", "f_inode"),
        inode_ino=member_offset("inode", "i_ino"),
        inode_sb=member_offset("inode", "i_sb"),
        sb_magic=member_offset("super_block", "s_magic"),
    )


def _btf(types: list[tuple[str, int, int, int, list[tuple[str, int, int]]]],
         magic: int = btf.BTF_MAGIC) -> bytes:
    """A BTF blob: (name, kind, vlen, size_or_type, members as (name, type, bit offset))."""
    strings = bytearray(b"\0")
    offsets: dict[str, int] = {}

    def name_off(name: str) -> int:
        if name not in offsets:
            offsets[name] = len(strings)
            strings.extend(name.encode() + b"\0")
        return offsets[name]

    section = bytearray()
    for name, kind, vlen, size, members in types:
        section += struct.pack("<III", name_off(name), kind << 24 | vlen, size)
        if kind == 1:  # INT: one word of encoding
            section += struct.pack("<I", 64)
        for m_name, m_type, m_bits in members:
            section += struct.pack("<III", name_off(m_name), m_type, m_bits)
    header = struct.pack("<HBBIIIII", magic, 1, 0, 24, 0, len(section), len(section),
                         len(strings))
    return header + bytes(section) + bytes(strings)


SYNTHETIC = [
    ("long", 1, 0, 8, []),
    ("file", 4, 2, 184, [("f_mode", 1, 0), ("f_inode", 1, 256)]),
    ("inode", 4, 2, 600, [("i_sb", 1, 320), ("i_ino", 1, 512)]),
    ("", 13, 0, 0, []),  # FUNC_PROTO
    ("super_block", 4, 1, 900, [("s_magic", 1, 768)]),
    ("bpf_iter_task_file", 12, 1, 4, []),
]


@pytest.mark.parametrize("chunk", [btf.CHUNK, 64, 40])
def test_synthetic_layout_whatever_the_chunk(tmp_path: Path, chunk: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Records and names that straddle a chunk's end are read as when they do not."""
    monkeypatch.setattr(btf, "CHUNK", chunk)
    path = tmp_path / "vmlinux"
    path.write_bytes(_btf(SYNTHETIC))
    assert read_fd_iter_layout(str(path)) == FdIterLayout(
        attach_btf_id=6, file_inode=32, inode_ino=64, inode_sb=40, sb_magic=96)


@pytest.mark.parametrize("blob, message", [
    (b"", "shorter than the BTF header"),
    (_btf(SYNTHETIC, magic=0x9FEB), "magic 0x9feb"),
    (_btf(SYNTHETIC)[:60], "past its 60 bytes"),
    (_btf([*SYNTHETIC[:2], ("odd", 25, 0, 0, []), *SYNTHETIC[2:]]), "unknown kind 25"),
    (_btf([*SYNTHETIC[:4], ("super_block", 4, 200, 900, [("s_magic", 1, 768)]), SYNTHETIC[5]]),
     "runs past its chunk or the type section"),
    (_btf(SYNTHETIC[:-1]), "no bpf_iter_task_file"),
    (_btf([*SYNTHETIC[:4], ("super_block", 4, 1, 900, [("s_flags", 1, 768)]), SYNTHETIC[5]]),
     "super_block has no s_magic"),
    (_btf([SYNTHETIC[0], ("file", 4, 1, 184, [("f_inode", 1, 257)]), *SYNTHETIC[2:]]),
     "f_inode is a bitfield"),
])
def test_malformed_btf_is_one_line(tmp_path: Path, blob: bytes, message: str) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(blob)
    with pytest.raises(ParseError) as caught:
        read_fd_iter_layout(str(path))
    assert message in str(caught.value) and "\n" not in str(caught.value)


# More types, after bpf_iter_task_file (id 6): a 4-byte int (7), `typedef long u64` (8),
# `const u64` (9).
ALIASES = [("int", 1, 0, 4, []), ("u64", 8, 0, 1, []), ("", 10, 0, 8, [])]


def _with_members(inode_ino_type: int, magic_type: int, magic_bits: int = 768) -> bytes:
    return _btf([SYNTHETIC[0], SYNTHETIC[1],
                 ("inode", 4, 2, 600, [("i_sb", 1, 320), ("i_ino", inode_ino_type, 512)]),
                 SYNTHETIC[3], ("super_block", 4, 1, 900, [("s_magic", magic_type, magic_bits)]),
                 SYNTHETIC[5], *ALIASES])


def test_field_widths_are_read_through_typedefs_and_qualifiers(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(_with_members(inode_ino_type=8, magic_type=9))
    assert read_fd_iter_layout(str(path)) == FdIterLayout(
        attach_btf_id=6, file_inode=32, inode_ino=64, inode_sb=40, sb_magic=96)


@pytest.mark.parametrize(("blob", "message"), [
    (_with_members(inode_ino_type=7, magic_type=1), "i_ino is 4 bytes wide, not the 8"),
    (_with_members(inode_ino_type=1, magic_type=7), "s_magic is 4 bytes wide, not the 8"),
    (_with_members(inode_ino_type=1, magic_type=40), "s_magic has type 40, not in the type"),
    (_with_members(inode_ino_type=1, magic_type=6), "s_magic has type kind 12, which has no"),
    (_with_members(inode_ino_type=1, magic_type=1, magic_bits=8 * 40_000),
     "s_magic is at byte 40000, past what one BPF load reaches (32767)"),
])
def test_a_field_the_program_cannot_load_is_refused(tmp_path: Path, blob: bytes,
                                                    message: str) -> None:
    """The program loads 8 bytes of i_ino and s_magic, at a 16-bit offset: a kernel whose
    BTF says otherwise gets no program (/proc is read)."""
    path = tmp_path / "vmlinux"
    path.write_bytes(blob)
    with pytest.raises(ParseError, match=re.escape(message)):
        read_fd_iter_layout(str(path))


def test_missing_btf(tmp_path: Path) -> None:
    with pytest.raises(Missing, match="CONFIG_DEBUG_INFO_BTF"):
        read_fd_iter_layout(str(tmp_path / "absent"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=400))
def test_any_corruption_is_a_collect_error(patch: bytes, at: int) -> None:
    blob = bytearray(_btf(SYNTHETIC))
    blob[at: at + len(patch)] = patch
    path = Path(f"/tmp/opa{os.getpid()}-btf")
    try:
        path.write_bytes(bytes(blob))
        try:
            read_fd_iter_layout(str(path))
        except CollectError as exc:
            assert "\n" not in str(exc)
    finally:
        path.unlink(missing_ok=True)


# --- owners on the real kernel --------------------------------------------------------


def test_iterator_agrees_with_proc_and_ss(stage: Stage) -> None:
    netns, inodes, ns_ino, pids = stage_owners(stage)
    by_bpf = scan_socket_owners(inodes, ns_ino, reader="bpf")
    by_proc = scan_socket_owners(inodes, ns_ino, reader="proc")
    assert (by_bpf.fd_reader, by_bpf.iterator_error) == ("bpf", None)
    assert by_proc.fd_reader == "proc"
    assert by_bpf.owners == by_proc.owners  # comm and start time too
    users = {(pid, fd) for s in ss_sockets(netns) for pid, fd in s.users}
    assert {(pid, fd) for _, pid, fd in owner_pairs(by_bpf)} == users
    assert {pid for _, pid, _ in owner_pairs(by_bpf)} == set(pids)  # the forked child too
    assert (pids[0], 4000) in users


def test_auto_reads_many_fds_with_the_iterator(stage: Stage) -> None:
    netns, inodes, ns_ino, _ = stage_owners(stage, filler=ITERATOR_MIN_FDS)
    auto = scan_socket_owners(inodes, ns_ino)
    assert auto.fd_reader == "bpf", auto.iterator_error
    assert auto.owners == scan_socket_owners(inodes, ns_ino, reader="proc").owners
    quiet = stage.netns()
    few = stage.spawn([Sock("tcp", 4, "0.0.0.0", 7304)], netns=quiet)
    inode = int(socket_inode(f"/proc/{few.pid}/fd/{few.fds[0]}") or 0)
    small = scan_socket_owners([inode], os.stat(f"/proc/{few.pid}/ns/net").st_ino)
    assert small.fd_reader == "proc" and small.iterator_error is None
    assert [o.pid for o in small.owners[inode]] == [few.pid]


def test_iterator_refused_falls_back_to_proc(stage: Stage) -> None:
    """Without CAP_SYS_ADMIN, CAP_BPF and CAP_PERFMON bpf(2) says EPERM: the same owners come
    from /proc, and the reason is kept."""
    _, inodes, ns_ino, _ = stage_owners(stage)
    code = ("import json, sys; from agent.collect.sockets import scan_socket_owners as s; "
            "r = s(json.loads(sys.argv[1]), int(sys.argv[2]), reader='bpf'); "
            "print(json.dumps([r.fd_reader, r.iterator_error, "
            "sorted([i, o.pid, o.fd] for i, h in r.owners.items() for o in h)]))")
    out = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-sys_admin,-bpf,-perfmon", "--",
         sys.executable, "-c", code, json.dumps(inodes), str(ns_ino)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=True)
    reader, error, owners = json.loads(out.stdout)
    assert reader == "proc"
    assert "Operation not permitted (needs CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON)" in error
    expected = scan_socket_owners(inodes, ns_ino, reader="proc")
    assert {tuple(o) for o in owners} == owner_pairs(expected)


def test_exited_process_is_absent_not_an_error(stage: Stage) -> None:
    _, inodes, _, pids = stage_owners(stage)
    gone = subprocess.Popen(["true"])
    gone.wait()
    held = fditer.socket_fds([gone.pid, pids[0]], inodes)
    assert gone.pid not in held and held[pids[0]]


def test_foreign_proc_tree_is_never_iterated(tmp_path: Path) -> None:
    (tmp_path / "self").symlink_to("1")  # a recorded tree, or another pid namespace's /proc
    assert not ProcFS(str(tmp_path)).is_own_pid_namespace()
    assert ProcFS("/proc").is_own_pid_namespace()


def test_every_jump_of_the_program_lands_on_its_exit() -> None:
    """Every jump lands on the program's `r0 = 0; exit`, whatever the offsets."""
    layout = FdIterLayout(attach_btf_id=1, file_inode=32, inode_ino=64, inode_sb=40,
                          sb_magic=96)
    code = bpfprogram.iterator_program(layout, map_fd=7)
    insns = [code[i: i + 8] for i in range(0, len(code), 8)]
    assert insns[-2:] == [struct.pack("<BBhi", 0xB7, 0, 0, 0), struct.pack("<BBhi", 0x95, 0, 0, 0)]
    for at, insn in enumerate(insns):
        opcode, _, offset, _ = struct.unpack("<BBhi", insn)
        if opcode in (0x15, 0x55):
            assert at + 1 + offset == len(insns) - 2


@pytest.mark.parametrize("value, setting", [
    (None, "auto"), ("", "auto"), ("auto", "auto"), ("proc", "proc"), ("bpf", "bpf"),
    ("BPF", None), ("yes", None), ("ebpf", None),
])
def test_fd_reader_setting(monkeypatch: pytest.MonkeyPatch, value: str | None,
                           setting: str | None) -> None:
    """Read once (cached), and an unknown value is an error, never a silent `auto`."""
    if value is None:
        monkeypatch.delenv("OPAUDIT_FD_READER", raising=False)
    else:
        monkeypatch.setenv("OPAUDIT_FD_READER", value)
    fd_reader_setting.cache_clear()
    try:
        if setting is None:
            with pytest.raises(ValueError, match=f"OPAUDIT_FD_READER='{value}' is not one of "
                                                 "auto, proc, bpf"):
                fd_reader_setting()
        else:
            assert fd_reader_setting() == setting
            monkeypatch.setenv("OPAUDIT_FD_READER", "neither")  # read once: no effect now
            assert fd_reader_setting() == setting
    finally:
        fd_reader_setting.cache_clear()
