"""The few facts of the kernel's own BTF (/sys/kernel/btf/vmlinux) that the fd iterator needs.

A BPF program reads `file->f_inode->i_ino` at offsets that differ between kernel builds, and
is attached by the BTF id of `bpf_iter_task_file`; both come from this file (what libbpf
does with CO-RE). The file is ~5 MB and ~130k types: it is read in chunks and walked once,
keeping only the records asked for, so memory stays at one chunk.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection
from dataclasses import dataclass

from agent.collect.errors import CollectError, Missing, ParseError

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F
CHUNK = 1 << 20
_HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type/str off+len

# include/uapi/linux/btf.h: kinds, and the u32 words that follow each record's 3-word head:
# a fixed part, and a part per vlen entry.
KIND_INT, KIND_PTR, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FUNC = 1, 2, 4, 5, 6, 12
KIND_FLOAT, KIND_ENUM64 = 16, 19
SIZED_KINDS = (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FLOAT, KIND_ENUM64)
ALIAS_KINDS = (8, 9, 10, 11, 18)  # typedef, volatile, const, restrict, type_tag: see through
POINTER_SIZE = 8  # x86_64 and aarch64, the only machines fditer runs on
# struct inode.i_ino and super_block.s_magic are `unsigned long` (64 bits here): the program
# loads 8 bytes from each, so a kernel that made them narrower must not get that program.
LOADED_WIDTH = 8
MAX_LOAD_OFFSET = 0x7FFF  # a BPF instruction's offset is a signed 16-bit field
_FIXED_WORDS = (0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0)
_WORDS_PER_ENTRY = (0, 0, 0, 0, 3, 3, 2, 0, 0, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 3)


@dataclass(frozen=True, slots=True)
class FdIterLayout:
    """Byte offsets of the fields the iterator program loads, and its attach point."""

    attach_btf_id: int  # FUNC bpf_iter_task_file
    file_inode: int  # struct file.f_inode
    inode_ino: int  # struct inode.i_ino
    inode_sb: int  # struct inode.i_sb
    sb_magic: int  # struct super_block.s_magic


# (record kind, record name) -> member names whose byte offsets are wanted
_WANTED: dict[tuple[int, bytes], tuple[bytes, ...]] = {
    (KIND_FUNC, b"bpf_iter_task_file"): (),
    (KIND_STRUCT, b"file"): (b"f_inode",),
    (KIND_STRUCT, b"inode"): (b"i_ino", b"i_sb"),
    (KIND_STRUCT, b"super_block"): (b"s_magic",),
}


def read_fd_iter_layout(path: str = VMLINUX_BTF) -> FdIterLayout:
    """The layout from the kernel's BTF; Missing without BTF, ParseError when malformed or
    when a wanted type or member is not there (a kernel too old for task_file iterators)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise Missing(f"{path} does not exist (kernel without CONFIG_DEBUG_INFO_BTF)") from exc
    except OSError as exc:
        raise CollectError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return _read_layout(fd, path)
    except OSError as exc:
        raise CollectError(f"cannot read {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def _read_layout(fd: int, path: str) -> FdIterLayout:
    head = os.pread(fd, _HEADER.size, 0)
    if len(head) < _HEADER.size:
        raise ParseError(path, f"{len(head)} bytes, shorter than the BTF header")
    magic, _, _, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack(head)
    if magic != BTF_MAGIC:
        raise ParseError(path, f"magic {magic:#x}, not {BTF_MAGIC:#x} (or not little-endian)")
    end = hdr_len + max(type_off + type_len, str_off + str_len)
    size = os.fstat(fd).st_size or end  # sysfs reports 0 for some binary attributes
    if end > size:
        raise ParseError(path, f"its sections end at byte {end}, past its {size} bytes")
    strings = _string_offsets(fd, hdr_len + str_off, str_len,
                              {n for k, ms in _WANTED.items() for n in (k[1], *ms)})
    names = {strings[name]: (kind, name) for kind, name in _WANTED if name in strings}
    records = _find_records(fd, hdr_len + type_off, type_len, names, path)

    def member(kind_name: tuple[int, bytes], field: bytes) -> tuple[int, int]:
        if kind_name not in records:
            raise ParseError(path, f"no {kind_name[1].decode()} in the kernel's BTF")
        return _member(records[kind_name][1], strings.get(field), kind_name, field, path)

    if (KIND_FUNC, b"bpf_iter_task_file") not in records:
        raise ParseError(path, "no bpf_iter_task_file (kernel older than 5.8)")
    ino, ino_type = member((KIND_STRUCT, b"inode"), b"i_ino")
    magic, magic_type = member((KIND_STRUCT, b"super_block"), b"s_magic")
    widths = _widths(fd, hdr_len + type_off, type_len, {"i_ino": ino_type,
                                                         "s_magic": magic_type}, path)
    for field, width in widths.items():
        if width != LOADED_WIDTH:
            raise ParseError(path, f"{field} is {width} bytes wide, not the {LOADED_WIDTH} "
                                   "the iterator program loads")
    layout = FdIterLayout(
        attach_btf_id=records[(KIND_FUNC, b"bpf_iter_task_file")][0],
        file_inode=member((KIND_STRUCT, b"file"), b"f_inode")[0],
        inode_ino=ino,
        inode_sb=member((KIND_STRUCT, b"inode"), b"i_sb")[0],
        sb_magic=magic,
    )
    offsets = {"f_inode": layout.file_inode, "i_ino": ino, "i_sb": layout.inode_sb,
               "s_magic": magic}
    for field, offset in offsets.items():
        if offset > MAX_LOAD_OFFSET:
            raise ParseError(path, f"{field} is at byte {offset}, past what one BPF load "
                                   f"reaches ({MAX_LOAD_OFFSET})")
    return layout


def _member(words: tuple[int, ...], name_off: int | None, kind_name: tuple[int, bytes],
            field: bytes, path: str) -> tuple[int, int]:
    """(byte offset, type id) of a struct member."""
    info = words[1]
    bitfields = info >> 31  # kind_flag: the offset word holds a bitfield size in its top byte
    for entry in range(info & 0xFFFF):
        m_name, m_type, m_offset = words[3 + 3 * entry: 6 + 3 * entry]
        if m_name == name_off:
            bits = m_offset & 0xFFFFFF if bitfields else m_offset
            if bits % 8 or (bitfields and m_offset >> 24):
                raise ParseError(path, f"{field.decode()} is a bitfield")
            return bits // 8, m_type
    raise ParseError(path, f"struct {kind_name[1].decode()} has no {field.decode()}")


def _widths(fd: int, start: int, length: int, types: dict[str, int],
            path: str) -> dict[str, int]:
    """Byte size of each field's type, through typedefs and qualifiers (`unsigned long`,
    `u64`, `const ino_t`): one walk per level of aliasing, each stopping at the ids asked
    for (the integer types come first in vmlinux BTF, so these walks are short)."""
    sizes: dict[str, int] = {}
    pending = dict(types)
    for _ in range(8):  # an alias chain this long is not a kernel's
        found = _find_records(fd, start, length, {}, path, set(pending.values()))
        for field, type_id in list(pending.items()):
            if type_id not in found:
                raise ParseError(path, f"{field} has type {type_id}, not in the type section")
            words = found[type_id][1]
            kind = (words[1] >> 24) & 0x1F
            if kind in ALIAS_KINDS:
                pending[field] = words[2]
                continue
            if kind in SIZED_KINDS or kind == KIND_PTR:
                sizes[field] = words[2] if kind in SIZED_KINDS else POINTER_SIZE
            else:
                raise ParseError(path, f"{field} has type kind {kind}, which has no size")
            del pending[field]
        if not pending:
            return sizes
    raise ParseError(path, f"the types of {', '.join(pending)} alias too deep")


def _string_offsets(fd: int, start: int, length: int, names: set[bytes]) -> dict[bytes, int]:
    """Offset in the string section of each name (NUL-terminated, whole strings only)."""
    found: dict[bytes, int] = {}
    overlap = max(len(n) for n in names) + 2
    position = 0
    while position < length and len(found) < len(names):
        chunk = os.pread(fd, min(CHUNK, length - position), start + position)
        if not chunk:
            break
        for name in names - found.keys():
            # offset 0 is the empty string, so a match at the chunk's start has a NUL before it
            at = chunk.find(b"\0" + name + b"\0")
            if at >= 0:
                found[name] = position + at + 1
        if len(chunk) <= overlap:
            break
        position += len(chunk) - overlap
    return found


def _find_records(fd: int, start: int, length: int, names: dict[int, tuple[int, bytes]],
                  path: str, ids: Collection[int] = (),
                  ) -> dict[tuple[int, bytes] | int, tuple[int, tuple[int, ...]]]:
    """(type id, u32 words) of the first record of each wanted (kind, name), and of each
    type id of `ids`, walking the type section a chunk at a time; the walk stops once all
    are found."""
    records: dict[tuple[int, bytes] | int, tuple[int, tuple[int, ...]]] = {}
    type_id, position = 1, 0
    while position < length and len(records) < len(names) + len(ids):
        raw = os.pread(fd, min(CHUNK, length - position), start + position)
        raw = raw[: len(raw) - len(raw) % 4]
        if not raw:
            raise ParseError(path, f"type section ends at byte {position} of {length}")
        words = memoryview(raw).cast("I")
        count, at = len(words), 0
        while at + 3 <= count:
            info = words[at + 1]
            kind = (info >> 24) & 0x1F
            if kind >= len(_FIXED_WORDS):
                raise ParseError(path, f"type {type_id} has unknown kind {kind}")
            size = 3 + _FIXED_WORDS[kind] + _WORDS_PER_ENTRY[kind] * (info & 0xFFFF)
            if at + size > count:
                break  # the record continues in the next chunk
            wanted = names.get(words[at])
            if wanted is not None and wanted[0] == kind and wanted not in records:
                records[wanted] = (type_id, tuple(words[at: at + size]))
            if type_id in ids:
                records[type_id] = (type_id, tuple(words[at: at + size]))
            type_id += 1
            at += size
        if at == 0 or (at < count and position + 4 * count >= length):
            raise ParseError(path, f"type {type_id} runs past its chunk or the type section")
        position += 4 * at
    return records
