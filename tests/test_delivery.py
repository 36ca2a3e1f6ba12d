"""Delivery: resolution, filters, one stored body for all local recipients,
queueing of remote recipients, all-or-nothing failure."""

from __future__ import annotations

import pytest_twisted

from mailserver.delivery import Envelope
from mailserver.filters import FilterChain, FilterResult
from mailserver.store.interfaces import QuotaExceeded
from tests.smtp.context import add_user, close_context, make_context

RAW = b"From: a@remote.test\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nHello\r\n"


@pytest_twisted.async_yield_fixture
async def ctx(tmp_path):
    c = await make_context(tmp_path)
    await add_user(c, "alice@example.test", "pw", aliases=["al@other.test"])
    await add_user(c, "bob@example.test", "pw")
    yield c
    await close_context(c)


async def inbox(ctx, account):
    mb = await ctx.storage.mailboxes.get_mailbox(account, "INBOX")
    recs = await ctx.storage.messages.list_messages(mb.id)
    return [
        (
            r,
            await ctx.storage.blobs.get(
                (await ctx.storage.messages.get_message(r.message_id)).blob_key
            ),
        )
        for r in recs
    ]


class Fixed:
    def __init__(self, result):
        self.name = "fixed"
        self.result = result

    async def check(self, message):
        return self.result


@pytest_twisted.ensureDeferred
async def test_resolve(ctx) -> None:
    d = ctx.delivery
    assert (await d.resolve("alice@example.test")).account == "alice@example.test"
    assert (await d.resolve("AL@Other.TEST")).account == "alice@example.test"
    assert (await d.resolve("nobody@example.test")).kind == "unknown"
    assert (await d.resolve("x@remote.test")).kind == "remote"
    assert (await d.resolve("user%remote.test@example.test")).kind == "unknown"
    assert (await d.resolve("postmaster")).kind == "unknown"  # no such account here
    assert await d.owned_addresses("alice@example.test") == {
        "alice@example.test",
        "al@other.test",
    }


@pytest_twisted.ensureDeferred
async def test_ingest_stores_parsed_content(ctx) -> None:
    stored = await ctx.delivery.ingest(RAW)
    assert stored.size == len(RAW)
    assert await ctx.storage.blobs.get(stored.blob_key) == RAW
    assert stored.parsed.envelope.subject == "hi"


@pytest_twisted.ensureDeferred
async def test_one_body_for_all_local_recipients_with_trace_headers(ctx) -> None:
    env = Envelope(
        sender="a@remote.test",
        recipients=("alice@example.test", "bob@example.test", "al@other.test"),
        helo="mx.remote.test",
        remote_ip="192.0.2.1",
    )
    r = await ctx.delivery.deliver(env, RAW)
    assert r.ok and r.code == 250
    assert r.delivered_to == ("alice@example.test", "bob@example.test")  # alias deduplicated
    [(ra, body_a)] = await inbox(ctx, "alice@example.test")
    [(rb, body_b)] = await inbox(ctx, "bob@example.test")
    assert ra.message_id == rb.message_id == r.message_id
    assert body_a == body_b
    assert body_a.startswith(b"Return-Path: <a@remote.test>\r\nReceived: from mx.remote.test ")
    assert body_a.endswith(b"\r\n" + RAW)
    header = body_a[: body_a.index(RAW)].decode()
    assert "by mx.example.test" in header and "[192.0.2.1]" in header
    assert "for <" not in header  # several recipients: no "for" clause


@pytest_twisted.ensureDeferred
async def test_filter_reject_and_tempfail_store_nothing(ctx) -> None:
    env = Envelope(sender="a@remote.test", recipients=("alice@example.test",))
    ctx.delivery.filters = FilterChain([Fixed(FilterResult.reject("no spam", 554, "5.7.1"))])
    r = await ctx.delivery.deliver(env, RAW)
    assert not r.ok and (r.code, r.enhanced, r.text) == (554, "5.7.1", "no spam")
    ctx.delivery.filters = FilterChain([Fixed(FilterResult.tempfail())])
    r = await ctx.delivery.deliver(env, RAW)
    assert not r.ok and r.code == 451
    assert await inbox(ctx, "alice@example.test") == []
    ctx.delivery.filters = FilterChain(
        [Fixed(FilterResult.declined([("X-Spam-Status", "No\r\nBcc: evil")]))]
    )
    r = await ctx.delivery.deliver(env, RAW)
    [(_, body)] = await inbox(ctx, "alice@example.test")
    assert b"X-Spam-Status: No  Bcc: evil\r\n" in body


