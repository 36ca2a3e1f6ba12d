"""IMAP listeners: ``imap.listen`` (plain, STARTTLS offered) and
``imap.tls_listen`` (implicit TLS, port 993).

``services(ctx)`` returns one ``mailserver.listener.Listener`` per configured
address; each is a Twisted ``IService`` that listens when started.  ``listener.port`` is
the ``IListeningPort`` while running (tests read the real port from it when
the config says port 0).
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import protocol
from twisted.logger import Logger

from mailserver.imap.protocol import ImapProtocol
from mailserver.listener import Listener, RefuseProtocol

__all__ = ["ImapFactory", "services"]

log = Logger(namespace="mailserver.imap")

_TOO_MANY = b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"


class ImapFactory(protocol.ServerFactory):
    """Builds ``ImapProtocol`` instances within the connection limits shared
    with the other protocols (``ctx.connections``)."""

    def __init__(self, ctx: Any, implicit_tls: bool) -> None:
        self.ctx = ctx
        self.implicit_tls = implicit_tls

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        ip = getattr(addr, "host", "") or ""
        p: protocol.Protocol
        if self.ctx.connections.admit(ip, self.ctx.config.limits):
            p = _CountedImapProtocol(self.ctx, self.implicit_tls, ip)
        else:
            log.info("refusing {ip}: connection limit", ip=ip)
            p = RefuseProtocol(_TOO_MANY)
        p.factory = self
        return p


class _CountedImapProtocol(ImapProtocol):
    def __init__(self, ctx: Any, implicit_tls: bool, ip: str) -> None:
        super().__init__(ctx, implicit_tls)
        self._counted_ip = ip

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        self.ctx.connections.release(self._counted_ip)
        super().connectionLost(reason)


def services(ctx: Any) -> list[service.IService]:
    """The IMAP listeners the configuration asks for."""
    return [
        Listener(ctx, kind, a.host, a.port, ImapFactory(ctx, tls), implicit_tls=tls)
        for kind, tls, addresses in (
            ("imap", False, ctx.config.imap.listen),
            ("imaps", True, ctx.config.imap.tls_listen),
        )
        for a in addresses
    ]
