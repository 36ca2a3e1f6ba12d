"""The embedded storage backend: SQLite metadata + content-addressed files.

Design (docs/decisions/0001-embedded-storage.md):

- SQLite in WAL mode with ``synchronous=FULL``: a commit returns only after
  the WAL is fsynced, so an acknowledged change survives a crash or power loss.
- One writer: every write runs on one dedicated thread with one connection,
  in submission order.  UID and MODSEQ allocation is therefore a plain
  read-increment inside the transaction and concurrent deliveries can never
  hand out the same UID.  Writes queued together are group-committed: each in
  its own SAVEPOINT, one COMMIT (one fsync) for all.  Reads run in the shared
  blocking pool on a small set of read-only connections (WAL readers never
  block the writer).
- Bodies are blob files (``FileBlobStore``), fsynced before the metadata that
  refers to them is written.  A crash between the two leaves an orphan blob
  that ``collect_garbage`` removes after its grace period.
- ``deliver`` writes the content row (if ``store_message`` has not, or it was
  collected) and every mailbox entry in one transaction.
- The change notifier is told after each commit, on the reactor thread.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python import failure

from mailserver.mail.message import ParsedMessage
from mailserver.store.common import SEEN as _SEEN
from mailserver.store.common import flags_after, normalize_flags, normalize_mailbox_name
from mailserver.store.files import FileBlobStore, fsync_dir
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
from mailserver.store.notify import LocalNotifier
from mailserver.threads import run_blocking

T = TypeVar("T")

#: Version of the schema this code writes; ``_MIGRATIONS[n]`` upgrades n-1 -> n.
SCHEMA_VERSION = 1

_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        )""",
        """CREATE TABLE accounts (
            address TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            quota_bytes INTEGER NOT NULL DEFAULT 0,
            disabled INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL
        )""",
        """CREATE TABLE aliases (
            alias TEXT PRIMARY KEY,
            address TEXT NOT NULL
        )""",
        "CREATE INDEX aliases_address ON aliases(address)",
        """CREATE TABLE mailboxes (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            name TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            uidnext INTEGER NOT NULL DEFAULT 1,
            highestmodseq INTEGER NOT NULL DEFAULT 1,
            special_use TEXT,
            messages INTEGER NOT NULL DEFAULT 0,
            unseen INTEGER NOT NULL DEFAULT 0,
            size INTEGER NOT NULL DEFAULT 0,
            recent_watermark INTEGER NOT NULL DEFAULT 1,
            UNIQUE (account, name)
        )""",
        """CREATE TABLE subscriptions (
            account TEXT NOT NULL,
            name TEXT NOT NULL,
            PRIMARY KEY (account, name)
        ) WITHOUT ROWID""",
        """CREATE TABLE content (
            rowid INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL UNIQUE,
            blob_key TEXT NOT NULL,
            size INTEGER NOT NULL,
            parsed TEXT NOT NULL,
            created REAL NOT NULL
        )""",
        "CREATE INDEX content_blob ON content(blob_key)",
        "CREATE INDEX content_created ON content(created)",
        """CREATE TABLE mailbox_messages (
            mailbox_id TEXT NOT NULL,
            uid INTEGER NOT NULL,
            message_id TEXT NOT NULL,
            flags TEXT NOT NULL,
            modseq INTEGER NOT NULL,
            internal_date INTEGER NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (mailbox_id, uid)
        ) WITHOUT ROWID""",
        "CREATE INDEX mailbox_messages_modseq ON mailbox_messages(mailbox_id, modseq)",
        "CREATE INDEX mailbox_messages_message ON mailbox_messages(message_id)",
        """CREATE TABLE unseen (
            mailbox_id TEXT NOT NULL,
            uid INTEGER NOT NULL,
            PRIMARY KEY (mailbox_id, uid)
        ) WITHOUT ROWID""",
        """CREATE TABLE expunged (
            mailbox_id TEXT NOT NULL,
            uid INTEGER NOT NULL,
            modseq INTEGER NOT NULL,
            PRIMARY KEY (mailbox_id, uid)
        ) WITHOUT ROWID""",
        "CREATE INDEX expunged_modseq ON expunged(mailbox_id, modseq)",
        # rowid = content.rowid; trigram tokens give substring matching.
        """CREATE VIRTUAL TABLE search USING fts5(
            subject, from_, to_, cc, bcc, body, tokenize = 'trigram'
        )""",
    ],
}

_SEARCH_COLUMNS = {
    "subject": ("subject",),
    "from": ("from_",),
    "to": ("to_",),
    "cc": ("cc",),
    "bcc": ("bcc",),
    "body": ("body",),
    "text": ("subject", "from_", "to_", "cc", "bcc", "body"),
}

_CHUNK = 500  # bound on SQL variables per statement

_MAILBOX_COLS = (
    "m.id, m.account, m.name, m.uidvalidity, m.uidnext, m.highestmodseq, m.special_use, "
    "EXISTS (SELECT 1 FROM subscriptions s WHERE s.account = m.account AND s.name = m.name), "
    "m.messages, m.unseen, m.size, m.recent_watermark"
)
_RECORD_COLS = "uid, message_id, flags, modseq, internal_date, size"


# -- small pure helpers -----------------------------------------------------


def _content_json(parsed: ParsedMessage) -> str:
    """``parsed`` as stored in ``content.parsed``: without ``search_body``
    (up to 256 K characters), which the ``search`` row of the same content
    holds already and ``get_message`` reads back from there.  Rows written
    with the text inline still read back unchanged."""
    if parsed.search_body:
        parsed = dataclasses.replace(parsed, search_body="")
    return parsed.to_json()


def _flags_text(flags: frozenset[str]) -> str:
    return json.dumps(sorted(flags), separators=(",", ":"))


