"""IMAP session state machine on a fake connection: greeting, capabilities,
authentication, STARTTLS, state checks, limits, autologout."""

from __future__ import annotations

import base64

import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport

from mailserver.imap.commands_base import State
from mailserver.imap.protocol import ImapProtocol
from mailserver.imap.session import REGISTRY
from tests.imap.session_support import (
    FakeIO,
    add_user,
    deliver,
    make_unit_context,
    message,
    open_session,
    status_of,
)


@pytest_twisted.async_yield_fixture
async def ctx(tmp_path):
    c = await make_unit_context(tmp_path)
    await add_user(c)
    yield c
    await c.storage.close()


@pytest_twisted.async_yield_fixture
async def strict_ctx(tmp_path):
    """Plaintext authentication not allowed without TLS (the default)."""
    c = await make_unit_context(
        tmp_path,
        accounts={"allow_plaintext_auth": False, "max_failures_per_account": 2},
    )
    await add_user(c)
    yield c
    await c.storage.close()


def test_registry_is_explicit():
    for name in ("LOGIN", "SELECT", "UID FETCH", "MOVE", "IDLE", "AUTHENTICATE", "STARTTLS"):
        assert name in REGISTRY
    assert REGISTRY["LOGIN"].states == frozenset({State.NOT_AUTHENTICATED})
    assert State.SELECTED in REGISTRY["FETCH"].states
    assert State.AUTHENTICATED not in REGISTRY["FETCH"].states
    assert not REGISTRY["FETCH"].expunge_ok and not REGISTRY["UID STORE"].expunge_ok
    assert REGISTRY["NOOP"].expunge_ok


@pytest_twisted.ensureDeferred
async def test_greeting_has_capabilities(ctx):
    io = FakeIO()
    from mailserver.imap.session import ImapSession

    s = ImapSession(ctx, io)
    s.start()
    assert io.out.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert io.out.endswith(b"\r\n")


@pytest_twisted.ensureDeferred
async def test_plaintext_login_refused_before_tls(strict_ctx):
    c = open_session(strict_ctx, tls_available=True)
    out = await c.cmd("CAPABILITY")
    assert b"STARTTLS" in out and b"LOGINDISABLED" in out and b"AUTH=PLAIN" not in out
    out = await c.cmd("LOGIN alice@example.test secret")
    assert b"NO [PRIVACYREQUIRED]" in out
    out = await c.cmd("AUTHENTICATE PLAIN " + base64.b64encode(b"\0a\0b").decode())
    assert b"NO [PRIVACYREQUIRED]" in out
    assert c.session.state is State.NOT_AUTHENTICATED


@pytest_twisted.ensureDeferred
async def test_starttls_discards_pipelined_plaintext(strict_ctx):
    c = open_session(strict_ctx, tls_available=True)
    c.send(b"a STARTTLS\r\nb LOGIN alice@example.test secret\r\n")
    out = await c.tagged("a")
    assert out == b"a OK Begin TLS negotiation now\r\n"
    assert c.io.tls_started and c.session.secure
    await c.session.wait_idle()
    assert c.take() == b""  # "b LOGIN" was dropped, never answered
    out = await c.cmd("CAPABILITY")
    assert b"AUTH=PLAIN" in out and b"STARTTLS" not in out and b"LOGINDISABLED" not in out
    await c.login()
    assert c.session.state is State.AUTHENTICATED
    out = await c.cmd("STARTTLS")
    assert status_of(out) == b"BAD"


@pytest_twisted.ensureDeferred
async def test_starttls_twice_and_without_tls(ctx):
    c = open_session(ctx, tls_available=False)
    out = await c.cmd("STARTTLS")
    assert b"NO [UNAVAILABLE]" in out
    c = open_session(ctx, secure=True, tls_available=False)
    out = await c.cmd("STARTTLS")
    assert status_of(out) == b"BAD"


@pytest_twisted.ensureDeferred
async def test_login_ok_and_failures(ctx):
    c = open_session(ctx)
    out = await c.cmd("LOGIN alice@example.test wrong")
    assert b"NO [AUTHENTICATIONFAILED]" in out
    out = await c.cmd('LOGIN "ALICE@example.test" {6+}\r\nsecret')
    assert b"OK [CAPABILITY IMAP4rev1" in out and b"UIDPLUS" in out
    assert c.session.state is State.AUTHENTICATED
    assert c.session.account == "alice@example.test"
    out = await c.cmd("LOGIN alice@example.test secret")
    assert status_of(out) == b"BAD"  # not valid once authenticated


