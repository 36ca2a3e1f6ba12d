"""Test context helpers on top of ``tests/support.py``: our domains, the SMTP
listeners started on port 0, and reading what arrived in a mailbox."""

from __future__ import annotations

from typing import Any

from mailserver.context import ServerContext
from tests.support import add_test_user, close_test_context, make_test_context


async def make_context(tmp_path: Any, **overrides: Any) -> ServerContext:
    """``tests.support.make_test_context`` with our hostname and two local
    domains (``example.test`` and ``other.test``) unless overridden."""
    server = dict(overrides.pop("server", {}))
    server.setdefault("hostname", "mx.example.test")
    server.setdefault("local_domains", ["example.test", "other.test"])
    return await make_test_context(tmp_path, server=server, **overrides)


async def add_user(ctx: ServerContext, address: str, password: str, **kw: Any) -> None:
    await add_test_user(ctx, address, password, **kw)


async def close_context(ctx: ServerContext) -> None:
    await close_test_context(ctx)


class RunningServer:
    """The SMTP listeners of a context, started; ``port(kind)`` gives the
    bound port of ``mx``, ``submission`` or ``submissions``."""

    def __init__(self, ctx: ServerContext) -> None:
        from mailserver.smtp.service import services

        self.ctx = ctx
        self.listeners = services(ctx)
        for s in self.listeners:
            s.startService()

    def port(self, kind: str) -> int:
        for s in self.listeners:
            if s.factory.kind == kind:
                return s.address[1]
        raise KeyError(kind)

    async def stop(self) -> None:
        for s in self.listeners:
            await s.stopService()


async def all_messages(ctx: ServerContext, account: str) -> list[bytes]:
    """Raw bytes of every message in the account's INBOX, by UID."""
    mb = await ctx.storage.mailboxes.get_mailbox(account, "INBOX")
    out = []
    for r in await ctx.storage.messages.list_messages(mb.id):
        stored = await ctx.storage.messages.get_message(r.message_id)
        out.append(await ctx.storage.blobs.get(stored.blob_key))
    return out
