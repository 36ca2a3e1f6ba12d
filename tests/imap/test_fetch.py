"""FETCH rendering: RFC 3501 ENVELOPE/BODY/BODYSTRUCTURE examples, section
values from real parsed messages, and the byte-range planner (header and
part fetches must not read the whole blob)."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserver.imap.encoder import string
from mailserver.imap.fetch import (
    bodystructure,
    envelope_to_imap,
    find_part,
    format_internaldate,
    needs_content,
    plan_ranges,
    render_fetch,
    sets_seen,
)
from mailserver.imap.grammar import parse_fetch_items
from mailserver.imap.receiver import CommandReceiver
from mailserver.mail.message import Address, BodyPart, Envelope, ParsedMessage
from mailserver.mail.parse import parse_message
from mailserver.store.interfaces import MessageRecord, StoredMessage


def items_of(text: bytes):
    r = CommandReceiver(65536, 1 << 20)
    r.receive_data(b"a FETCH 1 " + text + b"\r\n")
    return parse_fetch_items(r.next_event().args[1])


class Blob:
    """A read_range that records what was read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    async def __call__(self, start: int, end: int) -> bytes:
        self.reads.append((start, end))
        return self.data[start:end]


# -- RFC 3501 section 8 sample: "a003 fetch 12 full" ----------------------------

TERRY = Address("Terry Gray", None, "gray", "cac.washington.edu")
SAMPLE_ENVELOPE = Envelope(
    date="Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
    subject="IMAP4rev1 WG mtg summary and minutes",
    from_=(TERRY,),
    to=(Address(None, None, "imap", "cac.washington.edu"),),
    cc=(
        Address(None, None, "minutes", "CNRI.Reston.VA.US"),
        Address("John Klensin", None, "KLENSIN", "MIT.EDU"),
    ),
    message_id="<B27397-0100000@cac.washington.edu>",
)
SAMPLE_BODY = BodyPart(
    "text", "plain", params=(("CHARSET", "US-ASCII"),), encoding="7BIT", size=3028, lines=92
)
SAMPLE_FULL = (
    b'* 12 FETCH (FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" '
    b'RFC822.SIZE 4286 ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" '
    b'"IMAP4rev1 WG mtg summary and minutes" '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
    b'((NIL NIL "imap" "cac.washington.edu")) '
    b'((NIL NIL "minutes" "CNRI.Reston.VA.US")'
    b'("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL '
    b'"<B27397-0100000@cac.washington.edu>") '
    b'BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))\r\n'
)


@pytest_twisted.ensureDeferred
async def test_rfc3501_sample_fetch_full():
    parsed = ParsedMessage(size=4286, header_end=1258, envelope=SAMPLE_ENVELOPE, body=SAMPLE_BODY)
    stored = StoredMessage("m1", "k1", 4286, parsed)
    record = MessageRecord(7, "m1", frozenset({"\\Seen"}), 1, 837596665, 4286)
    blob = Blob(b"")
    out = await render_fetch(items_of(b"full"), 12, record, stored, blob, tz_offset_minutes=-420)
    assert out == SAMPLE_FULL
    assert blob.reads == []  # FULL reads nothing from the blob


def test_rfc3501_bodystructure_example():
    body = BodyPart(
        "multipart",
        "mixed",
        parts=(
            BodyPart("text", "plain", params=(("CHARSET", "US-ASCII"),), size=1152, lines=23),
            BodyPart(
                "text",
                "plain",
                params=(("CHARSET", "US-ASCII"), ("NAME", "cc.diff")),
                id="<960723163407.20117h@cac.washington.edu>",
                description="Compiler diff",
                encoding="base64",
                size=4554,
                lines=73,
            ),
        ),
    )
    assert bodystructure(body, extensible=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")'
    )
    assert bodystructure(body, extensible=True) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23 NIL NIL NIL NIL)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73 '
        b'NIL NIL NIL NIL) "MIXED" NIL NIL NIL NIL)'
    )


