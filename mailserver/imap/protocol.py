"""The thin Twisted side of an IMAP connection: bytes in and out, the
autologout timer, STARTTLS and connection accounting.

All IMAP logic lives in ``mailserver.imap.session.ImapSession``; this
``Protocol`` only hands it the bytes that arrive and implements the small
``SessionIO`` interface it talks back through.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.python import failure, log
from zope.interface import implementer

from mailserver.imap.session import ImapSession


@implementer(IPushProducer)
class _WriteGate:
    """Registered as the transport's producer: the transport pauses it when
    its send buffer is full, so big FETCH responses wait for the client
    instead of piling up in memory."""

    def __init__(self) -> None:
        self.paused = False
        self._waiters: list[defer.Deferred[None]] = []

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._release()

    def stopProducing(self) -> None:
        self.paused = False
        self._release()

    def wait(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        return d

    def _release(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)


class ImapProtocol(protocol.Protocol):
    """One IMAP connection.  ``implicit_tls``: the listener already speaks TLS
    (port 993), so STARTTLS is not offered."""

    def __init__(self, ctx: Any, implicit_tls: bool, clock: Any = None) -> None:
        self.ctx = ctx
        self.implicit_tls = implicit_tls
        self.clock = clock if clock is not None else (ctx.reactor or _default_reactor())
        self.session: ImapSession | None = None
        self._timer: IDelayedCall | None = None
        self._closing = False
        self.remote_ip = ""
        self._gate = _WriteGate()
        self._gate_registered = False

    # -- Twisted callbacks -----------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.remote_ip = getattr(peer, "host", "") or ""
        self.transport.registerProducer(self._gate, True)
        self._gate_registered = True
        self.session = ImapSession(self.ctx, self, secure=self.implicit_tls)
        self.reset_timer()
        self.session.start()

    def dataReceived(self, data: bytes) -> None:
        if self.session is not None and not self._closing:
            self.session.data_received(data)

    def connectionLost(self, reason: failure.Failure = protocol.connectionDone) -> None:
        self._cancel_timer()
        self._gate.stopProducing()
        if self.session is not None:
            self.session.connection_lost()
            self.session = None

    # -- SessionIO -------------------------------------------------------

    @property
    def secure(self) -> bool:
        return self.session.secure if self.session is not None else self.implicit_tls

    @property
    def tls_available(self) -> bool:
        return self.ctx.tls is not None and not self.implicit_tls

    def write(self, data: bytes) -> None:
        if not self._closing and self.transport is not None:
            self.transport.write(data)

    def drain(self) -> defer.Deferred[None] | None:
        """A Deferred firing when the transport wants more output, or None
        if it does already."""
        if self._gate.paused and not self._closing:
            return self._gate.wait()
        return None

    def close(self) -> None:
        """Flush what was written, then close."""
        if self._closing:
            return
        self._closing = True
        self._cancel_timer()
        self._release_gate()
        self.transport.loseConnection()

    def abort(self) -> None:
        """Close at once (limits exceeded)."""
        self._closing = True
        self._cancel_timer()
        self._release_gate()
        self.transport.abortConnection()

    def start_tls(self) -> None:
        """Switch to TLS now; the session already answered OK and dropped any
        plaintext that was pipelined after STARTTLS."""
        self.transport.startTLS(self.ctx.tls)

    def pause(self) -> None:
        """Stop reading while a command runs and too much is buffered."""
        self.transport.pauseProducing()

    def resume(self) -> None:
        self.transport.resumeProducing()

    def reset_timer(self) -> None:
        """Restart the autologout timer (called on each command)."""
        seconds = float(self.ctx.config.imap.autologout)
        if self._timer is not None and self._timer.active():
            self._timer.reset(seconds)
        else:
            self._timer = self.clock.callLater(seconds, self._autologout)

    # -- internals -------------------------------------------------------

    def _release_gate(self) -> None:
        # A registered producer keeps TLS from shutting down: drop it first.
        if self._gate_registered:
            self._gate_registered = False
            self.transport.unregisterProducer()
        self._gate.stopProducing()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _autologout(self) -> None:
        self._timer = None
        if self.session is not None:
            log.msg(f"imap: autologout of {self.remote_ip}")
            self.session.autologout()
        else:
            self.close()


def _default_reactor() -> Any:
    from twisted.internet import reactor

    return reactor
