"""POP3 listeners: ``pop3.listen`` (plain, STLS offered; port 110) and
``pop3.tls_listen`` (implicit TLS; port 995).

``services(ctx)`` returns one ``POP3Listener`` per configured address; each
is a Twisted ``IService`` that listens when started.  ``listener.port`` is
the ``IListeningPort`` while running and ``listener.address`` the bound
(host, port), so tests can use port 0.

All listeners of one storage share one maildrop lock table and one size-fix
memory: a maildrop locked through the plain port is locked on the TLS port
too.  A storage backend that can lock across daemons offers its own
``MaildropLocks`` as ``storage.maildrop_locks`` (the cluster lease); the
embedded backend gets the in-process table.
"""

from __future__ import annotations

import weakref
from typing import Any

from twisted.application import service
from twisted.internet import protocol
from twisted.internet.interfaces import IListeningPort
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import log

from mailserver.pop3.maildrop import LocalMaildropLocks, MaildropLocks, SizeFixes
from mailserver.pop3.protocol import AUTOLOGOUT, POP3Protocol

__all__ = ["POP3Factory", "POP3Listener", "locks_for", "services"]


class _Shared:
    def __init__(self, locks: MaildropLocks) -> None:
        self.locks = locks
        self.size_fixes = SizeFixes()


_shared: weakref.WeakKeyDictionary[Any, _Shared] = weakref.WeakKeyDictionary()
_shared_strong: dict[int, tuple[Any, _Shared]] = {}  # storages without weakref support


def _shared_for(storage: Any) -> _Shared:
    try:
        shared = _shared.get(storage)
    except TypeError:
        entry = _shared_strong.get(id(storage))
        shared = entry[1] if entry else None
    if shared is None:
        locks = getattr(storage, "maildrop_locks", None)
        shared = _Shared(locks if locks is not None else LocalMaildropLocks())
        try:
            _shared[storage] = shared
        except TypeError:
            _shared_strong[id(storage)] = (storage, shared)
    return shared


def locks_for(ctx: Any) -> MaildropLocks:
    """The maildrop lock table every POP3 session on ``ctx.storage`` uses."""
    return _shared_for(ctx.storage).locks


class _Refuse(protocol.Protocol):
    """Says -ERR and closes: the connection limits are reached."""

    def connectionMade(self) -> None:
        self.transport.write(b"-ERR [SYS/TEMP] too many connections, try again later\r\n")
        self.transport.loseConnection()


class POP3Factory(protocol.ServerFactory):
    """Builds ``POP3Protocol`` instances and enforces
    ``limits.max_connections`` and ``limits.max_connections_per_ip`` (shared
    with the other protocols through ``ctx.connections``)."""

    def __init__(self, ctx: Any, implicit_tls: bool, timeout: float = AUTOLOGOUT) -> None:
        self.ctx = ctx
        self.implicit_tls = implicit_tls
        self.timeout = timeout
        self.shared = _shared_for(ctx.storage)
        #: Sessions still running (until their ``finished`` fires).
        self.sessions: set[POP3Protocol] = set()

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        ip = getattr(addr, "host", "") or ""
        conns = self.ctx.connections
        limits = self.ctx.config.limits
        if (
            sum(conns.values()) >= limits.max_connections
            or conns.get(ip, 0) >= limits.max_connections_per_ip
        ):
            log.msg(f"pop3: refusing {ip}: connection limit")
            p: protocol.Protocol = _Refuse()
            p.factory = self
            return p
        conns[ip] = conns.get(ip, 0) + 1
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
        conns = self.ctx.connections
        left = conns.get(self.counted_ip, 0) - 1
        if left > 0:
            conns[self.counted_ip] = left
        else:
            conns.pop(self.counted_ip, None)
        super().connectionLost(reason)


class POP3Listener(service.Service):
    """Listens on one address while running."""

    def __init__(
        self, ctx: Any, host: str, port: int, implicit_tls: bool, timeout: float = AUTOLOGOUT
    ) -> None:
        self.ctx = ctx
        self.host = host
        self.requested_port = port
        self.implicit_tls = implicit_tls
        self.timeout = timeout
        self.port: IListeningPort | None = None
        self.factory: POP3Factory | None = None
        kind = "pop3s" if implicit_tls else "pop3"
        self.setName(f"{kind}:{host}:{port}")

    def _reactor(self) -> Any:
        if self.ctx.reactor is not None:
            return self.ctx.reactor
        from twisted.internet import reactor

        return reactor

    def privilegedStartService(self) -> None:
        """Bind before privileges are dropped (ports 110 and 995)."""
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        self._listen()

    def _listen(self) -> None:
        if self.port is not None:
            return
        self.factory = POP3Factory(self.ctx, self.implicit_tls, self.timeout)
        factory: protocol.Factory = self.factory
        if self.implicit_tls:
            if self.ctx.tls is None:
                raise RuntimeError("pop3.tls_listen is set but no TLS certificate is configured")
            factory = TLSMemoryBIOFactory(self.ctx.tls, False, factory)
        self.port = self._reactor().listenTCP(self.requested_port, factory, interface=self.host)
        log.msg(f"pop3: listening on {self.host}:{self.port.getHost().port} ({self.name})")

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (port 0 resolved); only while running."""
        if self.port is None:
            raise RuntimeError("listener is not running")
        h = self.port.getHost()
        return h.host, h.port


def services(ctx: Any) -> list[service.IService]:
    """The POP3 listeners the configuration asks for."""
    out: list[service.IService] = []
    for addr in ctx.config.pop3.listen:
        out.append(POP3Listener(ctx, addr.host, addr.port, implicit_tls=False))
    for addr in ctx.config.pop3.tls_listen:
        out.append(POP3Listener(ctx, addr.host, addr.port, implicit_tls=True))
    return out