@pytest_twisted.ensureDeferred
async def test_login_throttled_gives_unavailable(tmp_path):
    ctx = await make_unit_context(tmp_path, accounts={"max_failures_per_account": 2})
    try:
        await add_user(ctx)
        c = open_session(ctx)
        for _ in range(2):
            out = await c.cmd("LOGIN alice@example.test nope")
            assert b"[AUTHENTICATIONFAILED]" in out
        out = await c.cmd("LOGIN alice@example.test secret")
        assert b"NO [UNAVAILABLE]" in out
        assert c.session.state is State.NOT_AUTHENTICATED
    finally:
        await ctx.storage.close()


@pytest_twisted.ensureDeferred
async def test_authenticate_plain_sasl_ir(ctx):
    c = open_session(ctx)
    ir = base64.b64encode(b"\0alice@example.test\0secret").decode()
    out = await c.cmd(f"AUTHENTICATE PLAIN {ir}")
    assert b"OK [CAPABILITY" in out
    assert c.session.state is State.AUTHENTICATED


@pytest_twisted.ensureDeferred
async def test_authenticate_plain_with_continuation(ctx):
    c = open_session(ctx)
    c.send(b"a1 AUTHENTICATE PLAIN\r\n")
    assert await c.wait_for(rb"^\+ \r\n") == b"+ \r\n"
    # answer in two fragments
    ir = base64.b64encode(b"alice@example.test\0alice@example.test\0secret")
    c.send(ir[:7])
    c.send(ir[7:] + b"\r\n")
    out = await c.tagged("a1")
    assert out.startswith(b"a1 OK")


@pytest_twisted.ensureDeferred
async def test_authenticate_cancel_bad_and_wrong(ctx):
    c = open_session(ctx)
    c.send(b"a1 AUTHENTICATE PLAIN\r\n")
    await c.wait_for(rb"^\+ ")
    c.send(b"*\r\n")
    assert b"a1 BAD" in await c.tagged("a1")
    out = await c.cmd("AUTHENTICATE PLAIN !!!notbase64")
    assert status_of(out) == b"BAD"
    out = await c.cmd("AUTHENTICATE PLAIN " + base64.b64encode(b"\0alice@example.test\0x").decode())
    assert b"NO [AUTHENTICATIONFAILED]" in out
    ir = base64.b64encode(b"bob\0alice@example.test\0secret").decode()
    out = await c.cmd(f"AUTHENTICATE PLAIN {ir}")
    assert b"NO [AUTHORIZATIONFAILED]" in out
    out = await c.cmd("AUTHENTICATE CRAM-MD5")
    assert b"NO [CANNOT]" in out
    out = await c.cmd("AUTHENTICATE PLAIN =")
    assert b"NO [AUTHENTICATIONFAILED]" in out


@pytest_twisted.ensureDeferred
async def test_state_checks_and_unknown_commands(ctx):
    c = open_session(ctx)
    for cmd in ("SELECT INBOX", "FETCH 1 FLAGS", 'LIST "" *', "ENABLE IDLE", "UNSELECT"):
        out = await c.cmd(cmd)
        assert status_of(out) == b"BAD", out
    out = await c.cmd("FROBNICATE")
    assert b"BAD [CLIENTBUG] Unknown command" in out
    await c.login()
    for cmd in ("FETCH 1 FLAGS", "STORE 1 FLAGS (\\Seen)", "EXPUNGE", "CLOSE", "CHECK"):
        out = await c.cmd(cmd)
        assert status_of(out) == b"BAD", out
    out = await c.cmd("NOOP extra")
    assert status_of(out) == b"BAD"
    # syntax errors are BAD and the connection stays usable
    out = await c.cmd('SELECT "unterminated')
    assert status_of(out) == b"BAD"
    c.send(b"\r\n")
    assert b"* BAD" in await c.wait_for(rb"^\* BAD.*\r\n")
    out = await c.cmd("NOOP")
    assert status_of(out) == b"OK"


@pytest_twisted.ensureDeferred
async def test_line_too_long_is_bad_not_fatal(tmp_path):
    ctx = await make_unit_context(tmp_path, limits={"max_line_length": 1000})
    try:
        c = open_session(ctx)
        out = await c.cmd("NOOP " + "x" * 5000)
        assert b"BAD" in out and b"too long" in out
        assert not c.io.closed
        out = await c.cmd("NOOP")
        assert status_of(out) == b"OK"
    finally:
        await ctx.storage.close()


