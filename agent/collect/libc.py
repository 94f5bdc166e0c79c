"""The C library, loaded once, for the few system calls the os module does not wrap
(setns, openat2, bpf, the prctl options python-prctl cannot name)."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

# use_errno: ctypes.get_errno() then reads the errno of the last call made through it.
LIBC = ctypes.CDLL(None, use_errno=True)


def libc_function(name: str, argtypes: Sequence[Any] | None = None,
                  restype: Any = ctypes.c_int) -> Any:
    """A function of the C library with its own argument types: `LIBC[name]` is a new
    function object each time, so setting its types never changes another caller's."""
    function = LIBC[name]
    if argtypes is not None:
        function.argtypes = tuple(argtypes)
    function.restype = restype
    return function
