"""Modified UTF-7 (RFC 3501 5.1.3) vectors and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.imap import mutf7

VECTORS = [
    ("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("A&B", b"A&-B"),
    ("&", b"&-"),
    ("Entw\u00fcrfe", b"Entw&APw-rfe"),
    ("\u00e4\u00f6\u00fc", b"&AOQA9gD8-"),
    ("plain ASCII", b"plain ASCII"),
    ("\U0001f600", b"&2D3eAA-"),
    ("", b""),
]


@pytest.mark.parametrize("text,encoded", VECTORS)
def test_vectors(text, encoded):
    assert mutf7.encode(text) == encoded
    assert mutf7.decode(encoded) == text
    assert mutf7.decode(encoded.decode()) == text


@pytest.mark.parametrize(
    "bad",
    [
        b"&U,BTFw",  # unterminated
        b"&AGE-",  # encodes printable "a"
        b"&Jjo!-",  # bad base64 character
        b"&U,BTFw-&ZeVnLIqe-",  # adjacent encoded sections
        b"&AOQA-",  # odd number of octets
        b"&AOR-",  # non-zero padding bits
        b"\xe4",  # 8-bit
        b"a\x01b",  # control character
        b"&2D0-",  # lone surrogate
    ],
)
def test_invalid(bad):
    with pytest.raises(ValueError):
        mutf7.decode(bad)


@given(st.text())
def test_round_trip(text):
    try:
        text.encode("utf-16-be")
    except UnicodeEncodeError:
        return  # lone surrogates are not names
    encoded = mutf7.encode(text)
    assert encoded.isascii()
    assert mutf7.decode(encoded) == text


@given(st.binary())
def test_decode_never_crashes(data):
    try:
        mutf7.decode(data)
    except ValueError:
        pass