@pytest_twisted.ensureDeferred
async def test_remote_recipients_are_queued_only_for_submission(ctx) -> None:
    env = Envelope(
        sender="alice@example.test",
        recipients=("x@remote.test", "bob@example.test"),
        authenticated="alice@example.test",
        allow_remote=True,
        dsn={"ret": "HDRS"},
        protocol="ESMTPSA",
    )
    r = await ctx.delivery.deliver(env, RAW)
    assert r.ok and r.queued_for == ("x@remote.test",) and r.delivered_to == ("bob@example.test",)
    [entry] = await ctx.delivery.queue.list()
    assert entry.state == "ready" and entry.recipients == ("x@remote.test",)
    assert entry.dsn == {"ret": "HDRS"}
    body = await ctx.delivery.queue.body(entry)
    assert body.startswith(b"Received: ") and body.endswith(RAW)
    assert b"Return-Path" not in body
    assert b"with ESMTPSA" in body
    # MX (allow_remote False): a remote recipient never gets here; if it
    # does, it is a temporary failure, never a relay.
    r = await ctx.delivery.deliver(Envelope(sender="a@b.test", recipients=("x@remote.test",)), RAW)
    assert not r.ok and r.code == 451
    assert len(await ctx.delivery.queue.list()) == 1


@pytest_twisted.ensureDeferred
async def test_local_failure_cancels_held_queue_entry(ctx, monkeypatch) -> None:
    async def broken(stored, targets):
        raise OSError("disk on fire")

    monkeypatch.setattr(ctx.storage.messages, "deliver", broken)
    env = Envelope(
        sender="alice@example.test",
        recipients=("x@remote.test", "bob@example.test"),
        allow_remote=True,
    )
    r = await ctx.delivery.deliver(env, RAW)
    assert not r.ok and (r.code, r.enhanced) == (451, "4.3.0")
    assert await ctx.delivery.queue.list() == []


@pytest_twisted.ensureDeferred
async def test_queue_failure_delivers_nothing(ctx, monkeypatch) -> None:
    async def broken(*a, **kw):
        raise OSError("queue disk full")

    monkeypatch.setattr(ctx.delivery.queue, "enqueue", broken)
    env = Envelope(
        sender="alice@example.test",
        recipients=("x@remote.test", "bob@example.test"),
        allow_remote=True,
    )
    r = await ctx.delivery.deliver(env, RAW)
    assert not r.ok and r.code == 451
    assert await inbox(ctx, "bob@example.test") == []


@pytest_twisted.ensureDeferred
async def test_quota_exceeded_is_452_and_nothing_delivered(ctx, monkeypatch) -> None:
    await add_user(ctx, "small@example.test", "pw", quota_bytes=50)
    assert (await ctx.delivery.resolve("small@example.test", 10)).kind == "local"
    assert (await ctx.delivery.resolve("small@example.test", 100)).kind == "full"
    env = Envelope(sender="a@remote.test", recipients=("bob@example.test", "small@example.test"))
    r = await ctx.delivery.deliver(env, RAW)
    assert not r.ok and (r.code, r.enhanced) == (452, "4.2.2")
    assert await inbox(ctx, "bob@example.test") == []


@pytest_twisted.ensureDeferred
async def test_quota_race_in_store_is_452(ctx, monkeypatch) -> None:
    async def full(stored, targets):
        raise QuotaExceeded("bob")

    monkeypatch.setattr(ctx.storage.messages, "deliver", full)
    r = await ctx.delivery.deliver(
        Envelope(sender="a@remote.test", recipients=("bob@example.test",)), RAW
    )
    assert (r.code, r.enhanced) == (452, "4.2.2")


@pytest_twisted.ensureDeferred
async def test_deleted_recipient_tempfails(ctx) -> None:
    r = await ctx.delivery.deliver(
        Envelope(sender="a@remote.test", recipients=("gone@example.test",)), RAW
    )
    assert not r.ok and r.code == 451


@pytest_twisted.ensureDeferred
async def test_each_accepted_message_is_logged_for_the_sysadmin(ctx) -> None:
    from twisted.logger import formatEvent, globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        env = Envelope(sender="a@remote.test", recipients=("bob@example.test",))
        r = await ctx.delivery.deliver(env, RAW)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert r.ok
    lines = [formatEvent(e) for e in events if "delivered to" in e.get("log_format", "")]
    assert len(lines) == 1
    assert "from <a@remote.test>" in lines[0] and "delivered to bob@example.test" in lines[0]
