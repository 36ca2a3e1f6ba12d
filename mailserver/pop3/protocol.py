"""The Twisted side of POP3: moves bytes between the transport and the
sans-I/O ``POP3Core``, runs its requests against the storage, and keeps the
inactivity timer (RFC 1939 3: at least 10 minutes, then autologout without
entering UPDATE).

A session holds the maildrop lock from login to disconnect; whatever way the
connection ends, the lock is released, and only a QUIT in TRANSACTION
expunges anything.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.accounts import Throttled
from mailserver.pop3.core import (
    NEED_DATA,
    Authenticate,
    AuthOutcome,
    Close,
    Fetch,
    POP3Core,
    Send,
    StartTLS,
    Update,
)
from mailserver.pop3.maildrop import (
    Maildrop,
    MaildropLease,
    MaildropLocks,
    MaildropUnavailable,
    SizeFixes,
)
from mailserver.store.interfaces import BlobNotFound

__all__ = ["POP3Protocol", "AUTOLOGOUT"]

log = Logger()

#: RFC 1939 3: the autologout timer must be at least 10 minutes.
AUTOLOGOUT = 600.0
#: Stop reading from a client that pipelines more than this unanswered.
MAX_BUFFERED = 64 * 1024


class POP3Protocol(protocol.Protocol):
    """One POP3 connection.

    ``ctx`` is the ``ServerContext``; ``locks`` and ``size_fixes`` are
    shared by every connection of the process (see ``service.py``).
    """

    def __init__(
        self,
        ctx: Any,
        locks: MaildropLocks,
        *,
        implicit_tls: bool = False,
        size_fixes: SizeFixes | None = None,
        clock: Any = None,
        timeout: float = AUTOLOGOUT,
    ) -> None:
        self.ctx = ctx
        self.locks = locks
        self.implicit_tls = implicit_tls
        self.size_fixes = size_fixes if size_fixes is not None else SizeFixes()
        self.clock = clock or ctx.reactor
        if self.clock is None:
            from twisted.internet import reactor

            self.clock = reactor
        self.timeout_seconds = timeout
        self.core: POP3Core | None = None
        self.maildrop: Maildrop | None = None
        self.lease: MaildropLease | None = None
        self.remote_ip: str | None = None
        self._timer: Any = None
        self._running = False
        self._paused = False
        self._closed = False
        self._seen_marked: set[int] = set()
        self._lost = False
        #: The drive loop in progress, if any (unit tests wait on it).
        self.busy: defer.Deferred[None] | None = None
        #: Fires once the connection is gone and the maildrop is released.
        self.finished: defer.Deferred[None] = defer.Deferred()

    # ------------------------------------------------------------ transport

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.remote_ip = getattr(peer, "host", None)
        cfg = self.ctx.config
        self.core = POP3Core(
            hostname=cfg.server.hostname,
            tls_active=self.implicit_tls,
            tls_available=self.ctx.tls is not None and not self.implicit_tls,
            allow_plaintext_auth=cfg.accounts.allow_plaintext_auth,
        )
        self._arm_timer()
        self._kick()

    def dataReceived(self, data: bytes) -> None:
        if self.core is None or self._closed:
            return
        self.core.receive_data(data)
        self._arm_timer()
        if self.core.buffered > MAX_BUFFERED and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        self._kick()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._closed = True
        self._lost = True
        self._cancel_timer()
        if not self._running:  # else the drive loop finishes when it ends
            defer.Deferred.fromCoroutine(self._finish())

    async def _finish(self) -> None:
        """After the connection is gone and no work is in flight: release
        the maildrop and fire ``finished``."""
        await self._release()
        if not self.finished.called:
            self.finished.callback(None)

    # --------------------------------------------------------------- timers

    def _arm_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.timeout_seconds)
        else:
            self._timer = self.clock.callLater(self.timeout_seconds, self._timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.core is None or self._closed:
            return
        if self._running:  # working for the client: not idle
            self._arm_timer()
            return
        log.info("pop3: autologout of {ip}", ip=self.remote_ip)
        self.core.timeout()
        self._kick()

    # ---------------------------------------------------------------- drive

    def _kick(self) -> None:
        if not self._running:
            self.busy = defer.Deferred.fromCoroutine(self._drive())

    async def _drive(self) -> None:
        """Run the core's events until it needs more input."""
        core = self.core
        assert core is not None
        self._running = True
        try:
            while not self._closed:
                ev = core.next_event()
                if ev is NEED_DATA:
                    break
                if isinstance(ev, Send):
                    self.transport.write(ev.data)
                elif isinstance(ev, Authenticate):
                    core.auth_result(*await self._authenticate(ev))
                elif isinstance(ev, Fetch):
                    await self._fetch(ev)
                elif isinstance(ev, StartTLS):
                    self.transport.startTLS(self.ctx.tls)
                    core.tls_started()
                elif isinstance(ev, Update):
                    core.update_done(await self._update(ev))
                elif isinstance(ev, Close):
                    self._closed = True
                    self._cancel_timer()
                    self.transport.loseConnection()
                    await self._release()
        except Exception:
            log.failure("pop3: session failed")
            self._closed = True
            self.transport.abortConnection()
            await self._release()
        finally:
            self._running = False
            if self._closed:
                await self._release()
            if self._lost:
                await self._finish()
        if self._paused and not self._closed and core.buffered <= MAX_BUFFERED:
            self._paused = False
            self.transport.resumeProducing()

    async def _authenticate(self, ev: Authenticate) -> tuple[AuthOutcome, list[Any]]:
        try:
            account = await self.ctx.auth.authenticate(ev.username, ev.password, self.remote_ip)
        except Throttled:
            return AuthOutcome.THROTTLED, []
        except Exception:
            log.failure("pop3: authentication of {user} failed", user=ev.username)
            return AuthOutcome.TEMP_FAIL, []
        if account is None:
            return AuthOutcome.BAD, []
        storage = self.ctx.storage
        try:
            mailbox = await storage.mailboxes.get_mailbox(account.address, "INBOX")
        except Exception:
            log.failure("pop3: cannot open the INBOX of {user}", user=account.address)
            return AuthOutcome.TEMP_FAIL, []
        if mailbox is None:
            return AuthOutcome.PERM_FAIL, []
        try:
            lease = await self.locks.acquire(mailbox.id, f"pop3 {self.remote_ip}")
        except Exception:
            log.failure("pop3: cannot lock the maildrop of {user}", user=account.address)
            return AuthOutcome.TEMP_FAIL, []
        if lease is None:
            return AuthOutcome.IN_USE, []
        if self._closed:  # the client left while we were checking
            await lease.release()
            return AuthOutcome.TEMP_FAIL, []
        self.lease = lease
        try:
            self.maildrop = await Maildrop.load(storage, mailbox, self.size_fixes)
        except MaildropUnavailable:
            await self._release()
            return AuthOutcome.PERM_FAIL, []
        except Exception:
            log.failure("pop3: cannot list the INBOX of {user}", user=account.address)
            await self._release()
            return AuthOutcome.TEMP_FAIL, []
        log.info(
            "pop3: {user} logged in from {ip} ({n} messages)",
            user=account.address,
            ip=self.remote_ip,
            n=len(self.maildrop.records),
        )
        return AuthOutcome.OK, self.maildrop.entries()

    async def _fetch(self, ev: Fetch) -> None:
        core = self.core
        maildrop = self.maildrop
        assert core is not None and maildrop is not None
        record = ev.entry.key
        try:
            raw = await maildrop.fetch(record, ev.top_lines)
        except (KeyError, BlobNotFound):
            log.error("pop3: content of {uid} is gone", uid=record.uid)
            core.fetch_failed(permanent=True)
            return
        except Exception:
            log.failure("pop3: cannot read message {uid}", uid=record.uid)
            core.fetch_failed()
            return
        if ev.mark_seen and record.uid not in self._seen_marked:
            try:
                await maildrop.mark_seen(record)
                self._seen_marked.add(record.uid)
            except Exception:
                log.failure("pop3: cannot set \\Seen on {uid}", uid=record.uid)
        core.message_data(raw)

    async def _update(self, ev: Update) -> bool:
        maildrop = self.maildrop
        assert maildrop is not None
        try:
            await maildrop.expunge(e.key for e in ev.deleted)
        except Exception:
            log.failure("pop3: UPDATE failed")
            return False
        return True

    async def _release(self) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            try:
                await lease.release()
            except Exception:
                log.failure("pop3: cannot release the maildrop lock")
