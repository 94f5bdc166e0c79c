from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.collect.text import ELLIPSIS, sanitize

UNSAFE = {"Cc", "Cs", "Cf", "Zl", "Zp"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("spark-operator", "spark-operator"),
        ("naïve ☃ 日本", "naïve ☃ 日本"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("a\x00b\nc\td\x7f", "a\\x00b\\x0ac\\x09d\\x7f"),
        ("csi\u009b2J", "csi\\x9b2J"),  # a C1 control: some terminals act on it
        ("evil\u202egnp.exe", "evil\\u202egnp.exe"),  # bidi override (Trojan Source)
        ("line\u2028sep", "line\\u2028sep"),
        ("lone\ud800", "lone\\ud800"),
        (b"bad\xff\xfe utf8", "bad\\xff\\xfe utf8"),
        (b"caf\xc3\xa9", "café"),
    ],
)
def test_sanitize_escapes_controls(raw: bytes | str, expected: str) -> None:
    assert sanitize(raw) == expected


def test_sanitize_cuts_with_ellipsis_within_limit() -> None:
    assert sanitize("x" * 300, limit=10) == "x" * 9 + ELLIPSIS
    assert sanitize("x" * 10, limit=10) == "x" * 10


def test_sanitize_never_cuts_an_escape_in_half() -> None:
    assert sanitize("aaaaa\x1b", limit=8) == "aaaaa" + ELLIPSIS
    assert sanitize("aaaa\x1b", limit=8) == "aaaa\\x1b"


def test_sanitize_rejects_nonpositive_limit() -> None:
    with pytest.raises(ValueError):
        sanitize("x", limit=0)


@given(st.one_of(st.binary(max_size=600), st.text(max_size=600)), st.integers(1, 400))
def test_sanitize_output_is_safe_and_bounded(raw: bytes | str, limit: int) -> None:
    out = sanitize(raw, limit)
    assert len(out) <= limit
    assert not any(unicodedata.category(c) in UNSAFE for c in out)


@given(st.text(st.characters(exclude_categories=("Cc", "Cs", "Cf", "Zl", "Zp")), max_size=50))
def test_sanitize_keeps_safe_text_unchanged(text: str) -> None:
    assert sanitize(text, 50) == text
