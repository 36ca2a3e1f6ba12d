"""FETCH responses read by a real client library's parser (imapclient's
``parse_fetch_response``, fed the way imaplib delivers literals)."""

from __future__ import annotations

import datetime as dt
import re

import pytest_twisted
from imapclient.response_parser import parse_fetch_response

from mailserver.imap.fetch import render_fetch
from mailserver.imap.grammar import parse_fetch_items
from mailserver.imap.receiver import CommandReceiver
from mailserver.mail.parse import parse_message
from mailserver.store.interfaces import MessageRecord, StoredMessage

from .test_fetch import MULTI

_LITERAL_AT_EOL = re.compile(rb"\{(\d+)\}\r\n")


def as_imaplib(response: bytes) -> list:
    """Split ``* n FETCH (...)\\r\\n`` into imaplib's (line, literal) form."""
    assert response.startswith(b"* ") and response.endswith(b"\r\n")
    seq, fetch, text = response[2:-2].split(b" ", 2)
    assert fetch == b"FETCH"
    text = seq + b" " + text  # imaplib hands out "5 (...)"
    out: list = []
    pos = 0
    while True:
        m = _LITERAL_AT_EOL.search(text, pos)
        if m is None:
            break
        n = int(m.group(1))
        out.append((text[pos : m.start()] + m.group()[:-2], text[m.end() : m.end() + n]))
        pos = m.end() + n
    out.append(text[pos:])
    return out


def items_of(text: bytes):
    r = CommandReceiver(65536, 1 << 20)
    r.receive_data(b"a FETCH 1 " + text + b"\r\n")
    return parse_fetch_items(r.next_event().args[1])


async def render(raw: bytes, text: bytes, flags=("\\Seen", "$Work")) -> dict:
    parsed = parse_message(raw)
    stored = StoredMessage("m", "k", len(raw), parsed)
    record = MessageRecord(77, "m", frozenset(flags), 3, 837596665, len(raw))

    async def read_range(a: int, b: int) -> bytes:
        return raw[a:b]

    out = await render_fetch(items_of(text), 5, record, stored, read_range, uid_mode=True)
    parsed_resp = parse_fetch_response(as_imaplib(out), normalise_times=False)
    return parsed_resp[77]


@pytest_twisted.ensureDeferred
async def test_imapclient_reads_full_and_sections():
    got = await render(
        MULTI,
        b"(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER] "
        b"BODY[1] BODY[HEADER.FIELDS (Subject)] RFC822.TEXT)",
    )
    assert got[b"SEQ"] == 5
    assert set(got[b"FLAGS"]) == {b"\\Seen", b"$Work"}
    assert got[b"INTERNALDATE"] == dt.datetime(
        1996, 7, 17, 9, 44, 25, tzinfo=got[b"INTERNALDATE"].tzinfo
    )
    assert got[b"INTERNALDATE"].utcoffset() == dt.timedelta(0)
    assert got[b"RFC822.SIZE"] == len(MULTI)
    env = got[b"ENVELOPE"]
    assert env.subject == b"parts"
    assert env.from_[0].name == b"Alice" and env.from_[0].mailbox == b"alice"
    assert env.from_[0].host == b"example.test"
    assert env.sender == env.from_ and env.reply_to == env.from_
    assert env.to[0].mailbox == b"bob"
    body = got[b"BODYSTRUCTURE"]
    assert body.is_multipart
    parts, subtype = body[0], body[1]
    assert subtype == b"MIXED" and len(parts) == 2
    assert parts[0][:2] == (b"TEXT", b"PLAIN")
    assert parts[1][:2] == (b"MESSAGE", b"RFC822")
    header_end = MULTI.index(b"\r\n\r\n") + 4
    assert got[b"BODY[HEADER]"] == MULTI[:header_end]
    assert got[b"BODY[1]"] == b"hello world"
    assert got[b"BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: parts\r\n\r\n"
    assert got[b"RFC822.TEXT"] == MULTI[header_end:]


@pytest_twisted.ensureDeferred
async def test_imapclient_reads_awkward_strings():
    raw = (
        'From: "Gr\u00fc\u00dfe, \\"Q\\"" <q@example.test>\r\n'
        'Subject: =?utf-8?q?caf=C3=A9?= "quoted" \\ back\r\n'
        "To: undisclosed-recipients:;\r\n"
        "Message-ID: <x@y>\r\n"
        "\r\n"
        "body\r\n"
    ).encode()
    got = await render(raw, b"(ENVELOPE BODY BODY.PEEK[TEXT]<1.2>)")
    env = got[b"ENVELOPE"]
    assert env.subject == b'=?utf-8?q?caf=C3=A9?= "quoted" \\ back'
    assert env.from_[0].name == 'Gr\u00fc\u00dfe, "Q"'.encode()
    assert env.message_id == b"<x@y>"
    assert got[b"BODY"][:2] == (b"TEXT", b"PLAIN")
    assert got[b"BODY[TEXT]<1>"] == b"od"
