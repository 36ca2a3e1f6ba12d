"""The POP3 server over real sockets with Python's ``poplib``: every command
and error path, STLS and implicit TLS, the maildrop lock, and agreement with
the IMAP view of the INBOX (UIDs, \\Seen, expunges)."""

from __future__ import annotations

import base64
import poplib
import socket
import ssl

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from mailserver.pop3.core import crlf_size
from mailserver.store.interfaces import FlagMode
from tests.pop3.conftest import add_user, deliver, make_context, start_server, stop_server

USER, PASSWORD = "alice@example.test", "secret"


def _msg(n: int, body: str = "hello") -> bytes:
    return (
        f"From: bob@example.test\r\nTo: {USER}\r\nSubject: message {n}\r\n"
        f"Message-ID: <m{n}@example.test>\r\n\r\n{body} {n}\r\n.starts with a dot\r\n"
    ).encode()


def client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(port: int) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", port, timeout=10)


def login(port: int) -> poplib.POP3:
    p = connect(port)
    p.user(USER)
    p.pass_(PASSWORD)
    return p


async def fill(server, n: int = 3) -> list:
    return [await deliver(server.ctx, USER, _msg(i)) for i in range(1, n + 1)]


@pytest_twisted.ensureDeferred
async def test_greeting_and_capa(pop3_server) -> None:
    def session():
        p = connect(pop3_server.port)
        try:
            return p.getwelcome(), p.capa()
        finally:
            p.quit()

    welcome, caps = await deferToThread(session)
    assert welcome.startswith(b"+OK")
    for cap in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS"):
        assert cap in caps
    assert caps["SASL"] == ["PLAIN"]
    assert caps["IMPLEMENTATION"] == ["mailserver"]


@pytest_twisted.ensureDeferred
async def test_full_session_every_command(pop3_server) -> None:
    records = await fill(pop3_server)
    raws = [_msg(i) for i in (1, 2, 3)]

    def session():
        p = login(pop3_server.port)
        out = {
            "stat": p.stat(),
            "list": p.list(),
            "list2": p.list(2),
            "uidl": p.uidl(),
            "uidl1": p.uidl(1),
            "retr": p.retr(1),
            "top": p.top(2, 0),
            "noop": p.noop(),
            "dele": p.dele(1),
        }
        for cmd in ("retr", "list", "uidl", "dele"):
            try:
                getattr(p, cmd)(1)
            except poplib.error_proto as e:
                out[f"{cmd}_deleted"] = e.args[0]
        out["rset"] = p.rset()
        out["stat2"] = p.stat()
        p.dele(2)
        out["quit"] = p.quit()
        return out

    out = await deferToThread(session)
    sizes = [len(r) for r in raws]
    assert out["stat"] == (3, sum(sizes))
    assert out["list"][1] == [b"%d %d" % (i + 1, s) for i, s in enumerate(sizes)]
    assert out["list2"] == b"+OK 2 %d" % sizes[1]
    inbox = await pop3_server.inbox_id()
    v = (await pop3_server.ctx.storage.mailboxes.get_mailbox_by_id(inbox)).uidvalidity
    assert out["uidl"][1] == [b"%d %d.%d" % (i + 1, v, r.uid) for i, r in enumerate(records)]
    assert out["uidl1"] == b"+OK 1 %d.%d" % (v, records[0].uid)
    resp, lines, octets = out["retr"]
    assert resp == b"+OK %d octets" % sizes[0]
    assert b"\r\n".join(lines) + b"\r\n" == raws[0]  # poplib un-stuffs the dot line
    assert octets == sizes[0]  # what poplib counted after un-stuffing
    assert out["top"][1] == raws[1].split(b"\r\n\r\n")[0].split(b"\r\n") + [b""]
    assert out["noop"] == b"+OK"
    for cmd in ("retr", "list", "uidl", "dele"):
        assert out[f"{cmd}_deleted"] == b"-ERR message 1 already deleted"
    assert out["rset"].startswith(b"+OK maildrop has 3 messages")
    assert out["stat2"] == (3, sum(sizes))
    assert out["quit"].startswith(b"+OK") and b"(2 messages left)" in out["quit"]
    # Only message 2 is gone; RETR set \Seen on message 1, TOP did not on 2.
    left = await pop3_server.inbox()
    assert [r.uid for r in left] == [records[0].uid, records[2].uid]
    assert "\\Seen" in left[0].flags and "\\Seen" not in left[1].flags


