"""The IMAP listeners from ``services(ctx)`` against Python's ``imaplib`` and
``imapclient`` over real sockets on 127.0.0.1 port 0.

The clients are blocking, so each scenario runs in a thread
(``deferToThread``) while the reactor serves; the scenario schedules server
side actions (deliveries) on the reactor with ``blockingCallFromThread``.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
import time

import pytest_twisted
from imapclient import IMAPClient
from twisted.internet import defer, reactor, threads

from mailserver.imap.service import services
from mailserver.store.interfaces import DeliveryTarget
from tests.support import add_test_user, certificate_path, close_test_context, make_test_context

ALICE = "alice@example.test"
PW = "s3cret pass"


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=certificate_path())
    ctx.check_hostname = False  # the test certificate names mail.example.test
    return ctx


def msg(subject: str, body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: Bob <bob@example.org>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
        f"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject.replace(' ', '.')}@x>\r\n"
        f"\r\n{body}"
    ).encode()


class Server:
    def __init__(self, ctx, listeners):
        self.ctx = ctx
        self.listeners = listeners
        self.port = listeners[0].address[1]
        self.tls_port = listeners[1].address[1]

    async def deliver(self, raw: bytes, mailbox: str = "INBOX") -> int:
        info = await self.ctx.storage.mailboxes.get_mailbox(ALICE, mailbox)
        stored = await self.ctx.delivery.ingest(raw)
        recs = await self.ctx.storage.messages.deliver(stored, [DeliveryTarget(info.id)])
        return recs[0].uid

    def deliver_from_thread(self, raw: bytes, mailbox: str = "INBOX") -> int:
        return threads.blockingCallFromThread(
            reactor, lambda: defer.ensureDeferred(self.deliver(raw, mailbox))
        )


async def start_server(tmp_path, backend: str = "embedded", **overrides) -> Server:
    ctx = await make_test_context(tmp_path, backend=backend, **overrides)
    await add_test_user(ctx, ALICE, PW)
    listeners = services(ctx)
    assert len(listeners) == 2
    for s in listeners:
        s.startService()
    return Server(ctx, listeners)


async def stop_server(server: Server) -> None:
    for s in server.listeners:
        await defer.maybeDeferred(s.stopService)
    await close_test_context(server.ctx)


@pytest_twisted.async_yield_fixture
async def server(tmp_path, backend):
    s = await start_server(tmp_path, backend)
    yield s
    await stop_server(s)


def run(fn, *args):
    return threads.deferToThread(fn, *args)


# -- imaplib ------------------------------------------------------------------------


def imaplib_session(port: int) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    assert "LOGINDISABLED" in c.capabilities and "STARTTLS" in c.capabilities
    try:
        c.login(ALICE, PW)
    except imaplib.IMAP4.error as e:
        assert "PRIVACYREQUIRED" in str(e)
    else:
        raise AssertionError("LOGIN before STARTTLS must fail")
    c.starttls(tls_context())
    assert "AUTH=PLAIN" in c.capabilities
    typ, data = c.login(ALICE, PW)
    assert typ == "OK"
    return c


@pytest_twisted.ensureDeferred
async def test_imaplib_full_walkthrough(server):
    await server.deliver(msg("first", "one\r\n"))
    await server.deliver(msg("second", "two\r\n"))

    def scenario():
        c = imaplib_session(server.port)
        typ, caps = c.capability()
        assert b"UIDPLUS" in caps[0] and b"MOVE" in caps[0] and b"IDLE" in caps[0]
        typ, data = c.list()
        assert typ == "OK"
        assert any(b"\\Sent" in d for d in data) and any(b"INBOX" in d for d in data)
        assert c.create("Projects/2026")[0] == "OK"
        assert c.subscribe("Projects/2026")[0] == "OK"
        typ, data = c.lsub('""', "Projects/*")
        assert data == [b'() "/" "Projects/2026"']
        typ, data = c.list('""', "Projects")
        assert data == [b'(\\HasChildren) "/" "Projects"']
        typ, data = c.status("INBOX", "(MESSAGES UNSEEN UIDNEXT)")
        assert data == [b"INBOX (MESSAGES 2 UNSEEN 2 UIDNEXT 3)"]
        typ, data = c.append(
            "INBOX", "(\\Flagged)", imaplib.Time2Internaldate(time.time()), msg("third")
        )
        assert typ == "OK" and b"APPENDUID" in data[0]
        typ, data = c.select("INBOX")
        assert data == [b"3"]
        assert c.response("UIDVALIDITY")[1][0]
        typ, data = c.fetch("1:3", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = [d[1] for d in data if isinstance(d, tuple)]
        assert subjects == [b"Subject: first\r\n\r\n", b"Subject: second\r\n\r\n",
                            b"Subject: third\r\n\r\n"]  # fmt: skip
        typ, data = c.fetch("2", "(BODY[TEXT])")
        assert data[0][1] == b"two\r\n"
        assert b"\\Seen" in data[1] or b"\\Seen" in data[0][0]
        typ, data = c.search(None, "UNSEEN")
        assert data == [b"1 3"]
        typ, data = c.search("UTF-8", "SUBJECT", "third")
        assert data == [b"3"]
        typ, data = c.uid("SEARCH", None, "FLAGGED")
        assert data == [b"3"]
        typ, data = c.store("1", "+FLAGS", "(\\Deleted)")
        assert b"\\Deleted" in data[0]
        typ, data = c.copy("2", "Projects/2026")
        assert typ == "OK"
        assert c.response("COPYUID")[1][0].split()[1:] == [b"2", b"1"]
        typ, data = c.expunge()
        assert data == [b"1"]
        typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
        assert [re.search(rb"UID (\d+)", d).group(1) for d in data] == [b"2", b"3"]
        typ, data = c.uid("MOVE", "3", "Archive")
        assert typ == "OK"
        typ, data = c.select("Archive", readonly=True)
        assert data == [b"1"]
        typ, data = c.fetch("1", "(ENVELOPE)")
        assert b'"third"' in data[0]
        assert c.rename("Projects", "Work")[0] == "OK"
        typ, data = c.list("Work/", "*")
        assert data == [b'(\\HasNoChildren) "/" "Work/2026"']
        assert c.delete("Work/2026")[0] == "OK"
        typ, data = c.delete("nosuch")
        assert typ == "NO" and b"NONEXISTENT" in data[0]
        c.close()
        assert c.logout()[0] == "BYE"

    await run(scenario)


@pytest_twisted.ensureDeferred
async def test_two_imaplib_sessions_see_each_others_changes(server):
    for i in range(3):
        await server.deliver(msg(f"m{i}"))

    def scenario():
        a = imaplib_session(server.port)
        b = imaplib_session(server.port)
        a.select("INBOX")
        b.select("INBOX")
        # EXISTS after a delivery made elsewhere
        server.deliver_from_thread(msg("from outside"))
        a.noop()
        assert a.response("EXISTS")[1][-1] == b"4"
        # EXISTS after an APPEND by the other session
        b.append("INBOX", None, None, msg("appended by b"))
        a.noop()
        assert a.response("EXISTS")[1][-1] == b"5"
        # flag change by b reaches a as an untagged FETCH
        b.store("1", "+FLAGS", "(\\Answered)")
        typ, data = a.noop()
        assert any(b"\\Answered" in d for d in a.response("FETCH")[1])
        # b expunges message 2: a sees no EXPUNGE during FETCH, then on NOOP
        b.store("2", "+FLAGS", "(\\Deleted)")
        b.expunge()
        typ, data = a.fetch("1:5", "(UID)")
        assert a.response("EXPUNGE")[1] == [None]
        assert len([d for d in data if d]) == 4  # message 2 is gone but numbering stable
        typ, data = a.fetch("5", "(UID)")
        assert b"UID 5" in data[0]
        a.noop()
        assert a.response("EXPUNGE")[1] == [b"2"]
        typ, data = a.fetch("4", "(UID)")
        assert b"UID 5" in data[0]
        a.logout()
        b.logout()

    await run(scenario)


# -- imapclient ---------------------------------------------------------------------


def imapclient_session(port: int) -> IMAPClient:
    c = IMAPClient("127.0.0.1", port=port, ssl=True, ssl_context=tls_context(), timeout=30)
    c.login(ALICE, PW)
    return c


@pytest_twisted.ensureDeferred
async def test_imapclient_over_implicit_tls(server):
    for i in range(3):
        await server.deliver(msg(f"ic{i}", f"body {i}\r\n"))

    def scenario():
        c = imapclient_session(server.tls_port)
        caps = c.capabilities()
        for cap in (b"IMAP4REV1", b"IDLE", b"UIDPLUS", b"MOVE", b"NAMESPACE", b"SPECIAL-USE",
                    b"ENABLE", b"UNSELECT", b"ID", b"LITERAL+", b"CHILDREN"):  # fmt: skip
            assert cap in caps, cap
        ns = c.namespace()
        assert ns.personal == (("", "/"),)
        server_id = c.id_({"name": "pytest"})
        assert (
            dict(zip(server_id[0][::2], server_id[0][1::2], strict=True))[b"name"] == b"mailserver"
        )
        folders = {f[2]: f[0] for f in c.list_folders()}
        assert b"\\Trash" in folders["Trash"] and b"\\HasNoChildren" in folders["Trash"]
        assert c.find_special_folder(b"\\Sent") == "Sent"
        c.create_folder("Réunions")  # non-ASCII: modified UTF-7 on the wire
        assert "Réunions" in [f[2] for f in c.list_folders()]
        info = c.select_folder("INBOX")
        assert info[b"EXISTS"] == 3 and info[b"READ-WRITE"]
        uids = c.search(["ALL"])
        assert uids == [1, 2, 3]
        data = c.fetch(uids, ["ENVELOPE", "BODYSTRUCTURE", "RFC822.SIZE", "INTERNALDATE"])
        assert data[2][b"ENVELOPE"].subject == b"ic1"
        assert data[2][b"BODYSTRUCTURE"][0] == b"TEXT"
        data = c.fetch([3], ["BODY.PEEK[]"])
        assert data[3][b"BODY[]"].endswith(b"body 2\r\n")
        c.add_flags([1], [b"$Important"])
        assert b"$Important" in c.get_flags([1])[1]
        c.set_flags([1], [b"\\Seen"])
        assert c.search(["UNSEEN"]) == [2, 3]
        assert c.search(["SEEN"]) == [1]
        c.copy([2], "Réunions")
        c.move([3], "Archive")
        assert c.search(["ALL"]) == [1, 2]
        c.delete_messages([1])
        c.uid_expunge([1])
        assert c.search(["ALL"]) == [2]
        assert c.folder_status("Réunions", ["MESSAGES", "UIDNEXT"]) == {
            b"MESSAGES": 1,
            b"UIDNEXT": 2,
        }
        c.unselect_folder()
        c.select_folder("Archive", readonly=True)
        assert c.search() == [1]
        c.close_folder()
        c.delete_folder("Réunions")
        c.logout()

    await run(scenario)


@pytest_twisted.ensureDeferred
async def test_imapclient_idle_woken_by_delivery(server):
    await server.deliver(msg("before idle"))

    def scenario():
        c = imapclient_session(server.tls_port)
        c.select_folder("INBOX")
        c.idle()
        # the delivery happens on the server while this client idles
        server.deliver_from_thread(msg("wake up"))
        responses = []
        deadline = time.monotonic() + 20
        while not any(r[1] == b"EXISTS" for r in responses) and time.monotonic() < deadline:
            responses += c.idle_check(timeout=5)
        assert (2, b"EXISTS") in responses
        text, _ = c.idle_done()
        assert b"IDLE" in text or text
        assert c.search(["ALL"]) == [1, 2]
        c.logout()

    await run(scenario)


# -- raw socket: RFC 3501 section 8 sample session in small fragments ---------------


@pytest_twisted.ensureDeferred
async def test_rfc3501_sample_session_raw_socket_fragments(tmp_path):
    server = await start_server(tmp_path, accounts={"allow_plaintext_auth": True})
    try:
        for i in range(12):
            await server.deliver(msg(f"sample {i + 1}"))

        def scenario():
            commands = (
                f'a001 login {ALICE} "{PW}"\r\n'
                "a002 select inbox\r\n"
                "a003 fetch 12 full\r\n"
                "a004 fetch 12 body[header]\r\n"
                "a005 store 12 +flags \\deleted\r\n"
                "a006 noop\r\n"
                "a007 logout\r\n"
            ).encode()
            s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(0, len(commands), 3):
                s.sendall(commands[i : i + 3])
            received = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
            s.close()
            return received

        out = await run(scenario)
        assert out.startswith(b"* OK [CAPABILITY")
        tags = re.findall(rb"(?m)^(a00\d) (OK|NO|BAD)", out)
        assert tags == [(b"a00%d" % n, b"OK") for n in range(1, 8)], out
        assert b"* 12 EXISTS" in out and b"[READ-WRITE]" in out
        assert b"* 12 FETCH (FLAGS (" in out and b"BODY[HEADER] {" in out
        assert b"* BYE" in out
    finally:
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_connection_limit_per_ip(tmp_path):
    server = await start_server(tmp_path, limits={"max_connections_per_ip": 2})
    try:

        def scenario():
            keep = [socket.create_connection(("127.0.0.1", server.port), timeout=30)
                    for _ in range(2)]  # fmt: skip
            for k in keep:
                assert k.recv(1000).startswith(b"* OK")
            extra = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            data = extra.recv(1000)
            for k in keep + [extra]:
                k.close()
            return data

        data = await run(scenario)
        assert data.startswith(b"* BYE [UNAVAILABLE]")
    finally:
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_imaplib_authenticate_and_remaining_commands(server):
    for i in range(3):
        await server.deliver(msg(f"r{i}"))

    def scenario():
        c = imaplib.IMAP4("127.0.0.1", server.port, timeout=30)
        c.starttls(tls_context())
        # AUTHENTICATE PLAIN answered on a continuation (no SASL-IR)
        typ, _ = c.authenticate("PLAIN", lambda _challenge: f"\0{ALICE}\0{PW}".encode())
        assert typ == "OK"
        assert c.create("Later")[0] == "OK"
        assert c.subscribe("Later")[0] == "OK"
        assert c.unsubscribe("Later")[0] == "OK"
        assert c.lsub('""', "Later")[1] == [None]
        c.select("INBOX")
        assert c.check()[0] == "OK"
        typ, data = c.uid("STORE", "2", "+FLAGS", "(\\Flagged)")
        assert b"UID 2" in data[0] and b"\\Flagged" in data[0]
        typ, data = c.uid("COPY", "1:2", "Later")
        assert typ == "OK"
        assert c.response("COPYUID")[1][0].split()[1:] == [b"1:2", b"1:2"]
        typ, data = c._simple_command("MOVE", "1", "Later")
        assert typ == "OK"
        assert c.response("EXPUNGE")[1] == [b"1"]
        typ, data = c._simple_command("UNSELECT")
        assert typ == "OK" and c.state == "SELECTED"  # imaplib does not know UNSELECT
        typ, data = c.status("Later", "(MESSAGES RECENT)")
        assert data == [b'"Later" (MESSAGES 3 RECENT 3)']
        c.logout()

    await run(scenario)


@pytest_twisted.ensureDeferred
async def test_sasl_ir_literal_plus_and_enable_over_implicit_tls(server):
    def scenario():
        import base64

        raw = socket.create_connection(("127.0.0.1", server.tls_port), timeout=30)
        s = tls_context().wrap_socket(raw, server_hostname="mail.example.test")
        f = s.makefile("rb")
        assert f.readline().startswith(b"* OK [CAPABILITY")
        ir = base64.b64encode(f"\0{ALICE}\0{PW}".encode())
        m = msg("literal plus")
        s.sendall(
            b"a1 AUTHENTICATE PLAIN " + ir + b"\r\n"
            b"a2 ENABLE UTF8=ACCEPT\r\n"
            b"a3 APPEND INBOX (\\Seen) {%d+}\r\n" % len(m) + m + b"\r\n"
            b"a4 LOGOUT\r\n"
        )
        lines = []
        while True:
            line = f.readline()
            if not line:
                break
            lines.append(line)
        s.close()
        return lines

    lines = await run(scenario)
    assert lines[0].startswith(b"a1 OK [CAPABILITY")
    assert lines[1] == b"* ENABLED\r\n" and lines[2].startswith(b"a2 OK")
    assert lines[3].startswith(b"a3 OK [APPENDUID ")
    assert not any(line.startswith(b"+") for line in lines)  # LITERAL+: no continuation
    assert lines[-1].startswith(b"a4 OK")


@pytest_twisted.ensureDeferred
async def test_starttls_drops_pipelined_plaintext_on_the_wire(server):
    def scenario():
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        f = raw.makefile("rb", buffering=0)
        assert f.readline().startswith(b"* OK")
        # an attacker-injected command pipelined behind STARTTLS
        raw.sendall(b"a STARTTLS\r\nb LOGIN " + ALICE.encode() + b' "' + PW.encode() + b'"\r\n')
        assert f.readline() == b"a OK Begin TLS negotiation now\r\n"
        s = tls_context().wrap_socket(raw, server_hostname="mail.example.test")
        s.sendall(b"c CAPABILITY\r\nd LOGOUT\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return data

    data = await run(scenario)
    assert b"\r\nb " not in data and not data.startswith(b"b ")  # never answered
    assert b"* CAPABILITY" in data and b"AUTH=PLAIN" in data and b"c OK" in data
    assert b"STARTTLS" not in data.split(b"* CAPABILITY", 1)[1].split(b"\r\n", 1)[0]
    assert b"d OK LOGOUT" in data


@pytest_twisted.ensureDeferred
async def test_append_with_bare_lf_is_stored_with_crlf_and_sizes_agree(server):
    """A client APPENDing bare-LF lines: RFC822.SIZE must equal the octets
    FETCH (and POP3) serve, so the message is stored CRLF-normalized."""
    m = b"From: bob@example.org\nSubject: bare lf\n\nline one\nline two\r\n"

    def scenario():
        import base64

        raw = socket.create_connection(("127.0.0.1", server.tls_port), timeout=30)
        s = tls_context().wrap_socket(raw, server_hostname="mail.example.test")
        f = s.makefile("rb")
        f.readline()
        ir = base64.b64encode(f"\0{ALICE}\0{PW}".encode())
        s.sendall(
            b"a1 AUTHENTICATE PLAIN " + ir + b"\r\n"
            b"a2 APPEND INBOX {%d+}\r\n" % len(m) + m + b"\r\n"
            b"a3 LOGOUT\r\n"
        )
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        s.close()
        return out

    out = await run(scenario)
    assert b"a2 OK [APPENDUID " in out
    info = await server.ctx.storage.mailboxes.get_mailbox(ALICE, "INBOX")
    (rec,) = await server.ctx.storage.messages.list_messages(info.id)
    stored = await server.ctx.storage.messages.get_message(rec.message_id)
    body = await server.ctx.storage.blobs.get(stored.blob_key)
    assert body == m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert rec.size == len(body)
