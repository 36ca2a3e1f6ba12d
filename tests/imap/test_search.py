"""SEARCH evaluation: every key against a small mailbox through a fake
context (which counts its I/O), then end to end on the embedded store."""

from __future__ import annotations

import calendar

import pytest_twisted

from mailserver.imap.grammar import parse_search_args
from mailserver.imap.receiver import CommandReceiver
from mailserver.imap.search import StoreSearchContext, run_search
from mailserver.mail.parse import parse_message
from mailserver.store.interfaces import DeliveryTarget, MessageRecord


def key_of(text: bytes):
    r = CommandReceiver(65536, 1 << 20)
    r.receive_data(b"a SEARCH " + text + b"\r\n")
    ev = r.next_event()
    while not hasattr(ev, "args"):
        ev = r.next_event()
    return parse_search_args(ev.args).key


def day(y, m, d, hh=12):
    return calendar.timegm((y, m, d, hh, 0, 0))


MESSAGES = [
    # uid, flags, internal date, size, raw
    (
        10,
        {"\\Seen", "\\Answered"},
        day(1994, 1, 31),
        1000,
        b"From: Smith <smith@x.test>\r\nTo: a@x.test\r\nSubject: hello\r\n"
        b"Date: Mon, 31 Jan 1994 23:30:00 -0800\r\nX-Tag: alpha\r\n\r\nfirst body\r\n",
    ),
    (
        20,
        {"\\Flagged", "$Work"},
        day(1994, 2, 1),
        2000,
        b"From: Jones <jones@y.test>\r\nTo: b@y.test\r\nCc: c@y.test\r\nSubject: meeting\r\n"
        b"Date: Tue, 1 Feb 1994 10:00:00 +0000\r\n\r\nsecond body\r\n",
    ),
    (
        30,
        {"\\Deleted", "\\Draft"},
        day(1994, 2, 2),
        3000,
        b"From: Smith <smith@x.test>\r\nBcc: hidden@z.test\r\nSubject: re: hello\r\n"
        b"Date: Wed, 2 Feb 1994 10:00:00 +0000\r\nX-Tag: beta\r\n\r\nthird body\r\n",
    ),
    (
        40,
        {"\\Flagged"},
        day(1994, 2, 3),
        4000,
        b"From: Doe <doe@w.test>\r\nSubject: other\r\n\r\nfourth\r\n",
    ),
]


class FakeContext:
    """Answers from parsed messages; counts calls so tests can check that
    cheap keys do no per-message I/O."""

    def __init__(self, recent=(), saved=None) -> None:
        self.recent_uids = set(recent)
        self.saved_uids = saved
        self.raw = {uid: raw for uid, _, _, _, raw in MESSAGES}
        self.parsed_map = {uid: parse_message(raw) for uid, raw in self.raw.items()}
        self.calls: list[str] = []

    async def unseen_uids(self):
        self.calls.append("unseen")
        return {uid for uid, flags, *_ in MESSAGES if "\\Seen" not in flags}

    async def search_text(self, field, text):
        self.calls.append(f"text:{field}")
        t = text.casefold()
        out = set()
        for uid, p in self.parsed_map.items():
            hay = {
                "from": p.search_from,
                "to": p.search_to,
                "cc": p.search_cc,
                "bcc": p.search_bcc,
                "subject": p.search_subject,
                "body": p.search_body,
                "text": self.raw[uid].decode(),
            }[field]
            if t in hay.casefold():
                out.add(uid)
        return out

    async def parsed(self, record):
        self.calls.append(f"parsed:{record.uid}")
        return self.parsed_map[record.uid]

    async def header(self, record):
        self.calls.append(f"header:{record.uid}")
        raw = self.raw[record.uid]
        return raw[: self.parsed_map[record.uid].header_end]


RECORDS = [
    MessageRecord(uid, f"m{uid}", frozenset(flags), uid, date, size)
    for uid, flags, date, size, _ in MESSAGES
]


async def search(text: bytes, uid_mode=False, ctx=None):
    ctx = ctx or FakeContext(recent=[30, 40])
    return await run_search(key_of(text), RECORDS, ctx, uid_mode), ctx


CASES = {
    b"ALL": [1, 2, 3, 4],
    b"ANSWERED": [1],
    b"UNANSWERED": [2, 3, 4],
    b"DELETED": [3],
    b"UNDELETED": [1, 2, 4],
    b"DRAFT": [3],
    b"UNDRAFT": [1, 2, 4],
    b"FLAGGED": [2, 4],
    b"UNFLAGGED": [1, 3],
    b"KEYWORD $work": [2],
    b"UNKEYWORD $Work": [1, 3, 4],
    b"SEEN": [1],
    b"UNSEEN": [2, 3, 4],
    b"RECENT": [3, 4],
    b"NEW": [3, 4],
    b"OLD": [1, 2],
    b"BEFORE 1-Feb-1994": [1],
    b"ON 1-Feb-1994": [2],
    b"SINCE 2-Feb-1994": [3, 4],
    b"SENTBEFORE 1-Feb-1994": [1],  # the Date's own day: 31-Jan in -0800
    b"SENTON 31-Jan-1994": [1],
    b"SENTSINCE 2-Feb-1994": [3],  # message 4 has no Date: header
    b"LARGER 2000": [3, 4],
    b"SMALLER 2000": [1],
    b"FROM smith": [1, 3],
    b"TO b@y": [2],
    b"CC c@y": [2],
    b"BCC hidden": [3],
    b"SUBJECT HELLO": [1, 3],
    b"BODY second": [2],
    b"TEXT alpha": [1],
    b'HEADER X-Tag "BET"': [3],
    b'HEADER X-Tag ""': [1, 3],
    b"UID 20:30": [2, 3],
    b"UID 35:*": [4],
    b"2:3": [2, 3],
    b"*": [4],
    b"NOT 1:2": [3, 4],
    b"OR ANSWERED DELETED": [1, 3],
    b"(FLAGGED UNSEEN) SMALLER 4000": [2],
    b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"': [2, 4],
    b"OR (FROM smith SEEN) (DRAFT OR 4 KEYWORD $Work)": [1],
    b"OR (FROM smith SEEN) (FLAGGED OR 4 KEYWORD $Work)": [1, 2, 4],
    b"FROM nobody": [],
    b"5:9": [],
}


