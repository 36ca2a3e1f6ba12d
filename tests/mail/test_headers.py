"""Raw header helpers: HEADER.FIELDS, iteration, RFC 2047, SEARCH HEADER."""

from __future__ import annotations

import base64
import email.header
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.mail.headers import (
    decode_header_value,
    decode_header_value_ex,
    header_fields,
    iter_header_lines,
    iter_headers,
    search_header,
    unfold,
)

HEADER = (
    b"Received: from a by b;\r\n"
    b"\tFri, 4 Dec 2026 10:00:00 +0000\r\n"
    b"From: Alice <alice@example.org>\r\n"
    b"Subject: a folded\r\n"
    b"  subject line\r\n"
    b"To: bob@example.net\r\n"
    b"X-Empty:\r\n"
    b"subject : second subject\r\n"
    b"\r\n"
    b"Subject: this is the body, not a header\r\n"
)


def test_header_fields_keeps_folding_and_order() -> None:
    assert header_fields(HEADER, ["SUBJECT", "to"]) == (
        b"Subject: a folded\r\n"
        b"  subject line\r\n"
        b"To: bob@example.net\r\n"
        b"subject : second subject\r\n"
        b"\r\n"
    )


def test_header_fields_not() -> None:
    assert header_fields(HEADER, ["subject", "received", "x-empty"], exclude=True) == (
        b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n\r\n"
    )


def test_header_fields_none_matching_is_just_the_blank_line() -> None:
    assert header_fields(HEADER, ["x-nothing"]) == b"\r\n"
    assert header_fields(b"", ["subject"]) == b"\r\n"


def test_header_fields_bare_lf_becomes_crlf() -> None:
    raw = b"Subject: x\n y\nFrom: a@b\n\nbody\n"
    assert header_fields(raw, [b"subject"]) == b"Subject: x\r\n y\r\n\r\n"


def test_header_fields_with_orphan_and_colonless_lines() -> None:
    raw = b" orphan continuation\r\nNot a header line\r\nSubject: s\r\n\r\n"
    assert header_fields(raw, ["subject"]) == b"Subject: s\r\n\r\n"
    assert header_fields(raw, ["subject"], exclude=True) == (
        b" orphan continuation\r\nNot a header line\r\n\r\n"
    )


def test_iter_headers() -> None:
    items = list(iter_headers(HEADER))
    assert [n for n, _ in items] == [
        "Received",
        "From",
        "Subject",
        "To",
        "X-Empty",
        "subject",
    ]
    assert items[0][1] == b"from a by b;\r\n\tFri, 4 Dec 2026 10:00:00 +0000"
    assert items[2][1] == b"a folded\r\n  subject line"
    assert items[4][1] == b""
    assert unfold(items[2][1]) == "a folded  subject line"


# RFC 2047 section 8, the examples table
@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("(=?ISO-8859-1?Q?a?=)", "(a)"),
        ("(=?ISO-8859-1?Q?a?= b)", "(a b)"),
        ("(=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=)", "(ab)"),
        ("(=?ISO-8859-1?Q?a?=  =?ISO-8859-1?Q?b?=)", "(ab)"),
        ("(=?ISO-8859-1?Q?a?=\r\n    =?ISO-8859-1?Q?b?=)", "(ab)"),
        ("(=?ISO-8859-1?Q?a_b?=)", "(a b)"),
        ("(=?ISO-8859-1?Q?a?= =?ISO-8859-2?Q?_b?=)", "(a b)"),
        ("=?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>", "Keith Moore <moore@cs.utk.edu>"),
        (
            "=?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>",
            "André Pirard <PIRARD@vm1.ulg.ac.be>",
        ),
        (
            "=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=\r\n"
            " =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=",
            "If you can read this you understand the example.",
        ),
        # RFC 2231 section 5: language in the charset
        ("=?US-ASCII*EN?Q?Keith_Moore?=", "Keith Moore"),
        # common real-world sloppiness
        ("prefix=?utf-8?q?J=C3=B6rg?=suffix", "prefixJörgsuffix"),
        ("=?utf-8?b?SsO2cmc?=", "Jörg"),  # missing padding
        ("=?UTF-8?Q?caf=C3=A9?=", "café"),
        ("no encoded words here", "no encoded words here"),
        ("=?utf-8?q?unterminated", "=?utf-8?q?unterminated"),
    ],
)
def test_rfc2047(encoded: str, decoded: str) -> None:
    assert decode_header_value(encoded) == decoded


