"""Account, mailbox and message stores on Apache Cassandra.

Design (docs/decisions/0006-cluster-storage.md), in short:

- Account-wide tables are partitioned by account; message lists, the unseen
  index and the change log by (mailbox id, bucket), where a bucket holds
  ``bucket_size`` consecutive UIDs (or MODSEQs), so no partition grows
  without bound.
- UIDs and MODSEQs come from ``mailbox_alloc`` with one lightweight
  transaction per operation, however many UIDs it needs (a delivery to N
  targets in one mailbox, a COPY of 500 messages: one Paxos round).  LWT is
  used only there, for ``\\Recent`` and for unique names.
- The rows of one operation go in LOGGED batches (all or nothing across
  partitions); then ``mailbox_state`` (UIDNEXT, HIGHESTMODSEQ as max
  registers: written ``USING TIMESTAMP value``) is published, so a reader
  never sees a HIGHESTMODSEQ whose rows are not written yet.
- Within one daemon, operations on a mailbox are serialised by a lock, so
  its sessions see changes in order.  Across daemons, the allocating LWT
  also writes a *pending* row (TTL-bounded) that the operation deletes when
  done; readers clip UIDNEXT / HIGHESTMODSEQ below the lowest pending one,
  so another daemon's later UIDs never show before earlier ones exist.
- Status counters are Cassandra counters; ``repair_counters`` recomputes
  them from the rows when a retried increment made them drift.
- Search reads the mailbox's content rows and matches exactly (no index
  writes on delivery); see the decision record for the trade-off.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from cassandra import WriteTimeout
from twisted.internet.defer import DeferredLock, DeferredSemaphore, FirstError, gatherResults
from twisted.python import log

from mailserver.mail.message import ParsedMessage
from mailserver.store.cassandra.driver import Connection
from mailserver.store.common import SEEN as _SEEN
from mailserver.store.common import flags_after, normalize_flags, normalize_mailbox_name
from mailserver.store.interfaces import (
    DELIMITER,
    SPECIAL_USE_DEFAULTS,
    Account,
    AccountExists,
    AccountNotFound,
    Changes,
    DeliveryTarget,
    FlagMode,
    InvalidMailboxName,
    MailboxExists,
    MailboxInfo,
    MailboxNotFound,
    MessageRecord,
    QuotaExceeded,
    QuotaUsage,
    SearchQuery,
    StoredMessage,
)

T = TypeVar("T")

DEFAULT_BUCKET_SIZE = 10_000
#: seconds a crashed operation's pending allocation hides newer changes
PENDING_TTL = 60
#: messages per LOGGED batch (keeps batches under Cassandra's size limits)
BATCH_MESSAGES = 20
#: parallel reads issued by one call (bounded fan-out)
FANOUT = 32
_SEARCH_FIELDS = {
    "subject": ("search_subject",),
    "from": ("search_from",),
    "to": ("search_to",),
    "cc": ("search_cc",),
    "bcc": ("search_bcc",),
    "body": ("search_body",),
    "text": (
        "search_subject",
        "search_from",
        "search_to",
        "search_cc",
        "search_bcc",
        "search_body",
    ),
}

#: Every statement, prepared once at open; {ks} is the keyspace.
STATEMENTS: dict[str, str] = {
    # addresses / accounts
    "addr_claim": "INSERT INTO {ks}.addresses (address, owner) VALUES (?, ?) IF NOT EXISTS",
    "addr_get": "SELECT owner FROM {ks}.addresses WHERE address = ?",
    "addr_release": "DELETE FROM {ks}.addresses WHERE address = ? IF owner = ?",
    "acct_insert": "INSERT INTO {ks}.accounts (address, password_hash, quota_bytes, disabled, "
    "aliases, created) VALUES (?, ?, ?, false, ?, toTimestamp(now()))",
    "acct_get": "SELECT address, password_hash, quota_bytes, disabled, aliases "
    "FROM {ks}.accounts WHERE address = ?",
    "acct_all": "SELECT address, password_hash, quota_bytes, disabled, aliases FROM {ks}.accounts",
    "acct_set_hash": "UPDATE {ks}.accounts SET password_hash = ? WHERE address = ?",
    "acct_set_aliases": "UPDATE {ks}.accounts SET aliases = ? WHERE address = ?",
    "acct_delete": "DELETE FROM {ks}.accounts WHERE address = ?",
    # mailboxes
    "name_claim": "INSERT INTO {ks}.mailbox_names (account, name, id) VALUES (?, ?, ?) "
    "IF NOT EXISTS",
    "name_get": "SELECT id FROM {ks}.mailbox_names WHERE account = ? AND name = ?",
    "name_list": "SELECT name, id FROM {ks}.mailbox_names WHERE account = ?",
    "name_release": "DELETE FROM {ks}.mailbox_names WHERE account = ? AND name = ? IF id = ?",
    "names_drop": "DELETE FROM {ks}.mailbox_names WHERE account = ?",
    "mbox_insert": "INSERT INTO {ks}.mailboxes (id, account, name, uidvalidity, special_use) "
    "VALUES (?, ?, ?, ?, ?)",
    "mbox_get": "SELECT id, account, name, uidvalidity, special_use FROM {ks}.mailboxes "
    "WHERE id = ?",
    "mbox_rename": "UPDATE {ks}.mailboxes SET name = ? WHERE id = ?",
    "mbox_delete": "DELETE FROM {ks}.mailboxes WHERE id = ?",
    "alloc_init": "INSERT INTO {ks}.mailbox_alloc (id, uidnext, modseq, recent) "
    "VALUES (?, 1, 1, 1) IF NOT EXISTS",
    "alloc_get": "SELECT uidnext, modseq, recent FROM {ks}.mailbox_alloc WHERE id = ? LIMIT 1",
    "alloc_cas": "BEGIN BATCH "
    "UPDATE {ks}.mailbox_alloc SET uidnext = ?, modseq = ? WHERE id = ? "
    "IF uidnext = ? AND modseq = ? "
    "INSERT INTO {ks}.mailbox_alloc (id, pending, pending_uid) VALUES (?, ?, ?) "
    f"USING TTL {PENDING_TTL} "
    "APPLY BATCH",
    "pending_list": "SELECT pending, pending_uid FROM {ks}.mailbox_alloc WHERE id = ?",
    "pending_del": "DELETE FROM {ks}.mailbox_alloc WHERE id = ? AND pending = ?",
    "recent_cas": "UPDATE {ks}.mailbox_alloc SET recent = ? WHERE id = ? "
    "IF recent = ? AND uidnext = ?",
    "alloc_delete": "DELETE FROM {ks}.mailbox_alloc WHERE id = ?",
    "state_uidnext": "UPDATE {ks}.mailbox_state USING TIMESTAMP ? SET uidnext = ? WHERE id = ?",
    "state_modseq": "UPDATE {ks}.mailbox_state USING TIMESTAMP ? SET highestmodseq = ? "
    "WHERE id = ?",
    "state_get": "SELECT uidnext, highestmodseq FROM {ks}.mailbox_state WHERE id = ?",
    "state_delete": "DELETE FROM {ks}.mailbox_state WHERE id = ?",
    "counts_add": "UPDATE {ks}.mailbox_counts SET messages = messages + ?, "
    "unseen = unseen + ?, bytes = bytes + ? WHERE id = ?",
    "counts_get": "SELECT messages, unseen, bytes FROM {ks}.mailbox_counts WHERE id = ?",
    "counts_delete": "DELETE FROM {ks}.mailbox_counts WHERE id = ?",
    "sub_add": "INSERT INTO {ks}.subscriptions (account, name) VALUES (?, ?)",
    "sub_del": "DELETE FROM {ks}.subscriptions WHERE account = ? AND name = ?",
    "sub_get": "SELECT name FROM {ks}.subscriptions WHERE account = ? AND name = ?",
    "sub_list": "SELECT name FROM {ks}.subscriptions WHERE account = ?",
    "sub_drop": "DELETE FROM {ks}.subscriptions WHERE account = ?",
    # messages
    "msg_insert": "INSERT INTO {ks}.messages (mailbox_id, bucket, uid, message_id, flags, "
    "modseq, internal_date, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "msg_range": "SELECT uid, message_id, flags, modseq, internal_date, size FROM {ks}.messages "
    "WHERE mailbox_id = ? AND bucket = ? AND uid >= ? AND uid <= ?",
    "msg_one": "SELECT message_id FROM {ks}.messages WHERE mailbox_id = ? AND bucket = ? "
    "AND uid = ?",
    "msg_flags": "UPDATE {ks}.messages SET flags = ?, modseq = ? WHERE mailbox_id = ? "
    "AND bucket = ? AND uid = ?",
    "msg_delete": "DELETE FROM {ks}.messages WHERE mailbox_id = ? AND bucket = ? AND uid = ?",
    "msg_drop": "DELETE FROM {ks}.messages WHERE mailbox_id = ? AND bucket = ?",
    "unseen_add": "INSERT INTO {ks}.unseen (mailbox_id, bucket, uid) VALUES (?, ?, ?)",
    "unseen_del": "DELETE FROM {ks}.unseen WHERE mailbox_id = ? AND bucket = ? AND uid = ?",
    "unseen_list": "SELECT uid FROM {ks}.unseen WHERE mailbox_id = ? AND bucket = ?",
    "unseen_drop": "DELETE FROM {ks}.unseen WHERE mailbox_id = ? AND bucket = ?",
    "chg_add": "INSERT INTO {ks}.changes (mailbox_id, bucket, modseq, uid, expunged) "
    "VALUES (?, ?, ?, ?, ?)",
    "chg_since": "SELECT modseq, uid, expunged FROM {ks}.changes WHERE mailbox_id = ? "
    "AND bucket = ? AND modseq > ?",
    "chg_drop": "DELETE FROM {ks}.changes WHERE mailbox_id = ? AND bucket = ?",
    # content and references
    "content_insert": "INSERT INTO {ks}.content (message_id, blob_key, size, parsed, created) "
    "VALUES (?, ?, ?, ?, toTimestamp(now()))",
    "content_get": "SELECT blob_key, size, parsed FROM {ks}.content WHERE message_id = ?",
    "content_all": "SELECT message_id, blob_key, created FROM {ks}.content",
    "content_delete": "DELETE FROM {ks}.content WHERE message_id = ?",
    "ref_add": "INSERT INTO {ks}.content_refs (message_id, mailbox_id, uid) VALUES (?, ?, ?)",
    "ref_list": "SELECT mailbox_id, uid FROM {ks}.content_refs WHERE message_id = ?",
    "ref_del": "DELETE FROM {ks}.content_refs WHERE message_id = ? AND mailbox_id = ? AND uid = ?",
    "blobref_add": "INSERT INTO {ks}.blob_refs (blob_key, message_id) VALUES (?, ?)",
    "blobref_list": "SELECT message_id FROM {ks}.blob_refs WHERE blob_key = ? LIMIT 1",
    "blobref_del": "DELETE FROM {ks}.blob_refs WHERE blob_key = ? AND message_id = ?",
}


# -- pure helpers ---------------------------------------------------------------


def _record(row: dict[str, Any]) -> MessageRecord:
    return MessageRecord(
        uid=row["uid"],
        message_id=row["message_id"],
        flags=frozenset(row["flags"] or ()),
        modseq=row["modseq"],
        internal_date=row["internal_date"],
        size=row["size"],
    )


def _applied(rows: list[dict[str, Any]]) -> bool:
    return bool(rows and rows[0].get("[applied]"))


class _KeyedLocks:
    """One DeferredLock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[DeferredLock, int]] = {}

    async def run(self, keys: Iterable[str], fn: Callable[[], Awaitable[T]]) -> T:
        ordered = sorted(set(keys))  # one global order: no deadlock
        registered: list[str] = []
        taken: list[str] = []
        try:
            for k in ordered:
                lock, users = self._locks.get(k, (None, 0))
                if lock is None:
                    lock = DeferredLock()
                self._locks[k] = (lock, users + 1)
                registered.append(k)
                await lock.acquire()
                taken.append(k)
            return await fn()
        finally:
            # Bookkeeping first: release() may run the next holder at once.
            to_release = []
            for k in registered:
                lock, users = self._locks[k]
                if users <= 1:
                    del self._locks[k]
                else:
                    self._locks[k] = (lock, users - 1)
                if k in taken:
                    to_release.append(lock)
            for lock in to_release:
                lock.release()


