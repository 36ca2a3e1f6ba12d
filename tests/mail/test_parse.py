"""parse_message on real-world-shaped messages in tests/data/messages/.

Offsets are asserted exactly (``raw[body_start:body_end]`` is the expected
body), and decoded payloads are compared with the stdlib ``email`` package
where both should agree.
"""

from __future__ import annotations

import base64
import calendar
import email
import email.policy
import email.utils
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.mail.charset import decode_transfer
from mailserver.mail.message import Address, BodyPart, ParsedMessage
from mailserver.mail.parse import SEARCH_BODY_LIMIT, parse_message

DATA = Path(__file__).resolve().parent.parent / "data" / "messages"


def load(name: str) -> tuple[bytes, ParsedMessage]:
    raw = (DATA / name).read_bytes()
    return raw, parse_message(raw)


def walk(part: BodyPart) -> Iterator[BodyPart]:
    """Depth-first, in the order email.message.Message.walk() uses."""
    yield part
    for child in part.parts:
        yield from walk(child)
    if part.message_body is not None:
        yield from walk(part.message_body)


def body(raw: bytes, part: BodyPart) -> bytes:
    return raw[part.body_start : part.body_end]


def mime_header(raw: bytes, part: BodyPart) -> bytes:
    return raw[part.header_start : part.body_start]


def epoch(date: str) -> int:
    return email.utils.mktime_tz(email.utils.parsedate_tz(date))


def check_invariants(raw: bytes, msg: ParsedMessage) -> None:
    assert msg.size == len(raw)
    assert msg.header_end == msg.body.body_start
    for p in walk(msg.body):
        assert 0 <= p.header_start <= p.body_start <= p.body_end <= len(raw)
        assert p.size == p.body_end - p.body_start
        assert p.type == p.type.lower() and p.subtype == p.subtype.lower()
        for c in p.parts:
            assert p.body_start <= c.header_start and c.body_end <= p.body_end
        if p.message_body is not None:
            assert p.message_body.header_start == p.body_start
            assert p.message_body.body_end == p.body_end
        if p.is_multipart:
            assert p.parts, "a multipart always has at least one part (IMAP syntax)"
    assert not any(d.startswith("internal") for d in msg.defects)
    # the structure survives the JSON round trip used by storage
    assert ParsedMessage.from_json(msg.to_json().encode("utf-8")) == msg


ALL = sorted(p.name for p in DATA.glob("*.eml"))


@pytest.mark.parametrize("name", ALL)
def test_invariants_hold_for_every_sample(name: str) -> None:
    raw, msg = load(name)
    check_invariants(raw, msg)


WELL_FORMED = [
    "simple.eml",
    "alternative.eml",
    "mixed_nested.eml",
    "quoted_printable.eml",
    "encoded_words.eml",
    "forwarded.eml",
    "bare_lf.eml",
]


@pytest.mark.parametrize("name", WELL_FORMED)
def test_agrees_with_stdlib_email(name: str) -> None:
    """Same tree shape, types, params and decoded payloads as the email package."""
    raw, msg = load(name)
    assert set(msg.defects) <= {"8-bit header", "unknown charset 'x-unknown-charset'"}
    ours = list(walk(msg.body))
    theirs = list(email.message_from_bytes(raw, policy=email.policy.compat32).walk())
    assert [(p.type, p.subtype) for p in ours] == [
        (m.get_content_maintype(), m.get_content_subtype()) for m in theirs
    ]
    for p, m in zip(ours, theirs, strict=True):
        if p.is_multipart:
            assert dict(p.params)["boundary"] == m.get_boundary()
            continue
        if p.type == "message":
            continue
        assert p.encoding == (m.get("content-transfer-encoding") or "7bit").lower()
        decoded, defect = decode_transfer(body(raw, p), p.encoding)
        assert defect is None
        assert decoded == m.get_payload(decode=True)
        if p.type == "text":
            assert p.charset().lower() == (m.get_content_charset() or "us-ascii")


