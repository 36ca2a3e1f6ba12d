"""Local delivery and queueing: the one path by which received mail is stored.

``Delivery.deliver(envelope, raw)`` is what SMTP calls at the end of DATA.
It returns only once everything it promises is durable, and its result says
what to answer:

1. resolve every recipient (local domain -> account, through aliases;
   anything else -> remote, which only authenticated submission may use);
2. run the filter chain (REJECT -> 5xx, TEMPFAIL -> 4xx, nothing stored);
3. remote recipients: enqueue one entry in the outbound queue, *held*;
4. local recipients: store the body once (``ingest``: parse + fsynced blob +
   content row) and append it to every recipient's INBOX in one
   ``MessageStore.deliver`` transaction (all or none);
5. release the held queue entry.

Any failure -> 451 4.3.0 for the whole transaction with nothing visible (a
held entry is cancelled; the local append is atomic), so the client's retry
cannot produce duplicates.  The one leftover window is a failure of step 5
after step 4 committed; see docs/decisions/0003-smtp.md.

Trace headers are added here, not in the SMTP layer, so every way in gets
the same ones: ``Received:`` (RFC 5321 4.4) on every copy, ``Return-Path:``
only on the locally delivered copy (the final delivery adds it).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from mailserver.filters import FilterChain, FilterInput, Verdict
from mailserver.mail.parse import parse_message
from mailserver.store.interfaces import (
    DeliveryTarget,
    QuotaExceeded,
    StoredMessage,
)
from mailserver.threads import run_blocking

if TYPE_CHECKING:
    from mailserver.context import ServerContext
    from mailserver.queue import OutboundQueue

log = Logger(namespace="mailserver.delivery")

#: Parse in the thread pool above this size (the parser is linear but a
#: 35 MB message would hold the reactor for a noticeable time).
#: messages larger than this are scanned and parsed in the thread pool, so
#: a 35 MB one does not hold the reactor
INLINE_LIMIT = 256 * 1024


@dataclass(frozen=True)
class Envelope:
    """One SMTP transaction as delivery needs it."""

    sender: str  # "" for the null reverse-path <>
    recipients: tuple[str, ...]  # as given in RCPT TO (already accepted)
    dsn: dict[str, Any] = field(default_factory=dict)
    # trace information for the Received: header
    helo: str | None = None
    remote_ip: str | None = None
    remote_host: str | None = None
    protocol: str = "ESMTP"  # RFC 3848: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA
    tls_info: str | None = None  # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"
    authenticated: str | None = None
    allow_remote: bool = False  # submission: remote recipients go to the queue


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome; ``code``/``enhanced``/``text`` form the SMTP reply."""

    ok: bool
    code: int
    enhanced: str
    text: str
    message_id: str | None = None  # stored content id (local delivery)
    queue_id: str | None = None
    delivered_to: tuple[str, ...] = ()  # local accounts
    queued_for: tuple[str, ...] = ()  # remote recipients


@dataclass(frozen=True)
class Resolution:
    """Where a recipient goes: ``kind`` is ``local`` (``account`` set),
    ``unknown`` (a local domain without such user), ``remote``, or
    ``full`` (local, over quota)."""

    kind: str
    account: str | None = None


def _tempfail(text: str = "Local error in processing, try again later") -> DeliveryResult:
    return DeliveryResult(False, 451, "4.3.0", text)