def _parse_flags(text: str) -> frozenset[str]:
    return frozenset(json.loads(text))


def _record(row: Sequence[Any]) -> MessageRecord:
    return MessageRecord(
        uid=row[0],
        message_id=row[1],
        flags=_parse_flags(row[2]),
        modseq=row[3],
        internal_date=row[4],
        size=row[5],
    )


def _mailbox(row: Sequence[Any]) -> MailboxInfo:
    return MailboxInfo(
        id=row[0],
        account=row[1],
        name=row[2],
        uidvalidity=row[3],
        uidnext=row[4],
        highestmodseq=row[5],
        special_use=row[6],
        subscribed=bool(row[7]),
        messages=row[8],
        unseen=row[9],
        size=row[10],
        recent_watermark=row[11],
    )


def _chunks(items: Sequence[T], n: int = _CHUNK) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


# -- connections and threads -------------------------------------------------


class _WriteJob:
    __slots__ = ("fn", "args", "durable", "deferred")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], durable: bool) -> None:
        self.fn = fn
        self.args = args
        self.durable = durable
        self.deferred: defer.Deferred[Any] = defer.Deferred()


_STOP = object()


class _Database:
    """One writer thread+connection and a small pool of read connections.

    The writer does group commit: it takes every job queued at the moment
    (up to ``MAX_BATCH``), runs each inside its own SAVEPOINT (a failing job
    rolls back alone) and commits them with one WAL fsync; each job's
    Deferred fires only after that commit.
    """

    MAX_BATCH = 64

    def __init__(self, path: str, reactor: Any, readers: int = 4) -> None:
        self.path = path
        self._reactor = reactor
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer_thread = threading.Thread(
            target=self._writer_loop, name="sqlite-writer", daemon=True
        )
        self._writer_stopped: defer.Deferred[None] = defer.Deferred()
        self._writer_conn: sqlite3.Connection | None = None
        self._writer_sync: str | None = None
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._max_readers = readers
        self._nreaders = 0
        self._closing = False  # close() called: refuse new work
        self._reads = 0  # reads in flight (reactor thread only)
        self._reads_done: defer.Deferred[None] | None = None
        self._shutdown_trigger: Any = None

    def start(self) -> None:
        self._writer_thread.start()
        self._shutdown_trigger = self._reactor.addSystemEventTrigger(
            "during", "shutdown", self._stop_writer_blocking
        )

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=60.0
        )
        conn.execute("PRAGMA busy_timeout = 60000")
        if readonly:
            conn.execute("PRAGMA query_only = 1")
        else:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise RuntimeError(f"cannot put {self.path} in WAL mode ({mode})")
            conn.execute("PRAGMA synchronous = FULL")
            self._writer_sync = "FULL"
        return conn

    # writer ---------------------------------------------------------------

    def _writer_loop(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if job is _STOP:
                    return
                batch = [job]
                stop = False
                while len(batch) < self.MAX_BATCH:
                    try:
                        nxt = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    batch.append(nxt)
                self._run_batch(batch)
                if stop:
                    return
        finally:
            self._close_writer_conn()
            self._reactor.callFromThread(self._writer_stopped.callback, None)

    def _run_batch(self, batch: list[_WriteJob]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            if self._writer_conn is None:
                self._writer_conn = self._connect(readonly=False)
            conn = self._writer_conn
            # Content rows that a later durable commit re-creates anyway skip
            # the fsync; the next FULL commit makes them durable as well.
            sync = "FULL" if any(j.durable for j in batch) else "NORMAL"
            if sync != self._writer_sync:
                conn.execute(f"PRAGMA synchronous = {sync}")
                self._writer_sync = sync
            conn.execute("BEGIN IMMEDIATE")
            try:
                for job in batch:
                    conn.execute("SAVEPOINT job")
                    try:
                        result = job.fn(conn, *job.args)
                    except Exception:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                        outcomes.append((False, failure.Failure()))
                    else:
                        conn.execute("RELEASE job")
                        outcomes.append((True, result))
                conn.execute("COMMIT")
            except BaseException:
                # After a failed COMMIT (disk full, I/O error) SQLite may or
                # may not have rolled back already; make sure nothing stays open.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception:
            # Nothing of this batch is committed: every job fails.
            f = failure.Failure()
            outcomes = [(False, f)] * len(batch)
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            fire = job.deferred.callback if ok else job.deferred.errback
            self._reactor.callFromThread(fire, value)

    async def write(self, fn: Callable[..., T], *args: Any, durable: bool = True) -> T:
        """Run ``fn(conn, *args)`` in a write transaction on the writer thread;
        returns after the commit."""
        if self._closing:
            raise RuntimeError("storage is closed")
        job = _WriteJob(fn, args, durable)
        self._jobs.put(job)
        return await job.deferred

    def _close_writer_conn(self) -> None:
        if self._writer_conn is not None:
            try:
                self._writer_conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
            finally:
                self._writer_conn.close()
                self._writer_conn = None

    def _stop_writer_blocking(self) -> None:
        """Reactor shutdown without close(): finish queued writes, stop."""
        self._closing = True
        self._jobs.put(_STOP)
        self._writer_thread.join()

    # readers --------------------------------------------------------------

    def _take_reader(self) -> sqlite3.Connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            create = self._nreaders < self._max_readers
            if create:
                self._nreaders += 1
        if create:
            try:
                return self._connect(readonly=True)
            except BaseException:
                with self._lock:
                    self._nreaders -= 1
                raise
        return self._idle.get()

    def _run_read(self, fn: Callable[..., T], *args: Any) -> T:
        conn = self._take_reader()
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn, *args)
            finally:
                conn.execute("COMMIT")
        finally:
            self._idle.put(conn)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in one read transaction (a snapshot)."""
        if self._closing:
            raise RuntimeError("storage is closed")
        self._reads += 1
        try:
            return await run_blocking(self._run_read, fn, *args)
        finally:
            self._reads -= 1
            if self._reads == 0 and self._reads_done is not None:
                d, self._reads_done = self._reads_done, None
                d.callback(None)

    # lifecycle ------------------------------------------------------------

    def _close_readers(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    async def close(self) -> None:
        """Let queued writes and in-flight reads finish, then close the
        connections and stop the writer thread."""
        if self._closing:
            return
        self._closing = True
        self._jobs.put(_STOP)
        await self._writer_stopped
        if self._reads:
            self._reads_done = defer.Deferred()
            await self._reads_done
        await run_blocking(self._close_readers)
        if self._shutdown_trigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        await run_blocking(self._writer_thread.join)


# -- SQL bodies shared by the stores (run on a DB thread) -------------------


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema version {version} is newer than this code ({SCHEMA_VERSION})"
        )
    for v in range(version + 1, SCHEMA_VERSION + 1):
        for stmt in _MIGRATIONS[v]:
            conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {v}")


def _next_uidvalidity(conn: sqlite3.Connection) -> int:
    """Time-based and strictly increasing across the whole database, so a
    mailbox re-created under the same name never reuses a UIDVALIDITY."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'uidvalidity'").fetchone()
    last = row[0] if row else 0
    value = max(int(time.time()), last + 1)
    if value >= 2**32:
        raise RuntimeError("UIDVALIDITY space exhausted")
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('uidvalidity', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (value,),
    )
    return value