def test_simple_text_message() -> None:
    raw, msg = load("simple.eml")
    b = msg.body
    assert (b.type, b.subtype, b.params, b.encoding) == (
        "text",
        "plain",
        (("charset", "us-ascii"),),
        "7bit",
    )
    expected = b"Hi Bob,\r\n\r\nare we still on for lunch on Friday?\r\n\r\n-- \r\nAlice\r\n"
    assert raw[msg.header_end :] == expected
    assert body(raw, b) == expected
    assert raw[: msg.header_end].endswith(b"MIME-Version: 1.0\r\n\r\n")
    assert (b.header_start, b.size, b.lines) == (0, len(expected), 6)
    env = msg.envelope
    assert env.subject == "Lunch on Friday?"  # unfolded: CRLF removed, blank kept
    assert env.date == "Fri, 4 Dec 2026 10:59:59 +0100 (CET)"
    assert env.message_id == "<20261204105959.1234@example.org>"
    assert env.in_reply_to == "<prev-1@example.net>"
    alice = Address("Alice Example", None, "alice", "example.org")
    assert env.from_ == (alice,)
    assert env.sender == (alice,) and env.reply_to == (alice,)  # RFC 3501 defaults
    assert env.to == (
        Address("Bob", None, "bob", "example.net"),
        Address("Carol, the Admin", None, "carol", "example.net"),
    )
    assert env.cc == (
        Address(None, None, "Friends", None),
        Address(None, None, "dave", "example.com"),
        Address("Eve", None, "eve", "example.com"),
        Address(None, None, None, None),
    )
    assert env.bcc == ()
    assert msg.date == epoch("Fri, 4 Dec 2026 10:59:59 +0100") == 1796378399
    assert msg.search_subject == "Lunch on Friday?"
    assert "carol@example.net" in msg.search_to
    assert msg.search_body == "Hi Bob, are we still on for lunch on Friday? -- Alice"
    assert msg.defects == ()