def test_bodystructure_extension_data_and_basic_types():
    part = BodyPart(
        "application",
        "pdf",
        params=(("name", "a b.pdf"),),
        encoding="base64",
        size=100,
        md5="Q2hlY2sgSW50ZWdyaXR5IQ==",
        disposition=("attachment", (("filename", "a b.pdf"),)),
        language=("en", "de"),
        location="http://x/y",
    )
    assert bodystructure(part, True) == (
        b'("APPLICATION" "PDF" ("NAME" "a b.pdf") NIL NIL "BASE64" 100 '
        b'"Q2hlY2sgSW50ZWdyaXR5IQ==" ("ATTACHMENT" ("FILENAME" "a b.pdf")) ("en" "de") "http://x/y")'
    )
    # basic (non-text) parts have no line count
    assert (
        bodystructure(part, False)
        == b'("APPLICATION" "PDF" ("NAME" "a b.pdf") NIL NIL "BASE64" 100)'
    )
    single_lang = BodyPart("text", "html", language=("en",), size=1, lines=1)
    assert bodystructure(single_lang, True).endswith(b' 1 1 NIL NIL "en" NIL)')


def test_envelope_group_and_defaults():
    env = Envelope(
        subject="x\r\ny",
        from_=(Address("A", None, "a", "h"),),
        to=(
            Address(None, None, "undisclosed", None),
            Address(None, None, None, None),
        ),
        in_reply_to="<r@h>",
    )
    assert envelope_to_imap(env) == (
        b'(NIL {4}\r\nx\r\ny (("A" NIL "a" "h")) (("A" NIL "a" "h")) (("A" NIL "a" "h")) '
        b'((NIL NIL "undisclosed" NIL)(NIL NIL NIL NIL)) NIL NIL "<r@h>" NIL)'
    )
    assert envelope_to_imap(Envelope()) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert envelope_to_imap(Envelope(subject="Gr\u00fc\u00dfe")).startswith(b"(NIL {7}\r\nGr")


def test_internaldate_format():
    assert format_internaldate(837596665) == "17-Jul-1996 09:44:25 +0000"
    assert format_internaldate(837596665, -420) == "17-Jul-1996 02:44:25 -0700"
    assert format_internaldate(0, 330) == "01-Jan-1970 05:30:00 +0530"


def test_sets_seen_and_needs_content():
    assert sets_seen(items_of(b"BODY[]"))
    assert sets_seen(items_of(b"RFC822"))
    assert sets_seen(items_of(b"RFC822.TEXT"))
    assert sets_seen(items_of(b"BODY[1.MIME]"))
    assert not sets_seen(items_of(b"(BODY.PEEK[] RFC822.HEADER BODY ENVELOPE FLAGS)"))
    assert not needs_content(items_of(b"(FLAGS UID INTERNALDATE RFC822.SIZE MODSEQ)"))
    assert needs_content(items_of(b"(FLAGS ENVELOPE)"))


# -- real messages -------------------------------------------------------------

MULTI = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@example.test\r\n"
    b"Subject: parts\r\n"
    b"X-Long: one\r\n two\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"hello world\r\n"
    b"--XX\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="YY"\r\n'
    b"\r\n"
    b"--YY\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"inner plain\r\n"
    b"--YY\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>inner html</p>\r\n"
    b"--YY--\r\n"
    b"--XX--\r\n"
)


def stored_of(raw: bytes) -> tuple[StoredMessage, MessageRecord]:
    parsed = parse_message(raw)
    return StoredMessage("m", "k", len(raw), parsed), MessageRecord(
        42, "m", frozenset(), 9, 0, len(raw)
    )


async def fetch(raw: bytes, text: bytes, **kw) -> tuple[bytes, list[tuple[int, int]]]:
    stored, record = stored_of(raw)
    blob = Blob(raw)
    out = await render_fetch(items_of(text), 1, record, stored, blob, **kw)
    return out, blob.reads


@pytest_twisted.ensureDeferred
async def test_section_values():
    header_end = MULTI.index(b"\r\n\r\n") + 4
    cases = {
        b"BODY[]": MULTI,
        b"BODY[HEADER]": MULTI[:header_end],
        b"BODY[TEXT]": MULTI[header_end:],
        b"BODY[1]": b"hello world",
        b"BODY[1.MIME]": b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
        b"BODY[2.HEADER]": (
            b"Subject: inner\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/alternative; boundary="YY"\r\n\r\n'
        ),
        b"BODY[2.1]": b"inner plain",
        b"BODY[2.2]": b"<p>inner html</p>",
        b"BODY[2.2.MIME]": b"Content-Type: text/html\r\n\r\n",
        b"BODY[HEADER.FIELDS (subject X-LONG)]": b"Subject: parts\r\nX-Long: one\r\n two\r\n\r\n",
        b"BODY[HEADER.FIELDS.NOT (X-Long Content-Type MIME-Version From)]": (
            b"To: bob@example.test\r\nSubject: parts\r\n\r\n"
        ),
        b"BODY[2.HEADER.FIELDS (SUBJECT)]": b"Subject: inner\r\n\r\n",
        b"RFC822.HEADER": MULTI[:header_end],
        b"RFC822.TEXT": MULTI[header_end:],
        b"RFC822": MULTI,
        b"BODY[]<0.4>": b"From",
        b"BODY[1]<6.100>": b"world",
        b"BODY[1]<100.5>": b"",
        b"BODY[HEADER.FIELDS (Subject)]<2.5>": b"bject",
    }
    for text, expected in cases.items():
        out, _ = await fetch(MULTI, text)
        name = items_of(text)[0].response_name()
        assert out == b"* 1 FETCH (" + name + b" " + string(expected) + b")\r\n", text


