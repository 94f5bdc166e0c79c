"""Seccomp shims for staged processes: DENY_BPF refuses bpf(2) with EPERM, as a runtime's
profile or a node's policy would, whatever the capabilities; ALLOW_ALL stands for a runtime's
RuntimeDefault (mode 2, filter) without refusing anything."""

from __future__ import annotations

import os

SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine)

# Both shims: `[STAGE_PYTHON, "-c", SHIM, program, *args]` installs a filter, then execs the
# program with its args (the filter is inherited across exec).
_INSTALL = r"""
import ctypes, os, sys
class Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]
%s
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(22, 2, ctypes.byref(Prog(len(rules), rules)), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
    raise OSError(ctypes.get_errno(), "seccomp")
os.execv(sys.argv[1], sys.argv[1:])
"""

DENY_BPF = _INSTALL % r"""
SYS_BPF = {"x86_64": 321, "aarch64": 280}[os.uname().machine]
rules = (Filter * 4)(
    Filter(0x20, 0, 0, 0),                # BPF_LD|BPF_W|BPF_ABS: seccomp_data.nr
    Filter(0x15, 0, 1, SYS_BPF),          # BPF_JMP|BPF_JEQ|BPF_K: bpf(2)?
    Filter(0x06, 0, 0, 0x00050000 | 1),   # SECCOMP_RET_ERRNO | EPERM
    Filter(0x06, 0, 0, 0x7FFF0000))       # SECCOMP_RET_ALLOW
"""

# A filter that allows everything: seccomp mode 2 as a runtime's RuntimeDefault leaves it.
ALLOW_ALL = _INSTALL % r"""
rules = (Filter * 1)(Filter(0x06, 0, 0, 0x7FFF0000))  # SECCOMP_RET_ALLOW
"""
