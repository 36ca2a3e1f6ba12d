"""collect_garbage contract: unreferenced content and blobs go after the
grace period; referenced ones and young ones stay."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserver.store.interfaces import BlobNotFound, DeliveryTarget
from tests.store.helpers import deliver, make_raw, new_account, put_message

A = "user@example.com"


@pytest_twisted.ensureDeferred
async def test_orphan_blob_removed_after_grace_only(store):
    orphan = await store.blobs.put(b"never referenced")
    assert await store.collect_garbage(grace_seconds=3600) == 0
    assert await store.blobs.get(orphan) == b"never referenced"
    assert await store.collect_garbage(grace_seconds=0) == 1
    with pytest.raises(BlobNotFound):
        await store.blobs.get(orphan)


@pytest_twisted.ensureDeferred
async def test_referenced_content_and_blob_kept(store):
    inbox = await new_account(store, A)
    raw = make_raw(subject="keep me")
    rec = await deliver(store, inbox.id, raw)
    assert await store.collect_garbage(grace_seconds=0) == 0
    msg = await store.messages.get_message(rec.message_id)
    assert await store.blobs.get(msg.blob_key) == raw


@pytest_twisted.ensureDeferred
async def test_expunged_content_and_blob_removed(store):
    inbox = await new_account(store, A)
    trash = await store.mailboxes.get_mailbox(A, "Trash")
    rec = await deliver(store, inbox.id, make_raw(subject="gone"))
    await store.messages.copy(inbox.id, [rec.uid], trash.id)
    await store.messages.expunge(inbox.id, [rec.uid])
    # still referenced from Trash
    assert await store.collect_garbage(grace_seconds=0) == 0
    key = (await store.messages.get_message(rec.message_id)).blob_key
    await store.messages.expunge(trash.id, [1])
    assert await store.collect_garbage(grace_seconds=0) == 1
    with pytest.raises(KeyError):
        await store.messages.get_message(rec.message_id)
    with pytest.raises(BlobNotFound):
        await store.blobs.get(key)


@pytest_twisted.ensureDeferred
async def test_shared_blob_kept_while_any_content_uses_it(store):
    inbox = await new_account(store, A)
    raw = make_raw(subject="same bytes twice")
    r1 = await deliver(store, inbox.id, raw)
    r2 = await deliver(store, inbox.id, raw)  # second store_message, same blob
    key = (await store.messages.get_message(r1.message_id)).blob_key
    assert (await store.messages.get_message(r2.message_id)).blob_key == key
    assert await store.blobs.keys() == [key]
    await store.messages.expunge(inbox.id, [r1.uid])
    assert await store.collect_garbage(grace_seconds=0) == 0
    assert await store.blobs.get(key) == raw
    await store.messages.expunge(inbox.id, [r2.uid])
    assert await store.collect_garbage(grace_seconds=0) == 1
    assert await store.blobs.keys() == []


@pytest_twisted.ensureDeferred
async def test_undelivered_content_kept_within_grace_then_collected(store):
    inbox = await new_account(store, A)
    msg = await put_message(store, make_raw(subject="in flight"))
    # a delivery in flight (stored, not yet delivered) survives a normal GC
    assert await store.collect_garbage(grace_seconds=3600) == 0
    recs = await store.messages.deliver(msg, [DeliveryTarget(inbox.id)])
    assert (await store.messages.get_message(recs[0].message_id)).blob_key == msg.blob_key
    # one never delivered is collected once past the grace period
    lost = await put_message(store, make_raw(subject="abandoned"))
    assert await store.collect_garbage(grace_seconds=0) == 1
    with pytest.raises(KeyError):
        await store.messages.get_message(lost.message_id)
    assert await store.blobs.keys() == [msg.blob_key]


@pytest_twisted.ensureDeferred
async def test_deleted_account_messages_collected(store):
    inbox = await new_account(store, A)
    await deliver(store, inbox.id, make_raw(subject="one"))
    await deliver(store, inbox.id, make_raw(subject="two"))
    await store.accounts.delete_account(A)
    assert await store.collect_garbage(grace_seconds=0) == 2
    assert await store.blobs.keys() == []
