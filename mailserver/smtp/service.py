"""SMTP listeners: ``smtp.mx_listen`` (inbound MX), ``smtp.submission_listen``
(STARTTLS, AUTH required) and ``smtp.submissions_listen`` (implicit TLS,
RFC 8314).

``services(ctx)`` returns one ``SmtpListener`` per configured address; while
running, ``listener.port`` is the ``IListeningPort`` and ``listener.address``
the bound (host, port), so tests can use port 0.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import protocol
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailserver.smtp.protocol import RefuseProtocol, SMTPProtocol

__all__ = ["SmtpFactory", "SmtpListener", "services"]

log = Logger(namespace="mailserver.smtp")

KINDS = ("mx", "submission", "submissions")


class SmtpFactory(protocol.ServerFactory):
    """Builds protocols and enforces ``limits.max_connections`` and
    ``limits.max_connections_per_ip`` (counted in ``ctx.connections``, shared
    with IMAP and POP3)."""

    def __init__(self, ctx: Any, kind: str) -> None:
        self.ctx = ctx
        self.kind = kind
        self.sessions: set[SMTPProtocol] = set()

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        ip = getattr(addr, "host", "") or ""
        conns = self.ctx.connections
        limits = self.ctx.config.limits
        if (
            sum(conns.values()) >= limits.max_connections
            or conns.get(ip, 0) >= limits.max_connections_per_ip
        ):
            log.info("smtp {kind}: refusing {ip}: connection limit", kind=self.kind, ip=ip)
            p: protocol.Protocol = RefuseProtocol()
        else:
            conns[ip] = conns.get(ip, 0) + 1
            p = _CountedSMTPProtocol(self.ctx, self.kind, ip)
            self.sessions.add(p)
        p.factory = self
        return p


class _CountedSMTPProtocol(SMTPProtocol):
    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        self.factory.sessions.discard(self)
        conns = self.ctx.connections
        left = conns.get(self.ip, 0) - 1
        if left > 0:
            conns[self.ip] = left
        else:
            conns.pop(self.ip, None)
        super().connectionLost(reason)


class SmtpListener(service.Service):
    """Listens on one address while running."""

    def __init__(self, ctx: Any, kind: str, host: str, port: int) -> None:
        if kind not in KINDS:
            raise ValueError(kind)
        self.ctx = ctx
        self.kind = kind
        self.host = host
        self.requested_port = port
        self.port: IListeningPort | None = None
        self.factory = SmtpFactory(ctx, kind)
        self.setName(f"smtp-{kind}:{host}:{port}")

    def _reactor(self) -> Any:
        if self.ctx.reactor is not None:
            return self.ctx.reactor
        from twisted.internet import reactor

        return reactor

    def startService(self) -> None:
        super().startService()
        factory: protocol.Factory = self.factory
        if self.kind == "submissions":
            if self.ctx.tls is None:
                raise RuntimeError("smtp.submissions_listen is set but TLS is not configured")
            factory = TLSMemoryBIOFactory(self.ctx.tls, False, factory)
        self.port = self._reactor().listenTCP(self.requested_port, factory, interface=self.host)
        log.info(
            "smtp: listening on {host}:{port} ({name})",
            host=self.host,
            port=self.port.getHost().port,
            name=self.name,
        )

    def stopService(self) -> Any:
        super().stopService()
        # Idle sessions get 421 4.3.2 now; one with a delivery in flight
        # finishes it and answers first (shutdown waits for storage).
        for session in list(self.factory.sessions):
            session.shutdown()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None

    @property
    def address(self) -> tuple[str, int]:
        if self.port is None:
            raise RuntimeError("listener is not running")
        h = self.port.getHost()
        return h.host, h.port


def services(ctx: Any) -> list[service.IService]:
    """The SMTP listeners the configuration asks for."""
    smtp = ctx.config.smtp
    out: list[service.IService] = []
    for kind, addresses in (
        ("mx", smtp.mx_listen),
        ("submission", smtp.submission_listen),
        ("submissions", smtp.submissions_listen),
    ):
        for addr in addresses:
            host, port = (addr.host, addr.port) if hasattr(addr, "host") else _split(addr)
            out.append(SmtpListener(ctx, kind, host, port))
    return out


def _split(text: str) -> tuple[str, int]:
    host, _, port = str(text).rpartition(":")
    return host.strip("[]"), int(port)