def _mailbox_row(conn: sqlite3.Connection, account: str, name: str) -> MailboxInfo | None:
    row = conn.execute(
        f"SELECT {_MAILBOX_COLS} FROM mailboxes m WHERE m.account = ? AND m.name = ?",
        (account, name),
    ).fetchone()
    return _mailbox(row) if row else None


def _mailbox_by_id(conn: sqlite3.Connection, mailbox_id: str) -> MailboxInfo | None:
    row = conn.execute(
        f"SELECT {_MAILBOX_COLS} FROM mailboxes m WHERE m.id = ?", (mailbox_id,)
    ).fetchone()
    return _mailbox(row) if row else None


def _require_mailbox(conn: sqlite3.Connection, mailbox_id: str) -> MailboxInfo:
    info = _mailbox_by_id(conn, mailbox_id)
    if info is None:
        raise MailboxNotFound(mailbox_id)
    return info


def _insert_mailbox(
    conn: sqlite3.Connection, account: str, name: str, special_use: str | None
) -> str:
    mailbox_id = uuid.uuid4().hex
    conn.execute(
        "INSERT INTO mailboxes (id, account, name, uidvalidity, special_use) VALUES (?, ?, ?, ?, ?)",
        (mailbox_id, account, name, _next_uidvalidity(conn), special_use),
    )
    return mailbox_id


def _create_parents(conn: sqlite3.Connection, account: str, name: str) -> None:
    parts = name.split(DELIMITER)
    for i in range(1, len(parts)):
        parent = DELIMITER.join(parts[:i])
        if _mailbox_row(conn, account, parent) is None:
            _insert_mailbox(conn, account, parent, None)


def _account_exists(conn: sqlite3.Connection, address: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM accounts WHERE address = ?", (address,)).fetchone() is not None
    )


def _address_taken(conn: sqlite3.Connection, name: str, owner: str | None = None) -> bool:
    """Is ``name`` an account address or another account's alias?"""
    if conn.execute("SELECT 1 FROM accounts WHERE address = ?", (name,)).fetchone():
        return name != owner
    row = conn.execute("SELECT address FROM aliases WHERE alias = ?", (name,)).fetchone()
    return row is not None and row[0] != owner


def _load_account(conn: sqlite3.Connection, address: str) -> Account | None:
    row = conn.execute(
        "SELECT address, password_hash, quota_bytes, disabled FROM accounts WHERE address = ?",
        (address,),
    ).fetchone()
    if row is None:
        return None
    aliases = tuple(
        r[0]
        for r in conn.execute(
            "SELECT alias FROM aliases WHERE address = ? ORDER BY alias", (address,)
        )
    )
    return Account(
        address=row[0],
        password_hash=row[1],
        quota_bytes=row[2],
        aliases=aliases,
        disabled=bool(row[3]),
    )


def _usage(conn: sqlite3.Connection, account: str) -> tuple[int, int]:
    row = conn.execute(
        "SELECT COALESCE(SUM(size), 0), COALESCE(SUM(messages), 0) FROM mailboxes "
        "WHERE account = ?",
        (account,),
    ).fetchone()
    return row[0], row[1]


def _check_quota(conn: sqlite3.Connection, added: dict[str, int]) -> None:
    """Raise QuotaExceeded if adding ``added[account]`` octets to any account
    goes over its limit."""
    for account, extra in added.items():
        if extra <= 0:
            continue
        row = conn.execute("SELECT quota_bytes FROM accounts WHERE address = ?", (account,))
        limit = (row.fetchone() or (0,))[0]
        if limit > 0:
            used, _ = _usage(conn, account)
            if used + extra > limit:
                raise QuotaExceeded(f"{account}: {used} + {extra} > {limit} octets")


