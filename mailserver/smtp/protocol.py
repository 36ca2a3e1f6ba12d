"""The Twisted side of SMTP: moves bytes between the socket and the sans-I/O
core, runs timers, and answers the core's events with policy and delivery.

One ``SMTPProtocol`` per connection.  ``kind`` decides the policy:

- ``mx``: no AUTH; recipients must be in a local domain (unknown user:
  550 5.1.1; anything else: 550 5.7.1 relaying denied);
- ``submission`` (STARTTLS) / ``submissions`` (implicit TLS): AUTH required
  before MAIL (530 5.7.0); the envelope sender must be an address the
  account owns (553 5.7.1); remote recipients go to the outbound queue.

While an event is being decided (a store lookup, a delivery) reading is
paused, so a pipelining client cannot grow our buffers, and the timers are
off.  250 after DATA is sent only once ``Delivery.deliver`` says everything
is durable.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.delivery import Envelope
from mailserver.smtp import replies as R
from mailserver.smtp.replies import Reply
from mailserver.smtp.session import (
    NEED_DATA,
    AuthAttempt,
    Closed,
    DataComplete,
    Event,
    Limits,
    Mail,
    Rcpt,
    SMTPServer,
    StartTls,
)

log = Logger(namespace="mailserver.smtp")

#: RFC 5321 4.5.3.1.6: text lines are at most 1000 octets, whatever the
#: (IMAP-oriented) ``limits.max_line_length`` says.
SMTP_LINE_LENGTH = 1000


def _tls_info(transport: Any) -> str | None:
    """``TLSv1.3 TLS_AES_256_GCM_SHA384`` for a TLS transport, else None."""
    for obj in (transport, getattr(transport, "protocol", None)):
        get = getattr(obj, "getHandle", None)
        if get is None:
            continue
        try:
            handle = get()
        except Exception:
            continue
        if isinstance(handle, SSL.Connection):
            try:
                return f"{handle.get_protocol_version_name()} {handle.get_cipher_name()}"
            except Exception:
                return "TLS"
    return None


class SMTPProtocol(protocol.Protocol):
    def __init__(self, ctx: Any, kind: str, ip: str) -> None:
        self.ctx = ctx
        self.kind = kind
        self.ip = ip
        cfg = ctx.config
        self.core = SMTPServer(
            cfg.server.hostname,
            limits=Limits(
                max_message_size=cfg.limits.max_message_size,
                max_line_length=SMTP_LINE_LENGTH,
                max_recipients=cfg.limits.max_recipients,
                max_errors=cfg.smtp.max_errors,
            ),
            tls_available=ctx.tls is not None and kind != "submissions",
            tls_active=kind == "submissions",
            auth_enabled=kind != "mx",
            allow_plaintext_auth=cfg.accounts.allow_plaintext_auth,
            auth_required=kind != "mx",
        )
        self.login: str | None = None  # canonical account address after AUTH
        self._busy = False
        self._pumping = False
        self._gone = False
        self._timer: Any = None
        self._close_after_reply = False

    # -- connection ------------------------------------------------------

    @property
    def _reactor(self) -> Any:
        if self.ctx.reactor is not None:
            return self.ctx.reactor
        from twisted.internet import reactor

        return reactor

    def connectionMade(self) -> None:
        # Replies are small and often pipelined: without TCP_NODELAY, Nagle
        # plus the client's delayed ACK stalls every transaction ~40 ms.
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            try:
                set_nodelay(True)
            except Exception:
                pass
        self.transport.write(self.core.greeting())
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        if self._gone or self.core.closed:
            return
        self.core.receive_data(data)
        self._pump()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        # An unfinished DATA dies with the connection: the core never
        # produced DataComplete, so nothing was stored.
        self._gone = True
        self._disarm()

    def shutdown(self) -> None:
        """The server is stopping: 421 4.3.2 and close, unless a decision
        (e.g. a delivery) is in flight; then close after its reply."""
        if self._gone:
            return
        if self._busy:
            self._close_after_reply = True
            return
        self._disarm()
        self.transport.write(self.core.shutdown())
        self.transport.loseConnection()

    # -- timers (RFC 5321 4.5.3.2) ----------------------------------------

    def _arm(self) -> None:
        self._disarm()
        if self._gone or self._busy:
            return
        smtp = self.ctx.config.smtp
        seconds = smtp.data_timeout if self.core.in_data else smtp.command_timeout
        self._timer = self._reactor.callLater(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        log.info("smtp {kind} {ip}: timeout", kind=self.kind, ip=self.ip)
        self.transport.write(self.core.timeout())
        self.transport.loseConnection()

    # -- the pump ----------------------------------------------------------

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self._busy and not self._gone:
                ev = self.core.next_event()
                out = self.core.data_to_send()
                if out:
                    self.transport.write(out)
                if ev is NEED_DATA:
                    break
                if isinstance(ev, Closed):
                    break
                if isinstance(ev, StartTls):
                    self._start_tls()
                    continue
                self._busy = True
                self._disarm()
                self.transport.pauseProducing()
                d = Deferred.fromCoroutine(self._decide(ev))
                d.addErrback(self._decide_failed, ev)
                d.addCallback(self._answer)
        finally:
            self._pumping = False
        if self.core.closed and not self._gone:
            self._disarm()
            self.transport.loseConnection()
        elif not self._busy:
            self._arm()

    def _answer(self, reply: Reply) -> None:
        self._busy = False
        if self._gone:
            return
        self.transport.write(self.core.send(reply))
        if self._close_after_reply:
            self._close_after_reply = False
            self.shutdown()
            return
        self.transport.resumeProducing()
        self._pump()

    def _decide_failed(self, failure: Failure, ev: Event) -> Reply:
        log.failure(
            "smtp {kind} {ip}: error handling {ev}",
            failure,
            kind=self.kind,
            ip=self.ip,
            ev=type(ev).__name__,
        )
        return R.R451_LOCAL_ERROR

    def _start_tls(self) -> None:
        self.transport.write(self.core.send(R.R220_TLS_READY))
        self.transport.startTLS(self.ctx.tls)
        self.core.tls_started()

    # -- policy --------------------------------------------------------------

    async def _decide(self, ev: Event) -> Reply:
        if isinstance(ev, Mail):
            return await self._mail(ev)
        if isinstance(ev, Rcpt):
            return await self._rcpt(ev)
        if isinstance(ev, DataComplete):
            return await self._data(ev)
        if isinstance(ev, AuthAttempt):
            return await self._auth(ev)
        raise AssertionError(f"unexpected event {ev!r}")

    async def _mail(self, ev: Mail) -> Reply:
        if self.kind == "mx":
            return R.R250_SENDER_OK
        if ev.sender is None or self.login is None:
            return R.R553_NOT_OWNER
        owned = await self.ctx.delivery.owned_addresses(self.login)
        if str(ev.sender).lower() not in owned:
            return R.R553_NOT_OWNER
        return R.R250_SENDER_OK

    async def _rcpt(self, ev: Rcpt) -> Reply:
        size = self.core.transaction.declared_size or 0
        res = await self.ctx.delivery.resolve(str(ev.recipient), size)
        if res.kind == "local":
            return R.R250_RCPT_OK
        if res.kind == "full":
            return Reply(452, "4.2.2", "Mailbox full, try again later")
        if res.kind == "unknown":
            return R.R550_NO_SUCH_USER
        # remote
        if self.kind != "mx" and self.login is not None:
            return R.R250_RCPT_OK
        return R.R550_RELAY_DENIED

    def _protocol_name(self, smtputf8: bool = False) -> str:
        """RFC 3848 / RFC 6531 "with" keyword for the Received field."""
        name = "ESMTP" if self.core.session.esmtp else "SMTP"
        if smtputf8:
            name = "UTF8SMTP"
        if self.core.session.tls:
            name += "S"
        if self.login is not None:
            name += "A"
        return name

    async def _data(self, ev: DataComplete) -> Reply:
        t = ev.transaction
        envelope = Envelope(
            sender=str(t.sender) if t.sender is not None else "",
            recipients=tuple(str(r.mailbox) for r in t.recipients),
            dsn=t.dsn,
            helo=self.core.session.helo,
            remote_ip=self.ip,
            protocol=self._protocol_name(t.smtputf8),
            tls_info=_tls_info(self.transport) if self.core.session.tls else None,
            authenticated=self.login,
            allow_remote=self.kind != "mx" and self.login is not None,
        )
        result = await self.ctx.delivery.deliver(envelope, ev.data)
        return Reply(result.code, result.enhanced, result.text)

    async def _auth(self, ev: AuthAttempt) -> Reply:
        from mailserver.accounts import Throttled

        if ev.authzid and ev.authzid.lower() != ev.username.lower():
            return R.R535_AUTH_FAILED
        try:
            account = await self.ctx.auth.authenticate(ev.username, ev.password, self.ip)
        except Throttled:
            return R.R454_AUTH_THROTTLED
        if account is None:
            log.info(
                "smtp {kind} {ip}: AUTH failed for {user}",
                kind=self.kind,
                ip=self.ip,
                user=ev.username,
            )
            return R.R535_AUTH_FAILED
        self.login = account.address
        return R.R235_AUTH_OK
