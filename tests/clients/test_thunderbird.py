"""Debian's Thunderbird (``--headless``) syncs an inbox from our IMAP server.

The server runs in-process (``services(ctx)`` on port 0, 127.0.0.1) with four
messages in alice's INBOX: plain text, multipart/alternative with HTML, one
with attachments and one with an RFC 2047 UTF-8 subject.  Thunderbird gets a
profile built without any dialog (tests/clients/thunderbird.py) and
``MOZ_LOG=IMAP:5``; the test waits until the log shows the headers and the
bodies (offline sync) fetched, stops Thunderbird, and asserts on the log:
SELECT INBOX answered OK with 4 EXISTS, the header FETCH returned all four
messages, and no command got BAD or NO.  Both the implicit-TLS and the
STARTTLS listener are exercised.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from email.header import Header
from email.message import EmailMessage
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from mailserver.imap.service import services
from mailserver.store.interfaces import DeliveryTarget
from tests.clients.thunderbird import (
    ImapLog,
    account_prefs,
    need,
    parse_imap_log,
    store_passwords_in_child,
    trust_certificate,
    write_user_js,
)
from tests.support import add_test_user, certificate_path, close_test_context, make_test_context

pytestmark = pytest.mark.slow

ALICE = "alice@example.test"
PW = "tb s3cret"
#: how long Thunderbird may take to start and sync (it needs ~5 s here)
SYNC_TIMEOUT = 45.0
UTF8_SUBJECT = "Grüße aus München ✓ 日本語"


def sample_messages() -> list[bytes]:
    """The four kinds of message users receive most."""
    out = []
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "Alice Sender <a@example.org>", ALICE, "Plain text test"
    m["Date"], m["Message-ID"] = "Fri, 04 Dec 2026 10:00:00 +0000", "<plain@example.org>"
    m.set_content("Hello,\n\nplain text.\n")
    out.append(m)
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "Bob <b@example.org>", ALICE, "Multipart alternative"
    m["Date"], m["Message-ID"] = "Fri, 04 Dec 2026 10:01:00 +0000", "<alt@example.org>"
    m.set_content("Plain part.\n")
    m.add_alternative(
        "<html><body><h1>HTML part</h1><p><b>bold</b></p></body></html>", subtype="html"
    )
    out.append(m)
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "Carol <c@example.org>", ALICE, "With attachment"
    m["Date"], m["Message-ID"] = "Fri, 04 Dec 2026 10:02:00 +0000", "<att@example.org>"
    m.set_content("See attached.\n")
    m.add_attachment(
        bytes(range(256)) * 40, maintype="application", subtype="octet-stream", filename="blob.bin"
    )
    out.append(m)
    raw = [msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")) for msg in out]
    raw.append(
        b"From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <j@example.org>\r\n"
        b"To: " + ALICE.encode() + b"\r\n"
        b"Subject: " + Header(UTF8_SUBJECT, "utf-8").encode(linesep="\r\n").encode() + b"\r\n"
        b"Date: Fri, 04 Dec 2026 10:03:00 +0000\r\nMessage-ID: <utf8@example.org>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + "Schöne Grüße aus München! 日本語\r\n".encode()
    )
    return raw


@pytest_twisted.async_yield_fixture
async def imap_server(tmp_path):
    """(ctx, {"starttls": port, "tls": port}) with alice's INBOX filled."""
    ctx = await make_test_context(tmp_path / "server")
    await add_test_user(ctx, ALICE, PW)
    inbox = await ctx.storage.mailboxes.get_mailbox(ALICE, "INBOX")
    for raw in sample_messages():
        stored = await ctx.delivery.ingest(raw)
        await ctx.storage.messages.deliver(stored, [DeliveryTarget(inbox.id)])
    listeners = services(ctx)
    for s in listeners:
        s.startService()
    ports = {("tls" if s.implicit_tls else "starttls"): s.address[1] for s in listeners}
    assert set(ports) == {"tls", "starttls"}, ports
    yield ctx, ports
    for s in listeners:
        await defer.maybeDeferred(s.stopService)
    await close_test_context(ctx)