@pytest_twisted.ensureDeferred
async def test_every_key():
    for text, expected in CASES.items():
        got, _ = await search(text)
        assert got == expected, text


@pytest_twisted.ensureDeferred
async def test_uid_mode_and_saved():
    got, _ = await search(b"FLAGGED", uid_mode=True)
    assert got == [20, 40]
    got, _ = await search(b"UID $", ctx=FakeContext(saved=[20, 30, 99]))
    assert got == [2, 3]
    got, _ = await search(b"$", uid_mode=True, ctx=FakeContext(saved=[40]))
    assert got == [40]


@pytest_twisted.ensureDeferred
async def test_unseen_uses_index_only():
    _, ctx = await search(b"UNSEEN")
    assert ctx.calls == ["unseen"]
    _, ctx = await search(b"SEEN FLAGGED UNSEEN")
    assert ctx.calls == ["unseen"]  # FLAGGED narrows first, SEEN empties, UNSEEN never runs
    _, ctx = await search(b"FLAGGED DELETED ANSWERED 1:* UID 1:* LARGER 1 BEFORE 1-Jan-2000")
    assert ctx.calls == []


@pytest_twisted.ensureDeferred
async def test_expensive_keys_only_look_at_narrowed_candidates():
    _, ctx = await search(b"SENTSINCE 1-Jan-1990 DRAFT")
    assert ctx.calls == ["parsed:30"]
    _, ctx = await search(b"HEADER X-Tag alpha UID 10")
    assert ctx.calls == ["header:10"]
    _, ctx = await search(b"HEADER X-Tag alpha FROM smith")
    assert ctx.calls == ["text:from", "header:10", "header:30"]


@pytest_twisted.ensureDeferred
async def test_empty_mailbox():
    assert await run_search(key_of(b"ALL"), [], FakeContext()) == []
    assert await run_search(key_of(b"1:*"), [], FakeContext()) == []


# -- end to end on the embedded store ------------------------------------------


@pytest_twisted.ensureDeferred
async def test_store_search_context(storage):
    await storage.accounts.create_account("u@example.test", "x")
    box = await storage.mailboxes.get_mailbox("u@example.test", "INBOX")
    for _uid, flags, date, _, raw in MESSAGES:
        key = await storage.blobs.put(raw)
        stored = await storage.messages.store_message(key, parse_message(raw))
        await storage.messages.deliver(
            stored, [DeliveryTarget(box.id, frozenset(flags - {"\\Recent"}), date)]
        )
    records = await storage.messages.list_messages(box.id)
    assert len(records) == 4
    ctx = StoreSearchContext(storage, box.id, recent_uids={records[-1].uid})
    uids = [r.uid for r in records]

    async def s(text):
        return await run_search(key_of(text), records, ctx)

    assert await s(b"UNSEEN") == [2, 3, 4]
    assert await s(b"SEEN") == [1]
    assert await s(b"FROM smith") == [1, 3]
    assert await s(b"SUBJECT meeting") == [2]
    assert await s(b"BODY third") == [3]
    assert await s(b'HEADER X-Tag "beta"') == [3]
    assert await s(b"SENTON 31-Jan-1994") == [1]
    assert await s(b"RECENT") == [4]
    assert await run_search(key_of(b"FLAGGED"), records, ctx, uid_mode=True) == [uids[1], uids[3]]


class _CountingBlobs:
    def __init__(self, blobs) -> None:
        self.blobs = blobs
        self.calls: list[tuple] = []

    async def get(self, key):
        self.calls.append(("get", key))
        return await self.blobs.get(key)

    async def get_range(self, key, start, end):
        self.calls.append(("get_range", start, end))
        return await self.blobs.get_range(key, start, end)


class _StorageView:
    def __init__(self, storage, blobs) -> None:
        self.messages = storage.messages
        self.blobs = blobs


@pytest_twisted.ensureDeferred
async def test_header_search_reads_only_headers(storage):
    await storage.accounts.create_account("v@example.test", "x")
    box = await storage.mailboxes.get_mailbox("v@example.test", "INBOX")
    raw = b"Subject: big\r\nX-Tag: needle\r\n\r\n" + b"body line\r\n" * 100000
    stored = await storage.messages.store_message(await storage.blobs.put(raw), parse_message(raw))
    await storage.messages.deliver(stored, [DeliveryTarget(box.id)])
    records = await storage.messages.list_messages(box.id)
    blobs = _CountingBlobs(storage.blobs)
    ctx = StoreSearchContext(_StorageView(storage, blobs), box.id)
    assert await run_search(key_of(b"HEADER X-Tag needle"), records, ctx) == [1]
    assert blobs.calls == [("get_range", 0, stored.parsed.header_end)]
