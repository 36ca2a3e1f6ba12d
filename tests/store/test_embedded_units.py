"""Units of the embedded backend's parts (not part of the contract)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.python import log as tlog

from mailserver import threads
from mailserver.store import BACKENDS, open_storage
from mailserver.store.common import normalize_flags, normalize_mailbox_name
from mailserver.store.files import FileBlobStore
from mailserver.store.interfaces import (
    AccountStore,
    BlobStore,
    ChangeNotifier,
    MailboxStore,
    MessageStore,
    Storage,
)
from mailserver.store.notify import LocalNotifier
from mailserver.store.sqlite import SCHEMA_VERSION


@pytest_twisted.ensureDeferred
async def test_run_blocking_runs_off_the_reactor_thread():
    main = threading.get_ident()
    ident = await threads.run_blocking(threading.get_ident)
    assert ident != main
    assert await threads.run_blocking(lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(ZeroDivisionError):
        await threads.run_blocking(lambda: 1 / 0)


def test_pool_is_bounded():
    assert threads.get_pool().max <= threads.DEFAULT_MAX_THREADS
    with pytest.raises(ValueError):
        threads.configure(0)


@pytest_twisted.ensureDeferred
async def test_open_storage_registry(tmp_path):
    assert "embedded" in BACKENDS
    with pytest.raises(ValueError):
        await open_storage({"backend": "nosuch"})
    with pytest.raises(ValueError):
        await open_storage({"backend": "embedded", "embedded": {}})
    storage = await open_storage({"backend": "embedded", "embedded": {"path": str(tmp_path)}})
    try:
        assert isinstance(storage, Storage)
        assert isinstance(storage.accounts, AccountStore)
        assert isinstance(storage.mailboxes, MailboxStore)
        assert isinstance(storage.messages, MessageStore)
        assert isinstance(storage.blobs, BlobStore)
        assert isinstance(storage.notifier, ChangeNotifier)
    finally:
        await storage.close()
    # WAL mode and the schema version are persistent properties of the file
    conn = sqlite3.connect(os.path.join(tmp_path, "meta.sqlite3"))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


@pytest_twisted.ensureDeferred
async def test_newer_schema_is_refused(tmp_path):
    storage = await open_storage({"backend": "embedded", "embedded": {"path": str(tmp_path)}})
    await storage.close()
    conn = sqlite3.connect(os.path.join(tmp_path, "meta.sqlite3"))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        await open_storage({"backend": "embedded", "embedded": {"path": str(tmp_path)}})


@pytest_twisted.ensureDeferred
async def test_file_blob_layout_and_no_temp_leftovers(tmp_path):
    blobs = FileBlobStore(str(tmp_path))
    data = b"hello world"
    key = await blobs.put(data)
    assert key == hashlib.sha256(data).hexdigest()
    path = tmp_path / key[:2] / key[2:4] / key
    assert path.read_bytes() == data
    assert [p.name for p in (tmp_path / key[:2] / key[2:4]).iterdir()] == [key]
    # a temp file left by a crash is not a key
    (tmp_path / key[:2] / key[2:4] / f"{key}.1.2.tmp").write_bytes(b"partial")
    assert await blobs.keys() == [key]


@pytest_twisted.ensureDeferred
async def test_file_blob_rejects_bad_keys(tmp_path):
    from mailserver.store.interfaces import BlobNotFound

    blobs = FileBlobStore(str(tmp_path))
    for bad in ("../../etc/passwd", "ABC", "0" * 63, "g" * 64):
        with pytest.raises(BlobNotFound):
            await blobs.get(bad)


def test_normalize_mailbox_name():
    assert normalize_mailbox_name("inbox") == "INBOX"
    assert normalize_mailbox_name("Inbox/a") == "INBOX/a"
    assert normalize_mailbox_name("Inboxes") == "Inboxes"
    assert normalize_mailbox_name("a/b/") == "a/b"


def test_normalize_flags():
    assert normalize_flags(["\\seen", "\\RECENT", "$Work", "\\FLAGGED"]) == {
        "\\Seen",
        "$Work",
        "\\Flagged",
    }


@pytest_twisted.ensureDeferred
async def test_local_notifier_threads_and_errors():
    n = LocalNotifier(reactor)
    calls = []

    def bad(m):
        raise RuntimeError("boom")

    done = defer.Deferred()
    n.subscribe("m", bad)
    n.subscribe(
        "m", lambda m: calls.append((m, threading.current_thread() is threading.main_thread()))
    )
    n.subscribe("m", lambda m: done.callback(None) if not done.called else None)
    # published from a worker thread: delivered on the reactor thread
    await threads.run_blocking(n.publish, "m")
    await done
    assert calls == [("m", True)]
    # a failing callback is logged and does not stop the others
    errors = []
    tlog.addObserver(errors.append)
    try:
        n.publish("m")
    finally:
        tlog.removeObserver(errors.append)
    assert len(calls) == 2
    assert any(e.get("isError") for e in errors)


@pytest_twisted.ensureDeferred
async def test_close_finishes_in_flight_work_then_refuses(tmp_path):
    storage = await open_storage({"backend": "embedded", "embedded": {"path": str(tmp_path)}})
    await storage.accounts.create_account("a@example.com", "h")
    # writes and reads queued before close complete; close waits for them
    pending = [
        defer.Deferred.fromCoroutine(storage.mailboxes.create_mailbox("a@example.com", f"m{i}"))
        for i in range(5)
    ] + [
        defer.Deferred.fromCoroutine(storage.mailboxes.list_mailboxes("a@example.com"))
        for _ in range(10)
    ]
    await storage.close()
    results = await defer.gatherResults(pending, consumeErrors=True)
    assert [r.name for r in results[:5]] == [f"m{i}" for i in range(5)]
    with pytest.raises(RuntimeError, match="closed"):
        await storage.accounts.get_account("a@example.com")
    with pytest.raises(RuntimeError, match="closed"):
        await storage.mailboxes.create_mailbox("a@example.com", "late")
    await storage.close()  # twice is harmless
    assert not storage._db._writer_thread.is_alive()
    storage = await open_storage({"backend": "embedded", "embedded": {"path": str(tmp_path)}})
    try:
        names = {m.name for m in await storage.mailboxes.list_mailboxes("a@example.com")}
        assert {f"m{i}" for i in range(5)} <= names
    finally:
        await storage.close()