class _Alloc:
    """UIDs / MODSEQs handed to one operation on one mailbox."""

    def __init__(self, mailbox_id: str, uid: int, modseq: int, n_uids: int, n_mod: int) -> None:
        self.mailbox_id = mailbox_id
        self._uid = uid
        self._modseq = modseq
        self.uid_end = uid + n_uids
        self.modseq_end = modseq + n_mod
        self.pending = modseq  # key of its pending row: MODSEQs above it are its own
        self.d_messages = self.d_unseen = self.d_bytes = 0

    def next_uid(self) -> int:
        uid = self._uid
        assert uid < self.uid_end
        self._uid += 1
        return uid

    def next_modseq(self) -> int:
        self._modseq += 1
        assert self._modseq <= self.modseq_end
        return self._modseq


class CassandraBackend:
    """What the three stores share: connection, locks, allocation, batches."""

    def __init__(
        self,
        conn: Connection,
        notifier: Any,
        bucket_size: int = DEFAULT_BUCKET_SIZE,
    ) -> None:
        self.conn = conn
        self.notifier = notifier
        self.bucket_size = bucket_size
        self.locks = _KeyedLocks()
        self._alloc_cache: dict[str, tuple[int, int]] = {}
        self._owner_cache: dict[str, str] = {}
        self._last_uidvalidity = 0

    # -- small helpers --------------------------------------------------------

    def bucket(self, n: int) -> int:
        return n // self.bucket_size

    async def q(self, name: str, *params: Any, limit: int | None = None) -> list[dict[str, Any]]:
        return await self.conn.execute(name, params, limit=limit)

    async def gather(self, items: Iterable[Awaitable[T]]) -> list[T]:
        """Await several calls with bounded concurrency."""
        sem = DeferredSemaphore(FANOUT)
        from twisted.internet.defer import Deferred, ensureDeferred

        async def one(aw: Awaitable[T]) -> T:
            await sem.acquire()
            try:
                return await aw
            finally:
                sem.release()

        ds: list[Deferred] = [ensureDeferred(one(a)) for a in items]
        if not ds:
            return []
        return await _gather(ds)

    async def run_batches(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Write statements in LOGGED batches of bounded size."""
        step = BATCH_MESSAGES * 5
        for i in range(0, len(statements), step):
            batch = self.conn.batch(logged=True)
            for name, params in statements[i : i + step]:
                batch.add(self.conn.bound(name, params))
            await self.conn.execute(batch)

    def next_uidvalidity(self) -> int:
        """Time-based and increasing within this process, so a mailbox
        re-created under a name never reuses its UIDVALIDITY."""
        value = max(int(time.time()), self._last_uidvalidity + 1)
        if value >= 2**32:
            raise RuntimeError("UIDVALIDITY space exhausted")
        self._last_uidvalidity = value
        return value

    def publish(self, mailbox_ids: Iterable[str]) -> None:
        for mailbox_id in sorted(set(mailbox_ids)):
            self.notifier.publish(mailbox_id)

    # -- allocation -------------------------------------------------------------

    async def allocate(
        self, mailbox_id: str, n_uids: int, n_modseqs: int, into: list[_Alloc]
    ) -> _Alloc:
        """Reserve ``n_uids`` UIDs and ``n_modseqs`` MODSEQs with one LWT
        round (more only under contention) and append the allocation to
        ``into``; the caller must ``release`` it when its rows are written
        (or it failed).  Raises MailboxNotFound."""
        cached = self._alloc_cache.get(mailbox_id)
        if cached is None:
            rows = await self.q("alloc_get", mailbox_id)
            if not rows:
                raise MailboxNotFound(mailbox_id)
            cached = (rows[0]["uidnext"], rows[0]["modseq"])
        for _attempt in range(100):
            uidnext, modseq = cached
            try:
                rows = await self.q(
                    "alloc_cas",
                    uidnext + n_uids,
                    modseq + n_modseqs,
                    mailbox_id,
                    uidnext,
                    modseq,
                    mailbox_id,
                    modseq,
                    uidnext,
                )
            except WriteTimeout:
                # Outcome unknown: forget the guess and re-read; at worst a
                # UID range goes unused (gaps are allowed, reuse is not).
                self._alloc_cache.pop(mailbox_id, None)
                rows = await self.q("alloc_get", mailbox_id)
                if not rows:
                    raise MailboxNotFound(mailbox_id) from None
                cached = (rows[0]["uidnext"], rows[0]["modseq"])
                continue
            if _applied(rows):
                self._alloc_cache[mailbox_id] = (uidnext + n_uids, modseq + n_modseqs)
                alloc = _Alloc(mailbox_id, uidnext, modseq, n_uids, n_modseqs)
                into.append(alloc)
                return alloc
            row = rows[0] if rows else {}
            if row.get("uidnext") is None:
                self._alloc_cache.pop(mailbox_id, None)
                raise MailboxNotFound(mailbox_id)
            cached = (row["uidnext"], row["modseq"])
        raise RuntimeError(f"UID allocation for {mailbox_id} did not settle")

    async def run_op(self, keys: Iterable[str], fn: Callable[[list[_Alloc]], Awaitable[T]]) -> T:
        """Run one write operation under the locks of ``keys``; the
        allocations it makes (``allocate(..., held)``) are released after
        it, whether it succeeded or failed."""

        async def wrapped() -> T:
            held: list[_Alloc] = []
            try:
                return await fn(held)
            finally:
                if held:
                    await self.release(held)

        return await self.locks.run(keys, wrapped)

    async def release(self, allocs: Iterable[_Alloc]) -> None:
        """Drop the pending rows of finished (or failed) allocations; one
        that cannot be dropped expires after PENDING_TTL seconds."""
        items = list(allocs)
        try:
            await self.gather(self.q("pending_del", a.mailbox_id, a.pending) for a in items)
        except Exception:
            log.err(None, "could not release pending allocations (they expire by TTL)")

    def publish_state(self, alloc: _Alloc, stmts: list[tuple[str, Sequence[Any]]]) -> None:
        """Add the max-register updates of UIDNEXT / HIGHESTMODSEQ."""
        stmts.append(("state_uidnext", (alloc.uid_end, alloc.uid_end, alloc.mailbox_id)))
        stmts.append(("state_modseq", (alloc.modseq_end, alloc.modseq_end, alloc.mailbox_id)))

    async def apply_counts(self, allocs: Iterable[_Alloc]) -> None:
        for a in allocs:
            if a.d_messages or a.d_unseen or a.d_bytes:
                await self.q("counts_add", a.d_messages, a.d_unseen, a.d_bytes, a.mailbox_id)

    # -- rows -------------------------------------------------------------------

    def append_stmts(
        self,
        alloc: _Alloc,
        message_id: str,
        flags: frozenset[str],
        internal_date: int,
        size: int,
        stmts: list[tuple[str, Sequence[Any]]],
    ) -> MessageRecord:
        uid = alloc.next_uid()
        modseq = alloc.next_modseq()
        mb, b = alloc.mailbox_id, self.bucket(uid)
        stmts.append(
            ("msg_insert", (mb, b, uid, message_id, set(flags), modseq, internal_date, size))
        )
        stmts.append(("chg_add", (mb, self.bucket(modseq), modseq, uid, False)))
        stmts.append(("ref_add", (message_id, mb, uid)))
        if _SEEN not in flags:
            stmts.append(("unseen_add", (mb, b, uid)))
            alloc.d_unseen += 1
        alloc.d_messages += 1
        alloc.d_bytes += size
        return MessageRecord(uid, message_id, flags, modseq, internal_date, size)

    def expunge_stmts(
        self,
        alloc: _Alloc,
        records: Sequence[MessageRecord],
        stmts: list[tuple[str, Sequence[Any]]],
    ) -> list[int]:
        mb = alloc.mailbox_id
        removed = []
        for rec in records:
            b = self.bucket(rec.uid)
            modseq = alloc.next_modseq()
            stmts.append(("msg_delete", (mb, b, rec.uid)))
            stmts.append(("ref_del", (rec.message_id, mb, rec.uid)))
            stmts.append(("chg_add", (mb, self.bucket(modseq), modseq, rec.uid, True)))
            if _SEEN not in rec.flags:
                stmts.append(("unseen_del", (mb, b, rec.uid)))
                alloc.d_unseen -= 1
            alloc.d_messages -= 1
            alloc.d_bytes -= rec.size
            removed.append(rec.uid)
        return removed

    async def state(self, mailbox_id: str) -> tuple[int, int]:
        """(UIDNEXT, HIGHESTMODSEQ) as readers may see them: the published
        max registers, clipped below the lowest allocation still pending."""
        rows, pending = await _gather(
            [_d(self.q("state_get", mailbox_id)), _d(self.q("pending_list", mailbox_id))]
        )
        if not rows or rows[0]["uidnext"] is None:
            uidnext, highest = 1, 1
        else:
            uidnext, highest = rows[0]["uidnext"], rows[0]["highestmodseq"] or 1
        for p in pending:
            if p["pending"] is not None:
                uidnext = min(uidnext, p["pending_uid"])
                highest = min(highest, p["pending"])
        return uidnext, highest

    async def records_range(
        self, mailbox_id: str, uid_min: int, uid_max: int | None
    ) -> list[MessageRecord]:
        uidnext, _ = await self.state(mailbox_id)
        hi = uidnext - 1 if uid_max is None else min(uid_max, uidnext - 1)
        lo = max(1, uid_min)
        if hi < lo:
            return []
        out: list[MessageRecord] = []
        for b in range(self.bucket(lo), self.bucket(hi) + 1):
            rows = await self.q("msg_range", mailbox_id, b, lo, hi)
            out.extend(_record(r) for r in rows)
        return out

    async def records(self, mailbox_id: str, uids: Iterable[int]) -> list[MessageRecord]:
        """The records of the given UIDs that exist, ascending."""
        wanted = sorted({int(u) for u in uids if int(u) > 0})
        if not wanted:
            return []
        by_bucket: dict[int, list[int]] = {}
        for u in wanted:
            by_bucket.setdefault(self.bucket(u), []).append(u)
        out: list[MessageRecord] = []
        for b, us in sorted(by_bucket.items()):
            want = set(us)
            rows = await self.q("msg_range", mailbox_id, b, us[0], us[-1])
            out.extend(_record(r) for r in rows if r["uid"] in want)
        return out

    async def mailbox_account(self, mailbox_id: str) -> tuple[str, str | None]:
        """(mailbox id, owning account or None if there is no such mailbox).
        Cached: a mailbox never changes owner, and a deleted one is caught by
        the allocation (its ``mailbox_alloc`` row is gone)."""
        account = self._owner_cache.get(mailbox_id)
        if account is None:
            row = await self.mailbox_row(mailbox_id)
            if row is None:
                return mailbox_id, None
            account = row["account"]
            if len(self._owner_cache) >= 100_000:
                self._owner_cache.clear()
            self._owner_cache[mailbox_id] = account
        return mailbox_id, account

    async def mailbox_row(self, mailbox_id: str) -> dict[str, Any] | None:
        rows = await self.q("mbox_get", mailbox_id)
        return rows[0] if rows else None

    async def mailbox_id(self, account: str, name: str) -> str | None:
        rows = await self.q("name_get", account, name)
        return rows[0]["id"] if rows else None

    async def info(self, mailbox_id: str, subscribed: set[str] | None = None) -> MailboxInfo | None:
        row, state, counts, alloc = await _gather(
            [
                _d(self.mailbox_row(mailbox_id)),
                _d(self.state(mailbox_id)),
                _d(self.q("counts_get", mailbox_id)),
                _d(self.q("alloc_get", mailbox_id)),
            ]
        )
        if row is None:
            return None
        if subscribed is None:
            sub = bool(await self.q("sub_get", row["account"], row["name"]))
        else:
            sub = row["name"] in subscribed
        c = counts[0] if counts else {}
        return MailboxInfo(
            id=mailbox_id,
            account=row["account"],
            name=row["name"],
            uidvalidity=row["uidvalidity"],
            uidnext=state[0],
            highestmodseq=state[1],
            special_use=row["special_use"],
            subscribed=sub,
            messages=c.get("messages") or 0,
            unseen=c.get("unseen") or 0,
            size=c.get("bytes") or 0,
            recent_watermark=(alloc[0]["recent"] if alloc else 1),
        )

    async def insert_mailbox(self, account: str, name: str, special_use: str | None) -> str | None:
        """Create the mailbox rows, then claim the name; None if the name was
        taken meanwhile (the rows made are removed)."""
        mailbox_id = uuid.uuid4().hex
        await self.q("mbox_insert", mailbox_id, account, name, self.next_uidvalidity(), special_use)
        await self.q("alloc_init", mailbox_id)
        await self.q("state_uidnext", 1, 1, mailbox_id)
        await self.q("state_modseq", 1, 1, mailbox_id)
        if _applied(await self.q("name_claim", account, name, mailbox_id)):
            return mailbox_id
        await self.drop_mailbox_rows(mailbox_id, 1, 1)
        return None

    async def create_parents(self, account: str, name: str) -> None:
        parts = name.split(DELIMITER)
        for i in range(1, len(parts)):
            parent = DELIMITER.join(parts[:i])
            if await self.mailbox_id(account, parent) is None:
                await self.insert_mailbox(account, parent, None)

    async def drop_mailbox_rows(self, mailbox_id: str, uidnext: int, modseq: int) -> None:
        """Delete a mailbox's rows (its name is already released).  Content
        references are left to garbage collection, which checks them."""
        for b in range(self.bucket(max(uidnext - 1, 0)) + 1):
            await self.q("msg_drop", mailbox_id, b)
            await self.q("unseen_drop", mailbox_id, b)
        for b in range(self.bucket(modseq) + 1):
            await self.q("chg_drop", mailbox_id, b)
        await self.q("state_delete", mailbox_id)
        await self.q("counts_delete", mailbox_id)
        await self.q("alloc_delete", mailbox_id)
        await self.q("mbox_delete", mailbox_id)
        self._alloc_cache.pop(mailbox_id, None)
        self._owner_cache.pop(mailbox_id, None)

    async def delete_mailbox(self, account: str, name: str, mailbox_id: str) -> None:
        async def work() -> None:
            if not _applied(await self.q("name_release", account, name, mailbox_id)):
                raise MailboxNotFound(name)
            alloc = await self.q("alloc_get", mailbox_id)
            uidnext, modseq = (
                (alloc[0]["uidnext"], alloc[0]["modseq"]) if alloc else await self.state(mailbox_id)
            )
            await self.drop_mailbox_rows(mailbox_id, uidnext, modseq)

        await self.locks.run([mailbox_id], work)
        self.publish([mailbox_id])

    async def account_usage(self, account: str) -> tuple[int, int]:
        rows = await self.q("name_list", account)
        counts = await self.gather(self.q("counts_get", r["id"]) for r in rows)
        used = sum((c[0]["bytes"] or 0) for c in counts if c)
        n = sum((c[0]["messages"] or 0) for c in counts if c)
        return used, n

    async def quota_limits(self, accounts: Iterable[str]) -> dict[str, int]:
        """Quota limit of each account (0: unlimited), read in parallel."""
        names = sorted(set(accounts))
        rows = await self.gather(self.q("acct_get", a) for a in names)
        return {
            a: ((r[0]["quota_bytes"] or 0) if r else 0) for a, r in zip(names, rows, strict=True)
        }

    async def check_quota(
        self, added: dict[str, int], limits: dict[str, int] | None = None
    ) -> None:
        """QuotaExceeded if adding ``added[account]`` octets goes over a
        limit; usage is only read for accounts that have one."""
        wanted = {a: n for a, n in added.items() if n > 0}
        if limits is None:
            limits = await self.quota_limits(wanted)
        for account, extra in wanted.items():
            limit = limits.get(account, 0)
            if limit > 0:
                used, _ = await self.account_usage(account)
                if used + extra > limit:
                    raise QuotaExceeded(f"{account}: {used} + {extra} > {limit} octets")


async def _gather(ds: list[Any]) -> list[Any]:
    """gatherResults, raising the first failure itself (not FirstError), so
    callers see MailboxNotFound, timeouts &c. as such."""
    try:
        return await gatherResults(ds, consumeErrors=True)
    except FirstError as e:
        e.subFailure.raiseException()
        raise  # not reached


def _d(aw: Awaitable[Any]) -> Any:
    from twisted.internet.defer import ensureDeferred

    return ensureDeferred(aw)  # type: ignore[arg-type]


# -- accounts ----------------------------------------------------------------------


class CassandraAccountStore:
    """``AccountStore`` on Cassandra."""

    def __init__(self, backend: CassandraBackend) -> None:
        self._b = backend

    async def _load(self, address: str) -> Account | None:
        rows = await self._b.q("acct_get", address)
        if not rows:
            return None
        r = rows[0]
        return Account(
            address=r["address"],
            password_hash=r["password_hash"],
            quota_bytes=r["quota_bytes"] or 0,
            aliases=tuple(sorted(r["aliases"] or ())),
            disabled=bool(r["disabled"]),
        )

    async def _claim(self, names: Sequence[str], owner: str) -> None:
        """Claim every name for ``owner`` or none (AccountExists)."""
        claimed: list[str] = []
        for name in names:
            rows = await self._b.q("addr_claim", name, owner)
            if _applied(rows) or (rows and rows[0].get("owner") == owner):
                claimed.append(name)
                continue
            for c in claimed:
                await self._b.q("addr_release", c, owner)
            raise AccountExists(name)

    async def create_account(
        self,
        address: str,
        password_hash: str,
        quota_bytes: int = 0,
        aliases: Sequence[str] = (),
    ) -> Account:
        address = address.strip().lower()
        if not address:
            raise ValueError("empty account address")
        alias_set = sorted({a.strip().lower() for a in aliases} - {address})
        rows = await self._b.q("addr_claim", address, address)
        if not _applied(rows):
            raise AccountExists(address)
        try:
            await self._claim(alias_set, address)
        except AccountExists:
            await self._b.q("addr_release", address, address)
            raise
        await self._b.q("acct_insert", address, password_hash, int(quota_bytes), set(alias_set))
        for name, special in (("INBOX", None), *SPECIAL_USE_DEFAULTS.items()):
            await self._b.insert_mailbox(address, name, special)
            await self._b.q("sub_add", address, name)
        account = await self._load(address)
        assert account is not None
        return account

    async def get_account(self, address: str) -> Account | None:
        key = address.strip().lower()
        account = await self._load(key)
        if account is None:
            rows = await self._b.q("addr_get", key)
            if rows and rows[0]["owner"] and rows[0]["owner"] != key:
                account = await self._load(rows[0]["owner"])
                if account is not None and key not in account.aliases:
                    return None
        return account

    async def set_password_hash(self, address: str, password_hash: str) -> None:
        address = address.strip().lower()
        if await self._load(address) is None:
            raise AccountNotFound(address)
        await self._b.q("acct_set_hash", password_hash, address)

    async def set_aliases(self, address: str, aliases: Sequence[str]) -> None:
        address = address.strip().lower()
        account = await self._load(address)
        if account is None:
            raise AccountNotFound(address)
        new = sorted({a.strip().lower() for a in aliases} - {address})
        old = set(account.aliases)
        await self._claim([a for a in new if a not in old], address)
        await self._b.q("acct_set_aliases", set(new), address)
        for a in sorted(old - set(new)):
            await self._b.q("addr_release", a, address)

    async def delete_account(self, address: str) -> None:
        address = address.strip().lower()
        account = await self._load(address)
        if account is None:
            raise AccountNotFound(address)
        for row in await self._b.q("name_list", address):
            try:
                await self._b.delete_mailbox(address, row["name"], row["id"])
            except MailboxNotFound:
                pass
        await self._b.q("names_drop", address)
        await self._b.q("sub_drop", address)
        for a in account.aliases:
            await self._b.q("addr_release", a, address)
        await self._b.q("acct_delete", address)
        await self._b.q("addr_release", address, address)

    async def list_accounts(self) -> list[Account]:
        rows = await self._b.q("acct_all")
        out = [
            Account(
                address=r["address"],
                password_hash=r["password_hash"],
                quota_bytes=r["quota_bytes"] or 0,
                aliases=tuple(sorted(r["aliases"] or ())),
                disabled=bool(r["disabled"]),
            )
            for r in rows
        ]
        out.sort(key=lambda a: a.address)
        return out

    async def quota_usage(self, address: str) -> QuotaUsage:
        address = address.strip().lower()
        account = await self._load(address)
        if account is None:
            raise AccountNotFound(address)
        used, n = await self._b.account_usage(address)
        return QuotaUsage(bytes=used, messages=n, limit_bytes=account.quota_bytes)


# -- mailboxes ------------------------------------------------------------------------


class CassandraMailboxStore:
    """``MailboxStore`` on Cassandra."""

    def __init__(self, backend: CassandraBackend, messages: CassandraMessageStore) -> None:
        self._b = backend
        self._messages = messages

    async def create_mailbox(
        self, account: str, name: str, special_use: str | None = None
    ) -> MailboxInfo:
        account = account.strip().lower()
        name = normalize_mailbox_name(name)
        if not await self._b.q("acct_get", account):
            raise AccountNotFound(account)
        if await self._b.mailbox_id(account, name) is not None:
            raise MailboxExists(name)
        await self._b.create_parents(account, name)
        mailbox_id = await self._b.insert_mailbox(account, name, special_use)
        if mailbox_id is None:
            raise MailboxExists(name)
        info = await self._b.info(mailbox_id)
        assert info is not None
        return info

    async def get_mailbox(self, account: str, name: str) -> MailboxInfo | None:
        account = account.strip().lower()
        try:
            name = normalize_mailbox_name(name)
        except InvalidMailboxName:
            return None
        mailbox_id = await self._b.mailbox_id(account, name)
        if mailbox_id is None:
            return None
        return await self._b.info(mailbox_id)

    async def get_mailbox_by_id(self, mailbox_id: str) -> MailboxInfo | None:
        return await self._b.info(mailbox_id)

    async def list_mailboxes(self, account: str) -> list[MailboxInfo]:
        account = account.strip().lower()
        rows = await self._b.q("name_list", account)
        subs = {r["name"] for r in await self._b.q("sub_list", account)}
        infos = await self._b.gather(self._b.info(r["id"], subs) for r in rows)
        out = [i for i in infos if i is not None]
        out.sort(key=lambda i: i.name)
        return out

    async def delete_mailbox(self, account: str, name: str) -> None:
        account = account.strip().lower()
        name = normalize_mailbox_name(name)
        if name == "INBOX":
            raise InvalidMailboxName("INBOX cannot be deleted")
        mailbox_id = await self._b.mailbox_id(account, name)
        if mailbox_id is None:
            raise MailboxNotFound(name)
        await self._b.delete_mailbox(account, name, mailbox_id)

    async def rename_mailbox(self, account: str, old: str, new: str) -> None:
        """Rename with children, keeping ids and UIDVALIDITY.  INBOX: its
        messages move to a new mailbox and INBOX stays, empty."""
        account = account.strip().lower()
        old_n = normalize_mailbox_name(old)
        new_n = normalize_mailbox_name(new)
        src_id = await self._b.mailbox_id(account, old_n)
        if src_id is None:
            raise MailboxNotFound(old_n)
        if await self._b.mailbox_id(account, new_n) is not None:
            raise MailboxExists(new_n)
        if old_n == "INBOX":
            await self._b.create_parents(account, new_n)
            dst_id = await self._b.insert_mailbox(account, new_n, None)
            if dst_id is None:
                raise MailboxExists(new_n)
            records = await self._b.records_range(src_id, 1, None)
            await self._messages.copy_records(src_id, records, dst_id, move=True)
            return
        if new_n.startswith(old_n + DELIMITER):
            raise InvalidMailboxName(f"cannot move {old_n} into itself")
        prefix = old_n + DELIMITER
        rows = await self._b.q("name_list", account)
        moves = [
            (r["id"], r["name"], new_n + r["name"][len(old_n) :])
            for r in rows
            if r["name"] == old_n or r["name"].startswith(prefix)
        ]
        subs = {r["name"] for r in await self._b.q("sub_list", account)}
        claimed: list[tuple[str, str]] = []
        for mid, _name, target in moves:
            if not _applied(await self._b.q("name_claim", account, target, mid)):
                for t, m in claimed:
                    await self._b.q("name_release", account, t, m)
                raise MailboxExists(target)
            claimed.append((target, mid))
        for mid, name, target in moves:
            await self._b.q("mbox_rename", target, mid)
            await self._b.q("name_release", account, name, mid)
            if name in subs:
                await self._b.q("sub_del", account, name)
                await self._b.q("sub_add", account, target)
        await self._b.create_parents(account, new_n)
        self._b.publish(m for m, _, _ in moves)

    async def set_subscribed(self, account: str, name: str, subscribed: bool) -> None:
        account = account.strip().lower()
        name = normalize_mailbox_name(name)
        await self._b.q("sub_add" if subscribed else "sub_del", account, name)

    async def list_subscriptions(self, account: str) -> list[str]:
        account = account.strip().lower()
        return sorted(r["name"] for r in await self._b.q("sub_list", account))

    async def claim_recent(self, mailbox_id: str) -> int:
        b = self._b
        for _attempt in range(100):
            rows = await b.q("alloc_get", mailbox_id)
            if not rows:
                raise MailboxNotFound(mailbox_id)
            recent, uidnext = rows[0]["recent"], rows[0]["uidnext"]
            if recent == uidnext:
                return recent
            if _applied(await b.q("recent_cas", uidnext, mailbox_id, recent, uidnext)):
                return recent
        raise RuntimeError(f"\\Recent claim on {mailbox_id} did not settle")


# -- messages ------------------------------------------------------------------------------


class CassandraMessageStore:
    """``MessageStore`` on Cassandra."""

    def __init__(self, backend: CassandraBackend) -> None:
        self._b = backend

    async def _ensure_content(self, message: StoredMessage) -> None:
        """Write the content row and its blob reference (both idempotent,
        in parallel)."""
        await self._b.gather(
            [
                self._b.q(
                    "content_insert",
                    message.message_id,
                    message.blob_key,
                    message.size,
                    message.parsed.to_json(),
                ),
                self._b.q("blobref_add", message.blob_key, message.message_id),
            ]
        )

    async def store_message(self, blob_key: str, parsed: ParsedMessage) -> StoredMessage:
        message = StoredMessage(
            message_id=uuid.uuid4().hex, blob_key=blob_key, size=parsed.size, parsed=parsed
        )
        await self._ensure_content(message)
        return message

    async def deliver(
        self, message: StoredMessage, targets: Sequence[DeliveryTarget]
    ) -> list[MessageRecord]:
        b = self._b
        now = int(time.time())
        if not targets:
            return []
        added: dict[str, int] = {}
        owners = await b.gather(b.mailbox_account(mid) for mid in {t.mailbox_id for t in targets})
        owner = dict(owners)
        for t in targets:
            account = owner[t.mailbox_id]
            if account is None:
                raise MailboxNotFound(t.mailbox_id)
            added[account] = added.get(account, 0) + message.size
        per_box: dict[str, int] = {}
        for t in targets:
            per_box[t.mailbox_id] = per_box.get(t.mailbox_id, 0) + 1

        async def work(held: list[_Alloc]) -> list[MessageRecord]:
            # Under the account locks: concurrent deliveries in this daemon
            # cannot both pass the check (across daemons quota is soft by
            # the deliveries in flight; see the decision record).
            await b.check_quota(added, limits)
            # Content row and UID allocations are independent: in parallel.
            # (If an allocation fails, the content row is an orphan that
            # garbage collection removes.)
            mids = list(per_box)
            done = await b.gather(
                [
                    self._ensure_content(message),
                    *(b.allocate(m, per_box[m], per_box[m], held) for m in mids),
                ]
            )
            allocs = dict(zip(mids, done[1:], strict=True))
            stmts: list[tuple[str, Sequence[Any]]] = []
            out = []
            for t in targets:
                date = now if t.internal_date is None else int(t.internal_date)
                out.append(
                    b.append_stmts(
                        allocs[t.mailbox_id],
                        message.message_id,
                        normalize_flags(t.flags),
                        date,
                        message.size,
                        stmts,
                    )
                )
            for a in allocs.values():
                b.publish_state(a, stmts)
            await b.run_batches(stmts)
            await b.apply_counts(allocs.values())
            return out

        limits = await b.quota_limits(added)  # limits change rarely: read before locking
        records = await b.run_op([*per_box, *(f"account:{a}" for a in added)], work)
        b.publish(per_box)
        return records

    async def get_message(self, message_id: str) -> StoredMessage:
        rows = await self._b.q("content_get", message_id)
        if not rows:
            raise KeyError(message_id)
        r = rows[0]
        return StoredMessage(
            message_id=message_id,
            blob_key=r["blob_key"],
            size=r["size"],
            parsed=ParsedMessage.from_json(r["parsed"]),
        )

    async def list_messages(
        self, mailbox_id: str, uid_min: int = 1, uid_max: int | None = None
    ) -> list[MessageRecord]:
        return await self._b.records_range(mailbox_id, uid_min, uid_max)

    async def unseen_uids(self, mailbox_id: str) -> list[int]:
        b = self._b
        uidnext, _ = await b.state(mailbox_id)
        out: list[int] = []
        for bucket in range(b.bucket(max(uidnext - 1, 0)) + 1):
            out.extend(r["uid"] for r in await b.q("unseen_list", mailbox_id, bucket))
        return out

    async def store_flags(
        self,
        mailbox_id: str,
        uids: Iterable[int],
        flags: Iterable[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> list[MessageRecord]:
        b = self._b
        wanted = list(uids)
        given = normalize_flags(flags)

        async def work(held: list[_Alloc]) -> list[MessageRecord]:
            changes = []
            for rec in await b.records(mailbox_id, wanted):
                new = flags_after(rec.flags, rec.modseq, given, mode, unchanged_since)
                if new is not None:
                    changes.append((rec, new))
            if not changes:
                if await b.mailbox_row(mailbox_id) is None:
                    raise MailboxNotFound(mailbox_id)
                return []
            alloc = await b.allocate(mailbox_id, 0, len(changes), held)
            stmts: list[tuple[str, Sequence[Any]]] = []
            out = []
            for rec, new in changes:
                modseq = alloc.next_modseq()
                bk = b.bucket(rec.uid)
                stmts.append(("msg_flags", (set(new), modseq, mailbox_id, bk, rec.uid)))
                stmts.append(("chg_add", (mailbox_id, b.bucket(modseq), modseq, rec.uid, False)))
                was_seen, seen = _SEEN in rec.flags, _SEEN in new
                if was_seen and not seen:
                    stmts.append(("unseen_add", (mailbox_id, bk, rec.uid)))
                    alloc.d_unseen += 1
                elif seen and not was_seen:
                    stmts.append(("unseen_del", (mailbox_id, bk, rec.uid)))
                    alloc.d_unseen -= 1
                out.append(
                    MessageRecord(rec.uid, rec.message_id, new, modseq, rec.internal_date, rec.size)
                )
            b.publish_state(alloc, stmts)
            await b.run_batches(stmts)
            await b.apply_counts([alloc])
            return out

        records = await b.run_op([mailbox_id], work)
        if records:
            b.publish([mailbox_id])
        return records

    async def expunge(self, mailbox_id: str, uids: Iterable[int]) -> list[int]:
        b = self._b
        wanted = list(uids)

        async def work(held: list[_Alloc]) -> list[int]:
            records = await b.records(mailbox_id, wanted)
            if not records:
                return []
            alloc = await b.allocate(mailbox_id, 0, len(records), held)
            stmts: list[tuple[str, Sequence[Any]]] = []
            removed = b.expunge_stmts(alloc, records, stmts)
            b.publish_state(alloc, stmts)
            await b.run_batches(stmts)
            await b.apply_counts([alloc])
            return removed

        removed = await b.run_op([mailbox_id], work)
        if removed:
            b.publish([mailbox_id])
        return removed

    async def copy_records(
        self,
        src_id: str,
        records: Sequence[MessageRecord],
        dst_id: str,
        *,
        move: bool,
        quota_account: str | None = None,
    ) -> list[tuple[int, int]]:
        """Copy (and for a move, expunge) ``records`` of ``src_id``; with
        ``quota_account``, check that account's quota under its lock."""
        b = self._b
        if not records:
            return []

        async def work(held: list[_Alloc]) -> list[tuple[int, int]]:
            recs = await b.records(src_id, [r.uid for r in records])
            if not recs:
                return []
            if quota_account is not None:
                await b.check_quota({quota_account: sum(r.size for r in recs)})
            dst_alloc = await b.allocate(dst_id, len(recs), len(recs), held)
            src_alloc = await b.allocate(src_id, 0, len(recs), held) if move else None
            pairs = []
            # Per chunk, copy and source expunge go in the same logged batch.
            for i in range(0, len(recs), BATCH_MESSAGES):
                chunk = recs[i : i + BATCH_MESSAGES]
                stmts: list[tuple[str, Sequence[Any]]] = []
                for rec in chunk:
                    new = b.append_stmts(
                        dst_alloc, rec.message_id, rec.flags, rec.internal_date, rec.size, stmts
                    )
                    pairs.append((rec.uid, new.uid))
                if src_alloc is not None:
                    b.expunge_stmts(src_alloc, chunk, stmts)
                if i + BATCH_MESSAGES >= len(recs):
                    b.publish_state(dst_alloc, stmts)
                    if src_alloc is not None:
                        b.publish_state(src_alloc, stmts)
                batch = b.conn.batch(logged=True)
                for name, params in stmts:
                    batch.add(b.conn.bound(name, params))
                await b.conn.execute(batch)
            await b.apply_counts([a for a in (dst_alloc, src_alloc) if a is not None])
            return pairs

        keys = [dst_id, src_id] if move else [dst_id]
        lock_keys = keys if quota_account is None else [*keys, f"account:{quota_account}"]
        pairs = await b.run_op(lock_keys, work)
        b.publish(keys)
        return pairs

    async def _copy(
        self, src_id: str, uids: Iterable[int], dst_id: str, move: bool
    ) -> list[tuple[int, int]]:
        b = self._b
        src = await b.mailbox_row(src_id)
        if src is None:
            raise MailboxNotFound(src_id)
        dst = await b.mailbox_row(dst_id)
        if dst is None:
            raise MailboxNotFound(dst_id)
        records = await b.records(src_id, uids)
        if not records:
            return []
        same = move and src["account"] == dst["account"]
        return await self.copy_records(
            src_id, records, dst_id, move=move, quota_account=None if same else dst["account"]
        )

    async def copy(
        self, src_mailbox_id: str, uids: Iterable[int], dst_mailbox_id: str
    ) -> list[tuple[int, int]]:
        return await self._copy(src_mailbox_id, uids, dst_mailbox_id, False)

    async def move(
        self, src_mailbox_id: str, uids: Iterable[int], dst_mailbox_id: str
    ) -> list[tuple[int, int]]:
        return await self._copy(src_mailbox_id, uids, dst_mailbox_id, True)

    async def changes_since(self, mailbox_id: str, modseq: int) -> Changes:
        b = self._b
        if await b.mailbox_row(mailbox_id) is None:
            raise MailboxNotFound(mailbox_id)
        uidnext, highest = await b.state(mailbox_id)
        touched: set[int] = set()
        expunged: set[int] = set()
        for bucket in range(b.bucket(max(modseq, 0)), b.bucket(highest) + 1):
            for r in await b.q("chg_since", mailbox_id, bucket, modseq):
                if r["modseq"] > highest:
                    continue  # written by an operation not yet published
                (expunged if r["expunged"] else touched).add(r["uid"])
        touched -= expunged
        changed = tuple(
            r for r in await b.records(mailbox_id, touched) if modseq < r.modseq <= highest
        )
        return Changes(
            highestmodseq=highest,
            uidnext=uidnext,
            changed=changed,
            expunged=tuple(sorted(expunged)),
        )

    async def search_text(self, mailbox_id: str, query: SearchQuery) -> set[int]:
        """Read the content rows of the mailbox's messages and match exactly
        (case-insensitive substring, as IMAP SEARCH requires)."""
        fields = _SEARCH_FIELDS.get(query.field.lower())
        if fields is None:
            raise ValueError(f"unknown search field {query.field!r}")
        needle = query.text.lower()
        records = await self._b.records_range(mailbox_id, 1, None)
        by_message: dict[str, list[int]] = {}
        for r in records:
            by_message.setdefault(r.message_id, []).append(r.uid)

        async def match(message_id: str) -> bool:
            rows = await self._b.q("content_get", message_id)
            if not rows:
                return False
            d = json.loads(rows[0]["parsed"])
            return any(needle in (d.get(f) or "").lower() for f in fields)

        ids = list(by_message)
        hits = await self._b.gather(match(m) for m in ids)
        return {uid for m, hit in zip(ids, hits, strict=True) if hit for uid in by_message[m]}
