"""Capability masks: parse /proc's hex masks, and decode a mask exactly as `capsh` does."""

from __future__ import annotations

import re

from agent.collect.errors import ParseError
from agent.model import CAPABILITY_NAMES

_ULLONG_MAX = (1 << 64) - 1
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
# C isspace() in the "C" locale: what strtoull() skips before a number.
_C_SPACE = frozenset(" \t\n\v\f\r")
# /proc/PID/status prints every Cap* set as exactly 16 hex digits (fs/proc/array.c).
_PROC_CAP_MASK = re.compile(r"[0-9a-fA-F]{1,16}")


def parse_cap_mask(text: str) -> int:
    """The integer of a CapEff/CapPrm/... value from /proc/PID/status, e.g. `0000000000000400`."""
    value = text.strip()
    if not _PROC_CAP_MASK.fullmatch(value):
        raise ParseError("capability mask", f"not a 64-bit hex mask: {value[:40]!r}")
    return int(value, 16)


def strtoull_hex(text: str) -> int:
    """What C `strtoull(text, NULL, 16)` returns, which is how capsh reads `--decode=`.

    Leading C whitespace and one sign are skipped, then an optional `0x`/`0X` (only when a
    hex digit follows), then hex digits up to the first other character. No digits gives
    0; overflow gives ULLONG_MAX whatever the sign; a minus sign negates modulo 2**64.
    """
    pos = 0
    while pos < len(text) and text[pos] in _C_SPACE:
        pos += 1
    negative = False
    if pos < len(text) and text[pos] in "+-":
        negative = text[pos] == "-"
        pos += 1
    if text[pos : pos + 2] in ("0x", "0X") and text[pos + 2 : pos + 3] in _HEX_DIGITS:
        pos += 2
    start = pos
    while pos < len(text) and text[pos] in _HEX_DIGITS:
        pos += 1
    digits = text[start:pos].lstrip("0")
    if not digits:
        return 0
    if len(digits) > 16:
        return _ULLONG_MAX
    value = int(digits, 16)
    return (-value) & _ULLONG_MAX if negative else value


def capsh_name(bit: int) -> str:
    """`cap_net_bind_service` for bit 10; the bare number for a bit libcap has no name for."""
    return f"cap_{CAPABILITY_NAMES[bit].lower()}" if bit < len(CAPABILITY_NAMES) else str(bit)


def decode_capsh(text: str) -> str:
    """Byte for byte what `capsh --decode=TEXT` prints, trailing newline included.

    capsh never rejects its argument (exit status 0): text that is not hex decodes as 0.
    """
    mask = strtoull_hex(text)
    names = ",".join(capsh_name(bit) for bit in range(64) if mask >> bit & 1)
    return f"0x{mask:016x}={names}\n"
