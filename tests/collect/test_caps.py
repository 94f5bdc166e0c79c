from __future__ import annotations

import random
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.collect.caps import decode_capsh, parse_cap_mask, strtoull_hex
from agent.collect.errors import ParseError
from agent.collect.procfs import ProcFS

CAPSH = shutil.which("capsh")
needs_capsh = pytest.mark.skipif(CAPSH is None, reason="capsh (libcap) is not installed")


def capsh_decode(text: str) -> tuple[str, int]:
    assert CAPSH is not None
    done = subprocess.run([CAPSH, f"--decode={text}"], capture_output=True, timeout=10)
    return done.stdout.decode(), done.returncode


def _masks() -> list[int]:
    last_cap = ProcFS().read_cap_last_cap()
    rng = random.Random(20261123)
    return [0, (1 << 64) - 1, (1 << (last_cap + 1)) - 1, *(1 << bit for bit in range(64)),
            *(rng.getrandbits(64) for _ in range(200))]


@needs_capsh
def test_decode_matches_capsh_for_masks() -> None:
    for mask in _masks():
        for text in (f"{mask:x}", f"0x{mask:016x}", f"0X{mask:X}"):
            expected, code = capsh_decode(text)
            assert code == 0
            assert decode_capsh(text) == expected, text


ODD_INPUTS = ["", "0", "0x", "0x0x1", "0xg", "xyz", "g12", "12g", " 1", "1 ", "\t\n 5", "+5",
              "-1", "-0x1", "-0", "+-1", "- 1", "0x-1", "ｆ", "10000000000000000",
              "-10000000000000000", "0x1ffffffffffffffff", "0" * 30 + "400", "8000000000000000"]


@needs_capsh
@pytest.mark.parametrize("text", ODD_INPUTS)
def test_decode_matches_capsh_for_odd_input(text: str) -> None:
    expected, code = capsh_decode(text)
    assert code == 0  # capsh never rejects --decode input; neither do we
    assert decode_capsh(text) == expected


@needs_capsh
@given(st.text(alphabet="0123456789abcdefABCDEFxXg+- \t", max_size=24))
def test_decode_matches_capsh_for_generated_text(text: str) -> None:
    assert decode_capsh(text) == capsh_decode(text)[0]


def test_decode_names_unknown_bits_as_numbers() -> None:
    assert decode_capsh("0x20000000400") == "0x0000020000000400=cap_net_bind_service,41\n"


def test_strtoull_overflow_saturates() -> None:
    assert strtoull_hex("1" + "0" * 16) == (1 << 64) - 1


def test_parse_cap_mask() -> None:
    assert parse_cap_mask("0000000000000400") == 1 << 10
    assert parse_cap_mask("000001ffffffffff\n") == (1 << 41) - 1
    for bad in ("", "0x400", "zz", "1" * 17, "-1", "４"):
        with pytest.raises(ParseError):
            parse_cap_mask(bad)


@given(st.text(max_size=30))
def test_parse_cap_mask_parses_or_raises(text: str) -> None:
    try:
        mask = parse_cap_mask(text)
    except ParseError:
        return
    assert 0 <= mask < 1 << 64
    assert mask == int(text.strip(), 16)