@pytest_twisted.ensureDeferred
async def test_response_names_and_missing_parts():
    out, _ = await fetch(MULTI, b"(BODY.PEEK[1]<0.5> BODY[9] BODY[1.HEADER] BODY[1.1] UID)")
    assert (
        out
        == b'* 1 FETCH (BODY[1]<0> "hello" BODY[9] NIL BODY[1.HEADER] NIL BODY[1.1] NIL UID 42)\r\n'
    )
    out, _ = await fetch(MULTI, b"FLAGS", uid_mode=True, flags=["\\Seen", "\\Recent"])
    assert out == b"* 1 FETCH (UID 42 FLAGS (\\Recent \\Seen))\r\n"


@pytest_twisted.ensureDeferred
async def test_nested_bodystructure_from_parser():
    out, reads = await fetch(MULTI, b"BODYSTRUCTURE")
    assert reads == []
    assert out.startswith(
        b'* 1 FETCH (BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 11 1 '
    )
    assert b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" ' in out
    assert b'(NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL)' in out
    assert b'"ALTERNATIVE"' in out and out.endswith(b' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL))\r\n')
    out, _ = await fetch(MULTI, b"BODY")
    stored, _ = stored_of(MULTI)
    assert out == b"* 1 FETCH (BODY " + bodystructure(stored.parsed.body, False) + b")\r\n"
    assert b"BOUNDARY" not in out  # no extension data in the BODY form


# -- planner: only the needed ranges are read ----------------------------------------


@pytest_twisted.ensureDeferred
async def test_planner_reads_only_needed_ranges():
    big = MULTI.replace(b"hello world", b"hello world" + b"x" * 100000)
    stored, _ = stored_of(big)
    header_end = stored.parsed.header_end
    _, reads = await fetch(big, b"(ENVELOPE BODYSTRUCTURE FLAGS RFC822.SIZE)")
    assert reads == []
    _, reads = await fetch(big, b"BODY.PEEK[HEADER.FIELDS (Subject)]")
    assert reads == [(0, header_end)]
    _, reads = await fetch(big, b"(RFC822.HEADER BODY[HEADER])")
    assert reads == [(0, header_end)]
    _, reads = await fetch(big, b"BODY[2.2]")
    p = find_part(stored.parsed.body, (2, 2))
    assert reads == [(p.body_start, p.body_end)] and p.body_end - p.body_start < 100
    _, reads = await fetch(big, b"BODY[]<0.2048>")
    assert reads == [(0, 2048)]
    _, reads = await fetch(big, b"BODY[1]<10.20>")
    p1 = find_part(stored.parsed.body, (1,))
    assert reads == [(p1.body_start + 10, p1.body_start + 30)]
    _, reads = await fetch(big, b"(BODY[HEADER] BODY[])")
    assert reads == [(0, len(big))]  # overlapping ranges merged into one read
    assert plan_ranges(items_of(b"(BODY[2.2.MIME] BODY[2.2])"), stored) == [
        (find_part(stored.parsed.body, (2, 2)).header_start, p.body_end)
    ]


def test_find_part_single_part_message():
    stored, _ = stored_of(b"Subject: x\r\n\r\nbody\r\n")
    body = stored.parsed.body
    assert find_part(body, (1,)) is body
    assert find_part(body, (2,)) is None
    assert find_part(body, (1, 1)) is None


@pytest.mark.parametrize("text", [b"BODY[1]", b"BODY[TEXT]"])
@pytest_twisted.ensureDeferred
async def test_single_part_body(text):
    out, _ = await fetch(b"Subject: x\r\n\r\nbody\r\n", text)
    assert out.endswith(b' "body\r\n")\r\n') or out.endswith(b"{6}\r\nbody\r\n)\r\n")
