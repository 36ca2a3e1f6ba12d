"""POP3 listeners: ``pop3.listen`` (plain, STLS offered; port 110) and
``pop3.tls_listen`` (implicit TLS; port 995).

``services(ctx)`` returns one ``mailserver.listener.Listener`` per address; each
is a Twisted ``IService`` that listens when started.  ``listener.port`` is
the ``IListeningPort`` while running and ``listener.address`` the bound
(host, port), so tests can use port 0.

All listeners of one process share one maildrop lock table and one size-fix
memory: a maildrop locked through the plain port is locked on the TLS port
too.  A storage backend that can lock across daemons offers its own
``MaildropLocks`` as ``storage.maildrop_locks`` (the cluster lease); the
embedded backend gets the in-process table.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import protocol
from twisted.logger import Logger

from mailserver.listener import Listener, RefuseProtocol
from mailserver.pop3.maildrop import LocalMaildropLocks, MaildropLocks, SizeFixes
from mailserver.pop3.protocol import AUTOLOGOUT, POP3Protocol

__all__ = ["POP3Factory", "locks_for", "services"]

log = Logger(namespace="mailserver.pop3")


class _Shared:
    def __init__(self, locks: MaildropLocks) -> None:
        self.locks = locks
        self.size_fixes = SizeFixes()


def _shared_for(ctx: Any) -> _Shared:
    """The POP3 state all listeners of one process share (kept on the
    context, so the plain and the TLS port see the same locks)."""
    shared = ctx.protocol_state.get("pop3")
    if shared is None:
        locks = getattr(ctx.storage, "maildrop_locks", None)
        shared = ctx.protocol_state["pop3"] = _Shared(
            locks if locks is not None else LocalMaildropLocks()
        )
    return shared


def locks_for(ctx: Any) -> MaildropLocks:
    """The maildrop lock table every POP3 session on ``ctx.storage`` uses."""
    return _shared_for(ctx).locks


_TOO_MANY = b"-ERR [SYS/TEMP] too many connections, try again later\r\n"


class POP3Factory(protocol.ServerFactory):
    """Builds ``POP3Protocol`` instances and enforces
    ``limits.max_connections`` and ``limits.max_connections_per_ip`` (shared
    with the other protocols through ``ctx.connections``)."""

    def __init__(self, ctx: Any, implicit_tls: bool, timeout: float = AUTOLOGOUT) -> None:
        self.ctx = ctx
        self.implicit_tls = implicit_tls
        self.timeout = timeout
        self.shared = _shared_for(ctx)
        #: Sessions still running (until their ``finished`` fires).
        self.sessions: set[POP3Protocol] = set()

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        ip = getattr(addr, "host", "") or ""
        if not self.ctx.connections.admit(ip, self.ctx.config.limits):
            log.info("refusing {ip}: connection limit", ip=ip)
            refused = RefuseProtocol(_TOO_MANY)
            refused.factory = self
            return refused
        p = _CountedPOP3Protocol(
            self.ctx,
            self.shared.locks,
            implicit_tls=self.implicit_tls,
            size_fixes=self.shared.size_fixes,
            timeout=self.timeout,
        )
        p.counted_ip = ip
        p.factory = self
        self.sessions.add(p)
        p.finished.addBoth(lambda _: self.sessions.discard(p))
        return p


class _CountedPOP3Protocol(POP3Protocol):
    counted_ip = ""

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        self.ctx.connections.release(self.counted_ip)
        super().connectionLost(reason)


def services(ctx: Any, timeout: float = AUTOLOGOUT) -> list[service.IService]:
    """The POP3 listeners the configuration asks for."""
    return [
        Listener(ctx, kind, a.host, a.port, POP3Factory(ctx, tls, timeout), implicit_tls=tls)
        for kind, tls, addresses in (
            ("pop3", False, ctx.config.pop3.listen),
            ("pop3s", True, ctx.config.pop3.tls_listen),
        )
        for a in addresses
    ]
