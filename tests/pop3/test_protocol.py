"""The Twisted protocol on a StringTransport with a fake clock: autologout,
lock release and flow control, without sockets or real time."""

from __future__ import annotations

import pytest_twisted
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailserver.pop3.maildrop import LocalMaildropLocks
from mailserver.pop3.protocol import AUTOLOGOUT, MAX_BUFFERED, POP3Protocol
from tests.pop3.conftest import add_user, deliver, make_context
from tests.support import close_test_context

USER, PASSWORD = "alice@example.test", "secret"


async def setup(tmp_path):
    ctx = await make_context(tmp_path, accounts={"allow_plaintext_auth": True})
    await add_user(ctx, USER, PASSWORD)
    rec = await deliver(ctx, USER, b"Subject: x\r\n\r\nbody\r\n")
    return ctx, rec


def connect(ctx, locks, clock):
    proto = POP3Protocol(ctx, locks, clock=clock)
    transport = StringTransport(peerAddress=None)
    proto.makeConnection(transport)
    return proto, transport


async def send(proto, transport, data: bytes) -> bytes:
    transport.clear()
    proto.dataReceived(data)
    if proto.busy is not None:
        await proto.busy
    return transport.value()


@pytest_twisted.ensureDeferred
async def test_autologout_closes_without_update_and_releases_lock(tmp_path) -> None:
    ctx, rec = await setup(tmp_path)
    try:
        locks, clock = LocalMaildropLocks(), Clock()
        proto, transport = connect(ctx, locks, clock)
        assert transport.value().startswith(b"+OK")
        out = await send(proto, transport, f"USER {USER}\r\nPASS {PASSWORD}\r\nDELE 1\r\n".encode())
        assert out.endswith(b"+OK message 1 deleted\r\n")
        inbox = await ctx.storage.mailboxes.get_mailbox(USER, "INBOX")
        assert locks.holder(inbox.id) is not None
        # Activity just before the limit keeps the session.
        clock.advance(AUTOLOGOUT - 1)
        assert await send(proto, transport, b"NOOP\r\n") == b"+OK\r\n"
        clock.advance(AUTOLOGOUT - 1)
        assert not transport.disconnecting
        transport.clear()
        clock.advance(1)
        if proto.busy is not None:
            await proto.busy
        assert transport.value() == b"-ERR autologout; idle for too long\r\n"
        assert transport.disconnecting
        proto.connectionLost(None)
        await proto.finished
        assert locks.holder(inbox.id) is None
        records = await ctx.storage.messages.list_messages(inbox.id)
        assert [r.uid for r in records] == [rec.uid]  # DELE without QUIT: kept
        assert clock.getDelayedCalls() == []
    finally:
        await close_test_context(ctx)


@pytest_twisted.ensureDeferred
async def test_second_session_in_use_until_first_is_gone(tmp_path) -> None:
    ctx, _ = await setup(tmp_path)
    try:
        locks, clock = LocalMaildropLocks(), Clock()
        login = f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode()
        a, ta = connect(ctx, locks, clock)
        assert (await send(a, ta, login)).endswith(b"+OK maildrop has 1 messages (20 octets)\r\n")
        b, tb = connect(ctx, locks, clock)
        assert (await send(b, tb, login)).endswith(
            b"-ERR [IN-USE] maildrop already locked by another session\r\n"
        )
        a.connectionLost(None)
        await a.finished
        assert (await send(b, tb, login)).endswith(b"+OK maildrop has 1 messages (20 octets)\r\n")
    finally:
        await close_test_context(ctx)


@pytest_twisted.ensureDeferred
async def test_flood_of_pipelined_commands_pauses_reading(tmp_path) -> None:
    ctx, _ = await setup(tmp_path)
    try:
        proto, transport = connect(ctx, LocalMaildropLocks(), Clock())
        # Authentication is in flight (thread pool) while more data piles up.
        proto.dataReceived(f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode())
        proto.dataReceived(b"NOOP\r\n" * (MAX_BUFFERED // 6 + 10))
        assert transport.producerState == "paused"
        await proto.busy
        assert transport.producerState == "producing"
        assert transport.value().count(b"+OK\r\n") == MAX_BUFFERED // 6 + 10
    finally:
        await close_test_context(ctx)
