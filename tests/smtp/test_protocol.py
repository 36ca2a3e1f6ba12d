"""The Twisted protocol on a StringTransport with a fake clock: timers,
back-pressure while a decision is pending, and disconnects."""

from __future__ import annotations

import dataclasses

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport

from mailserver.smtp.protocol import SMTPProtocol
from tests.smtp.context import all_messages


def connect(ctx, kind="mx"):
    clock = Clock()
    proto = SMTPProtocol(dataclasses.replace(ctx, reactor=clock), kind, "192.0.2.7")
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


async def until_reply(transport: StringTransport, text: bytes, timeout: float = 10) -> bytes:
    """Wait (real reactor: store lookups run in threads) until ``text`` was
    written."""
    deadline = reactor.seconds() + timeout
    while text not in transport.value():
        assert reactor.seconds() < deadline, transport.value()
        await deferLater(reactor, 0.01, lambda: None)
    return transport.value()


@pytest_twisted.ensureDeferred
async def test_greeting_and_command_timeout(ctx) -> None:
    proto, t, clock = connect(ctx)
    assert t.value().startswith(b"220 mx.example.test ESMTP")
    clock.advance(ctx.config.smtp.command_timeout - 1)
    assert not t.disconnecting
    proto.dataReceived(b"NOOP\r\n")  # activity re-arms the timer
    clock.advance(ctx.config.smtp.command_timeout - 1)
    assert not t.disconnecting
    clock.advance(1)
    assert t.value().endswith(b"421 4.4.2 Timeout exceeded, closing connection\r\n")
    assert t.disconnecting


@pytest_twisted.ensureDeferred
async def test_data_timeout_and_nothing_stored(ctx) -> None:
    proto, t, clock = connect(ctx)
    proto.dataReceived(b"EHLO x\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
    await until_reply(t, b"2.1.5")
    proto.dataReceived(b"DATA\r\nSubject: half\r\n\r\npartial")
    await until_reply(t, b"354 ")
    clock.advance(ctx.config.smtp.command_timeout + 1)  # data_timeout is longer
    assert not t.disconnecting
    clock.advance(ctx.config.smtp.data_timeout)
    assert b"421 4.4.2" in t.value() and t.disconnecting
    proto.connectionLost(None)
    assert await all_messages(ctx, "alice@example.test") == []


@pytest_twisted.ensureDeferred
async def test_reading_paused_while_deciding_and_timer_off(ctx) -> None:
    proto, t, clock = connect(ctx)
    proto.dataReceived(b"EHLO x\r\nMAIL FROM:<a@remote.test>\r\n")
    proto.dataReceived(b"RCPT TO:<alice@example.test>\r\nNOOP\r\n")
    # The RCPT lookup runs in a thread: reading is paused, no timer runs.
    assert t.producerState == "paused"
    assert not clock.getDelayedCalls()
    out = await until_reply(t, b"250 2.0.0 OK\r\n")
    assert out.index(b"2.1.5") < out.index(b"250 2.0.0 OK")
    assert t.producerState == "producing"
    assert len(clock.getDelayedCalls()) == 1


@pytest_twisted.ensureDeferred
async def test_disconnect_while_delivering_still_completes_durably(ctx) -> None:
    """A client that drops after the final dot does not cancel the delivery
    in flight (it may retry and duplicate, never lose)."""
    proto, t, clock = connect(ctx)
    proto.dataReceived(b"EHLO x\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
    await until_reply(t, b"2.1.5")
    proto.dataReceived(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
    proto.connectionLost(None)

    async def arrived():
        return len(await all_messages(ctx, "alice@example.test")) == 1

    deadline = reactor.seconds() + 10
    while not await arrived():
        assert reactor.seconds() < deadline
        await deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_submission_offers_starttls_not_auth_in_plaintext(ctx) -> None:
    proto, t, clock = connect(ctx, "submission")
    proto.dataReceived(b"EHLO x\r\nMAIL FROM:<alice@example.test>\r\n")
    out = t.value().decode()
    assert "250-STARTTLS" in out and "AUTH" not in out.split("530")[0]
    assert "530 5.7.0 Authentication required" in out
