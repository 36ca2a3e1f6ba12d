"""SMTP listeners: ``smtp.mx_listen`` (inbound MX), ``smtp.submission_listen``
(STARTTLS, AUTH required) and ``smtp.submissions_listen`` (implicit TLS,
RFC 8314).

``services(ctx)`` returns one ``mailserver.listener.Listener`` per address; while
running, ``listener.port`` is the ``IListeningPort`` and ``listener.address``
the bound (host, port), so tests can use port 0.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import protocol
from twisted.logger import Logger

from mailserver.listener import Listener, RefuseProtocol
from mailserver.smtp import replies as R
from mailserver.smtp.protocol import SMTPProtocol

__all__ = ["SmtpFactory", "services"]

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
        p: protocol.Protocol
        if self.ctx.connections.admit(ip, self.ctx.config.limits):
            p = _CountedSMTPProtocol(self.ctx, self.kind, ip)
            self.sessions.add(p)
        else:
            log.info("smtp {kind}: refusing {ip}: connection limit", kind=self.kind, ip=ip)
            p = RefuseProtocol(R.R421_TOO_MANY_CONN.to_bytes())
        p.factory = self
        return p

    def shutdown_sessions(self) -> None:
        """Idle sessions get 421 4.3.2 now; one with a delivery in flight
        finishes it and answers first (shutdown waits for storage)."""
        for session in list(self.sessions):
            session.shutdown()


class _CountedSMTPProtocol(SMTPProtocol):
    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        self.factory.sessions.discard(self)
        self.ctx.connections.release(self.ip)
        super().connectionLost(reason)


def services(ctx: Any) -> list[service.IService]:
    """The SMTP listeners the configuration asks for."""
    smtp = ctx.config.smtp
    out: list[service.IService] = []
    for kind, addresses in (
        ("mx", smtp.mx_listen),
        ("submission", smtp.submission_listen),
        ("submissions", smtp.submissions_listen),
    ):
        for a in addresses:
            factory = SmtpFactory(ctx, kind)
            out.append(
                Listener(
                    ctx,
                    f"smtp-{kind}",
                    a.host,
                    a.port,
                    factory,
                    implicit_tls=kind == "submissions",
                    on_stop=factory.shutdown_sessions,
                )
            )
    return out