@pytest_twisted.ensureDeferred
async def test_capability_noop_logout_id_enable_namespace(ctx):
    c = open_session(ctx)
    out = await c.cmd('ID ("name" "test" "version" "1")')
    assert b'* ID ("name" "mailserver"' in out
    out = await c.cmd('ID ("name")')
    assert status_of(out) == b"BAD"
    await c.login()
    out = await c.cmd("NAMESPACE")
    assert b'* NAMESPACE (("" "/")) NIL NIL\r\n' in out
    out = await c.cmd("ENABLE CONDSTORE X-UNKNOWN")
    assert b"* ENABLED\r\n" in out and status_of(out) == b"OK"
    out = await c.cmd("LOGOUT")
    assert out.startswith(b"* BYE ") and b" OK " in out
    await c.io.wait(lambda: c.io.closed, "close after LOGOUT")
    assert c.session.state is State.LOGOUT


@pytest_twisted.ensureDeferred
async def test_autologout_says_bye_and_closes(ctx):
    c = open_session(ctx)
    await c.login()
    c.session.autologout()
    assert c.take().startswith(b"* BYE")
    assert c.io.closed


@pytest_twisted.ensureDeferred
async def test_protocol_timer_reset_per_command_and_autologout(ctx):
    clock = task.Clock()
    proto = ImapProtocol(ctx, implicit_tls=False, clock=clock)
    tr = StringTransport()
    proto.makeConnection(tr)
    assert tr.value().startswith(b"* OK [CAPABILITY")
    limit = ctx.config.imap.autologout
    clock.advance(limit - 10)
    proto.dataReceived(b"a NOOP\r\n")
    await proto.session.wait_idle()
    clock.advance(limit - 10)  # timer was reset by the command
    assert not tr.disconnecting
    clock.advance(20)
    assert b"* BYE Autologout" in tr.value()
    assert tr.disconnecting
    proto.connectionLost(None)


@pytest_twisted.ensureDeferred
async def test_connection_lost_during_authenticate(ctx):
    c = open_session(ctx)
    c.send(b"a1 AUTHENTICATE PLAIN\r\n")
    await c.wait_for(rb"^\+ ")
    c.session.connection_lost()
    await c.session.wait_idle()
    assert c.session.state is State.LOGOUT


@pytest_twisted.ensureDeferred
async def test_fetch_waits_while_transport_buffer_is_full(ctx):
    for i in range(3):
        await deliver(ctx, "alice@example.test", message(f"big {i}", "x" * 5000 + "\r\n"))
    proto = ImapProtocol(ctx, implicit_tls=False, clock=task.Clock())
    tr = StringTransport()
    proto.makeConnection(tr)
    proto.dataReceived(b"a LOGIN alice@example.test secret\r\nb SELECT INBOX\r\n")
    await proto.session.wait_idle()
    assert b"b OK" in tr.value()
    tr.clear()
    gate = tr.producer
    blocked: defer.Deferred[None] = defer.Deferred()
    orig_wait = gate.wait

    def wait():
        d = orig_wait()
        if not blocked.called:
            blocked.callback(None)
        return d

    gate.wait = wait
    gate.pauseProducing()  # the client is not reading
    proto.dataReceived(b"c FETCH 1:3 BODY.PEEK[]\r\n")
    waited = proto.session.wait_idle()
    await blocked  # the FETCH now waits for the transport
    assert b"* 1 FETCH" in tr.value() and b"* 2 FETCH" not in tr.value()
    assert not waited.called
    tr.producer.resumeProducing()
    await waited
    out = tr.value()
    assert out.index(b"* 1 FETCH") < out.index(b"* 2 FETCH") < out.index(b"* 3 FETCH")
    assert b"c OK" in out
    proto.connectionLost(None)


@pytest_twisted.ensureDeferred
async def test_big_literals_refused_before_login(ctx):
    c = open_session(ctx)
    c.send(b"a1 LOGIN {100000}\r\n")
    out = await c.tagged("a1")
    assert b"a1 BAD [TOOBIG]" in out and b"+ " not in out
    c.send(b"a2 APPEND INBOX {100000}\r\n")
    out = await c.tagged("a2")
    assert b"a2 BAD [TOOBIG]" in out  # not NO: APPEND is not valid here anyway
    await c.login()
    c.send(b"a3 APPEND INBOX {100000}\r\n")
    assert await c.wait_for(rb"^\+ .*\r\n")  # after login the message limit applies
