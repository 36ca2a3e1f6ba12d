"""Real clients (Python smtplib, raw sockets) against ``services(ctx)``
listening on port 0: MX, submission with STARTTLS, submissions with
implicit TLS, and the negative matrix (relay, size, lines, AUTH, STARTTLS
injection, smuggling, garbage, disconnects, limits)."""

from __future__ import annotations

import smtplib

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.smtp.client import RawClient, tls_client_context
from tests.smtp.context import (
    RunningServer,
    add_user,
    all_messages,
    close_context,
    make_context,
)

MSG = (
    b"From: Sender <sender@remote.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Subject: interop\r\n"
    b"Message-ID: <1@remote.test>\r\n"
    b"\r\n"
    b"Hello Alice.\r\n"
    b".a line starting with a dot\r\n"
    b"\r\n"
    b"Bye\r\n"
)


def strip_trace(stored: bytes) -> bytes:
    """The message as sent: drop our Return-Path and Received fields."""
    assert stored.startswith(b"Return-Path: <")
    rest = stored[stored.index(b"\r\n") + 2 :]
    assert rest.startswith(b"Received: ")
    # Received is folded over continuation lines starting with a tab.
    i = rest.index(b"\r\n")
    while rest[i + 2 : i + 3] == b"\t":
        i = rest.index(b"\r\n", i + 2)
    return rest[i + 2 :]


async def wait_until(predicate, timeout: float = 10.0) -> None:
    """Poll an async predicate with a bounded deadline."""
    deadline = reactor.seconds() + timeout
    while not await predicate():
        if reactor.seconds() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await deferLater(reactor, 0.02, lambda: None)


# -- MX ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_mx_plain_delivery_byte_exact(ctx, server) -> None:
    port = server.port("mx")

    def client():
        with smtplib.SMTP("127.0.0.1", port, local_hostname="mx.remote.test") as s:
            code, _ = s.ehlo()
            assert code == 250
            assert s.has_extn("pipelining") and s.has_extn("chunking")
            assert s.has_extn("starttls") and not s.has_extn("auth")
            return s.sendmail("sender@remote.test", ["alice@example.test", "al@other.test"], MSG)

    refused = await deferToThread(client)
    assert refused == {}
    [stored] = await all_messages(ctx, "alice@example.test")  # alias: one copy
    assert strip_trace(stored) == MSG
    assert stored.startswith(b"Return-Path: <sender@remote.test>\r\nReceived: from mx.remote.test")
    assert b"with ESMTP id" in stored


@pytest_twisted.ensureDeferred
async def test_mx_starttls_delivery(ctx, server) -> None:
    port = server.port("mx")

    def client():
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.starttls(context=tls_client_context())
            s.ehlo()
            assert not s.has_extn("starttls")
            s.sendmail("sender@remote.test", ["bob@example.test"], MSG)

    await deferToThread(client)
    [stored] = await all_messages(ctx, "bob@example.test")
    assert strip_trace(stored) == MSG
    head = stored[: stored.index(b"Subject")].decode()
    assert "with ESMTPS" in head and "using TLSv1" in head and "for <bob@example.test>" in head


