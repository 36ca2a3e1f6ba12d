"""Storage interfaces: the only way the core and the protocols reach stored data.

Every backend (embedded SQLite + files, Cassandra + S3) implements these
``typing.Protocol`` classes and must pass the one contract suite in
``tests/store/`` unchanged.  All methods are coroutines: call them from
``async def`` code driven by Twisted (``Deferred.fromCoroutine``) and they never
block the reactor (blocking work runs in a bounded thread pool).

Terms (IMAP, RFC 3501 / RFC 7162):

- *UID*: per-mailbox message number, strictly ascending, never reused, even
  after expunge and restart, while UIDVALIDITY stays the same.
- *MODSEQ*: per-mailbox change counter; every change to a message (append,
  flag change, expunge) gets a new, higher MODSEQ; ``highestmodseq`` is the
  largest one handed out.
- *message id*: identity of one stored message content (parsed structure +
  blob key).  Several mailbox entries (one per recipient, or copies) share one
  message id, so a body is stored once however many recipients.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from mailserver.mail.message import ParsedMessage


class StoreError(Exception):
    """Base class of storage errors that protocols map to replies."""


class AccountExists(StoreError):
    pass


class AccountNotFound(StoreError):
    pass


class MailboxExists(StoreError):
    pass


class MailboxNotFound(StoreError):
    pass


class MailboxHasChildren(StoreError):
    """DELETE of a mailbox that has inferiors and is itself \\Noselect."""


class InvalidMailboxName(StoreError):
    pass


class QuotaExceeded(StoreError):
    pass


class BlobNotFound(StoreError):
    pass


class FlagMode(enum.Enum):
    """How ``store_flags`` combines the given flags with the present ones."""

    SET = "set"  # FLAGS
    ADD = "add"  # +FLAGS
    REMOVE = "remove"  # -FLAGS


#: Special-use attributes (RFC 6154) and the mailboxes every new account gets.
SPECIAL_USE_DEFAULTS: dict[str, str] = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}

#: Hierarchy delimiter of mailbox names.
DELIMITER = "/"


@dataclass(frozen=True)
class Account:
    """One login.  ``address`` is the canonical (lower-cased) login address."""

    address: str
    password_hash: str
    quota_bytes: int = 0  # 0: unlimited
    aliases: tuple[str, ...] = ()  # extra envelope senders / recipients it owns
    disabled: bool = False


@dataclass(frozen=True)
class MailboxInfo:
    """A mailbox and its status as of the read.

    ``messages``/``unseen`` come from counters and the unseen index, never a
    scan.  ``recent_watermark`` is the lowest UID that no read-write session
    has claimed as \\Recent yet (see ``MailboxStore.claim_recent``).
    """

    id: str
    account: str
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    special_use: str | None = None
    subscribed: bool = False
    messages: int = 0
    unseen: int = 0
    size: int = 0
    recent_watermark: int = 1


@dataclass(frozen=True)
class MessageRecord:
    """One message in one mailbox."""

    uid: int
    message_id: str
    flags: frozenset[str]
    modseq: int
    internal_date: int  # seconds since the epoch (UTC)
    size: int  # octets of the stored RFC 5322 message


@dataclass(frozen=True)
class StoredMessage:
    """The content a ``message_id`` names: blob key plus its parsed structure."""

    message_id: str
    blob_key: str
    size: int
    parsed: ParsedMessage


@dataclass(frozen=True)
class DeliveryTarget:
    """Where ``MessageStore.deliver`` puts one copy of a message."""

    mailbox_id: str
    flags: frozenset[str] = frozenset()
    internal_date: int | None = None  # default: now


@dataclass(frozen=True)
class Changes:
    """What changed in a mailbox after a MODSEQ (for NOOP/IDLE and QRESYNC)."""

    highestmodseq: int
    uidnext: int
    changed: tuple[MessageRecord, ...] = ()  # appended or flag-changed, by UID
    expunged: tuple[int, ...] = ()  # UIDs, ascending


@dataclass(frozen=True)
class SearchQuery:
    """A text search the store answers from its index (SQLite FTS5 / Cassandra
    inverted index).  ``field`` is one of ``subject``, ``from``, ``to``,
    ``cc``, ``bcc``, ``body`` (decoded text parts) or ``text`` (headers and
    body).  Matching is case-insensitive substring semantics as IMAP SEARCH
    requires; the index may narrow candidates but the result must be exact.
    """

    field: str
    text: str


@dataclass(frozen=True)
class QuotaUsage:
    bytes: int
    messages: int
    limit_bytes: int = 0  # 0: unlimited


@runtime_checkable
class AccountStore(Protocol):
    """Accounts: login address, password hash, quota, aliases."""

    async def create_account(
        self,
        address: str,
        password_hash: str,
        quota_bytes: int = 0,
        aliases: Sequence[str] = (),
    ) -> Account:
        """Create the account with INBOX and the special-use mailboxes.

        Raises AccountExists."""

    async def get_account(self, address: str) -> Account | None:
        """Look up by login address or alias, case-insensitively."""

    async def set_password_hash(self, address: str, password_hash: str) -> None:
        """Raises AccountNotFound."""

    async def set_aliases(self, address: str, aliases: Sequence[str]) -> None:
        """Replace the aliases.  Raises AccountNotFound."""

    async def delete_account(self, address: str) -> None:
        """Delete the account, its mailboxes and its messages (blobs are
        collected later).  Raises AccountNotFound."""

    async def list_accounts(self) -> list[Account]:
        """All accounts, ordered by address."""

    async def quota_usage(self, address: str) -> QuotaUsage:
        """Bytes and messages stored for the account, from counters."""


@runtime_checkable
class MailboxStore(Protocol):
    """Mailboxes of one account; names are UTF-8 with "/" as delimiter and
    ``INBOX`` is case-insensitive."""

    async def create_mailbox(
        self, account: str, name: str, special_use: str | None = None
    ) -> MailboxInfo:
        """Create; missing parents are created too (RFC 3501 CREATE).

        Raises MailboxExists, InvalidMailboxName."""

    async def get_mailbox(self, account: str, name: str) -> MailboxInfo | None:
        """Status of a mailbox by name, or None."""

    async def get_mailbox_by_id(self, mailbox_id: str) -> MailboxInfo | None:
        """Status of a mailbox by id, or None."""

    async def list_mailboxes(self, account: str) -> list[MailboxInfo]:
        """All mailboxes of the account, ordered by name."""

    async def delete_mailbox(self, account: str, name: str) -> None:
        """Delete the mailbox and its messages.  INBOX cannot be deleted
        (InvalidMailboxName).  Raises MailboxNotFound."""

    async def rename_mailbox(self, account: str, old: str, new: str) -> None:
        """Rename with all children (a/b -> c/b when a -> c).  Renaming INBOX
        moves its messages into the new mailbox and leaves INBOX empty.  The
        renamed mailbox keeps UIDVALIDITY only if that is safe; a new one
        gets a new UIDVALIDITY.  Raises MailboxNotFound, MailboxExists."""

    async def set_subscribed(self, account: str, name: str, subscribed: bool) -> None:
        """Subscriptions may name mailboxes that do not exist (RFC 3501)."""

    async def list_subscriptions(self, account: str) -> list[str]:
        """Subscribed names, ordered."""

    async def claim_recent(self, mailbox_id: str) -> int:
        """Atomically move the \\Recent watermark to UIDNEXT and return the old
        one: UIDs >= the returned value are \\Recent for the caller only."""


@runtime_checkable
class MessageStore(Protocol):
    """Messages in mailboxes: UIDs, flags, MODSEQs, the unseen index."""

    async def store_message(self, blob_key: str, parsed: ParsedMessage) -> StoredMessage:
        """Record content whose blob is already durable; returns its id.  Does
        not make it visible in any mailbox (``deliver`` does).  Content that
        no mailbox references is collected later."""

    async def deliver(
        self, message: StoredMessage, targets: Sequence[DeliveryTarget]
    ) -> list[MessageRecord]:
        """Append one message to several mailboxes in one metadata
        transaction: all targets get it, or none does.  Each gets a fresh
        UID and MODSEQ.  Checks every target account's quota first
        (QuotaExceeded, nothing written).  Raises MailboxNotFound."""

    async def get_message(self, message_id: str) -> StoredMessage:
        """The content a message id names.  Raises KeyError if unknown."""

    async def list_messages(
        self, mailbox_id: str, uid_min: int = 1, uid_max: int | None = None
    ) -> list[MessageRecord]:
        """Messages with uid_min <= UID <= uid_max, ascending by UID."""

    async def unseen_uids(self, mailbox_id: str) -> list[int]:
        """UIDs without \\Seen, ascending, from the unseen index."""

    async def store_flags(
        self,
        mailbox_id: str,
        uids: Iterable[int],
        flags: Iterable[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> list[MessageRecord]:
        """Change flags; every message whose flags really change gets a new
        MODSEQ.  Returns the records that changed.  With ``unchanged_since``
        (CONDSTORE), messages whose MODSEQ is higher are left alone.  Unknown
        UIDs are ignored.  ``\\Recent`` is never stored."""

    async def expunge(self, mailbox_id: str, uids: Iterable[int]) -> list[int]:
        """Remove the given UIDs (the caller chose them, e.g. the \\Deleted
        ones); returns those really removed, ascending.  Logged with their
        MODSEQ for ``changes_since``."""

    async def copy(
        self, src_mailbox_id: str, uids: Iterable[int], dst_mailbox_id: str
    ) -> list[tuple[int, int]]:
        """Copy (same content, new UIDs, same flags and internal date) and
        return (source UID, destination UID) pairs ascending by source UID.
        Checks quota.  Raises MailboxNotFound."""

    async def move(
        self, src_mailbox_id: str, uids: Iterable[int], dst_mailbox_id: str
    ) -> list[tuple[int, int]]:
        """Copy then expunge from the source, atomically."""

    async def changes_since(self, mailbox_id: str, modseq: int) -> Changes:
        """Records changed (appended or flags) and UIDs expunged after
        ``modseq``.  Raises MailboxNotFound."""

    async def search_text(self, mailbox_id: str, query: SearchQuery) -> set[int]:
        """UIDs whose ``query.field`` contains ``query.text``
        (case-insensitive), answered from the index."""


@runtime_checkable
class BlobStore(Protocol):
    """Raw RFC 5322 bytes, content-addressed (the key is derived from the
    bytes), so equal bodies are stored once."""

    async def put(self, data: bytes) -> str:
        """Store durably (fsynced / acknowledged) and return the key.
        Idempotent: the same bytes give the same key."""

    async def get(self, key: str) -> bytes:
        """Raises BlobNotFound."""

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the blob (clipped to its size).  Raises
        BlobNotFound."""

    async def delete(self, key: str) -> None:
        """Remove; a missing key is not an error."""

    async def keys(self) -> list[str]:
        """All keys (for garbage collection)."""


@runtime_checkable
class ChangeNotifier(Protocol):
    """Tells sessions (IDLE, selected mailboxes) that a mailbox changed.

    Backends call ``publish`` after a change is committed; sessions then ask
    ``MessageStore.changes_since`` what changed.  The embedded backend uses an
    in-process notifier; a cluster uses a pub/sub engine so a change made
    through one daemon reaches sessions on the others.
    """

    def subscribe(self, mailbox_id: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(mailbox_id)`` after each change; returns the
        function that unsubscribes."""

    def publish(self, mailbox_id: str) -> None:
        """Announce a committed change (called on the reactor thread)."""


@runtime_checkable
class Storage(Protocol):
    """A backend's stores plus its lifecycle, built by ``open_storage``."""

    accounts: AccountStore
    mailboxes: MailboxStore
    messages: MessageStore
    blobs: BlobStore
    notifier: ChangeNotifier

    async def collect_garbage(self, grace_seconds: float = 3600.0) -> int:
        """Delete content and blobs that no mailbox references and that are
        older than the grace period (so a delivery in flight keeps its blob);
        returns how many blobs were removed."""

    async def close(self) -> None:
        """Finish in-flight writes and release connections and threads."""
