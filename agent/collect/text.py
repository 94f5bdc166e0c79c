"""Untrusted process text (comm, cmdline, environ, passwd fields) made safe to print.

A container chooses its process names, arguments and environment: an escape sequence in
a comm must not reach a terminal, a JSON consumer or a Kubernetes Event as a control code.
"""

from __future__ import annotations

import unicodedata

ELLIPSIS = "…"

# Cc = C0, DEL and C1 controls; Cs = lone surrogates (undecodable bytes under
# surrogateescape); Cf/Zl/Zp = invisible format characters (bidi overrides, U+2028/9)
# that reorder or break a line on a terminal ("Trojan Source", CVE-2021-42574).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})


def _escape_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape could not decode: show the byte
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _safe_piece(char: str) -> str:
    if char.isprintable() or char == " ":
        return char
    if unicodedata.category(char) in _UNSAFE_CATEGORIES:
        return _escape_char(char)
    return char  # e.g. unassigned or private-use code points: not controls, print as is


def sanitize(raw: bytes | str, limit: int = 256) -> str:
    """`raw` with every control character escaped (`\\x1b`), at most `limit` characters.

    Bytes are decoded as UTF-8 with surrogateescape, so an undecodable byte 0xff shows as
    `\\xff`. An escape is never cut in half; a cut string ends in `…` (counted in `limit`).
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    text = raw.decode("utf-8", errors="surrogateescape") if isinstance(raw, bytes) else raw
    pieces: list[str] = []
    length = 0
    # Every piece is at least one character, so limit + 1 input characters decide the cut.
    for char in text[: limit + 1]:
        piece = _safe_piece(char)
        pieces.append(piece)
        length += len(piece)
        if length > limit:
            break
    if length <= limit and len(text) <= limit:
        return "".join(pieces)
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) > limit - len(ELLIPSIS):
            break
        kept.append(piece)
        used += len(piece)
    return "".join(kept) + ELLIPSIS
