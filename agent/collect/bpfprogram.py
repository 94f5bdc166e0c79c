"""The fd iterator's BPF program, assembled by hand: a few dozen instructions are not worth
a compiler in the image, and the offsets it reads come from the kernel's own BTF (`btf`).
`fditer` loads and runs it."""

from __future__ import annotations

import struct

from agent.collect.btf import FdIterLayout

# include/uapi/linux/bpf.h: helper numbers; include/uapi/linux/magic.h
HELPER_MAP_LOOKUP_ELEM, HELPER_SEQ_WRITE = 1, 127
SOCKFS_MAGIC = 0x534F434B
# struct bpf_iter__task_file (kernel/bpf/task_iter.c): the program's ctx, 8 bytes a field
CTX_META, CTX_FD, CTX_FILE = 0, 16, 24  # (8: the task)
META_SEQ = 0  # struct bpf_iter_meta: the seq_file comes first
RECORD = struct.Struct("<QQ")  # fd, inode: what the program writes per match


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


# opcodes: 64-bit loads/stores, moves, add, conditional jumps, calls
LDX_DW, LDX_W, STX_DW = 0x79, 0x61, 0x7B
MOV_X, MOV_K, ADD_K, LD_IMM64 = 0xBF, 0xB7, 0x07, 0x18
JEQ_K, JNE_K, CALL, EXIT = 0x15, 0x55, 0x85, 0x95
R0, R1, R2, R3, R4, R6, R7, FP = 0, 1, 2, 3, 4, 6, 7, 10
PSEUDO_MAP_FD = 1


def iterator_program(layout: FdIterLayout, map_fd: int) -> bytes:
    """The program, for ctx = struct bpf_iter__task_file {meta, task, fd, file}:

        if file && file->f_inode->i_sb->s_magic == SOCKFS_MAGIC
           && wanted[file->f_inode->i_ino]:
            seq_write(meta->seq, {fd, i_ino})
    """
    body: list[bytes | tuple[int, int, int]] = [  # (jump opcode, register, imm): to the exit
        _insn(MOV_X, R6, R1),
        _insn(LDX_DW, R2, R6, CTX_FILE),
        (JEQ_K, R2, 0),
        _insn(LDX_DW, R3, R2, layout.file_inode),
        (JEQ_K, R3, 0),
        _insn(LDX_DW, R4, R3, layout.inode_sb),
        (JEQ_K, R4, 0),
        _insn(LDX_DW, R4, R4, layout.sb_magic),
        (JNE_K, R4, SOCKFS_MAGIC),  # inode numbers are per filesystem: sockets only
        _insn(LDX_DW, R4, R3, layout.inode_ino),
        _insn(STX_DW, FP, R4, -8),
        _insn(LD_IMM64, R1, PSEUDO_MAP_FD, 0, map_fd) + _insn(0),
        _insn(MOV_X, R2, FP),
        _insn(ADD_K, R2, 0, 0, -8),
        _insn(CALL, imm=HELPER_MAP_LOOKUP_ELEM),
        (JEQ_K, R0, 0),
        _insn(LDX_W, R7, R6, CTX_FD),  # u32, zero-extended: the record has no padding
        _insn(STX_DW, FP, R7, -16),
        _insn(LDX_DW, R1, R6, CTX_META),
        _insn(LDX_DW, R1, R1, META_SEQ),
        _insn(MOV_X, R2, FP),
        _insn(ADD_K, R2, 0, 0, -16),
        _insn(MOV_K, R3, 0, 0, RECORD.size),
        _insn(CALL, imm=HELPER_SEQ_WRITE),
    ]
    total = sum(len(p) // 8 if isinstance(p, bytes) else 1 for p in body)
    code, at = bytearray(), 0
    for part in body:
        if isinstance(part, bytes):
            code += part
            at += len(part) // 8
        else:
            opcode, register, imm = part
            code += _insn(opcode, register, 0, total - at - 1, imm)  # to `r0 = 0; exit`
            at += 1
    return bytes(code + _insn(MOV_K, R0) + _insn(EXIT))