def test_multipart_alternative_offsets_and_search() -> None:
    raw, msg = load("alternative.eml")
    b = msg.body
    assert (b.type, b.subtype) == ("multipart", "alternative")
    assert b.params == (("boundary", "----=_Part_0_123.456"),)
    text, html = b.parts
    assert body(raw, text) == (
        b"The numbers are up 5=E2=80=AF% this week. Caf=C3=A9 budget is over; =\r\nlet's talk."
    )
    assert mime_header(raw, text) == (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    # the child starts right after the delimiter line ...
    assert raw[: text.header_start].endswith(b"\r\n------=_Part_0_123.456\r\n")
    # ... and ends before the CRLF that belongs to the next delimiter
    assert raw[text.body_end :].startswith(b"\r\n------=_Part_0_123.456\r\n")
    assert raw[html.body_end :] == b"\r\n------=_Part_0_123.456--\r\n"
    assert (text.encoding, text.size, text.lines) == ("quoted-printable", 82, 2)
    assert (html.encoding, html.lines) == ("7bit", 1)
    assert html.params == (("charset", "utf-8"),)
    assert msg.envelope.from_ == (Address("=?utf-8?q?Zo=C3=AB?=", None, "zoe", "example.com"),)
    assert msg.search_from == "Zoë <zoe@example.com>"
    assert "Café budget is over; let's talk." in msg.search_body
    # html: tags and <style>/<script> content gone, entities decoded
    assert "up 5 % this week & more." in msg.search_body  # nbsp collapsed
    assert "color" not in msg.search_body and "hidden" not in msg.search_body
    assert "<" not in msg.search_body
    assert msg.date == epoch("Thu, 03 Dec 2026 17:30:00 -0500")


def test_nested_mixed_with_attachments() -> None:
    raw, msg = load("mixed_nested.eml")
    top = msg.body
    assert (top.type, top.subtype) == ("multipart", "mixed")
    alt, pdf, png = top.parts
    assert (alt.type, alt.subtype) == ("multipart", "alternative")
    plain, html = alt.parts
    assert body(raw, plain) == b"Please find the Q4 report attached."
    assert (plain.size, plain.lines) == (35, 1)
    assert body(raw, html) == (
        b'<p>Please find the <i>Q4 report</i> attached.</p>\r\n<img src="cid:logo@example.com">'
    )
    assert html.lines == 2
    # the alternative ends before the CRLF preceding the outer delimiter; its
    # epilogue (the blank line after the inner close delimiter) is inside it
    assert body(raw, alt).endswith(b"--inner-boundary--\r\n")
    assert raw[alt.body_end :].startswith(b"\r\n--outer-boundary\r\nContent-Type: application/pdf")

    pdf_bytes, _ = decode_transfer(body(raw, pdf), pdf.encoding)
    assert pdf_bytes.startswith(b"%PDF-1.4") and pdf_bytes.endswith(b"%%EOF\n")
    assert (pdf.type, pdf.subtype, pdf.encoding, pdf.lines) == ("application", "pdf", "base64", 0)
    assert pdf.params == (("name", "q4 report.pdf"),)
    assert pdf.disposition == ("attachment", (("filename", "q4 report.pdf"), ("size", "1082")))
    assert pdf.description == "The Q4 report"
    assert len(pdf_bytes) == 1082
    assert (
        pdf.size
        == len(body(raw, pdf))
        == len(base64.encodebytes(pdf_bytes).rstrip(b"\n"))
        + (len(base64.encodebytes(pdf_bytes).splitlines()) - 1)
    )

    png_bytes, _ = decode_transfer(body(raw, png), png.encoding)
    assert png_bytes.startswith(b"\x89PNG\r\n\x1a\n")
    assert png.encoding == "base64"  # "BASE64" normalised to lower case
    assert png.id == "<logo@example.com>"
    assert png.md5 == base64.b64encode(hashlib.md5(png_bytes).digest()).decode()
    assert png.disposition == ("inline", (("filename", "logo.png"),))
    assert png.language == ("en", "de")
    assert png.location == "http://example.com/logo.png"
    assert raw[png.body_end :] == b"\r\n--outer-boundary--\r\n"
    # attachments are not text: only the two text parts are searchable
    assert msg.search_body == (
        "Please find the Q4 report attached.\nPlease find the Q4 report attached."
    )


def test_quoted_printable_latin1() -> None:
    raw, msg = load("quoted_printable.eml")
    b = msg.body
    assert b.encoding == "quoted-printable"
    assert b.params == (("charset", "ISO-8859-1"),)
    assert body(raw, b).startswith(b"Bonjour =E0 tous,\r\n")
    assert b.lines == 6
    assert "la réunion de l'équipe aura lieu demain à 10h dans la salle habituelle." in (
        msg.search_body
    )
    assert msg.search_subject == "Réunion de l'équipe"
    assert msg.envelope.subject == "=?ISO-8859-1?Q?R=E9union_de_l'=E9quipe?="
    # raw 8-bit Latin-1 in From: best effort, and reported
    assert msg.envelope.from_[0].name == "René"
    assert "8-bit header" in msg.defects


def test_encoded_words_in_many_charsets() -> None:
    raw, msg = load("encoded_words.eml")
    env = msg.envelope
    # envelope values stay raw (IMAP clients decode them)
    assert env.from_[0].name == "=?euc-kr?B?vsiz58fPvLy/5A==?="
    assert env.from_[0].mailbox == "kim" and env.from_[0].host == "example.kr"
    assert [a.mailbox for a in env.to] == ["tanaka", "andre"]
    # search fields are decoded
    assert msg.search_from == "안녕하세요 <kim@example.kr>"
    assert msg.search_to == "こんにちは <tanaka@example.jp>, André <andre@example.fr>"
    # unknown charset: best effort (the bytes are not UTF-8, so Windows-1252)
    assert msg.search_cc == "Mystéry <mystery@example.org>"
    assert "unknown charset 'x-unknown-charset'" in msg.defects
    # a UTF-8 character split across two encoded words is joined back
    assert msg.search_subject == "Grüße aus München ☃"
    assert msg.search_body == "안녕하세요 / こんにちは"
    assert msg.body.encoding == "8bit"


def test_eight_bit_headers() -> None:
    raw, msg = load("eightbit_headers.eml")
    assert msg.envelope.subject == "Grüße — raw UTF-8 subject"
    assert msg.envelope.from_ == (Address("Jürgen Müller", None, "juergen", "example.de"),)
    assert msg.envelope.to == (Address("山田", None, "yamada", "example.jp"),)
    assert msg.search_subject == "Grüße — raw UTF-8 subject"
    assert msg.defects == ("8-bit header",)
    assert body(raw, msg.body) == "Hällo Wörld\r\n".encode()
    assert msg.search_body == "Hällo Wörld"


def test_forwarded_message_rfc822() -> None:
    raw, msg = load("forwarded.eml")
    note, fwd = msg.body.parts
    assert body(raw, note) == b"See below."
    assert (fwd.type, fwd.subtype) == ("message", "rfc822")
    assert fwd.disposition == ("inline", ())
    inner_raw = body(raw, fwd)
    assert inner_raw.startswith(b"From: Alice Example <alice@example.org>\r\n")
    assert inner_raw.endswith(b"--inner--\r\n")
    assert fwd.lines == inner_raw.count(b"\n") == 17
    env = fwd.message_envelope
    assert env is not None
    assert env.subject == "Lunch on Friday?"
    assert env.message_id == "<inner-1@example.org>"
    assert env.from_ == (Address("Alice Example", None, "alice", "example.org"),)
    inner = fwd.message_body
    assert inner is not None
    assert (inner.type, inner.subtype) == ("multipart", "alternative")
    # the enclosed message's header is [header_start, body_start) of its body part
    assert raw[inner.header_start : inner.body_start].endswith(b'boundary="inner"\r\n\r\n')
    plain, html = inner.parts
    assert body(raw, plain) == b"Are we still on?"
    assert body(raw, html) == b"<p>Are we <em>still</em> on?</p>"
    assert plain.body_start > fwd.body_start  # absolute offsets
    # the outer envelope is the outer message's
    assert msg.envelope.subject == "Fwd: Lunch on Friday?"
    assert msg.search_body == "See below.\nAre we still on?\nAre we still on?"


def test_missing_end_boundary() -> None:
    raw, msg = load("broken_no_end_boundary.eml")
    first, second = msg.body.parts
    assert body(raw, first) == b"first part"
    assert body(raw, second) == b"second part, never closed\r\n"
    assert second.body_end == len(raw)
    assert msg.defects == ("multipart without closing boundary",)


def test_boundary_never_seen() -> None:
    raw, msg = load("broken_boundary_never_seen.eml")
    assert (msg.body.type, msg.body.subtype) == ("multipart", "mixed")
    (only,) = msg.body.parts
    # the whole body becomes one headerless text/plain part
    assert (only.type, only.subtype) == ("text", "plain")
    assert only.header_start == only.body_start == msg.header_end
    assert body(raw, only) == raw[msg.header_end :]
    assert "multipart boundary never found" in msg.defects
    assert "text" in msg.search_body


def test_multipart_without_boundary_parameter() -> None:
    raw, msg = load("broken_no_boundary_param.eml")
    (only,) = msg.body.parts
    assert body(raw, only) == b"--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x--\r\n"
    assert msg.defects == ("multipart without boundary",)


def test_bad_base64() -> None:
    raw, msg = load("broken_base64.eml")
    text, blob = msg.body.parts
    assert body(raw, text) == b"SGVsbG8g!!d29y*bGQh\r\nIFRoaXMgaXMgYnJva2Vu"
    assert body(raw, blob) == b"AAECAwQF###"
    assert msg.defects == ("bad base64",)
    # junk characters are skipped, the rest still decodes
    assert msg.search_body == "Hello world! This is broken"
    assert decode_transfer(body(raw, blob), "base64") == (b"\x00\x01\x02\x03\x04\x05", "bad base64")


def test_garbage_bytes() -> None:
    raw, msg = load("garbage.eml")
    assert msg.body.body_end == len(raw)
    assert raw[msg.header_end :] == b"\x00\xff--\r\n:::\r\n"
    assert msg.envelope.subject is None and msg.envelope.from_ == ()
    assert msg.date is None
    assert "8-bit header" in msg.defects


def test_bare_lf_line_endings() -> None:
    raw, msg = load("bare_lf.eml")
    assert b"\r" not in raw
    text, log = msg.body.parts
    assert body(raw, text) == b"line one\nline two"
    assert raw[text.body_end :].startswith(b"\n--lf\n")
    assert (text.size, text.lines) == (17, 2)
    assert mime_header(raw, log) == (
        b"Content-Type: text/x-log; charset=utf-8\n"
        b"Content-Disposition: attachment; filename=app.log\n\n"
    )
    assert body(raw, log) == b"log line"
    assert log.disposition == ("attachment", (("filename", "app.log"),))
    assert msg.envelope.subject == "bare LF line endings"
    assert msg.defects == ()


# -- smaller constructed cases -------------------------------------------------------


def test_empty_message() -> None:
    msg = parse_message(b"")
    assert (msg.size, msg.header_end, msg.body.size, msg.body.lines) == (0, 0, 0, 0)
    assert (msg.body.type, msg.body.subtype) == ("text", "plain")


def test_header_only_message_without_blank_line() -> None:
    raw = b"Subject: no body\r\nFrom: a@b.c\r\n"
    msg = parse_message(raw)
    assert msg.header_end == len(raw) and msg.body.size == 0
    assert msg.envelope.subject == "no body"
    assert "header without blank line" in msg.defects


def test_message_without_header() -> None:
    raw = b"\r\nJust a body\r\n"
    msg = parse_message(raw)
    assert msg.header_end == 2
    assert body(raw, msg.body) == b"Just a body\r\n"
    assert msg.envelope.subject is None


def test_content_type_details() -> None:
    raw = (
        b'Content-Type: TEXT/HTML (comment) ; CHARSET="UTF-8" ; format=flowed;\r\n'
        b'\tname="a \\"quoted\\" name.html"\r\n'
        b"Content-Transfer-Encoding: Quoted-Printable (qp)\r\n"
        b"Content-Disposition: ATTACHMENT; filename*=UTF-8''%E2%82%AC.html\r\n"
        b"\r\n<b>x</b>=\r\ny"
    )
    msg = parse_message(raw)
    b = msg.body
    assert (b.type, b.subtype) == ("text", "html")
    assert b.params == (
        ("charset", "UTF-8"),
        ("format", "flowed"),
        ("name", 'a "quoted" name.html'),
    )
    assert b.encoding == "quoted-printable"
    assert b.disposition == ("attachment", (("filename*", "UTF-8''%E2%82%AC.html"),))
    assert (b.size, b.lines) == (12, 2)
    assert msg.search_body == "x y"


def test_invalid_content_type_means_text_plain() -> None:
    msg = parse_message(b"Content-Type: garbage\r\n\r\nhello")
    assert (msg.body.type, msg.body.subtype) == ("text", "plain")
    assert msg.body.params == (("charset", "us-ascii"),)
    assert any("invalid Content-Type" in d for d in msg.defects)


def test_multipart_digest_children_default_to_message_rfc822() -> None:
    raw = (
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n"
        b"--d\r\n\r\nSubject: one\r\n\r\nbody one\r\n"
        b"--d\r\n\r\nSubject: two\r\n\r\nbody two\r\n"
        b"--d--\r\n"
    )
    msg = parse_message(raw)
    one, two = msg.body.parts
    assert (one.type, one.subtype) == ("message", "rfc822")
    assert one.message_envelope.subject == "one"
    assert two.message_envelope.subject == "two"
    assert body(raw, one.message_body) == b"body one"
    assert body(raw, two.message_body) == b"body two"
    assert one.lines == 3


def test_part_without_header_lines() -> None:
    """A part that starts with text, not a header field: all of it is body."""
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nHello there\r\n\r\nmore\r\n--b--\r\n"
    msg = parse_message(raw)
    (p,) = msg.body.parts
    assert p.header_start == p.body_start
    assert body(raw, p) == b"Hello there\r\n\r\nmore"
    assert "MIME part without header" in msg.defects


def test_boundary_prefix_of_inner_boundary() -> None:
    """'--b' must not match the line '--b2' (the inner boundary)."""
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n"
        b"--b2\r\n\r\ninner one\r\n--b2\r\n\r\ninner two\r\n--b2--\r\n"
        b"--b\r\n\r\nouter two\r\n--b--\r\n"
    )
    msg = parse_message(raw)
    alt, two = msg.body.parts
    assert [body(raw, p) for p in alt.parts] == [b"inner one", b"inner two"]
    assert body(raw, two) == b"outer two"
    assert msg.defects == ()


