"""Crash test of the embedded store: SIGKILL a process in the middle of a
delivery stream, reopen, and check that every acknowledged delivery is there
and byte-intact, that no mailbox entry is a half message, and that garbage
collection removes whatever the crash left unreferenced."""

from __future__ import annotations

import hashlib
import os
import sys

import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ProcessTerminated

from mailserver.store import open_storage
from mailserver.store.interfaces import BlobNotFound

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD = os.path.join(ROOT, "tests", "store", "crash_child.py")
TIMEOUT = 60


class ChildProtocol(protocol.ProcessProtocol):
    """Collects complete stdout lines; fires ``wait_for(n)`` when n ACKs arrived."""

    def __init__(self) -> None:
        self.buf = b""
        self.acks: list[str] = []
        self.stderr = b""
        self.ended: defer.Deferred = defer.Deferred()
        self._want: tuple[int, defer.Deferred] | None = None

    def outReceived(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            text = line.decode()
            if text.startswith("ACK "):
                self.acks.append(text)
        if self._want and len(self.acks) >= self._want[0]:
            d = self._want[1]
            self._want = None
            d.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason) -> None:
        if self._want:
            d = self._want[1]
            self._want = None
            d.errback(RuntimeError(f"child ended early: {self.stderr.decode()[-2000:]}"))
        self.reason = reason
        self.ended.callback(None)

    def wait_for(self, n: int) -> defer.Deferred:
        d = defer.Deferred()
        if len(self.acks) >= n:
            d.callback(None)
        else:
            self._want = (n, d)
        return d.addTimeout(TIMEOUT, reactor)


async def _run_and_kill(path: str, kill_after: int, seed: int) -> list[str]:
    proto = ChildProtocol()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    transport = reactor.spawnProcess(
        proto, sys.executable, [sys.executable, CHILD, path, "10000", str(seed)], env=env, path=ROOT
    )
    await proto.wait_for(kill_after)
    transport.signalProcess("KILL")
    await proto.ended.addTimeout(TIMEOUT, reactor)
    # it died of the kill, in the middle of the stream
    assert proto.reason.check(ProcessTerminated) and proto.reason.value.signal == 9, proto.stderr
    # every complete ACK line, including those that arrived before the kill
    return proto.acks


async def _check(storage, acked: dict[str, tuple[str, list[tuple[str, int]]]]) -> int:
    """Assert acknowledged deliveries are intact and nothing is half there;
    returns the number of mailbox entries found."""
    for message_id, (digest, places) in acked.items():
        msg = await storage.messages.get_message(message_id)
        assert msg.blob_key == digest
        data = await storage.blobs.get(msg.blob_key)
        assert hashlib.sha256(data).hexdigest() == digest
        assert len(data) == msg.size == msg.parsed.size
        for mailbox_id, uid in places:
            recs = await storage.messages.list_messages(mailbox_id, uid, uid)
            assert [r.message_id for r in recs] == [message_id], (mailbox_id, uid)
    entries = 0
    account = (await storage.accounts.list_accounts())[0].address
    for box in await storage.mailboxes.list_mailboxes(account):
        recs = await storage.messages.list_messages(box.id)
        uids = [r.uid for r in recs]
        assert uids == sorted(set(uids))
        assert box.messages == len(recs) and (not recs or box.uidnext > recs[-1].uid)
        assert box.unseen == len(await storage.messages.unseen_uids(box.id))
        for rec in recs:
            msg = await storage.messages.get_message(rec.message_id)
            data = await storage.blobs.get(msg.blob_key)
            assert hashlib.sha256(data).hexdigest() == msg.blob_key
            entries += 1
    return entries


@pytest_twisted.ensureDeferred
async def test_sigkill_during_deliveries_loses_nothing(tmp_path):
    path = str(tmp_path / "store")
    acked: dict[str, tuple[str, list[tuple[str, int]]]] = {}
    last_uid: dict[str, int] = {}
    for round_no, kill_after in enumerate((15, 25, 8)):
        lines = await _run_and_kill(path, kill_after, seed=round_no)
        assert len(lines) >= kill_after
        for line in lines:
            _, digest, message_id, *places = line.split()
            pairs = [(p.split(":")[0], int(p.split(":")[1])) for p in places]
            for mailbox_id, uid in pairs:
                # UIDs keep ascending across crashes: never reused
                assert uid > last_uid.get(mailbox_id, 0)
                last_uid[mailbox_id] = uid
            acked[message_id] = (digest, pairs)

        storage = await open_storage({"backend": "embedded", "embedded": {"path": path}})
        try:
            entries = await _check(storage, acked)
            # at most the one delivery in flight at the kill may be there unacknowledged
            assert sum(len(p) for _, p in acked.values()) <= entries
            assert entries <= sum(len(p) for _, p in acked.values()) + 2
            await storage.collect_garbage(grace_seconds=0)
            referenced = set()
            for box in await storage.mailboxes.list_mailboxes("crash@example.com"):
                for rec in await storage.messages.list_messages(box.id):
                    referenced.add((await storage.messages.get_message(rec.message_id)).blob_key)
            assert set(await storage.blobs.keys()) == referenced
            assert await _check(storage, acked) == entries
        finally:
            await storage.close()


@pytest_twisted.ensureDeferred
async def test_orphan_blob_from_interrupted_delivery_is_collected(tmp_path):
    """A blob written before a crash that prevented its metadata is an orphan
    until garbage collection; it never shows up in a mailbox."""
    path = str(tmp_path / "store")
    storage = await open_storage({"backend": "embedded", "embedded": {"path": path}})
    try:
        key = await storage.blobs.put(b"From: x@y\r\n\r\nhalf delivered\r\n")
    finally:
        await storage.close()
    storage = await open_storage({"backend": "embedded", "embedded": {"path": path}})
    try:
        assert await storage.blobs.keys() == [key]
        assert await storage.collect_garbage(grace_seconds=0) == 1
        try:
            await storage.blobs.get(key)
        except BlobNotFound:
            pass
        else:
            raise AssertionError("orphan blob survived garbage collection")
    finally:
        await storage.close()