@pytest.mark.parametrize(
    "rcpt,code,enhanced",
    [
        ("<victim@remote.test>", 550, "5.7.1"),  # foreign -> foreign
        ("<victim%remote.test@example.test>", 550, "5.1.1"),  # % hack
        ("<@example.test:victim@remote.test>", 550, "5.7.1"),  # source route
        ("<@remote.test:alice@example.test>", 250, "2.1.5"),  # route ignored: local
        ('<"victim@remote.test"@example.test>', 550, "5.1.1"),  # quoted local part
        ("<victim@remote.test@example.test>", 501, "5.1.3"),
        ("<alice@example.test.>", 501, "5.1.3"),  # trailing dot
        ("<alice@example.test.remote.test>", 550, "5.7.1"),
        ("<alice@[127.0.0.1]>", 550, "5.7.1"),  # address literal
        ("<victim!remote.test@example.test>", 550, "5.1.1"),  # bang path
        ("<nobody@example.test>", 550, "5.1.1"),
        ("<ALICE@EXAMPLE.TEST>", 250, "2.1.5"),
        ('<"alice"@example.test>', 250, "2.1.5"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_open_relay_matrix(ctx, server, rcpt, code, enhanced) -> None:
    port = server.port("mx")

    def client():
        c = RawClient(port)
        c.reply()
        c.cmd("EHLO relaytest.example")
        assert c.cmd("MAIL FROM:<spammer@remote.test>").startswith("250")
        r = c.cmd(f"RCPT TO:{rcpt}")
        c.cmd("QUIT")
        c.close()
        return r

    r = await deferToThread(client)
    assert r.startswith(f"{code} {enhanced}"), r


@pytest_twisted.ensureDeferred
async def test_mx_has_no_auth_and_no_relay_even_with_auth_attempt(ctx, server) -> None:
    port = server.port("mx")

    def client():
        c = RawClient(port)
        c.reply()
        c.cmd("EHLO x")
        r1 = c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZXB3")
        return r1

    assert (await deferToThread(client)).startswith("502")


# -- submission ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_submission_starttls_auth_plain_local_and_remote(ctx, server) -> None:
    port = server.port("submission")

    def client():
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.ehlo()
            assert not s.has_extn("auth")  # never offered in plaintext
            s.starttls(context=tls_client_context())
            s.ehlo()
            assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
            s.login("alice@example.test", "alicepw", initial_response_ok=True)
            s.mail("al@other.test", ["RET=HDRS", "ENVID=abc"])
            assert s.rcpt("bob@example.test")[0] == 250
            assert s.rcpt("friend@remote.test", ["NOTIFY=FAILURE,DELAY"])[0] == 250
            code, text = s.data(MSG)
            return code, text

    code, text = await deferToThread(client)
    assert code == 250
    [stored] = await all_messages(ctx, "bob@example.test")
    assert strip_trace(stored) == MSG
    assert b"with ESMTPSA" in stored and b"Return-Path: <al@other.test>" in stored
    [entry] = await ctx.delivery.queue.list()
    assert entry.recipients == ("friend@remote.test",) and entry.sender == "al@other.test"
    assert entry.dsn["ret"] == "HDRS" and entry.dsn["envid"] == "abc"
    assert entry.dsn["recipients"]["friend@remote.test"]["notify"] == ["FAILURE", "DELAY"]
    body = await ctx.delivery.queue.body(entry)
    assert body.endswith(MSG) and body.startswith(b"Received: ")


@pytest_twisted.ensureDeferred
async def test_submissions_implicit_tls_auth_login(ctx, server) -> None:
    port = server.port("submissions")

    def client():
        with smtplib.SMTP_SSL("127.0.0.1", port, context=tls_client_context()) as s:
            s.ehlo()
            assert not s.has_extn("starttls")
            s.login("alice@example.test", "alicepw")  # smtplib picks... force LOGIN below
            return s.sendmail("alice@example.test", ["bob@example.test"], MSG)

    assert await deferToThread(client) == {}

    def login_mech():
        c = RawClient(port, implicit_tls=True)
        c.reply()
        c.cmd("EHLO x")
        assert c.cmd("AUTH LOGIN").startswith("334 VXNlcm5hbWU6")
        assert c.cmd("Ym9iQGV4YW1wbGUudGVzdA==").startswith("334 UGFzc3dvcmQ6")
        return c.cmd("Ym9icHc=")

    assert (await deferToThread(login_mech)).startswith("235 2.7.0")
    assert len(await all_messages(ctx, "bob@example.test")) == 1


@pytest_twisted.ensureDeferred
async def test_submission_requires_auth_and_owned_sender(ctx, server) -> None:
    port = server.port("submissions")

    def client():
        c = RawClient(port, implicit_tls=True)
        c.reply()
        c.cmd("EHLO x")
        out = [c.cmd("MAIL FROM:<alice@example.test>")]
        out.append(c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw=="))  # wrong pw
        out.append(c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZXB3"))
        out.append(c.cmd("MAIL FROM:<bob@example.test>"))
        out.append(c.cmd("MAIL FROM:<>"))
        out.append(c.cmd("MAIL FROM:<alice@example.test>"))
        return out

    out = await deferToThread(client)
    assert [o[:9] for o in out] == [
        "530 5.7.0",
        "535 5.7.8",
        "235 2.7.0",
        "553 5.7.1",
        "553 5.7.1",
        "250 2.1.0",
    ]


@pytest_twisted.ensureDeferred
async def test_auth_before_tls_and_bad_base64(ctx, server) -> None:
    port = server.port("submission")

    def client():
        c = RawClient(port)
        c.reply()
        ehlo = c.cmd("EHLO x")
        out = [c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZXB3")]
        out.append(c.cmd("STARTTLS"))
        c.starttls()
        c.cmd("EHLO x")
        out.append(c.cmd("AUTH PLAIN ***notbase64***"))
        out.append(c.cmd("AUTH LOGIN"))
        out.append(c.cmd("*"))
        return ehlo, out

    ehlo, out = await deferToThread(client)
    assert "AUTH" not in ehlo
    assert [o[:10] for o in out] == [
        "538 5.7.11",
        "220 2.0.0 ",
        "501 5.5.2 ",
        "334 VXNlcm",
        "501 5.0.0 ",
    ]


@pytest_twisted.ensureDeferred
async def test_starttls_command_injection_discarded(ctx, server) -> None:
    port = server.port("mx")

    def client():
        c = RawClient(port)
        c.reply()
        c.cmd("EHLO x")
        c.send(b"STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
        r = c.reply()
        c.starttls()
        c.cmd("EHLO x")
        # Had the injected MAIL run, this RCPT would be accepted.
        return r, c.cmd("RCPT TO:<alice@example.test>")

    r, rcpt = await deferToThread(client)
    assert r.startswith("220")
    assert rcpt.startswith("503 5.5.1")


# -- raw protocol features -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pipelining_one_write(ctx, server) -> None:
    port = server.port("mx")

    def client():
        c = RawClient(port)
        c.reply()
        c.cmd("EHLO x")
        c.send(
            b"MAIL FROM:<s@remote.test>\r\nRCPT TO:<nobody@example.test>\r\n"
            b"RCPT TO:<alice@example.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\n"
        )
        rs = c.replies(5)
        c.send(MSG.replace(b"\r\n.", b"\r\n..") + b".\r\nQUIT\r\n")
        rs += c.replies(2)
        return rs

    rs = await deferToThread(client)
    assert [r[:9] for r in rs] == [
        "250 2.1.0",
        "550 5.1.1",
        "250 2.1.5",
        "550 5.7.1",
        "354 Start",
        "250 2.0.0",
        "221 2.0.0",
    ]
    [stored] = await all_messages(ctx, "alice@example.test")
    assert strip_trace(stored) == MSG


@pytest_twisted.ensureDeferred
async def test_bdat_raw(ctx, server) -> None:
    port = server.port("mx")
    part1, part2 = MSG[:50], MSG[50:]

    def client():
        c = RawClient(port)
        c.reply()
        c.cmd("EHLO x")
        c.send(
            b"MAIL FROM:<s@remote.test> BODY=8BITMIME\r\nRCPT TO:<alice@example.test>\r\n"
            + f"BDAT {len(part1)}\r\n".encode()
            + part1
            + f"BDAT {len(part2)} LAST\r\n".encode()
            + part2
        )
        return c.replies(4)

    rs = await deferToThread(client)
    assert [r[:3] for r in rs] == ["250", "250", "250", "250"]
    assert rs[2] == f"250 2.0.0 {len(part1)} octets received"
    [stored] = await all_messages(ctx, "alice@example.test")
    assert strip_trace(stored) == MSG


SMUGGLE = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r"]


@pytest.mark.parametrize("variant", SMUGGLE)
@pytest_twisted.ensureDeferred
async def test_smtp_smuggling(ctx, server, variant) -> None:
    port = server.port("mx")

    def client():
        c = RawClient(port)
        c.reply()
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<s@remote.test>")
        c.cmd("RCPT TO:<alice@example.test>")
        c.cmd("DATA")
        c.send(
            b"Subject: legit\r\n\r\nlegit"
            + variant
            + b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n"
        )
        r = c.reply()
        n = c.cmd("NOOP")
        return r, n

    r, n = await deferToThread(client)
    assert r.startswith("550 5.6.11")
    assert n.startswith("250")  # nothing pipelined from the message ran
    assert await all_messages(ctx, "alice@example.test") == []
    assert await all_messages(ctx, "bob@example.test") == []


@pytest_twisted.ensureDeferred
async def test_garbage_bytes_and_error_limit(ctx, server) -> None:
    port = server.port("mx")

    def client():
        c = RawClient(port)
        c.reply()
        c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n")  # TLS hello junk
        out = [c.reply()]
        c.send(b"\xff\xfb\x01\xff\xfd\x03\r\n")  # telnet negotiation
        out.append(c.reply())
        for _ in range(20):
            try:
                c.send(b"GARBAGE\r\n")
            except OSError:
                break
        return out, c.closed_by_server(), c.buf

    out, closed, rest = await deferToThread(client)
    assert out[0][:3] in ("500", "501") and out[1][:3] in ("500", "501")
    assert closed
    assert b"421 4.7.0 Too many errors" in rest


@pytest_twisted.ensureDeferred
async def test_disconnect_mid_data_stores_nothing(ctx, server) -> None:
    port = server.port("mx")

    def client():
        c = RawClient(port)
        c.reply()
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<s@remote.test>")
        c.cmd("RCPT TO:<alice@example.test>")
        c.cmd("DATA")
        c.send(MSG)  # no terminating dot
        c.close()

    await deferToThread(client)

    async def gone():
        return not ctx.connections

    await wait_until(gone)
    assert await all_messages(ctx, "alice@example.test") == []


@pytest_twisted.ensureDeferred
async def test_line_too_long_in_commands_and_data(ctx, server) -> None:
    port = server.port("mx")

    def client():
        c = RawClient(port)
        c.reply()
        c.cmd("EHLO x")
        out = [c.cmd(b"NOOP " + b"x" * 2000)]
        c.cmd("MAIL FROM:<s@remote.test>")
        c.cmd("RCPT TO:<alice@example.test>")
        c.cmd("DATA")
        c.send(b"Subject: long\r\n\r\n" + b"y" * 1200 + b"\r\n.\r\n")
        out.append(c.reply())
        return out

    out = await deferToThread(client)
    assert out[0].startswith("500 5.5.2") and out[1].startswith("500 5.5.2")
    assert await all_messages(ctx, "alice@example.test") == []


# -- limits with their own configuration -----------------------------------


@pytest_twisted.async_yield_fixture
async def small(tmp_path):
    c = await make_context(
        tmp_path,
        limits={
            "max_message_size": 2048,
            "max_recipients": 2,
            "max_connections_per_ip": 2,
        },
        smtp={"command_timeout": 1, "max_errors": 3},
    )
    await add_user(c, "alice@example.test", "alicepw")
    await add_user(c, "bob@example.test", "bobpw")
    await add_user(c, "carol@example.test", "carolpw")
    s = RunningServer(c)
    yield c, s
    await s.stop()
    await close_context(c)


@pytest_twisted.ensureDeferred
async def test_oversize_552_before_storing(small) -> None:
    ctx, server = small
    port = server.port("mx")

    def client():
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.ehlo()
            assert s.does_esmtp and s.esmtp_features["size"] == "2048"
            try:
                s.sendmail("s@remote.test", ["alice@example.test"], MSG + b"x" * 4000 + b"\r\n")
            except smtplib.SMTPSenderRefused as e:
                at_mail = (e.smtp_code, e.smtp_error)
            # Without SIZE=: the data exceeds, 552 after the end.
            c = RawClient(port)
            c.reply()
            c.cmd("EHLO x")
            c.cmd("MAIL FROM:<s@remote.test>")
            c.cmd("RCPT TO:<alice@example.test>")
            c.cmd("DATA")
            c.send(b"Subject: big\r\n\r\n" + (b"z" * 70 + b"\r\n") * 100 + b".\r\n")
            at_data = c.reply()
            return at_mail, at_data

    at_mail, at_data = await deferToThread(client)
    assert at_mail[0] == 552 and at_mail[1].startswith(b"5.3.4")
    assert at_data.startswith("552 5.3.4")
    assert await all_messages(ctx, "alice@example.test") == []


@pytest_twisted.ensureDeferred
async def test_max_recipients_452(small) -> None:
    ctx, server = small
    port = server.port("mx")

    def client():
        c = RawClient(port)
        c.reply()
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<s@remote.test>")
        return [c.cmd(f"RCPT TO:<{u}@example.test>") for u in ("alice", "bob", "carol")]

    rs = await deferToThread(client)
    assert [r[:9] for r in rs] == ["250 2.1.5", "250 2.1.5", "452 4.5.3"]


@pytest_twisted.ensureDeferred
async def test_connection_limit_per_ip_421(small) -> None:
    ctx, server = small
    port = server.port("mx")

    def client():
        a, b = RawClient(port), RawClient(port)
        a.reply(), b.reply()
        c = RawClient(port)
        refused = c.reply()
        closed = c.closed_by_server()
        a.close()
        return refused, closed

    refused, closed = await deferToThread(client)
    assert refused.startswith("421 4.7.0") and closed


@pytest_twisted.ensureDeferred
async def test_command_timeout_421(small) -> None:
    ctx, server = small
    port = server.port("mx")

    def client():
        c = RawClient(port)
        c.reply()
        c.cmd("EHLO x")
        return c.reply(), c.closed_by_server()  # say nothing: the server times out

    r, closed = await deferToThread(client)
    assert r.startswith("421 4.4.2") and closed


@pytest_twisted.ensureDeferred
async def test_postmaster_and_full_mailbox_at_rcpt(ctx, server) -> None:
    await add_user(ctx, "postmaster@example.test", "pmpw")
    await add_user(ctx, "full@example.test", "fpw", quota_bytes=1000)
    port = server.port("mx")

    def client():
        c = RawClient(port)
        c.reply()
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<s@remote.test> SIZE=5000")
        out = [c.cmd("RCPT TO:<Postmaster>"), c.cmd("RCPT TO:<full@example.test>")]
        out.append(c.cmd("DATA"))
        c.send(MSG.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        out.append(c.reply())
        return out

    out = await deferToThread(client)
    assert [o[:9] for o in out] == ["250 2.1.5", "452 4.2.2", "354 Start", "250 2.0.0"]
    [stored] = await all_messages(ctx, "postmaster@example.test")
    assert strip_trace(stored) == MSG
    assert await all_messages(ctx, "full@example.test") == []


@pytest_twisted.ensureDeferred
async def test_stopping_the_listener_says_421_to_idle_sessions(ctx) -> None:
    server = RunningServer(ctx)
    port = server.port("mx")

    def connect():
        c = RawClient(port)
        c.reply()
        c.cmd("EHLO x")
        return c

    c = await deferToThread(connect)
    await server.stop()

    def read():
        return c.reply(), c.closed_by_server()

    r, closed = await deferToThread(read)
    assert r.startswith("421 4.3.2") and closed
