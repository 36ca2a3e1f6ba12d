"""POP3 server fixtures: a full test context (``tests.support``) with the
POP3 listeners running on 127.0.0.1 port 0."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from mailserver.listener import Listener
from mailserver.pop3.service import services
from mailserver.store.interfaces import DeliveryTarget, MessageRecord
from tests.support import (  # noqa: F401  (backend_fixture: the ``backend`` fixture)
    add_test_user,
    backend_fixture,
    close_test_context,
    make_test_context,
    parametrize_backends,
)

#: poplib tests that run on the embedded and the cluster store (test ids
#: ``[embedded]`` / ``[cluster]``); the others stay on the embedded store
ON_EVERY_BACKEND = frozenset(
    f"test_server.py::{name}"
    for name in (
        "test_full_session_every_command",
        "test_auth_plain",
        "test_uidl_stable_across_sessions_and_matches_imap",
        "test_maildrop_lock_in_use_and_released_on_drop",
        "test_imap_sees_pop3_deletions_as_expunges",
        "test_message_expunged_by_imap_during_session",
        "test_bare_lf_message_is_sent_with_crlf",
        "test_implicit_tls",
        "test_plaintext_refused_before_stls_then_allowed",
        "test_retr_marks_seen_once_and_keeps_other_flags",
        "test_large_message_roundtrip",
    )
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_backends(metafunc, ON_EVERY_BACKEND)


async def make_context(tmp_path: Path, **overrides: Any) -> Any:
    return await make_test_context(tmp_path, **overrides)


async def add_user(ctx: Any, address: str, password: str) -> None:
    await add_test_user(ctx, address, password)


async def deliver(ctx: Any, address: str, raw: bytes, flags: frozenset[str] = frozenset()):
    """Put ``raw`` into the INBOX of ``address``; returns its MessageRecord."""
    storage = ctx.storage
    inbox = await storage.mailboxes.get_mailbox(address, "INBOX")
    stored = await ctx.delivery.ingest(raw)
    [record] = await storage.messages.deliver(stored, [DeliveryTarget(inbox.id, flags)])
    return record


@dataclass
class Server:
    """A running POP3 service set on 127.0.0.1."""

    ctx: Any
    listeners: list[Listener]

    @property
    def port(self) -> int:
        return next(s for s in self.listeners if not s.implicit_tls).address[1]

    @property
    def tls_port(self) -> int:
        return next(s for s in self.listeners if s.implicit_tls).address[1]

    async def inbox(self, address: str = "alice@example.test") -> list[MessageRecord]:
        storage = self.ctx.storage
        mbox = await storage.mailboxes.get_mailbox(address, "INBOX")
        return await storage.messages.list_messages(mbox.id)

    async def inbox_id(self, address: str = "alice@example.test") -> str:
        mbox = await self.ctx.storage.mailboxes.get_mailbox(address, "INBOX")
        return mbox.id

    async def sessions_finished(self) -> None:
        """Wait until every server-side session has ended and released its
        maildrop (the client side closing does not mean the server saw it)."""
        from twisted.internet.defer import DeferredList

        pending = [p.finished for s in self.listeners for p in s.factory.sessions]
        await DeferredList(pending)


async def start_server(ctx: Any) -> Server:
    svcs = services(ctx)
    for s in svcs:
        s.startService()
    return Server(ctx, svcs)


async def stop_server(server: Server) -> None:
    for s in server.listeners:
        await s.stopService()
    await close_test_context(server.ctx)


@pytest_twisted.async_yield_fixture
async def pop3_server(tmp_path, backend):
    """Listeners with plaintext auth allowed (poplib tests of every command)."""
    ctx = await make_context(tmp_path, backend=backend, accounts={"allow_plaintext_auth": True})
    await add_user(ctx, "alice@example.test", "secret")
    server = await start_server(ctx)
    yield server
    await stop_server(server)


@pytest_twisted.async_yield_fixture
async def pop3_tls_server(tmp_path, backend):
    """Listeners with the default policy: plaintext auth only over TLS."""
    ctx = await make_context(tmp_path, backend=backend)
    await add_user(ctx, "alice@example.test", "secret")
    server = await start_server(ctx)
    yield server
    await stop_server(server)
