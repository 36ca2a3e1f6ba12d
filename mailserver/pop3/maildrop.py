"""The POP3 maildrop: an account's INBOX seen through the storage interfaces,
plus the per-maildrop exclusive lock.

- Opening reads only the message list (``messages.list_messages``: UIDs,
  sizes, flags); no body is read until RETR or TOP.
- Sizes: ``MessageRecord.size`` is announced as is.  SMTP refuses message
  data with a bare CR or LF (``R550_BARE_CR_LF``) and stores the data that
  ended with CRLF, so for delivered mail the stored size *is* the size of
  the CRLF-normalized message RETR sends.  A message that reached the store
  another way with bare LFs is corrected the first time its body is read
  (``SizeFixes``), and RETR's "+OK n octets" always gives the true count;
  see docs/decisions/0005-pop3.md.
- UIDL is ``"<UIDVALIDITY>.<UID>"`` of the INBOX message: the same identity
  IMAP uses, stable across sessions and protocols.
- Deletions are applied with ``messages.expunge``, so IMAP sessions on the
  INBOX see ordinary expunges.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

from mailserver.pop3.core import MaildropEntry, crlf_size
from mailserver.store.interfaces import (
    FlagMode,
    MailboxInfo,
    MailboxNotFound,
    MessageRecord,
    Storage,
)

__all__ = [
    "LocalMaildropLocks",
    "Maildrop",
    "MaildropLease",
    "MaildropLocks",
    "MaildropUnavailable",
    "SizeFixes",
]

SEEN = "\\Seen"


class MaildropUnavailable(Exception):
    """The INBOX cannot be opened (no such mailbox: permanent)."""


class MaildropLease(Protocol):
    """A held maildrop lock; ``release`` is idempotent."""

    async def release(self) -> None: ...


class MaildropLocks(Protocol):
    """Exclusive access to a maildrop between POP3 sessions (RFC 1939 8:
    the server locks the maildrop while a session is in TRANSACTION).

    The embedded backend uses ``LocalMaildropLocks`` (one process); a
    cluster replaces it with a lease with a TTL in the shared store so two
    daemons cannot both serve one maildrop.
    """

    async def acquire(self, maildrop: str, holder: str) -> MaildropLease | None:
        """The lease, or None when another session holds the maildrop."""


class _LocalLease:
    def __init__(self, locks: LocalMaildropLocks, maildrop: str, holder: str) -> None:
        self._locks = locks
        self.maildrop = maildrop
        self.holder = holder
        self._held = True

    async def release(self) -> None:
        if self._held:
            self._held = False
            self._locks._release(self.maildrop, self)


class LocalMaildropLocks:
    """In-process lock table: ``{maildrop: lease}``."""

    def __init__(self) -> None:
        self._held: dict[str, _LocalLease] = {}

    async def acquire(self, maildrop: str, holder: str) -> MaildropLease | None:
        if maildrop in self._held:
            return None
        lease = _LocalLease(self, maildrop, holder)
        self._held[maildrop] = lease
        return lease

    def _release(self, maildrop: str, lease: _LocalLease) -> None:
        if self._held.get(maildrop) is lease:
            del self._held[maildrop]

    def holder(self, maildrop: str) -> str | None:
        lease = self._held.get(maildrop)
        return lease.holder if lease else None


class SizeFixes:
    """Bounded memory of CRLF-normalized sizes that differ from the stored
    size, keyed by message id (content is immutable, so the entry never goes
    stale).  Filled when a body is read anyway."""

    def __init__(self, limit: int = 100_000) -> None:
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self.limit = limit

    def get(self, message_id: str, default: int) -> int:
        return self._sizes.get(message_id, default)

    def learn(self, message_id: str, stored_size: int, raw: bytes) -> int:
        """Remember the sent size of ``raw`` if it differs; returns it."""
        size = crlf_size(raw)
        if size != stored_size:
            self._sizes[message_id] = size
            self._sizes.move_to_end(message_id)
            while len(self._sizes) > self.limit:
                self._sizes.popitem(last=False)
        return size

    def __len__(self) -> int:
        return len(self._sizes)


class Maildrop:
    """An opened INBOX: the snapshot of its messages at login."""

    def __init__(
        self,
        storage: Storage,
        mailbox: MailboxInfo,
        records: list[MessageRecord],
        size_fixes: SizeFixes | None = None,
    ) -> None:
        self.storage = storage
        self.mailbox = mailbox
        self.records = records
        self.size_fixes = size_fixes if size_fixes is not None else SizeFixes()

    @classmethod
    async def open(
        cls, storage: Storage, account: str, size_fixes: SizeFixes | None = None
    ) -> Maildrop:
        """Read the INBOX list (metadata only).  Raises MaildropUnavailable."""
        mailbox = await storage.mailboxes.get_mailbox(account, "INBOX")
        if mailbox is None:
            raise MaildropUnavailable(f"{account} has no INBOX")
        return await cls.load(storage, mailbox, size_fixes)

    @classmethod
    async def load(
        cls, storage: Storage, mailbox: MailboxInfo, size_fixes: SizeFixes | None = None
    ) -> Maildrop:
        """Read the message list of an INBOX already looked up (metadata
        only).  Raises MaildropUnavailable if it vanished meanwhile."""
        try:
            records = await storage.messages.list_messages(mailbox.id)
        except MailboxNotFound as e:
            raise MaildropUnavailable(str(e)) from None
        return cls(storage, mailbox, records, size_fixes)

    def entries(self) -> list[MaildropEntry]:
        """What the core lists, in UID order; ``key`` is the record."""
        v = self.mailbox.uidvalidity
        fixes = self.size_fixes
        return [
            MaildropEntry(fixes.get(r.message_id, r.size), f"{v}.{r.uid}", r) for r in self.records
        ]

    async def fetch(self, record: MessageRecord, top_lines: int | None) -> bytes:
        """The stored bytes of a message; for ``TOP n 0`` only its header.
        Raises KeyError / BlobNotFound when the content is gone."""
        stored = await self.storage.messages.get_message(record.message_id)
        if top_lines == 0 and 0 < stored.parsed.header_end < stored.size:
            return await self.storage.blobs.get_range(stored.blob_key, 0, stored.parsed.header_end)
        raw = await self.storage.blobs.get(stored.blob_key)
        self.size_fixes.learn(record.message_id, record.size, raw)
        return raw

    async def mark_seen(self, record: MessageRecord) -> None:
        """RETR marks the message \\Seen (as Dovecot does)."""
        if SEEN not in record.flags:
            await self.storage.messages.store_flags(
                self.mailbox.id, [record.uid], [SEEN], FlagMode.ADD
            )

    async def expunge(self, records: Iterable[MessageRecord]) -> list[int]:
        """UPDATE state: remove the DELEted messages; returns the UIDs removed
        (a message IMAP expunged meanwhile is simply not among them)."""
        uids = [r.uid for r in records]
        if not uids:
            return []
        return await self.storage.messages.expunge(self.mailbox.id, uids)