def test_inner_multipart_closed_by_outer_boundary() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=o\r\n\r\n"
        b"--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n"
        b"--i\r\n\r\nunclosed inner\r\n"
        b"--o\r\n\r\nafter\r\n--o--\r\n"
    )
    msg = parse_message(raw)
    alt, after = msg.body.parts
    assert [body(raw, p) for p in alt.parts] == [b"unclosed inner"]
    assert body(raw, after) == b"after"
    assert msg.defects == ("multipart without closing boundary",)


def test_boundary_with_transport_padding_and_empty_parts() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b \t\r\n--b\r\n\r\nx\r\n--b--  \r\n"
    msg = parse_message(raw)
    empty, x = msg.body.parts
    assert empty.size == 0 and empty.header_start == empty.body_start
    assert body(raw, x) == b"x"


def test_base64_message_rfc822_is_not_parsed_inside() -> None:
    inner = base64.encodebytes(b"Subject: hidden\r\n\r\nbody\r\n")
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + inner
        + b"--b--\r\n"
    )
    msg = parse_message(raw)
    (p,) = msg.body.parts
    assert (p.type, p.subtype) == ("message", "rfc822")
    assert p.message_envelope is None and p.message_body is None
    assert "encoded message/rfc822 not parsed" in msg.defects


