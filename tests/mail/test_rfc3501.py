"""The RFC 3501 examples (sections 7.4.2 and 8), rebuilt as real messages.

The RFC shows only responses; we build messages whose parts have exactly
the sizes and line counts shown and check that the parser reports them.
"""

from __future__ import annotations

import base64
import random

from mailserver.mail.message import Address
from mailserver.mail.parse import parse_message


def lines_of(count: int, total: int, eol: bytes = b"\r\n") -> bytes:
    """``count`` CRLF-terminated lines of printable text, ``total`` octets in all."""
    width = total // count - len(eol)
    last = total - (count - 1) * (width + len(eol)) - len(eol)
    rows = [b"x" * width] * (count - 1) + [b"y" * last]
    out = b"".join(r + eol for r in rows)
    assert len(out) == total
    return out


def test_section_7_4_2_bodystructure_example() -> None:
    """(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)
    ("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff")
    "<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")"""
    text = lines_of(23, 1152)
    # 73 base64 lines, 4554 octets: 72 lines of 60 characters and one of 88
    rnd = random.Random(3501)
    diff = bytes(rnd.choice(b"+- abcdefgh\n") for _ in range((72 * 60 + 88) // 4 * 3))
    b64 = base64.b64encode(diff)
    rows = [b64[i * 60 : (i + 1) * 60] for i in range(72)] + [b64[72 * 60 :]]
    attachment = b"".join(r + b"\r\n" for r in rows)
    assert (len(attachment), len(rows)) == (4554, 73)
    raw = (
        b"From: Terry Gray <gray@cac.washington.edu>\r\n"
        b"Subject: compiler diff\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: MULTIPART/MIXED; BOUNDARY="16819560-2078917053-688350843:#11603"\r\n'
        b"\r\n"
        b"--16819560-2078917053-688350843:#11603\r\n"
        b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
        b"\r\n" + text + b"\r\n"
        b"--16819560-2078917053-688350843:#11603\r\n"
        b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\r\n"
        b"Content-ID: <960723163407.20117h@cac.washington.edu>\r\n"
        b"Content-Description: Compiler diff\r\n"
        b"Content-Transfer-Encoding: BASE64\r\n"
        b"\r\n" + attachment + b"\r\n"
        b"--16819560-2078917053-688350843:#11603--\r\n"
    )
    msg = parse_message(raw)
    top = msg.body
    assert (top.type, top.subtype) == ("multipart", "mixed")
    first, second = top.parts
    assert (first.type, first.subtype) == ("text", "plain")
    assert [(k.upper(), v) for k, v in first.params] == [("CHARSET", "US-ASCII")]
    assert (first.id, first.description, first.encoding) == (None, None, "7bit")
    assert (first.size, first.lines) == (1152, 23)
    assert [(k.upper(), v) for k, v in second.params] == [
        ("CHARSET", "US-ASCII"),
        ("NAME", "cc.diff"),
    ]
    assert second.id == "<960723163407.20117h@cac.washington.edu>"
    assert second.description == "Compiler diff"
    assert second.encoding == "base64"
    assert (second.size, second.lines) == (4554, 73)
    assert raw[second.body_start : second.body_end] == attachment
    assert msg.defects == ()


def test_section_8_envelope_and_body_example() -> None:
    """The FETCH FULL response of the RFC 3501 section 8 sample session."""
    body = lines_of(92, 3028)
    raw = (
        b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
        b"From: Terry Gray <gray@cac.washington.edu>\r\n"
        b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
        b"To: imap@cac.washington.edu\r\n"
        b"cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\n"
        b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
        b"\r\n" + body
    )
    msg = parse_message(raw)
    env = msg.envelope
    gray = (Address("Terry Gray", None, "gray", "cac.washington.edu"),)
    assert env.date == "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)"
    assert env.subject == "IMAP4rev1 WG mtg summary and minutes"
    assert env.from_ == env.sender == env.reply_to == gray
    assert env.to == (Address(None, None, "imap", "cac.washington.edu"),)
    assert env.cc == (
        Address(None, None, "minutes", "CNRI.Reston.VA.US"),
        Address("John Klensin", None, "KLENSIN", "MIT.EDU"),
    )
    assert env.bcc == () and env.in_reply_to is None
    assert env.message_id == "<B27397-0100000@cac.washington.edu>"
    b = msg.body
    assert (b.type, b.subtype, b.encoding, b.size, b.lines) == ("text", "plain", "7bit", 3028, 92)
    assert [(k.upper(), v) for k, v in b.params] == [("CHARSET", "US-ASCII")]
    assert msg.date == 837595405  # 1996-07-17T09:23:25Z


def test_absent_content_type_gets_rfc2045_defaults() -> None:
    """RFC 2045 5.2: no Content-Type means text/plain; charset=us-ascii, 7bit."""
    msg = parse_message(b"Subject: x\r\n\r\nhello\r\n")
    b = msg.body
    assert (b.type, b.subtype, b.params, b.encoding) == (
        "text",
        "plain",
        (("charset", "us-ascii"),),
        "7bit",
    )
    assert (b.size, b.lines) == (7, 1)