@pytest_twisted.ensureDeferred
async def test_error_paths(pop3_server) -> None:
    await fill(pop3_server, 2)

    def session():
        errs = []
        p = connect(pop3_server.port)
        for cmd in ("STAT", "LIST", "RETR 1", "NOOP", "PASS secret", "BOGUS", "X" * 300):
            try:
                p._shortcmd(cmd)
            except poplib.error_proto as e:
                errs.append(e.args[0])
        try:
            p.user(USER)
            p.pass_("wrong")
        except poplib.error_proto as e:
            errs.append(e.args[0])
        p.quit()
        p = login(pop3_server.port)
        for cmd in ("RETR 9", "TOP 1", "TOP 1 x", "LIST a", "DELE 0", "USER x", "STLS x"):
            try:
                p._shortcmd(cmd)
            except poplib.error_proto as e:
                errs.append(e.args[0])
        p.quit()
        return errs

    errs = await deferToThread(session)
    assert errs == [
        b"-ERR STAT not valid in the AUTHORIZATION state",
        b"-ERR LIST not valid in the AUTHORIZATION state",
        b"-ERR RETR not valid in the AUTHORIZATION state",
        b"-ERR NOOP not valid in the AUTHORIZATION state",
        b"-ERR USER first",
        b"-ERR unknown command",
        b"-ERR line too long",
        b"-ERR [AUTH] authentication failed",
        b"-ERR no such message, only 2 messages in maildrop",
        b"-ERR wrong number of arguments",
        b"-ERR invalid line count",
        b"-ERR invalid message number",
        b"-ERR no such message, only 2 messages in maildrop",
        b"-ERR USER not valid in the TRANSACTION state",
        b"-ERR STLS not valid in the TRANSACTION state",
    ]


@pytest_twisted.ensureDeferred
async def test_auth_plain(pop3_server) -> None:
    await fill(pop3_server, 1)
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()

    def session():
        p = connect(pop3_server.port)
        first = p._shortcmd("AUTH PLAIN " + token)
        stat = p.stat()
        p.quit()
        q = connect(pop3_server.port)
        cont = q._shortcmd("AUTH PLAIN")
        try:
            q._shortcmd("*")
        except poplib.error_proto as e:
            cancelled = e.args[0]
        q._shortcmd("AUTH PLAIN")
        second = q._shortcmd(token)
        q.quit()
        return first, stat, cont, cancelled, second

    first, stat, cont, cancelled, second = await deferToThread(session)
    assert first.startswith(b"+OK maildrop has 1 messages")
    assert stat[0] == 1
    assert cont == b"+ "
    assert cancelled == b"-ERR authentication cancelled"
    assert second.startswith(b"+OK maildrop has 1 messages")


@pytest_twisted.ensureDeferred
async def test_uidl_stable_across_sessions_and_matches_imap(pop3_server) -> None:
    records = await fill(pop3_server, 3)

    def uidl():
        p = login(pop3_server.port)
        try:
            return p.uidl()[1]
        finally:
            p.quit()

    first = await deferToThread(uidl)
    # Expunge message 2 "from IMAP" and add one: the others keep their ids.
    inbox = await pop3_server.inbox_id()
    await pop3_server.ctx.storage.messages.expunge(inbox, [records[1].uid])
    new = await deliver(pop3_server.ctx, USER, _msg(4))
    second = await deferToThread(uidl)
    ids1 = [line.split()[1] for line in first]
    ids2 = [line.split()[1] for line in second]
    v = (await pop3_server.ctx.storage.mailboxes.get_mailbox_by_id(inbox)).uidvalidity
    assert ids1 == [f"{v}.{r.uid}".encode() for r in records]
    assert ids2 == [ids1[0], ids1[2], f"{v}.{new.uid}".encode()]


