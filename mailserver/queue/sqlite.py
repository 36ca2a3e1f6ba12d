"""Embedded outbound queue: one SQLite table (WAL, ``synchronous=FULL``) plus
content-addressed, fsynced body files, both under ``state_dir/queue``.

The bodies live in the queue's own directory (one fsynced file per entry,
named by the queue id) rather than in the mail store's blob store, because
the mail store's garbage collection keeps only blobs that some mailbox
references; a queued message is referenced by the queue alone.  A body file
is written and fsynced before its row commits and removed after the row is
deleted, so a crash leaves at most an orphan file (``sweep`` removes those),
never a row without its body.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from mailserver.queue import QueuedMessage, QueueEntryNotFound
from mailserver.threads import run_blocking

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    body_key TEXT NOT NULL,
    size INTEGER NOT NULL,
    dsn TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    state TEXT NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS queue_due ON queue (state, next_attempt);
CREATE INDEX IF NOT EXISTS queue_body ON queue (body_key);
"""

_COLS = "id, sender, recipients, body_key, size, dsn, created, attempts, next_attempt, state, last_error"


def _entry(row: Sequence[Any]) -> QueuedMessage:
    return QueuedMessage(
        id=row[0],
        sender=row[1],
        recipients=tuple(json.loads(row[2])),
        body_key=row[3],
        size=row[4],
        dsn=json.loads(row[5]),
        created=row[6],
        attempts=row[7],
        next_attempt=row[8],
        state=row[9],
        last_error=row[10],
    )


class SqliteQueue:
    """``OutboundQueue`` in ``directory`` (created if missing)."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.bodies = os.path.join(directory, "bodies")
        os.makedirs(self.bodies, exist_ok=True)
        self._conn = sqlite3.connect(
            os.path.join(directory, "queue.sqlite3"), check_same_thread=False, isolation_level=None
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        # One connection, used from pool threads one at a time.
        self._lock = threading.Lock()

    def _txn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await run_blocking(self._txn, fn)

    async def enqueue(
        self,
        sender: str,
        recipients: Sequence[str],
        body: bytes,
        dsn: Mapping[str, Any] | None = None,
        *,
        hold: bool = False,
    ) -> str:
        if not recipients:
            raise ValueError("no recipients")
        # Body first (fsynced), then the row that refers to it.
        qid = uuid.uuid4().hex
        key = qid
        await run_blocking(self._write_body, qid, bytes(body))
        now = time.time()
        state = "held" if hold else "ready"
        dsn_text = json.dumps(dict(dsn or {}), default=list)

        def txn(c: sqlite3.Connection) -> None:
            seq = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM queue").fetchone()[0]
            c.execute(
                "INSERT INTO queue (id, seq, sender, recipients, body_key, size, dsn, created,"
                " next_attempt, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    qid,
                    seq,
                    sender,
                    json.dumps(list(recipients)),
                    key,
                    len(body),
                    dsn_text,
                    now,
                    now,
                    state,
                ),
            )

        await self._run(txn)
        return qid

    async def release(self, queue_id: str) -> None:
        def txn(c: sqlite3.Connection) -> None:
            n = c.execute(
                "UPDATE queue SET state = 'ready' WHERE id = ? AND state = 'held'", (queue_id,)
            ).rowcount
            if n == 0:
                raise QueueEntryNotFound(queue_id)

        await self._run(txn)

    def _body_path(self, key: str) -> str:
        if not key.isalnum():
            raise QueueEntryNotFound(key)
        return os.path.join(self.bodies, key)

    def _write_body(self, key: str, data: bytes) -> None:
        final = self._body_path(key)
        tmp = final + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dfd = os.open(self.bodies, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _read_body(self, key: str) -> bytes:
        with open(self._body_path(key), "rb") as f:
            return f.read()

    def _unlink_body(self, key: str) -> None:
        try:
            os.unlink(self._body_path(key))
        except FileNotFoundError:
            pass

    async def _remove(self, queue_id: str) -> None:
        def txn(c: sqlite3.Connection) -> str:
            row = c.execute("SELECT body_key FROM queue WHERE id = ?", (queue_id,)).fetchone()
            if row is None:
                raise QueueEntryNotFound(queue_id)
            c.execute("DELETE FROM queue WHERE id = ?", (queue_id,))
            return row[0]

        key = await self._run(txn)
        await run_blocking(self._unlink_body, key)

    async def sweep(self) -> int:
        """Remove body files no entry refers to (left by a crash between
        writing a body and committing its row); returns how many."""

        def txn(c: sqlite3.Connection) -> set[str]:
            return {r[0] for r in c.execute("SELECT body_key FROM queue")}

        live = await self._run(txn)

        def scan() -> int:
            n = 0
            cutoff = time.time() - 3600
            for name in os.listdir(self.bodies):
                base = name.removesuffix(".tmp")
                path = os.path.join(self.bodies, name)
                if base not in live and os.stat(path).st_mtime < cutoff:
                    os.unlink(path)
                    n += 1
            return n

        return await run_blocking(scan)

    async def cancel(self, queue_id: str) -> None:
        await self._remove(queue_id)

    async def ack(self, queue_id: str) -> None:
        await self._remove(queue_id)

    async def list(self, limit: int = 1000) -> list[QueuedMessage]:
        def txn(c: sqlite3.Connection) -> list[QueuedMessage]:
            rows = c.execute(f"SELECT {_COLS} FROM queue ORDER BY seq LIMIT ?", (limit,))
            return [_entry(r) for r in rows]

        return await self._run(txn)

    async def claim(self, now: float, lease: float, limit: int = 100) -> list[QueuedMessage]:
        def txn(c: sqlite3.Connection) -> list[QueuedMessage]:
            rows = c.execute(
                f"SELECT {_COLS} FROM queue WHERE next_attempt <= ? AND (state = 'ready' OR"
                " (state = 'claimed' AND lease_until <= ?)) ORDER BY next_attempt, seq LIMIT ?",
                (now, now, limit),
            ).fetchall()
            out = []
            for r in rows:
                c.execute(
                    "UPDATE queue SET state = 'claimed', lease_until = ? WHERE id = ?",
                    (now + lease, r[0]),
                )
                e = _entry(r)
                out.append(
                    QueuedMessage(**{**e.__dict__, "state": "claimed"})  # type: ignore[arg-type]
                )
            return out

        return await self._run(txn)

    async def defer(self, queue_id: str, next_attempt: float, error: str) -> None:
        def txn(c: sqlite3.Connection) -> None:
            n = c.execute(
                "UPDATE queue SET state = 'ready', lease_until = 0, attempts = attempts + 1,"
                " next_attempt = ?, last_error = ? WHERE id = ? AND state != 'held'",
                (next_attempt, error, queue_id),
            ).rowcount
            if n == 0:
                raise QueueEntryNotFound(queue_id)

        await self._run(txn)

    async def body(self, entry: QueuedMessage) -> bytes:
        return await run_blocking(self._read_body, entry.body_key)

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                self._conn.close()

        await run_blocking(close)