class _Allocator:
    """UID/MODSEQ counters of one mailbox inside a write transaction; the
    new values are written back by ``flush``."""

    def __init__(self, conn: sqlite3.Connection, mailbox_id: str) -> None:
        row = conn.execute(
            "SELECT uidnext, highestmodseq FROM mailboxes WHERE id = ?", (mailbox_id,)
        ).fetchone()
        if row is None:
            raise MailboxNotFound(mailbox_id)
        self.conn = conn
        self.mailbox_id = mailbox_id
        self.uidnext, self.modseq = row
        self.d_messages = self.d_unseen = self.d_size = 0

    def next_uid(self) -> int:
        uid = self.uidnext
        self.uidnext += 1
        return uid

    def next_modseq(self) -> int:
        self.modseq += 1
        return self.modseq

    def flush(self) -> None:
        self.conn.execute(
            "UPDATE mailboxes SET uidnext = ?, highestmodseq = ?, messages = messages + ?, "
            "unseen = unseen + ?, size = size + ? WHERE id = ?",
            (
                self.uidnext,
                self.modseq,
                self.d_messages,
                self.d_unseen,
                self.d_size,
                self.mailbox_id,
            ),
        )


def _append(
    alloc: _Allocator,
    message_id: str,
    flags: frozenset[str],
    internal_date: int,
    size: int,
) -> MessageRecord:
    rec = MessageRecord(
        uid=alloc.next_uid(),
        message_id=message_id,
        flags=flags,
        modseq=alloc.next_modseq(),
        internal_date=internal_date,
        size=size,
    )
    alloc.conn.execute(
        "INSERT INTO mailbox_messages (mailbox_id, uid, message_id, flags, modseq, "
        "internal_date, size) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            alloc.mailbox_id,
            rec.uid,
            message_id,
            _flags_text(flags),
            rec.modseq,
            internal_date,
            size,
        ),
    )
    if _SEEN not in flags:
        alloc.conn.execute(
            "INSERT INTO unseen (mailbox_id, uid) VALUES (?, ?)", (alloc.mailbox_id, rec.uid)
        )
        alloc.d_unseen += 1
    alloc.d_messages += 1
    alloc.d_size += size
    return rec


def _select_records(
    conn: sqlite3.Connection, mailbox_id: str, uids: Iterable[int]
) -> list[MessageRecord]:
    wanted = sorted({int(u) for u in uids})
    out: list[MessageRecord] = []
    for chunk in _chunks(wanted):
        out.extend(
            _record(r)
            for r in conn.execute(
                f"SELECT {_RECORD_COLS} FROM mailbox_messages WHERE mailbox_id = ? "
                f"AND uid IN ({_placeholders(len(chunk))}) ORDER BY uid",
                (mailbox_id, *chunk),
            )
        )
    out.sort(key=lambda r: r.uid)
    return out


def _expunge_records(alloc: _Allocator, records: Sequence[MessageRecord]) -> list[int]:
    conn = alloc.conn
    removed = []
    for rec in records:
        conn.execute(
            "DELETE FROM mailbox_messages WHERE mailbox_id = ? AND uid = ?",
            (alloc.mailbox_id, rec.uid),
        )
        if _SEEN not in rec.flags:
            conn.execute(
                "DELETE FROM unseen WHERE mailbox_id = ? AND uid = ?", (alloc.mailbox_id, rec.uid)
            )
            alloc.d_unseen -= 1
        alloc.d_messages -= 1
        alloc.d_size -= rec.size
        conn.execute(
            "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
            (alloc.mailbox_id, rec.uid, alloc.next_modseq()),
        )
        removed.append(rec.uid)
    return removed


def _copy_records(
    conn: sqlite3.Connection, records: Sequence[MessageRecord], dst: _Allocator
) -> list[tuple[int, int]]:
    pairs = []
    for rec in records:
        new = _append(dst, rec.message_id, rec.flags, rec.internal_date, rec.size)
        pairs.append((rec.uid, new.uid))
    return pairs


def _delete_mailbox_rows(conn: sqlite3.Connection, mailbox_id: str) -> None:
    for table in ("mailbox_messages", "unseen", "expunged"):
        conn.execute(f"DELETE FROM {table} WHERE mailbox_id = ?", (mailbox_id,))
    conn.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox_id,))


# -- the stores ---------------------------------------------------------------


class _Backend:
    """What the three stores share."""

    def __init__(self, db: _Database, notifier: LocalNotifier) -> None:
        self.db = db
        self.notifier = notifier

    async def write(
        self, fn: Callable[..., T], *args: Any, durable: bool = True
    ) -> tuple[T, set[str]]:
        """Run a write; ``fn(conn, changed, *args)`` adds the ids of changed
        mailboxes to ``changed``; they are published after the commit."""
        changed: set[str] = set()
        result = await self.db.write(fn, changed, *args, durable=durable)
        for mailbox_id in sorted(changed):
            self.notifier.publish(mailbox_id)
        return result, changed