def test_rfc2047_agrees_with_stdlib_on_well_formed_words() -> None:
    value = "=?utf-8?b?8J+YgCDwn5iB?= =?iso-8859-15?q?=A4uro?= plain"
    parts = email.header.decode_header(value)
    expected = "".join(
        (p.decode(cs) if cs else p.decode()) if isinstance(p, bytes) else p for p, cs in parts
    )
    assert decode_header_value(value) == expected == "😀 😁€uro plain"


def test_rfc2047_multibyte_split_across_words() -> None:
    # "日本" in ISO-2022-JP needs its escape sequences: split across two words
    data = "日本語".encode("iso-2022-jp")
    a, b = data[:5], data[5:]
    value = f"=?iso-2022-jp?b?{base64.b64encode(a).decode()}?= =?iso-2022-jp?b?{base64.b64encode(b).decode()}?="
    assert decode_header_value(value) == "日本語"


@pytest.mark.parametrize(
    "raw",
    [
        "=?x-no-such-charset?q?abc=FF?=",
        "=?utf-8?b?!!!!?=",
        "=?utf-8?q?=ZZ=?=",
        "=?rot13?q?abc?=",
        "=?base64?q?abc?=",
        "=?unicode-escape?q?=5Cx41?=",
        "=??q?abc?=",
        "=?utf-8?x?abc?=",
        b"8-bit \xff\xfe raw bytes =?utf-8?q?ok?=",
    ],
)
def test_rfc2047_garbage_never_raises(raw: str | bytes) -> None:
    text, defects = decode_header_value_ex(raw)
    assert isinstance(text, str)


def test_unknown_charset_reported_and_best_effort() -> None:
    text, defects = decode_header_value_ex("=?x-foo?q?caf=E9?=")
    assert text == "café"
    assert defects == ["unknown charset 'x-foo'"]
    # valid UTF-8 under an unknown name decodes as UTF-8
    assert decode_header_value("=?x-foo?q?caf=C3=A9?=") == "café"
    # codecs that are not text encodings are refused, not used
    assert decode_header_value("=?rot13?q?nop?=") == "nop"
    assert decode_header_value("=?unicode-escape?q?=5Cx41?=") == "\\x41"


def test_search_header() -> None:
    assert search_header(HEADER, "Subject", "SUBJECT LINE")
    assert search_header(HEADER, "subject", "second")
    assert not search_header(HEADER, "subject", "body")
    assert search_header(HEADER, "x-empty", "")
    assert not search_header(HEADER, "x-missing", "")
    encoded = b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\n"
    assert search_header(encoded, "SUBJECT", "grüße")
    assert search_header(encoded, "SUBJECT", "GRÜSSE")  # Unicode case folding: ß = ss
    assert not search_header(encoded, "SUBJECT", "grusse")


def reference_header_fields(header_bytes: bytes, names: list[str], exclude: bool) -> bytes:
    """Line-by-line model of HEADER.FIELDS, to check the regex version against."""
    wanted = {n.encode().lower() for n in names}
    out = []
    for name, lines in iter_header_lines(header_bytes):
        if (name.lower() in wanted) != exclude:
            out += [line.rstrip(b"\r") + b"\r\n" for line in lines]
    return b"".join(out) + b"\r\n"


HEADER_PIECES = st.sampled_from(
    [
        b"Subject: hi",
        b"subject : x",
        b"SUBJECT:",
        b"To: a@b",
        b"X-Subject: no",
        b"Subject-X: no",
        b" folded",
        b"\tfolded",
        b"no colon",
        b"",
        b"\r",
        b":",
        b"\xff\xfe: 8bit",
    ]
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(HEADER_PIECES, st.sampled_from([b"\r\n", b"\n"])), max_size=12),
    st.lists(st.sampled_from(["subject", "TO", "x-subject", "missing"]), max_size=3),
    st.booleans(),
)
def test_header_fields_matches_line_model(pieces, names, exclude) -> None:
    raw = b"".join(text + eol for text, eol in pieces)
    assert header_fields(raw, names, exclude) == reference_header_fields(raw, names, exclude)


def test_header_fields_on_a_huge_header_is_fast() -> None:
    raw = b"X-Spam: y\r\n" * 2_000_000 + b"Subject: found\r\n folded\r\n\r\nbody"
    t0 = time.process_time()  # CPU time: robust when the machine is busy
    assert header_fields(raw, ["subject"]) == b"Subject: found\r\n folded\r\n\r\n"
    assert search_header(raw, "subject", "FOLDED")
    assert len(header_fields(raw, ["subject"], exclude=True)) == len(raw) - 29
    assert time.process_time() - t0 < 1.5