class Delivery:
    """Built once per process from the ``ServerContext``."""

    def __init__(
        self,
        ctx: ServerContext,
        filters: FilterChain | None = None,
        queue: OutboundQueue | None = None,
    ) -> None:
        self.ctx = ctx
        self.storage = ctx.storage
        self.config = ctx.config
        self.filters = filters if filters is not None else FilterChain()
        self._queue = queue
        self.hostname: str = ctx.config.server.hostname
        self.local_domains = frozenset(d.lower() for d in ctx.config.server.local_domains)

    @property
    def queue(self) -> OutboundQueue:
        """The outbound queue, opened on first use (embedded: SQLite in
        ``state_dir/queue``)."""
        if self._queue is None:
            from mailserver.queue.sqlite import SqliteQueue

            self._queue = SqliteQueue(os.path.join(str(self.config.server.state_dir), "queue"))
        return self._queue

    async def close(self) -> None:
        """Close the outbound queue if it was opened (the process calls this
        before closing storage; every acknowledged enqueue is already
        durable, so skipping it loses nothing)."""
        queue, self._queue = self._queue, None
        if queue is not None:
            await queue.close()

    # -- recipients --------------------------------------------------------

    def is_local_domain(self, domain: str | None) -> bool:
        return domain is not None and domain.lower() in self.local_domains

    async def resolve(self, address: str, size_hint: int = 0) -> Resolution:
        """Classify one recipient address (``local@domain``, or bare
        ``postmaster``, RFC 5321 4.5.1)."""
        if "@" not in address:
            if address.lower() != "postmaster" or not self.local_domains:
                return Resolution("unknown")
            address = f"postmaster@{sorted(self.local_domains)[0]}"
        local, _, domain = address.rpartition("@")
        if not self.is_local_domain(domain):
            return Resolution("remote")
        account = await self.storage.accounts.get_account(f"{local}@{domain.lower()}")
        if account is None or account.disabled:
            return Resolution("unknown")
        if account.quota_bytes:
            usage = await self.storage.accounts.quota_usage(account.address)
            if usage.bytes + size_hint > account.quota_bytes:
                return Resolution("full", account.address)
        return Resolution("local", account.address)

    async def owned_addresses(self, login: str) -> set[str]:
        """Envelope senders an authenticated login may use: the account's
        address and its aliases (lower-cased)."""
        account = await self.storage.accounts.get_account(login)
        if account is None:
            return set()
        return {account.address.lower(), *(a.lower() for a in account.aliases)}

    # -- storing -----------------------------------------------------------

    async def ingest(self, raw: bytes) -> StoredMessage:
        """Parse, store the blob durably and record the content; the message
        is in no mailbox yet (``storage.messages.deliver`` puts it there).

        Parsing (CPU) and the blob write (hash, write, fsyncs) run at the
        same time: the blob key depends only on the bytes.
        """
        raw = bytes(raw)
        put = defer.ensureDeferred(self.storage.blobs.put(raw))
        try:
            if len(raw) > INLINE_LIMIT:
                parsed = await run_blocking(parse_message, raw)
            else:
                parsed = parse_message(raw)
        except BaseException:
            put.addErrback(lambda _f: None)  # the parse error is what we report
            raise
        key = await put
        return await self.storage.messages.store_message(key, parsed)

    def received_header(self, envelope: Envelope, queue_id: str) -> bytes:
        """RFC 5321 4.4 trace field (folded, CRLF-terminated)."""
        helo = envelope.helo or "unknown"
        ip = envelope.remote_ip or "unknown"
        host = envelope.remote_host or ip
        from_clause = f"from {helo} ({host} [{ip}])"
        with_clause = f"with {envelope.protocol} id {queue_id}"
        extra = []
        if envelope.tls_info:
            extra.append(f"using {envelope.tls_info}")
        if envelope.authenticated:
            extra.append("authenticated")
        comment = f" ({'; '.join(extra)})" if extra else ""
        lines = [
            f"Received: {from_clause}",
            f"\tby {self.hostname} (mailserver){comment}",
            f"\t{with_clause}",
        ]
        if len(envelope.recipients) == 1:
            lines.append(f"\tfor <{envelope.recipients[0]}>")
        lines[-1] += ";"
        lines.append(f"\t{format_datetime(datetime.now(UTC))}")
        # Names and addresses come from the client; never let one of them
        # end the header early.
        lines = [ln.replace("\r", " ").replace("\n", " ") for ln in lines]
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")

    async def deliver(self, envelope: Envelope, raw: bytes) -> DeliveryResult:
        """Filter, store and queue one message; see the module docstring."""
        trace_id = secrets.token_hex(8)
        local: list[str] = []
        remote: list[str] = []
        try:
            for rcpt in envelope.recipients:
                res = await self.resolve(rcpt, len(raw))
                if res.kind == "remote" and envelope.allow_remote:
                    if rcpt not in remote:
                        remote.append(rcpt)
                elif res.kind in ("local", "full"):
                    assert res.account is not None
                    if res.account not in local:
                        local.append(res.account)
                else:
                    # Accepted at RCPT time but gone now (account deleted):
                    # the retry will get 550 at RCPT for it alone.
                    return _tempfail("Recipient no longer available, try again later")
        except Exception:
            log.failure("recipient resolution failed")
            return _tempfail()

        verdict = await self.filters.run(
            FilterInput(
                sender=envelope.sender,
                recipients=tuple(envelope.recipients),
                raw=raw,
                remote_ip=envelope.remote_ip,
                helo=envelope.helo,
                authenticated=envelope.authenticated,
                tls=envelope.tls_info is not None,
            )
        )
        if verdict.verdict in (Verdict.REJECT, Verdict.TEMPFAIL):
            r = verdict.result
            assert r is not None
            log.info(
                "message {id} refused by filter {name}: {code} {text}",
                id=trace_id,
                name=verdict.decided_by,
                code=r.code,
                text=r.text,
            )
            return DeliveryResult(False, r.code or 451, r.enhanced or "4.7.1", r.text)

        added = b"".join(_header(name, value) for name, value in verdict.add_headers)
        received = self.received_header(envelope, trace_id)
        queue_id = None
        if remote:
            try:
                queue_id = await self.queue.enqueue(
                    envelope.sender,
                    remote,
                    received + added + raw,
                    envelope.dsn,
                    hold=bool(local),
                )
            except Exception:
                log.failure("enqueue failed")
                return _tempfail()

        stored = None
        if local:
            return_path = f"Return-Path: <{envelope.sender}>\r\n".encode("utf-8", "replace")
            try:
                # The INBOX look-ups overlap the parse and the blob write.
                inboxes = defer.gatherResults(
                    [
                        defer.ensureDeferred(self.storage.mailboxes.get_mailbox(a, "INBOX"))
                        for a in local
                    ],
                    consumeErrors=True,
                )
                ingest = defer.ensureDeferred(self.ingest(return_path + received + added + raw))
                try:
                    found = await inboxes
                except defer.FirstError as e:
                    ingest.addErrback(lambda _f: None)
                    e.subFailure.raiseException()
                stored = await ingest
                targets = []
                for account, inbox in zip(local, found, strict=True):
                    if inbox is None:
                        raise LookupError(f"{account} has no INBOX")
                    targets.append(DeliveryTarget(inbox.id))
                await self.storage.messages.deliver(stored, targets)
            except QuotaExceeded:
                await self._cancel(queue_id)
                # Temporary (RFC 3463 X.2.2 is transient by nature): the
                # sender retries and, once the RCPT check sees the full
                # mailbox, the other recipients get it.
                return DeliveryResult(False, 452, "4.2.2", "Mailbox full, try again later")
            except Exception:
                log.failure("local delivery failed")
                await self._cancel(queue_id)
                return _tempfail()
            if queue_id is not None:
                try:
                    await self.queue.release(queue_id)
                except Exception:
                    log.failure("queue entry {qid} stays held after local delivery", qid=queue_id)
                    return _tempfail()
        log.info(
            "message {id} from <{sender}> size {size}: delivered to {local}, queued for {remote}",
            id=trace_id,
            sender=envelope.sender,
            size=len(raw),
            local=",".join(local) or "-",
            remote=",".join(remote) or "-",
        )
        return DeliveryResult(
            True,
            250,
            "2.0.0",
            f"OK: queued as {trace_id}",
            message_id=stored.message_id if stored else None,
            queue_id=queue_id,
            delivered_to=tuple(local),
            queued_for=tuple(remote),
        )

    async def _cancel(self, queue_id: str | None) -> None:
        if queue_id is None:
            return
        try:
            await self.queue.cancel(queue_id)
        except Exception:
            log.failure("cannot cancel held queue entry {qid}", qid=queue_id)


def _header(name: str, value: str) -> bytes:
    """One header field from a filter, line breaks neutralised."""
    value = value.replace("\r", " ").replace("\n", " ")
    return f"{name}: {value}\r\n".encode("utf-8", "replace")