class SqliteAccountStore:
    """``AccountStore`` on SQLite."""

    def __init__(self, backend: _Backend) -> None:
        self._b = backend

    async def create_account(
        self,
        address: str,
        password_hash: str,
        quota_bytes: int = 0,
        aliases: Sequence[str] = (),
    ) -> Account:
        address = address.strip().lower()
        alias_set = sorted({a.strip().lower() for a in aliases} - {address})
        if not address:
            raise ValueError("empty account address")

        def txn(conn: sqlite3.Connection, changed: set[str]) -> Account:
            if _address_taken(conn, address):
                raise AccountExists(address)
            for alias in alias_set:
                if _address_taken(conn, alias):
                    raise AccountExists(alias)
            conn.execute(
                "INSERT INTO accounts (address, password_hash, quota_bytes, created) "
                "VALUES (?, ?, ?, ?)",
                (address, password_hash, int(quota_bytes), time.time()),
            )
            conn.executemany(
                "INSERT INTO aliases (alias, address) VALUES (?, ?)",
                [(a, address) for a in alias_set],
            )
            for name, special in (("INBOX", None), *SPECIAL_USE_DEFAULTS.items()):
                _insert_mailbox(conn, address, name, special)
                conn.execute(
                    "INSERT OR IGNORE INTO subscriptions (account, name) VALUES (?, ?)",
                    (address, name),
                )
            account = _load_account(conn, address)
            assert account is not None
            return account

        account, _ = await self._b.write(txn)
        return account

    async def get_account(self, address: str) -> Account | None:
        key = address.strip().lower()

        def q(conn: sqlite3.Connection) -> Account | None:
            account = _load_account(conn, key)
            if account is None:
                row = conn.execute("SELECT address FROM aliases WHERE alias = ?", (key,))
                owner = row.fetchone()
                if owner is not None:
                    account = _load_account(conn, owner[0])
            return account

        return await self._b.db.read(q)

    async def set_password_hash(self, address: str, password_hash: str) -> None:
        address = address.strip().lower()

        def txn(conn: sqlite3.Connection, changed: set[str]) -> None:
            cur = conn.execute(
                "UPDATE accounts SET password_hash = ? WHERE address = ?", (password_hash, address)
            )
            if cur.rowcount == 0:
                raise AccountNotFound(address)

        await self._b.write(txn)

    async def set_aliases(self, address: str, aliases: Sequence[str]) -> None:
        address = address.strip().lower()
        alias_set = sorted({a.strip().lower() for a in aliases} - {address})

        def txn(conn: sqlite3.Connection, changed: set[str]) -> None:
            if not _account_exists(conn, address):
                raise AccountNotFound(address)
            for alias in alias_set:
                if _address_taken(conn, alias, owner=address):
                    raise AccountExists(alias)
            conn.execute("DELETE FROM aliases WHERE address = ?", (address,))
            conn.executemany(
                "INSERT INTO aliases (alias, address) VALUES (?, ?)",
                [(a, address) for a in alias_set],
            )

        await self._b.write(txn)

    async def delete_account(self, address: str) -> None:
        address = address.strip().lower()

        def txn(conn: sqlite3.Connection, changed: set[str]) -> None:
            if not _account_exists(conn, address):
                raise AccountNotFound(address)
            ids = [
                r[0] for r in conn.execute("SELECT id FROM mailboxes WHERE account = ?", (address,))
            ]
            for mailbox_id in ids:
                _delete_mailbox_rows(conn, mailbox_id)
                changed.add(mailbox_id)
            conn.execute("DELETE FROM subscriptions WHERE account = ?", (address,))
            conn.execute("DELETE FROM aliases WHERE address = ?", (address,))
            conn.execute("DELETE FROM accounts WHERE address = ?", (address,))

        await self._b.write(txn)

    async def list_accounts(self) -> list[Account]:
        def q(conn: sqlite3.Connection) -> list[Account]:
            names = [r[0] for r in conn.execute("SELECT address FROM accounts ORDER BY address")]
            return [a for a in (_load_account(conn, n) for n in names) if a is not None]

        return await self._b.db.read(q)

    async def quota_usage(self, address: str) -> QuotaUsage:
        address = address.strip().lower()

        def q(conn: sqlite3.Connection) -> QuotaUsage:
            row = conn.execute(
                "SELECT quota_bytes FROM accounts WHERE address = ?", (address,)
            ).fetchone()
            if row is None:
                raise AccountNotFound(address)
            used, count = _usage(conn, address)
            return QuotaUsage(bytes=used, messages=count, limit_bytes=row[0])

        return await self._b.db.read(q)