@pytest_twisted.ensureDeferred
async def test_maildrop_lock_in_use_and_released_on_drop(pop3_server) -> None:
    records = await fill(pop3_server, 2)

    def first_session():
        p = login(pop3_server.port)
        p.dele(1)
        p.dele(2)
        try:
            q = connect(pop3_server.port)
            q.user(USER)
            q.pass_(PASSWORD)
        except poplib.error_proto as e:
            locked = e.args[0]
        q.quit()
        # Drop the connection without QUIT: nothing may be deleted.
        p.sock.close()
        return locked

    locked = await deferToThread(first_session)
    assert locked == b"-ERR [IN-USE] maildrop already locked by another session"
    await pop3_server.sessions_finished()
    assert [r.uid for r in await pop3_server.inbox()] == [r.uid for r in records]

    def second_session():
        p = login(pop3_server.port)
        try:
            return p.stat()
        finally:
            p.quit()

    assert (await deferToThread(second_session))[0] == 2


@pytest_twisted.ensureDeferred
async def test_imap_sees_pop3_deletions_as_expunges(pop3_server) -> None:
    records = await fill(pop3_server, 3)
    storage = pop3_server.ctx.storage
    inbox = await pop3_server.inbox_id()
    before = (await storage.mailboxes.get_mailbox_by_id(inbox)).highestmodseq
    notified = []
    unsubscribe = storage.notifier.subscribe(inbox, notified.append)

    def session():
        p = login(pop3_server.port)
        p.dele(1)
        p.dele(3)
        return p.quit()

    try:
        assert (await deferToThread(session)).startswith(b"+OK")
    finally:
        unsubscribe()
    changes = await storage.messages.changes_since(inbox, before)
    assert changes.expunged == (records[0].uid, records[2].uid)
    assert notified  # IDLEing IMAP sessions are told
    assert [r.uid for r in await pop3_server.inbox()] == [records[1].uid]


@pytest_twisted.ensureDeferred
async def test_message_expunged_by_imap_during_session(pop3_server) -> None:
    records = await fill(pop3_server, 2)
    storage = pop3_server.ctx.storage
    inbox = await pop3_server.inbox_id()
    p = await deferToThread(login, pop3_server.port)
    await storage.messages.expunge(inbox, [records[0].uid])

    def rest():
        p.dele(1)
        return p.retr(2)[0], p.quit()

    retr, quit_ = await deferToThread(rest)
    assert retr.startswith(b"+OK")
    assert quit_.startswith(b"+OK")
    assert [r.uid for r in await pop3_server.inbox()] == [records[1].uid]


@pytest_twisted.ensureDeferred
async def test_bare_lf_message_is_sent_with_crlf(pop3_server) -> None:
    raw = b"Subject: lf\n\nline one\n.dot line\nlast"
    await deliver(pop3_server.ctx, USER, raw)

    def session():
        p = login(pop3_server.port)
        try:
            return p.retr(1), p.list(1)
        finally:
            p.quit()

    (resp, lines, _), _ = await deferToThread(session)
    sent = b"Subject: lf\r\n\r\nline one\r\n.dot line\r\nlast\r\n"
    assert resp == b"+OK %d octets" % len(sent)
    assert b"\r\n".join(lines) + b"\r\n" == sent

    def list_again():
        p = login(pop3_server.port)
        try:
            return p.list(1), p.stat()
        finally:
            p.quit()

    # Once the body has been read, LIST and STAT announce the sent size.
    listed, stat = await deferToThread(list_again)
    assert listed == b"+OK 1 %d" % crlf_size(raw)
    assert stat == (1, len(sent))


