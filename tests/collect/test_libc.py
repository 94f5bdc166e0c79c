"""The C library is loaded in one place (`agent.collect.libc`), and each caller's function
keeps its own argument types: fditer's bpf syscall is typed, rootfs's openat2 syscall is
not, and neither changes the other's."""

from __future__ import annotations

import ast
import ctypes
import errno
import os
from pathlib import Path

import pytest

from agent.collect import fditer, libc, rootfs

AGENT = Path(__file__).resolve().parents[2] / "agent"


def test_the_c_library_is_loaded_with_errno_in_one_place() -> None:
    loads = []
    for path in sorted(AGENT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("CDLL")
                    and any(k.arg == "use_errno" for k in node.keywords)):
                loads.append(str(path.relative_to(AGENT)))
    assert loads == ["collect/libc.py"]


def test_each_caller_keeps_its_own_argument_types() -> None:
    assert fditer._syscall is not rootfs._syscall
    assert len(fditer._syscall.argtypes) == 4 and rootfs._syscall.argtypes is None
    other = libc.libc_function("syscall", (ctypes.c_long,))  # a third caller types its own
    assert other is not fditer._syscall and other is not rootfs._syscall
    assert len(fditer._syscall.argtypes) == 4 and rootfs._syscall.argtypes is None
    assert libc.libc_function("getpid", (), ctypes.c_int)() == os.getpid()


def test_errno_is_read_from_the_shared_library() -> None:
    """openat2 through the untyped syscall: a missing path fails with ENOENT, as os.open."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as caught:
            rootfs.openat2(root, f"opaudit-no-such-{os.getpid()}", os.O_RDONLY)
        assert caught.value.errno == errno.ENOENT
    finally:
        os.close(root)