def synced(log: ImapLog, count: int) -> bool:
    """Headers and bodies of ``count`` messages fetched, all answered."""
    headers = [e for e in log.find(r"^UID fetch .*BODY\.PEEK\[HEADER\.FIELDS") if e.status]
    bodies = [e for e in log.find(r"^UID fetch .*BODY\.PEEK\[\]") if e.status]
    fetched = sum(len([u for u in e.untagged if " FETCH (" in u]) for e in headers)
    return fetched >= count and bool(bodies)


def run_thunderbird(
    profile: Path, home: Path, log_file: Path, count: int
) -> tuple[ImapLog, float, str]:
    """Start Thunderbird headless, wait until the inbox is synced (or the
    timeout), stop it; returns the parsed IMAP log, seconds taken, stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOZ_", "DISPLAY", "WAYLAND"))}
    env.update(
        HOME=str(home),
        MOZ_LOG="IMAP:5,timestamp,sync",
        MOZ_LOG_FILE=str(log_file),
        MOZ_CRASHREPORTER_DISABLE="1",
        MOZ_DISABLE_AUTO_SAFE_MODE="1",
    )
    actual_log = Path(str(log_file) + ".moz_log")  # Thunderbird appends the suffix
    out_file = log_file.with_suffix(".out")
    start = time.monotonic()
    with out_file.open("wb") as out:
        proc = subprocess.Popen(
            [need("thunderbird"), "--headless", "--no-remote", "--profile", str(profile)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop it and its children
        )
        log = ImapLog([], [], [])
        try:
            while time.monotonic() - start < SYNC_TIMEOUT and proc.poll() is None:
                if actual_log.exists():
                    log = parse_imap_log(actual_log.read_text(errors="replace"))
                    if synced(log, count):
                        break
                time.sleep(0.2)  # polling another process's log file: no event to await
        finally:
            elapsed = time.monotonic() - start
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=15)
    if actual_log.exists():
        log = parse_imap_log(actual_log.read_text(errors="replace"))
    return log, elapsed, out_file.read_text(errors="replace")[-3000:]


@pytest.mark.parametrize("socket_type", ["tls", "starttls"])
@pytest_twisted.ensureDeferred
async def test_thunderbird_syncs_inbox(imap_server, tmp_path, socket_type):
    ctx, ports = imap_server
    need("thunderbird")
    profile, home = tmp_path / "profile", tmp_path / "home"
    home.mkdir()
    write_user_js(
        profile,
        account_prefs(ALICE, ports[socket_type], 3 if socket_type == "tls" else 2),
    )
    trust_certificate(profile, certificate_path())
    await threads.deferToThread(store_passwords_in_child, profile, ALICE, PW)

    log, elapsed, output = await threads.deferToThread(
        run_thunderbird, profile, home, tmp_path / "imap.log", 4
    )
    where = f"after {elapsed:.1f}s; Thunderbird output:\n{output}"
    assert log.exchanges, f"Thunderbird never talked IMAP {where}"
    assert log.problems() == [], "\n".join(log.problems())

    if socket_type == "starttls":
        assert [e.status for e in log.find(r"^STARTTLS$")][:1] == ["OK"], where
    auth = log.find(r"^(authenticate|login)\b")
    assert auth and all(e.status == "OK" for e in auth), where

    selects = log.find(r'^select "?INBOX"?$')
    assert selects and selects[0].status == "OK", where
    assert "* 4 EXISTS" in selects[0].untagged, selects[0].untagged

    header_fetches = [
        e for e in log.find(r"^UID fetch .*BODY\.PEEK\[HEADER\.FIELDS") if e.status == "OK"
    ]
    uids = sorted(
        int(m.group(1))
        for e in header_fetches
        for u in e.untagged
        if (m := re.match(r"\* \d+ FETCH \(.*?\bUID (\d+)", u))
    )
    assert uids == [1, 2, 3, 4], (uids, where)
    body_fetches = log.find(r"^UID fetch .*BODY\.PEEK\[\]")
    assert body_fetches and all(e.status == "OK" for e in body_fetches), where
    # Thunderbird only peeks while syncing: nothing was marked \Seen
    inbox = await ctx.storage.mailboxes.get_mailbox(ALICE, "INBOX")
    records = await ctx.storage.messages.list_messages(inbox.id)
    assert [r.uid for r in records] == [1, 2, 3, 4]
    assert not any("\\Seen" in r.flags for r in records)
    assert elapsed < 60, f"sync took {elapsed:.1f}s"