@pytest_twisted.ensureDeferred
async def test_plaintext_refused_before_stls_then_allowed(pop3_tls_server) -> None:
    await fill(pop3_tls_server, 1)

    def session():
        p = connect(pop3_tls_server.port)
        caps_before = p.capa()
        try:
            p.user(USER)
        except poplib.error_proto as e:
            refused = e.args[0]
        p.stls(client_ctx())
        caps_after = p.capa()
        p.user(USER)
        p.pass_(PASSWORD)
        stat = p.stat()
        p.quit()
        return caps_before, refused, caps_after, stat

    before, refused, after, stat = await deferToThread(session)
    assert "STLS" in before and "USER" not in before and "SASL" not in before
    assert refused.startswith(b"-ERR [AUTH] plaintext authentication disallowed")
    assert "STLS" not in after and "USER" in after and after["SASL"] == ["PLAIN"]
    assert stat[0] == 1


@pytest_twisted.ensureDeferred
async def test_implicit_tls(pop3_tls_server) -> None:
    await fill(pop3_tls_server, 2)

    def session():
        p = poplib.POP3_SSL("127.0.0.1", pop3_tls_server.tls_port, context=client_ctx(), timeout=10)
        caps = p.capa()
        p.user(USER)
        p.pass_(PASSWORD)
        out = p.stat(), p.retr(2)[1]
        p.quit()
        return caps, out

    caps, (stat, lines) = await deferToThread(session)
    assert "STLS" not in caps and "USER" in caps
    assert stat[0] == 2
    assert lines[2] == b"Subject: message 2"


@pytest_twisted.ensureDeferred
async def test_stls_discards_pipelined_plaintext(pop3_tls_server) -> None:
    """Commands sent in the clear behind STLS must not run (RFC 2595)."""
    await fill(pop3_tls_server, 1)

    def session():
        s = socket.create_connection(("127.0.0.1", pop3_tls_server.port), timeout=10)
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"STLS\r\nQUIT\r\n")
        reply = f.readline()
        tls = client_ctx().wrap_socket(s)
        g = tls.makefile("rb")
        tls.sendall(b"NOOP\r\n")
        after = g.readline()
        tls.sendall(b"QUIT\r\n")
        bye = g.readline()
        tls.close()
        return reply, after, bye

    reply, after, bye = await deferToThread(session)
    assert reply == b"+OK Begin TLS negotiation\r\n"
    # The pipelined QUIT was dropped: the session is alive inside TLS.
    assert after == b"-ERR NOOP not valid in the AUTHORIZATION state\r\n"
    assert bye.startswith(b"+OK")


@pytest_twisted.ensureDeferred
async def test_pipelining_over_socket(pop3_server) -> None:
    await fill(pop3_server, 2)

    def session():
        s = socket.create_connection(("127.0.0.1", pop3_server.port), timeout=10)
        f = s.makefile("rb")
        f.readline()
        s.sendall(
            f"USER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\nLIST 1\r\nUIDL 2\r\nQUIT\r\n".encode()
        )
        lines = [f.readline() for _ in range(6)]
        s.close()
        return lines

    lines = await deferToThread(session)
    assert [line[:3] for line in lines] == [b"+OK"] * 6
    assert lines[2] == b"+OK 2 %d\r\n" % (len(_msg(1)) + len(_msg(2)))


@pytest_twisted.ensureDeferred
async def test_throttled_login_answers_sys_temp(tmp_path) -> None:
    ctx = await make_context(
        tmp_path, accounts={"allow_plaintext_auth": True, "max_failures_per_account": 1}
    )
    await add_user(ctx, USER, PASSWORD)
    server = await start_server(ctx)
    try:

        def session():
            errs = []
            p = connect(server.port)
            for pw in ("wrong", PASSWORD):
                try:
                    p.user(USER)
                    p.pass_(pw)
                except poplib.error_proto as e:
                    errs.append(e.args[0])
            p.quit()
            return errs

        errs = await deferToThread(session)
        assert errs == [
            b"-ERR [AUTH] authentication failed",
            b"-ERR [SYS/TEMP] too many failed logins, try again later",
        ]
    finally:
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_connection_limit_per_ip(tmp_path) -> None:
    ctx = await make_context(tmp_path, limits={"max_connections_per_ip": 1})
    server = await start_server(ctx)
    try:

        def session():
            p = connect(server.port)
            try:
                connect(server.port)
            except poplib.error_proto as e:
                refused = e.args[0]
            p.quit()
            return refused

        refused = await deferToThread(session)
        assert refused == b"-ERR [SYS/TEMP] too many connections, try again later"
    finally:
        await server.sessions_finished()
        await stop_server(server)
    assert ctx.connections == {}