class SqliteMailboxStore:
    """``MailboxStore`` on SQLite."""

    def __init__(self, backend: _Backend) -> None:
        self._b = backend

    async def create_mailbox(
        self, account: str, name: str, special_use: str | None = None
    ) -> MailboxInfo:
        account = account.strip().lower()
        name = normalize_mailbox_name(name)

        def txn(conn: sqlite3.Connection, changed: set[str]) -> MailboxInfo:
            if not _account_exists(conn, account):
                raise AccountNotFound(account)
            if _mailbox_row(conn, account, name) is not None:
                raise MailboxExists(name)
            _create_parents(conn, account, name)
            mailbox_id = _insert_mailbox(conn, account, name, special_use)
            info = _mailbox_by_id(conn, mailbox_id)
            assert info is not None
            return info

        info, _ = await self._b.write(txn)
        return info

    async def get_mailbox(self, account: str, name: str) -> MailboxInfo | None:
        account = account.strip().lower()
        try:
            name = normalize_mailbox_name(name)
        except InvalidMailboxName:
            return None
        return await self._b.db.read(_mailbox_row, account, name)

    async def get_mailbox_by_id(self, mailbox_id: str) -> MailboxInfo | None:
        return await self._b.db.read(_mailbox_by_id, mailbox_id)

    async def list_mailboxes(self, account: str) -> list[MailboxInfo]:
        account = account.strip().lower()

        def q(conn: sqlite3.Connection) -> list[MailboxInfo]:
            return [
                _mailbox(r)
                for r in conn.execute(
                    f"SELECT {_MAILBOX_COLS} FROM mailboxes m WHERE m.account = ? ORDER BY m.name",
                    (account,),
                )
            ]

        return await self._b.db.read(q)

    async def delete_mailbox(self, account: str, name: str) -> None:
        """Delete the mailbox and its messages; its children stay (they are
        separate mailboxes)."""
        account = account.strip().lower()
        name = normalize_mailbox_name(name)
        if name == "INBOX":
            raise InvalidMailboxName("INBOX cannot be deleted")

        def txn(conn: sqlite3.Connection, changed: set[str]) -> None:
            info = _mailbox_row(conn, account, name)
            if info is None:
                raise MailboxNotFound(name)
            _delete_mailbox_rows(conn, info.id)
            changed.add(info.id)

        await self._b.write(txn)

    async def rename_mailbox(self, account: str, old: str, new: str) -> None:
        """Rename with children, keeping ids and UIDVALIDITY (UIDs do not
        change, so that is safe).  INBOX: its messages move to a new mailbox
        (new UIDVALIDITY) and INBOX stays, empty; INBOX's children stay."""
        account = account.strip().lower()
        old_n = normalize_mailbox_name(old)
        new_n = normalize_mailbox_name(new)

        def txn(conn: sqlite3.Connection, changed: set[str]) -> None:
            src = _mailbox_row(conn, account, old_n)
            if src is None:
                raise MailboxNotFound(old_n)
            if _mailbox_row(conn, account, new_n) is not None:
                raise MailboxExists(new_n)
            if old_n == "INBOX":
                _create_parents(conn, account, new_n)
                dst_id = _insert_mailbox(conn, account, new_n, None)
                src_alloc = _Allocator(conn, src.id)
                dst_alloc = _Allocator(conn, dst_id)
                records = [
                    _record(r)
                    for r in conn.execute(
                        f"SELECT {_RECORD_COLS} FROM mailbox_messages WHERE mailbox_id = ? "
                        "ORDER BY uid",
                        (src.id,),
                    )
                ]
                _copy_records(conn, records, dst_alloc)
                _expunge_records(src_alloc, records)
                src_alloc.flush()
                dst_alloc.flush()
                changed.update((src.id, dst_id))
                return
            if new_n.startswith(old_n + DELIMITER):
                raise InvalidMailboxName(f"cannot move {old_n} into itself")
            prefix = old_n + DELIMITER
            rows = conn.execute(
                "SELECT id, name FROM mailboxes WHERE account = ? AND "
                "(name = ? OR substr(name, 1, ?) = ?)",
                (account, old_n, len(prefix), prefix),
            ).fetchall()
            moves = [(mid, name, new_n + name[len(old_n) :]) for mid, name in rows]
            moving = {mid for mid, _, _ in moves}
            for _mid, _name, target in moves:
                clash = _mailbox_row(conn, account, target)
                if clash is not None and clash.id not in moving:
                    raise MailboxExists(target)
            # Two steps so no intermediate state violates UNIQUE(account, name).
            for mid, _name, _target in moves:
                conn.execute("UPDATE mailboxes SET name = ? WHERE id = ?", ("\x00" + mid, mid))
            for mid, name, target in moves:
                conn.execute("UPDATE mailboxes SET name = ? WHERE id = ?", (target, mid))
                cur = conn.execute(
                    "DELETE FROM subscriptions WHERE account = ? AND name = ?", (account, name)
                )
                if cur.rowcount:
                    conn.execute(
                        "INSERT OR IGNORE INTO subscriptions (account, name) VALUES (?, ?)",
                        (account, target),
                    )
                changed.add(mid)
            _create_parents(conn, account, new_n)

        await self._b.write(txn)

    async def set_subscribed(self, account: str, name: str, subscribed: bool) -> None:
        account = account.strip().lower()
        name = normalize_mailbox_name(name)

        def txn(conn: sqlite3.Connection, changed: set[str]) -> None:
            if subscribed:
                conn.execute(
                    "INSERT OR IGNORE INTO subscriptions (account, name) VALUES (?, ?)",
                    (account, name),
                )
            else:
                conn.execute(
                    "DELETE FROM subscriptions WHERE account = ? AND name = ?", (account, name)
                )

        await self._b.write(txn)

    async def list_subscriptions(self, account: str) -> list[str]:
        account = account.strip().lower()

        def q(conn: sqlite3.Connection) -> list[str]:
            return [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM subscriptions WHERE account = ? ORDER BY name", (account,)
                )
            ]

        return await self._b.db.read(q)

    async def claim_recent(self, mailbox_id: str) -> int:
        def txn(conn: sqlite3.Connection, changed: set[str]) -> int:
            row = conn.execute(
                "SELECT recent_watermark FROM mailboxes WHERE id = ?", (mailbox_id,)
            ).fetchone()
            if row is None:
                raise MailboxNotFound(mailbox_id)
            conn.execute(
                "UPDATE mailboxes SET recent_watermark = uidnext WHERE id = ?", (mailbox_id,)
            )
            return row[0]

        old, _ = await self._b.write(txn)
        return old


