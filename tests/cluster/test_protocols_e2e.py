"""SMTP delivery, IMAP and POP3 end to end on the cluster backend: the same
listeners as on the embedded store, no code path special to the backend.
Real clients (smtplib, imaplib, poplib) over 127.0.0.1 port-0 listeners.

The per-protocol real-client suites (tests/imap/test_interop.py,
tests/smtp/test_listeners.py, tests/pop3/test_server.py) run on both backends
against one node; this one crosses the three protocols on the three-node
cluster."""

from __future__ import annotations

import imaplib
import os
import poplib
import smtplib
import time

import pytest_twisted
from twisted.internet import defer, threads

from mailserver.imap.service import services as imap_services
from mailserver.pop3.service import services as pop3_services
from mailserver.smtp.service import services as smtp_services
from tests.support import add_test_user, close_test_context, make_test_context

PW = "cluster pass"


def clients(smtp_port: int, imap_port: int, pop_port: int, user: str) -> dict:
    """Blocking client scenario (runs in a thread while the reactor serves)."""
    out: dict = {}
    raw = (
        f"From: Bob <bob@example.org>\r\nTo: <{user}>\r\nSubject: cluster e2e\r\n"
        "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <e2e@example.org>\r\n"
        "\r\nHello over Cassandra and S3.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=60) as s:
        s.ehlo("client.example.org")
        out["smtp_refused"] = s.sendmail("bob@example.org", [user], raw.encode())
        s.sendmail("bob@example.org", [user], raw.replace("cluster e2e", "second").encode())
    c = imaplib.IMAP4("127.0.0.1", imap_port, timeout=60)
    c.login(user, PW)
    typ, data = c.select("INBOX")
    out["imap_exists"] = int(data[0])
    typ, data = c.fetch("1", "(BODY[])")
    out["imap_body"] = data[0][1]
    typ, data = c.search(None, "UNSEEN")
    out["imap_unseen"] = data[0].split()
    typ, data = c.search(None, "SUBJECT", '"second"')
    out["imap_search"] = data[0].split()
    c.logout()
    p = poplib.POP3("127.0.0.1", pop_port, timeout=60)
    p.user(user)
    p.pass_(PW)
    out["pop_stat"] = p.stat()
    out["pop_retr"] = b"\r\n".join(p.retr(2)[1])
    p.dele(2)
    p.quit()
    c = imaplib.IMAP4("127.0.0.1", imap_port, timeout=60)
    c.login(user, PW)
    typ, data = c.select("INBOX")
    out["imap_exists_after_pop"] = int(data[0])
    c.logout()
    return out


@pytest_twisted.ensureDeferred
async def test_smtp_imap_pop3_on_cluster_backend(tmp_path):
    ctx = await make_test_context(
        tmp_path,
        backend="cluster",
        smtp={"submission_listen": [], "submissions_listen": []},
        imap={"tls_listen": []},
        pop3={"tls_listen": []},
        accounts={"allow_plaintext_auth": True},
    )
    user = f"e2e{os.getpid()}x{int(time.time())}@example.test"
    listeners = []
    try:
        await add_test_user(ctx, user, PW)
        listeners = smtp_services(ctx) + imap_services(ctx) + pop3_services(ctx)
        for s in listeners:
            s.startService()
        ports = [s.address[1] for s in listeners]
        out = await threads.deferToThread(clients, *ports, user)
    finally:
        for s in listeners:
            await defer.maybeDeferred(s.stopService)
        await close_test_context(ctx)
    assert out["smtp_refused"] == {}
    assert out["imap_exists"] == 2
    assert b"Hello over Cassandra and S3." in out["imap_body"]
    assert out["imap_unseen"] == [b"2"]  # FETCH BODY[] set \Seen on 1
    assert out["imap_search"] == [b"2"]
    assert out["pop_stat"][0] == 2
    assert b"Subject: second" in out["pop_retr"]
    assert out["imap_exists_after_pop"] == 1
