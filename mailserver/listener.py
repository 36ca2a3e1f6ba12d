"""The listener layer every protocol shares: bind one address (plain or
implicit TLS), enforce the connection limits across all protocols, and report
the bound address (port 0 resolved) for logs and tests.

A protocol supplies a ``ServerFactory`` that calls ``admit``/``release`` of
``ctx.connections`` around each session; the limits (``limits.max_connections``
and ``limits.max_connections_per_ip``) count SMTP, IMAP and POP3 sessions
together, so one client cannot exhaust the process through another port.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import protocol
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

__all__ = ["ConnectionTable", "Listener", "RefuseProtocol"]

log = Logger(namespace="mailserver.listener")


class ConnectionTable(dict[str, int]):
    """Open sessions per client IP, shared by every listener of a process.

    A ``dict`` (ip -> count) so tests can compare it with ``{}``; ``total``
    is kept alongside so admitting a connection costs O(1)."""

    total: int = 0

    def admit(self, ip: str, limits: Any) -> bool:
        """Count a new session from ``ip`` unless a limit is reached."""
        if self.total >= limits.max_connections or self.get(ip, 0) >= limits.max_connections_per_ip:
            return False
        self[ip] = self.get(ip, 0) + 1
        self.total += 1
        return True

    def release(self, ip: str) -> None:
        """Forget one session from ``ip`` (its connection was lost)."""
        left = self.get(ip, 0) - 1
        if left < 0:
            return
        self.total -= 1
        if left:
            self[ip] = left
        else:
            del self[ip]


class RefuseProtocol(protocol.Protocol):
    """Writes one greeting line saying why, then closes (limits reached)."""

    def __init__(self, line: bytes) -> None:
        self.line = line

    def connectionMade(self) -> None:
        self.transport.write(self.line)
        self.transport.loseConnection()


class Listener(service.Service):
    """Listens on one address while running.

    ``listenTCP`` happens in ``startService``, which the process runs before
    it drops privileges, so ports below 1024 work for an unprivileged daemon.
    ``on_stop`` runs before the port closes (SMTP uses it to say 421 to idle
    sessions)."""

    def __init__(
        self,
        ctx: Any,
        name: str,
        host: str,
        port: int,
        factory: protocol.Factory,
        implicit_tls: bool = False,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.host = host
        self.requested_port = port
        self.factory = factory
        self.implicit_tls = implicit_tls
        self.on_stop = on_stop
        self.port: IListeningPort | None = None
        self.setName(f"{name}:{host}:{port}")

    def _reactor(self) -> Any:
        if self.ctx.reactor is not None:
            return self.ctx.reactor
        from twisted.internet import reactor

        return reactor

    def startService(self) -> None:
        super().startService()
        factory = self.factory
        if self.implicit_tls:
            if self.ctx.tls is None:
                raise RuntimeError(f"{self.name}: implicit TLS needs a TLS certificate")
            factory = TLSMemoryBIOFactory(self.ctx.tls, False, factory)
        self.port = self._reactor().listenTCP(self.requested_port, factory, interface=self.host)
        log.info(
            "listening on {host}:{port} ({name})",
            host=self.host,
            port=self.address[1],
            name=self.name,
        )

    def stopService(self) -> Any:
        super().stopService()
        if self.on_stop is not None:
            self.on_stop()
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