@pytest.mark.parametrize("count", [10])
@pytest_twisted.ensureDeferred
async def test_retr_marks_seen_once_and_keeps_other_flags(pop3_server, count) -> None:
    records = await fill(pop3_server, 2)
    inbox = await pop3_server.inbox_id()
    await pop3_server.ctx.storage.messages.store_flags(
        inbox, [records[0].uid], ["\\Flagged"], FlagMode.ADD
    )

    def session():
        p = login(pop3_server.port)
        for _ in range(count):
            p.retr(1)
        p.top(2, 5)
        p.quit()

    await deferToThread(session)
    left = await pop3_server.inbox()
    assert left[0].flags == {"\\Seen", "\\Flagged"}
    assert "\\Seen" not in left[1].flags


@pytest_twisted.ensureDeferred
async def test_services_share_one_lock_table_across_ports(pop3_server) -> None:
    """The plain and the implicit-TLS listener lock the same maildrop."""
    assert sorted(s.implicit_tls for s in pop3_server.listeners) == [False, True]
    await fill(pop3_server, 1)

    def session():
        p = login(pop3_server.port)
        q = poplib.POP3_SSL("127.0.0.1", pop3_server.tls_port, context=client_ctx(), timeout=10)
        q.user(USER)
        try:
            q.pass_(PASSWORD)
        except poplib.error_proto as e:
            locked = e.args[0]
        q.quit()
        p.quit()
        return locked

    assert (await deferToThread(session)).startswith(b"-ERR [IN-USE]")


class CountingBlobs:
    def __init__(self, inner) -> None:
        self.inner, self.gets, self.ranges = inner, 0, 0

    async def get(self, key):
        self.gets += 1
        return await self.inner.get(key)

    async def get_range(self, key, start, end):
        self.ranges += 1
        return await self.inner.get_range(key, start, end)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest_twisted.ensureDeferred
async def test_listing_reads_no_bodies_and_top_0_reads_only_the_header(pop3_server) -> None:
    await fill(pop3_server, 50)
    counting = CountingBlobs(pop3_server.ctx.storage.blobs)
    pop3_server.ctx.storage.blobs = counting

    def session():
        p = login(pop3_server.port)
        p.stat(), p.list(), p.uidl(), p.list(7), p.uidl(7), p.dele(3), p.rset()
        listing = counting.gets + counting.ranges
        top = p.top(5, 0)[1]
        ranges = counting.ranges
        p.retr(5)
        p.quit()
        return listing, top, ranges, counting.gets

    listing, top, ranges, gets = await deferToThread(session)
    assert listing == 0
    assert top == _msg(5).split(b"\r\n\r\n")[0].split(b"\r\n") + [b""]
    assert ranges == 1 and gets == 1


@pytest_twisted.ensureDeferred
async def test_large_message_roundtrip(pop3_server) -> None:
    body = b"".join(b".line %d with a leading dot\r\nplain %d\r\n" % (i, i) for i in range(60000))
    raw = b"Subject: big\r\n\r\n" + body
    await deliver(pop3_server.ctx, USER, raw)

    def session():
        p = login(pop3_server.port)
        listed = p.list(1)
        resp, lines, octets = p.retr(1)
        p.quit()
        return listed, resp, lines, octets

    listed, resp, lines, octets = await deferToThread(session)
    assert listed == b"+OK 1 %d" % len(raw)
    assert resp == b"+OK %d octets" % len(raw)
    assert octets == len(raw)
    assert b"\r\n".join(lines) + b"\r\n" == raw
