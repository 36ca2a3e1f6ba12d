"""IMAP listeners: ``imap.listen`` (plain, STARTTLS offered) and
``imap.tls_listen`` (implicit TLS, port 993).

``services(ctx)`` returns one ``ImapListener`` per configured address; each
is a Twisted ``IService`` that listens when started.  ``listener.port`` is
the ``IListeningPort`` while running (tests read the real port from it when
the config says port 0).
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import protocol
from twisted.internet.interfaces import IListeningPort
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import log

from mailserver.imap.protocol import ImapProtocol

__all__ = ["ImapFactory", "ImapListener", "services"]


class _Refuse(protocol.Protocol):
    """Says BYE and closes: the connection limits are reached."""

    def connectionMade(self) -> None:
        self.transport.write(b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n")
        self.transport.loseConnection()


class ImapFactory(protocol.ServerFactory):
    """Builds ``ImapProtocol`` instances and enforces ``limits.max_connections``
    and ``limits.max_connections_per_ip`` (shared with the other protocols
    through ``ctx.connections``)."""

    def __init__(self, ctx: Any, implicit_tls: bool) -> None:
        self.ctx = ctx
        self.implicit_tls = implicit_tls

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        ip = getattr(addr, "host", "") or ""
        conns = self.ctx.connections
        limits = self.ctx.config.limits
        total = sum(conns.values())
        if total >= limits.max_connections or conns.get(ip, 0) >= limits.max_connections_per_ip:
            log.msg(f"imap: refusing {ip}: connection limit")
            p: protocol.Protocol = _Refuse()
            p.factory = self
            return p
        conns[ip] = conns.get(ip, 0) + 1
        p = _CountedImapProtocol(self.ctx, self.implicit_tls, ip)
        p.factory = self
        return p


class _CountedImapProtocol(ImapProtocol):
    def __init__(self, ctx: Any, implicit_tls: bool, ip: str) -> None:
        super().__init__(ctx, implicit_tls)
        self._counted_ip = ip

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        conns = self.ctx.connections
        left = conns.get(self._counted_ip, 0) - 1
        if left > 0:
            conns[self._counted_ip] = left
        else:
            conns.pop(self._counted_ip, None)
        super().connectionLost(reason)


class ImapListener(service.Service):
    """Listens on one address while running."""

    def __init__(self, ctx: Any, host: str, port: int, implicit_tls: bool) -> None:
        self.ctx = ctx
        self.host = host
        self.requested_port = port
        self.implicit_tls = implicit_tls
        self.port: IListeningPort | None = None
        kind = "imaps" if implicit_tls else "imap"
        self.setName(f"{kind}:{host}:{port}")

    def _reactor(self) -> Any:
        if self.ctx.reactor is not None:
            return self.ctx.reactor
        from twisted.internet import reactor

        return reactor

    def startService(self) -> None:
        super().startService()
        factory: protocol.Factory = ImapFactory(self.ctx, self.implicit_tls)
        if self.implicit_tls:
            if self.ctx.tls is None:
                raise RuntimeError("imap.tls_listen is set but no TLS certificate is configured")
            factory = TLSMemoryBIOFactory(self.ctx.tls, False, factory)
        self.port = self._reactor().listenTCP(self.requested_port, factory, interface=self.host)
        log.msg(f"imap: listening on {self.host}:{self.port.getHost().port} ({self.name})")

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
    """The IMAP listeners the configuration asks for."""
    out: list[service.IService] = []
    for addr in ctx.config.imap.listen:
        out.append(ImapListener(ctx, addr.host, addr.port, implicit_tls=False))
    for addr in ctx.config.imap.tls_listen:
        out.append(ImapListener(ctx, addr.host, addr.port, implicit_tls=True))
    return out
