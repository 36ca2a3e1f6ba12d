"""Cluster-only behaviour the contract suite cannot see: bucketed partitions
(a tiny bucket size makes every read and write cross partitions) and the
counter repair task."""

from __future__ import annotations

import os
import time

import pytest_twisted

from mailserver.store import open_storage
from mailserver.store.interfaces import FlagMode
from tests.cluster.harness import KEYSPACE, cluster_config, require_servers
from tests.store.helpers import deliver, make_raw, new_account


@pytest_twisted.ensureDeferred
async def test_mailbox_spanning_many_buckets():
    require_servers()
    store = await open_storage(
        cluster_config(keyspace=f"{KEYSPACE}_b3", prefix="b3/", bucket_size=3)
    )
    try:
        inbox = await new_account(store, f"buckets{os.getpid()}{int(time.time())}@example.com")
        recs = [await deliver(store, inbox.id, make_raw(subject=f"m{i}")) for i in range(11)]
        assert [r.uid for r in recs] == list(range(1, 12))
        assert [r.uid for r in await store.messages.list_messages(inbox.id)] == list(range(1, 12))
        assert [r.uid for r in await store.messages.list_messages(inbox.id, 2, 8)] == list(
            range(2, 9)
        )
        await store.messages.store_flags(inbox.id, [1, 5, 9, 10], ["\\Seen"], FlagMode.ADD)
        assert await store.messages.unseen_uids(inbox.id) == [2, 3, 4, 6, 7, 8, 11]
        base = (await store.mailboxes.get_mailbox_by_id(inbox.id)).highestmodseq
        assert await store.messages.expunge(inbox.id, [3, 4, 7]) == [3, 4, 7]
        await store.messages.store_flags(inbox.id, [11], ["\\Flagged"], FlagMode.ADD)
        ch = await store.messages.changes_since(inbox.id, base)
        assert ch.expunged == (3, 4, 7)
        assert [r.uid for r in ch.changed] == [11]
        ch0 = await store.messages.changes_since(inbox.id, 0)
        assert [r.uid for r in ch0.changed] == [1, 2, 5, 6, 8, 9, 10, 11]
        info = await store.mailboxes.get_mailbox_by_id(inbox.id)
        assert (info.messages, info.unseen, info.uidnext) == (8, 4, 12)
        trash = await store.mailboxes.get_mailbox(inbox.account, "Trash")
        pairs = await store.messages.move(inbox.id, [1, 2, 5, 6, 8], trash.id)
        assert pairs == [(1, 1), (2, 2), (5, 3), (6, 4), (8, 5)]
        assert [r.uid for r in await store.messages.list_messages(inbox.id)] == [9, 10, 11]
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_repair_counters_fixes_drift():
    require_servers()
    store = await open_storage(cluster_config(prefix="repair/"))
    try:
        inbox = await new_account(store, f"repair{os.getpid()}{int(time.time())}@example.com")
        for i in range(3):
            await deliver(store, inbox.id, make_raw(subject=f"r{i}"), flags=["\\Seen"] * (i == 0))
        size = sum(r.size for r in await store.messages.list_messages(inbox.id))
        # A retried increment counted twice, another got lost.
        await store.backend.q("counts_add", 2, -1, 1000, inbox.id)
        drifted = await store.mailboxes.get_mailbox_by_id(inbox.id)
        assert (drifted.messages, drifted.unseen) == (5, 1)
        assert await store.repair_counters(inbox.id) == (3, 2, size)
        fixed = await store.mailboxes.get_mailbox_by_id(inbox.id)
        assert (fixed.messages, fixed.unseen, fixed.size) == (3, 2, size)
        assert await store.repair_counters(inbox.id) == (3, 2, size)  # idempotent
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_large_body_goes_up_in_parts_and_reads_by_range():
    require_servers()
    from mailserver.store.s3 import S3BlobStore
    from tests.cluster.harness import BUCKET, S3, S3_KEYS

    blobs = S3BlobStore(
        f"{S3[0]}:{S3[1]}",
        *S3_KEYS,
        BUCKET,
        prefix=f"multipart-{os.getpid()}/",
        part_size=5 * 1024 * 1024,
    )
    await blobs.ensure_bucket()
    data = bytes(range(256)) * (11 * 1024 * 1024 // 256 + 7)  # 11 MiB + : 3 parts
    key = await blobs.put(data)
    try:
        stat = await blobs._run(blobs.client.stat_object, blobs.bucket, blobs._name(key))
        assert "-" in (stat.etag or "")  # a multipart ETag is "<md5>-<parts>"
        assert stat.size == len(data)
        mid = 5 * 1024 * 1024 - 10  # a range across the first part boundary
        assert await blobs.get_range(key, mid, mid + 20) == data[mid : mid + 20]
        assert await blobs.get(key) == data
    finally:
        await blobs.delete(key)


@pytest_twisted.ensureDeferred
async def test_operation_pending_on_one_daemon_hides_later_uids_on_all():
    """Daemon A has allocated UID 2 but not written it yet; daemon B delivers
    UID 3.  No reader may see 3 before 2 exists (a client that saw 3 would
    never fetch 2), so UIDNEXT / HIGHESTMODSEQ stop below A's allocation
    until A finishes."""
    require_servers()
    a = await open_storage(cluster_config(prefix="pending/"))
    b = await open_storage(cluster_config(prefix="pending/"))
    try:
        inbox = await new_account(a, f"pending{os.getpid()}{int(time.time())}@example.com")
        first = await deliver(a, inbox.id, make_raw(subject="one"))
        held: list = []
        alloc = await a.backend.allocate(inbox.id, 1, 1, held)
        third = await deliver(b, inbox.id, make_raw(subject="three"))
        assert third.uid == 3
        for reader in (a, b):
            info = await reader.mailboxes.get_mailbox_by_id(inbox.id)
            assert (info.uidnext, info.highestmodseq) == (2, first.modseq)
            assert [r.uid for r in await reader.messages.list_messages(inbox.id)] == [1]
            changes = await reader.messages.changes_since(inbox.id, first.modseq)
            assert (changes.changed, changes.uidnext) == ((), 2)
        # A completes its operation: everything appears, in UID order.
        stmts: list = []
        second = a.backend.append_stmts(alloc, first.message_id, frozenset(), 0, 10, stmts)
        a.backend.publish_state(alloc, stmts)
        await a.backend.run_batches(stmts)
        await a.backend.release(held)
        assert second.uid == 2
        info = await b.mailboxes.get_mailbox_by_id(inbox.id)
        assert info.uidnext == 4 and info.highestmodseq == third.modseq
        assert [r.uid for r in await b.messages.list_messages(inbox.id)] == [1, 2, 3]
        changes = await b.messages.changes_since(inbox.id, first.modseq)
        assert [r.uid for r in changes.changed] == [2, 3]
    finally:
        await a.close()
        await b.close()