def test_two_digit_year_and_bad_dates() -> None:
    assert parse_message(b"Date: Fri, 21 Nov 97 09:55:06 GMT\r\n\r\n").date == calendar.timegm(
        (1997, 11, 21, 9, 55, 6)
    )
    assert parse_message(b"Date: yesterday\r\n\r\n").date is None
    assert parse_message(b"Date: Fri, 99 Foo 99999999999 99:99:99 +9999\r\n\r\n").date is None


def test_search_body_is_bounded() -> None:
    text = b"word " * (SEARCH_BODY_LIMIT // 2)
    raw = b"Content-Type: text/plain\r\n\r\n" + text
    msg = parse_message(raw)
    assert len(msg.search_body) == SEARCH_BODY_LIMIT
    assert msg.body.size == len(text)


def test_utf7_lone_surrogates_do_not_break_json() -> None:
    raw = b"Subject: =?utf-7?q?+2D8-?=\r\nContent-Type: text/plain; charset=utf-7\r\n\r\n+2D8-"
    msg = parse_message(raw)
    assert msg.search_subject == msg.search_body == "\ufffd"
    check_invariants(raw, msg)


def test_json_round_trip_with_unicode() -> None:
    raw, msg = load("encoded_words.eml")
    assert ParsedMessage.from_json(msg.to_json().encode("utf-8")) == msg


def test_section_part_numbers() -> None:
    """ParsedMessage.part() follows RFC 3501 6.4.5 part numbering."""
    raw, msg = load("mixed_nested.eml")
    alt, pdf, png = msg.body.parts
    assert msg.part(()) is msg.body
    assert msg.part((1,)) is alt
    assert msg.part((1, 1)) is alt.parts[0] and msg.part((1, 2)) is alt.parts[1]
    assert msg.part((2,)) is pdf and msg.part((3,)) is png
    for bad in [(0,), (4,), (1, 3), (1, 1, 1), (2, 1)]:
        assert msg.part(bad) is None, bad
    assert list(msg.body.walk()) == list(walk(msg.body))
    assert pdf.param("NAME") == "q4 report.pdf" and pdf.param("charset") is None

    raw, msg = load("forwarded.eml")
    fwd = msg.body.parts[1]
    assert msg.part((2,)) is fwd
    assert msg.part((2, 1)) is fwd.message_body.parts[0]
    assert body(raw, msg.part((2, 2))) == b"<p>Are we <em>still</em> on?</p>"
    assert msg.part((2, 3)) is None

    raw, msg = load("simple.eml")
    assert msg.part((1,)) is msg.body
    assert msg.part((2,)) is None and msg.part((1, 1)) is None

    raw = b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\ninner text\r\n"
    msg = parse_message(raw)
    assert msg.part((1,)) is msg.body
    assert body(raw, msg.part((1, 1))) == b"inner text\r\n"
    assert msg.part((1, 2)) is None


def test_outlook_style_unquoted_boundary_with_equals() -> None:
    raw = (
        b"Content-Type: multipart/alternative;\r\n\tboundary=----=_NextPart_000_0001_01DA1234.ABCDEF00\r\n"
        b"\r\nThis is a multi-part message in MIME format.\r\n\r\n"
        b"------=_NextPart_000_0001_01DA1234.ABCDEF00\r\n"
        b'Content-Type: text/plain;\r\n\tcharset="windows-1252"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Gr=FC=DFe\r\n\r\n"
        b"------=_NextPart_000_0001_01DA1234.ABCDEF00--\r\n"
    )
    msg = parse_message(raw)
    assert msg.body.param("boundary") == "----=_NextPart_000_0001_01DA1234.ABCDEF00"
    (text,) = msg.body.parts
    assert body(raw, text) == b"Gr=FC=DFe\r\n"
    assert text.params == (("charset", "windows-1252"),)
    assert msg.search_body == "Grüße"
    assert msg.defects == ()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80), st.text(max_size=80))
def test_arbitrary_header_values_never_break_parsing(date: str, ctype: str, addr: str) -> None:
    raw = (
        f"Date: {date}\r\nContent-Type: {ctype}\r\nFrom: {addr}\r\nTo: {addr}\r\n"
        f"Content-Disposition: {ctype}\r\nContent-Language: {addr}\r\n\r\nbody"
    ).encode("utf-8", "surrogateescape")
    msg = parse_message(raw)
    check_invariants(raw, msg)


def test_search_body_cut_does_not_report_charset_defects() -> None:
    """The search text is cut from the raw body; the cut must not land inside
    a UTF-8 character and be reported as a charset defect.  (The prefixes make
    the unaligned cut fall inside a character for each encoding.)"""
    line = "Grüße, 日本語 und mehr.\r\n"
    for cte, text in [
        ("8bit", ("x" * 5 + line).encode() * 40_000),
        ("base64", line.encode() * 40_000),
    ]:
        payload = base64.encodebytes(text) if cte == "base64" else text
        raw = (
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + payload
        )
        msg = parse_message(raw)
        assert msg.defects == (), cte
        assert "Grüße, 日本語 und mehr. " in msg.search_body
        assert 0 < len(msg.search_body) <= SEARCH_BODY_LIMIT
