"""Interop with real MTAs/clients from Debian: swaks (plain, STARTTLS,
implicit TLS, AUTH, PIPELINING) and an isolated Postfix relaying into our MX.

These fail (never skip) when swaks or postfix is missing: scripts/test-deps.txt
lists both."""

from __future__ import annotations

import shutil
import smtplib
import subprocess

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.smtp.context import all_messages
from tests.smtp.postfix import PostfixInstance
from tests.smtp.test_listeners import MSG, strip_trace


def swaks(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("swaks")
    assert exe is not None, (
        "swaks is not installed (apt-get install swaks; see scripts/test-deps.txt)"
    )
    return subprocess.run(
        [exe, "--timeout", "20", *args],
        input=data.decode() if data is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
    )


def trace_lines(stored: bytes) -> list[str]:
    """The header field names in front of the original message."""
    head = stored[: stored.index(MSG)] if MSG in stored else stored
    return [ln.split(":")[0] for ln in head.decode().split("\r\n") if ln and ln[0] not in " \t"]


@pytest.mark.parametrize(
    "kind,extra",
    [
        ("mx", []),
        ("mx", ["--pipeline"]),
        ("mx", ["-tls"]),
        (
            "submission",
            [
                "-tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                "alice@example.test",
                "--auth-password",
                "alicepw",
            ],
        ),
        (
            "submission",
            [
                "-tls",
                "--auth",
                "LOGIN",
                "--auth-user",
                "al@other.test",
                "--auth-password",
                "alicepw",
            ],
        ),
        (
            "submissions",
            [
                "-tlsc",
                "--auth",
                "PLAIN",
                "--auth-user",
                "alice@example.test",
                "--auth-password",
                "alicepw",
            ],
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_swaks(ctx, server, tmp_path, kind, extra) -> None:
    port = server.port(kind)
    msgfile = tmp_path / "msg.eml"
    # swaks ends the data with "\r\n.\r\n" itself, so the file has no
    # final line break.
    msgfile.write_bytes(MSG[:-2])
    sender = "alice@example.test" if kind != "mx" else "sender@remote.test"
    p = await deferToThread(
        swaks,
        "--server", f"127.0.0.1:{port}",
        "--from", sender,
        "--to", "bob@example.test",
        "--helo", "swaks.test",
        "--data", f"@{msgfile}",
        *extra,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    [stored] = await all_messages(ctx, "bob@example.test")
    assert strip_trace(stored) == MSG
    assert b"Received: from swaks.test" in stored


@pytest_twisted.ensureDeferred
async def test_swaks_negative(ctx, server) -> None:
    port = server.port("mx")
    p = await deferToThread(
        swaks,
        "--server", f"127.0.0.1:{port}",
        "--from", "s@remote.test",
        "--to", "victim@elsewhere.test",
        "--quit-after", "RCPT",
    )  # fmt: skip
    assert p.returncode != 0
    assert "550 5.7.1 Relaying denied" in p.stdout
    sub = server.port("submission")
    p = await deferToThread(
        swaks,
        "--server", f"127.0.0.1:{sub}",
        "--from", "alice@example.test",
        "--to", "bob@example.test",
        "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alicepw",
    )  # fmt: skip
    # Plaintext: AUTH is not offered, so swaks cannot authenticate.
    assert p.returncode != 0
    assert await all_messages(ctx, "bob@example.test") == []


@pytest_twisted.ensureDeferred
async def test_postfix_relays_into_our_mx(ctx, server) -> None:
    mx = server.port("mx")
    postfix = PostfixInstance(relay_port=mx)
    await deferToThread(postfix.start)
    try:
        messages = [
            MSG,
            MSG.replace(b"Hello Alice.", b"x" * 998),  # longest legal line
            b"From: s@remote.test\r\nTo: bob@example.test\r\nSubject: =?utf-8?q?8bit?=\r\n"
            b"Date: Fri, 04 Dec 2026 21:00:00 +0000\r\nMessage-ID: <3@remote.test>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n..\r\n.\r\n",
        ]

        def submit():
            with smtplib.SMTP("127.0.0.1", postfix.port) as s:
                for i, m in enumerate(messages):
                    opts = ["BODY=8BITMIME"] if i == 2 else []
                    s.sendmail("sender@remote.test", ["bob@example.test"], m, mail_options=opts)

        await deferToThread(submit)
        deadline = reactor.seconds() + 60
        while len(await all_messages(ctx, "bob@example.test")) < len(messages):
            assert reactor.seconds() < deadline, "Postfix did not deliver in time:\n" + (
                postfix.read_log()
            )
            await deferLater(reactor, 0.05, lambda: None)
        stored = await all_messages(ctx, "bob@example.test")
        # Postfix may reorder; match each by content.
        for m in messages:
            [s] = [s for s in stored if s.endswith(m)]
            names = [
                ln.split(b":")[0]
                for ln in s[: -len(m)].split(b"\r\n")
                if ln and ln[:1] not in b" \t"
            ]
            # Ours: Return-Path, Received; Postfix's: one Received.
            assert names == [b"Return-Path", b"Received", b"Received"], names
            assert b"by relay.postfix.test" in s and b"by mx.example.test" in s
            assert b"Return-Path: <sender@remote.test>" in s
        # Postfix used STARTTLS against us (smtp_tls_security_level=may).
        assert b"with ESMTPS" in stored[0]
        log = postfix.read_log()
        assert "status=sent" in log and "relay=127.0.0.1" in log
    finally:
        await deferToThread(postfix.stop)
