"""Helpers for IMAP session unit tests: a fake connection (``FakeIO``) that
records what the session writes and lets a test await a response, and a
tiny scripted client (``FakeClient``) on top of it.

No sockets and no sleeps: a test awaits the tagged completion of its
command (with a generous guard timeout so a bug fails instead of hanging).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor

from mailserver.config import make_test_config
from mailserver.context import ServerContext
from mailserver.imap.session import ImapSession
from mailserver.store import open_storage

GUARD_SECONDS = 20.0


class FakeIO:
    """``SessionIO`` recording output in ``out``."""

    def __init__(self, tls_available: bool = False) -> None:
        self.remote_ip = "192.0.2.1"
        self.tls_available = tls_available
        self.out = bytearray()
        self.closed = False
        self.aborted = False
        self.tls_started = False
        self.paused = False
        self.timer_resets = 0
        self._waiters: list[tuple[Callable[[], bool], defer.Deferred[None]]] = []

    # SessionIO
    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.out += data
        self._check()

    def close(self) -> None:
        self.closed = True
        self._check()

    def abort(self) -> None:
        self.aborted = self.closed = True
        self._check()

    def start_tls(self) -> None:
        self.tls_started = True

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def reset_timer(self) -> None:
        self.timer_resets += 1

    # waiting
    def _check(self) -> None:
        for item in list(self._waiters):
            pred, d = item
            if pred():
                self._waiters.remove(item)
                d.callback(None)

    def wait(self, pred: Callable[[], bool], what: str = "condition") -> defer.Deferred[None]:
        """Fires once ``pred()`` is true (checked after every write/close)."""
        d: defer.Deferred[None] = defer.Deferred()
        if pred():
            d.callback(None)
            return d
        item = (pred, d)
        self._waiters.append(item)

        def expire() -> None:
            if item in self._waiters:
                self._waiters.remove(item)
                d.errback(
                    AssertionError(f"timed out waiting for {what}; output:\n{bytes(self.out)!r}")
                )

        call = reactor.callLater(GUARD_SECONDS, expire)
        d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        return d


_TAGGED = re.compile(rb"(?m)^(\S+) (OK|NO|BAD)\b[^\r\n]*\r\n")


class FakeClient:
    """Drives an ``ImapSession`` through a ``FakeIO``."""

    def __init__(self, session: ImapSession, io: FakeIO) -> None:
        self.session = session
        self.io = io
        self.n = 0
        self.mark = 0

    def send(self, data: bytes) -> None:
        self.session.data_received(data)

    def take(self) -> bytes:
        """Output since the last take."""
        data = bytes(self.io.out[self.mark :])
        self.mark = len(self.io.out)
        return data

    async def wait_for(self, pattern: bytes, what: str | None = None) -> bytes:
        """Await output (since the mark) matching regex ``pattern``; returns
        the output up to and including the match and moves the mark."""
        rx = re.compile(pattern, re.M)
        start = self.mark

        def pred() -> bool:
            return rx.search(bytes(self.io.out[start:])) is not None

        await self.io.wait(pred, what or pattern.decode("latin-1"))
        m = rx.search(bytes(self.io.out[start:]))
        assert m is not None
        end = start + m.end()
        self.mark = end
        return bytes(self.io.out[start:end])

    async def tagged(self, tag: str) -> bytes:
        return await self.wait_for(rb"^" + re.escape(tag.encode()) + rb" (OK|NO|BAD)\b.*\r\n")

    async def cmd(self, text: str | bytes, tag: str | None = None) -> bytes:
        """Send one command (tag added) and return everything up to its
        tagged completion."""
        if tag is None:
            self.n += 1
            tag = f"t{self.n}"
        if isinstance(text, str):
            text = text.encode("utf-8")
        self.send(tag.encode() + b" " + text + b"\r\n")
        return await self.tagged(tag)

    async def ok(self, text: str | bytes) -> bytes:
        out = await self.cmd(text)
        last = out.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
        assert b" OK " in last, out
        return out

    async def login(self, user: str = "alice@example.test", pw: str = "secret") -> bytes:
        return await self.ok(f'LOGIN {user} "{pw}"')


def status_of(response: bytes) -> bytes:
    """``OK``/``NO``/``BAD`` of a command's tagged completion."""
    last = response.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
    return last.split(b" ")[1]


async def make_unit_context(tmp_path: Any, **overrides: Any) -> ServerContext:
    """A context on an embedded store without listeners or TLS (the lead's
    ``tests/support.py`` builds the full one)."""
    overrides.setdefault("accounts", {})
    overrides["accounts"].setdefault("allow_plaintext_auth", True)
    config = make_test_config(tmp_path, **overrides)
    storage = await open_storage(
        {"backend": "embedded", "embedded": {"path": str(tmp_path / "store")}}
    )
    return ServerContext.build(config, storage)


async def add_user(
    ctx: ServerContext, address: str = "alice@example.test", pw: str = "secret"
) -> None:
    await ctx.storage.accounts.create_account(address, await ctx.auth.hash(pw))


def open_session(
    ctx: ServerContext, secure: bool = False, tls_available: bool = False
) -> FakeClient:
    io = FakeIO(tls_available=tls_available)
    session = ImapSession(ctx, io, secure=secure)
    session.start()
    client = FakeClient(session, io)
    client.take()
    return client


async def deliver(
    ctx: ServerContext,
    account: str,
    raw: bytes,
    mailbox: str = "INBOX",
    flags: frozenset[str] = frozenset(),
) -> int:
    """Deliver ``raw`` like the SMTP side does; returns the new UID."""
    from mailserver.imap.commands_mailbox import ingest
    from mailserver.store.interfaces import DeliveryTarget

    info = await ctx.storage.mailboxes.get_mailbox(account, mailbox)
    assert info is not None
    stored = await ingest(ctx, raw)
    recs = await ctx.storage.messages.deliver(stored, [DeliveryTarget(info.id, flags)])
    return recs[0].uid


def message(
    subject: str = "Hello", body: str = "Hi there.\r\n", frm: str = "bob@example.org"
) -> bytes:
    return (
        f"From: Bob <{frm}>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        f"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{abs(hash(subject + body))}@example.org>\r\n"
        f"\r\n{body}"
    ).encode()