class SqliteMessageStore:
    """``MessageStore`` on SQLite, with an FTS5 trigram index for search."""

    def __init__(self, backend: _Backend) -> None:
        self._b = backend

    @staticmethod
    def _ensure_content(conn: sqlite3.Connection, message: StoredMessage) -> None:
        if conn.execute(
            "SELECT 1 FROM content WHERE message_id = ?", (message.message_id,)
        ).fetchone():
            return
        cur = conn.execute(
            "INSERT OR IGNORE INTO content (message_id, blob_key, size, parsed, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                message.message_id,
                message.blob_key,
                message.size,
                _content_json(message.parsed),
                time.time(),
            ),
        )
        if cur.rowcount == 1:
            p = message.parsed
            conn.execute(
                "INSERT INTO search (rowid, subject, from_, to_, cc, bcc, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    cur.lastrowid,
                    p.search_subject,
                    p.search_from,
                    p.search_to,
                    p.search_cc,
                    p.search_bcc,
                    p.search_body,
                ),
            )

    async def store_message(self, blob_key: str, parsed: ParsedMessage) -> StoredMessage:
        message = StoredMessage(
            message_id=uuid.uuid4().hex, blob_key=blob_key, size=parsed.size, parsed=parsed
        )

        def txn(conn: sqlite3.Connection, changed: set[str]) -> None:
            self._ensure_content(conn, message)

        # Not fsynced on its own: deliver re-creates the row if it is lost.
        await self._b.write(txn, durable=False)
        return message

    async def deliver(
        self, message: StoredMessage, targets: Sequence[DeliveryTarget]
    ) -> list[MessageRecord]:
        now = int(time.time())

        def txn(conn: sqlite3.Connection, changed: set[str]) -> list[MessageRecord]:
            accounts: dict[str, str] = {}
            added: dict[str, int] = {}
            for t in targets:
                row = conn.execute(
                    "SELECT account FROM mailboxes WHERE id = ?", (t.mailbox_id,)
                ).fetchone()
                if row is None:
                    raise MailboxNotFound(t.mailbox_id)
                accounts[t.mailbox_id] = row[0]
                added[row[0]] = added.get(row[0], 0) + message.size
            _check_quota(conn, added)
            self._ensure_content(conn, message)
            allocs: dict[str, _Allocator] = {}
            out = []
            for t in targets:
                alloc = allocs.get(t.mailbox_id)
                if alloc is None:
                    alloc = allocs[t.mailbox_id] = _Allocator(conn, t.mailbox_id)
                date = now if t.internal_date is None else int(t.internal_date)
                out.append(
                    _append(alloc, message.message_id, normalize_flags(t.flags), date, message.size)
                )
            for alloc in allocs.values():
                alloc.flush()
                changed.add(alloc.mailbox_id)
            return out

        records, _ = await self._b.write(txn)
        return records

    async def get_message(self, message_id: str) -> StoredMessage:
        def q(conn: sqlite3.Connection) -> tuple[str, int, str, str | None] | None:
            return conn.execute(
                "SELECT c.blob_key, c.size, c.parsed, s.body FROM content c "
                "LEFT JOIN search s ON s.rowid = c.rowid WHERE c.message_id = ?",
                (message_id,),
            ).fetchone()

        row = await self._b.db.read(q)
        if row is None:
            raise KeyError(message_id)
        parsed = ParsedMessage.from_json(row[2])
        if not parsed.search_body and row[3]:
            parsed = dataclasses.replace(parsed, search_body=row[3])
        return StoredMessage(
            message_id=message_id,
            blob_key=row[0],
            size=row[1],
            parsed=parsed,
        )

    async def list_messages(
        self, mailbox_id: str, uid_min: int = 1, uid_max: int | None = None
    ) -> list[MessageRecord]:
        hi = 2**63 - 1 if uid_max is None else uid_max

        def q(conn: sqlite3.Connection) -> list[MessageRecord]:
            return [
                _record(r)
                for r in conn.execute(
                    f"SELECT {_RECORD_COLS} FROM mailbox_messages WHERE mailbox_id = ? "
                    "AND uid BETWEEN ? AND ? ORDER BY uid",
                    (mailbox_id, uid_min, hi),
                )
            ]

        return await self._b.db.read(q)

    async def unseen_uids(self, mailbox_id: str) -> list[int]:
        def q(conn: sqlite3.Connection) -> list[int]:
            return [
                r[0]
                for r in conn.execute(
                    "SELECT uid FROM unseen WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
                )
            ]

        return await self._b.db.read(q)

    async def store_flags(
        self,
        mailbox_id: str,
        uids: Iterable[int],
        flags: Iterable[str],
        mode: FlagMode,
        unchanged_since: int | None = None,
    ) -> list[MessageRecord]:
        wanted = list(uids)
        given = normalize_flags(flags)

        def txn(conn: sqlite3.Connection, changed: set[str]) -> list[MessageRecord]:
            alloc = _Allocator(conn, mailbox_id)
            out = []
            for rec in _select_records(conn, mailbox_id, wanted):
                new = flags_after(rec.flags, rec.modseq, given, mode, unchanged_since)
                if new is None:
                    continue
                modseq = alloc.next_modseq()
                conn.execute(
                    "UPDATE mailbox_messages SET flags = ?, modseq = ? "
                    "WHERE mailbox_id = ? AND uid = ?",
                    (_flags_text(new), modseq, mailbox_id, rec.uid),
                )
                was_seen, seen = _SEEN in rec.flags, _SEEN in new
                if was_seen and not seen:
                    conn.execute(
                        "INSERT INTO unseen (mailbox_id, uid) VALUES (?, ?)", (mailbox_id, rec.uid)
                    )
                    alloc.d_unseen += 1
                elif seen and not was_seen:
                    conn.execute(
                        "DELETE FROM unseen WHERE mailbox_id = ? AND uid = ?", (mailbox_id, rec.uid)
                    )
                    alloc.d_unseen -= 1
                out.append(
                    MessageRecord(
                        uid=rec.uid,
                        message_id=rec.message_id,
                        flags=new,
                        modseq=modseq,
                        internal_date=rec.internal_date,
                        size=rec.size,
                    )
                )
            if out:
                alloc.flush()
                changed.add(mailbox_id)
            return out

        records, _ = await self._b.write(txn)
        return records

    async def expunge(self, mailbox_id: str, uids: Iterable[int]) -> list[int]:
        wanted = list(uids)

        def txn(conn: sqlite3.Connection, changed: set[str]) -> list[int]:
            alloc = _Allocator(conn, mailbox_id)
            removed = _expunge_records(alloc, _select_records(conn, mailbox_id, wanted))
            if removed:
                alloc.flush()
                changed.add(mailbox_id)
            return removed

        removed, _ = await self._b.write(txn)
        return removed

    def _copy_txn(
        self,
        conn: sqlite3.Connection,
        changed: set[str],
        src_id: str,
        uids: list[int],
        dst_id: str,
        move: bool,
    ) -> list[tuple[int, int]]:
        src = _require_mailbox(conn, src_id)
        dst = _require_mailbox(conn, dst_id)
        records = _select_records(conn, src_id, uids)
        if not records:
            return []
        if not (move and src.account == dst.account):
            _check_quota(conn, {dst.account: sum(r.size for r in records)})
        dst_alloc = _Allocator(conn, dst_id)
        pairs = _copy_records(conn, records, dst_alloc)
        dst_alloc.flush()
        changed.add(dst_id)
        if move:
            src_alloc = _Allocator(conn, src_id)
            _expunge_records(src_alloc, records)
            src_alloc.flush()
            changed.add(src_id)
        return pairs

    async def copy(
        self, src_mailbox_id: str, uids: Iterable[int], dst_mailbox_id: str
    ) -> list[tuple[int, int]]:
        pairs, _ = await self._b.write(
            self._copy_txn, src_mailbox_id, list(uids), dst_mailbox_id, False
        )
        return pairs

    async def move(
        self, src_mailbox_id: str, uids: Iterable[int], dst_mailbox_id: str
    ) -> list[tuple[int, int]]:
        pairs, _ = await self._b.write(
            self._copy_txn, src_mailbox_id, list(uids), dst_mailbox_id, True
        )
        return pairs

    async def changes_since(self, mailbox_id: str, modseq: int) -> Changes:
        def q(conn: sqlite3.Connection) -> Changes:
            info = _require_mailbox(conn, mailbox_id)
            changed = tuple(
                _record(r)
                for r in conn.execute(
                    f"SELECT {_RECORD_COLS} FROM mailbox_messages WHERE mailbox_id = ? "
                    "AND modseq > ? ORDER BY uid",
                    (mailbox_id, modseq),
                )
            )
            expunged = tuple(
                r[0]
                for r in conn.execute(
                    "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                    (mailbox_id, modseq),
                )
            )
            return Changes(
                highestmodseq=info.highestmodseq,
                uidnext=info.uidnext,
                changed=changed,
                expunged=expunged,
            )

        return await self._b.db.read(q)

    async def search_text(self, mailbox_id: str, query: SearchQuery) -> set[int]:
        """Narrow with the trigram index when the needle allows it (ASCII,
        three characters or more), then check case-insensitive substring
        containment exactly."""
        columns = _SEARCH_COLUMNS.get(query.field.lower())
        if columns is None:
            raise ValueError(f"unknown search field {query.field!r}")
        needle = query.text.lower()
        cols = ", ".join(f"s.{c}" for c in columns)
        base = (
            f"SELECT mm.uid, {cols} FROM mailbox_messages mm "
            "JOIN content c ON c.message_id = mm.message_id "
            "JOIN search s ON s.rowid = c.rowid WHERE mm.mailbox_id = ?"
        )
        params: list[Any] = [mailbox_id]
        if len(needle) >= 3 and needle.isascii():
            phrase = '"' + needle.replace('"', '""') + '"'
            if len(columns) == 1:
                phrase = "{" + columns[0] + "} : " + phrase
            # Candidates computed once (not a MATCH per mailbox row).
            base += " AND c.rowid IN (SELECT rowid FROM search WHERE search MATCH ?)"
            params.append(phrase)

        def q(conn: sqlite3.Connection) -> set[int]:
            hits = set()
            for row in conn.execute(base, params):
                if any(needle in (v or "").lower() for v in row[1:]):
                    hits.add(row[0])
            return hits

        return await self._b.db.read(q)


