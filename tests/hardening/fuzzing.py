"""Shared Hypothesis strategies and checks for the parser fuzz tests.

Three sources per parser, so the fuzz reaches deep: well-formed input built from known
values, real or well-formed samples mutated (`mutated`, `mutated_bytes`), random text.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import strategies as st

from agent.collect.errors import ParseError

T = TypeVar("T")
UNSAFE = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})
MAX_ID = (1 << 32) - 1

# Characters and fragments that break naive parsers.
NASTY = ["\n", "\r", "\t", " ", "  ", ":", "\\", "\\040", "\\134", "\\1", "\\777", "-", " - ",
         "(", ")", ") ", "\x00", "\x1b[31m", "\x0b", "\x1c", "\x85", "\u2028", "\u202e",
         "\udcff", "\udc80", "0", "-1", "4294967296", "99999999999999999999999", "0x",
         "ffffffffffffffff", "fffffffffffffffff", "=", ",", "/", "..", "é", "\ufeff"]
NASTY_BYTES = [b"\0", b"\0\0", b"=", b"\xff", b"\xc3", b"\xe2\x80\xae", b"\x1b]0;x\x07",
               b"\n", b"\r", b"\\", b"\x7f", b"\xc2\x9b", b"\xed\xa0\x80"]


# --- generic strategies ---------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """`base` with a few random edits: the shape stays close enough to parse deep."""
    text = draw(base)
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "number"]))
        if op == "insert":
            piece = draw(st.one_of(st.sampled_from(NASTY), st.text(max_size=4)))
            text = text[:where] + piece + text[where:]
        elif op == "delete":
            text = text[:where] + text[where + draw(st.integers(1, 12)):]
        elif op == "replace" and where < len(text):
            text = text[:where] + draw(st.sampled_from(NASTY)) + text[where + 1:]
        elif op == "duplicate":
            end = where + draw(st.integers(1, 80))
            text = text[:end] + text[where:end] + text[end:]
        else:
            number = draw(st.sampled_from(["-1", "4294967296", "18446744073709551616", "0"*30,
                                           "1e9", str(draw(st.integers(0, 1 << 70)))]))
            text = text[:where] + number + text[where:]
    return text


@st.composite
def mutated_bytes(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = draw(base)
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "flip", "duplicate"]))
        if op == "insert":
            piece = draw(st.one_of(st.sampled_from(NASTY_BYTES), st.binary(max_size=8)))
            data = data[:where] + piece + data[where:]
        elif op == "delete":
            data = data[:where] + data[where + draw(st.integers(1, 16)):]
        elif op == "flip" and where < len(data):
            data = data[:where] + bytes([draw(st.integers(0, 255))]) + data[where + 1:]
        else:
            end = where + draw(st.integers(1, 64))
            data = data[:end] + data[where:end] + data[end:]
    return data


def any_text() -> st.SearchStrategy[str]:
    """Random text, with lone surrogates (what surrogateescape makes of bad UTF-8)."""
    return st.text(st.one_of(st.characters(), st.sampled_from(["\udc80", "\udcff", "\n"])),
                   max_size=400)


def no_expectation(text: st.SearchStrategy[T]) -> st.SearchStrategy[tuple[T, Any]]:
    return text.map(lambda t: (t, None))


def outcome(parse: Callable[[], T]) -> T | None:
    """The parse result, or None for a ParseError; anything else fails the test."""
    try:
        return parse()
    except ParseError:
        return None


def assert_printable(text: str) -> None:
    bad = [c for c in text if unicodedata.category(c) in UNSAFE]
    assert not bad, f"unsanitised {bad!r} in {text!r}"


def ids() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, MAX_ID), st.sampled_from([0, 65534, MAX_ID, 185]))