# -- the Storage ------------------------------------------------------------------


class EmbeddedStorage:
    """``Storage`` for one machine: SQLite metadata under ``path/meta.sqlite3``
    and blob files under ``path/blobs``."""

    def __init__(self, path: str, reactor: Any = None, readers: int = 4) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.path = os.path.abspath(path)
        os.makedirs(self.path, exist_ok=True)
        self._db = _Database(os.path.join(self.path, "meta.sqlite3"), reactor, readers)
        self.notifier = LocalNotifier(reactor)
        backend = _Backend(self._db, self.notifier)
        self.accounts = SqliteAccountStore(backend)
        self.mailboxes = SqliteMailboxStore(backend)
        self.messages = SqliteMessageStore(backend)
        self.blobs = FileBlobStore(os.path.join(self.path, "blobs"))

    async def open(self) -> None:
        """Start the writer and bring the schema up to date."""
        self._db.start()
        await self._db.write(_migrate)
        # The database and WAL files may be new: make their entries durable.
        await run_blocking(fsync_dir, self.path)

    async def collect_garbage(self, grace_seconds: float = 3600.0) -> int:
        """Delete unreferenced content rows, then unreferenced blob files, both
        older than the grace period; returns the number of blobs removed."""
        cutoff = time.time() - grace_seconds

        def gc_content(conn: sqlite3.Connection) -> int:
            dead = (
                "SELECT c.rowid FROM content c WHERE c.created <= ? AND NOT EXISTS "
                "(SELECT 1 FROM mailbox_messages mm WHERE mm.message_id = c.message_id)"
            )
            conn.execute(f"DELETE FROM search WHERE rowid IN ({dead})", (cutoff,))
            return conn.execute(f"DELETE FROM content WHERE rowid IN ({dead})", (cutoff,)).rowcount

        await self._db.write(gc_content)
        # List blobs before reading references: a blob put after the scan is
        # not in it, and one re-put during the scan gets a fresh mtime that
        # delete_if_older sees.
        scanned = await self.blobs.scan()

        def referenced(conn: sqlite3.Connection) -> set[str]:
            return {r[0] for r in conn.execute("SELECT DISTINCT blob_key FROM content")}

        live = await self._db.read(referenced)
        doomed = [k for k, mtime in scanned if k not in live and mtime <= cutoff]
        return await run_blocking(self._delete_blobs, doomed, cutoff)

    def _delete_blobs(self, keys: list[str], cutoff: float) -> int:
        return sum(1 for k in keys if self.blobs._delete_if_older(k, cutoff))

    async def close(self) -> None:
        await self._db.close()


async def open_embedded(path: str, reactor: Any = None) -> EmbeddedStorage:
    """Open (creating if needed) the embedded store in directory ``path``."""
    storage = EmbeddedStorage(path, reactor)
    await storage.open()
    return storage
