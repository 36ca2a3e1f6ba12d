"""BlobStore contract."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserver.store.interfaces import BlobNotFound


@pytest_twisted.ensureDeferred
async def test_put_get_idempotent(store):
    data = b"From: a@b\r\n\r\nhello\r\n"
    k1 = await store.blobs.put(data)
    k2 = await store.blobs.put(data)
    assert k1 == k2
    assert await store.blobs.get(k1) == data
    assert await store.blobs.keys() == [k1]
    k3 = await store.blobs.put(data + b"x")
    assert k3 != k1
    assert sorted(await store.blobs.keys()) == sorted([k1, k3])


@pytest_twisted.ensureDeferred
async def test_empty_and_binary_blobs(store):
    data = bytes(range(256)) * 100
    k = await store.blobs.put(data)
    assert await store.blobs.get(k) == data
    k0 = await store.blobs.put(b"")
    assert await store.blobs.get(k0) == b""


@pytest_twisted.ensureDeferred
async def test_get_range_clips(store):
    data = b"0123456789"
    k = await store.blobs.put(data)
    assert await store.blobs.get_range(k, 2, 5) == b"234"
    assert await store.blobs.get_range(k, 0, 10) == data
    assert await store.blobs.get_range(k, 8, 100) == b"89"
    assert await store.blobs.get_range(k, 20, 30) == b""
    assert await store.blobs.get_range(k, 5, 5) == b""
    assert await store.blobs.get_range(k, 6, 3) == b""


@pytest_twisted.ensureDeferred
async def test_missing_blob(store):
    missing = "0" * 64
    with pytest.raises(BlobNotFound):
        await store.blobs.get(missing)
    with pytest.raises(BlobNotFound):
        await store.blobs.get_range(missing, 0, 1)
    await store.blobs.delete(missing)  # not an error


@pytest_twisted.ensureDeferred
async def test_delete(store):
    k = await store.blobs.put(b"bye")
    keep = await store.blobs.put(b"stay")
    await store.blobs.delete(k)
    with pytest.raises(BlobNotFound):
        await store.blobs.get(k)
    assert await store.blobs.keys() == [keep]
    # putting again after delete works
    assert await store.blobs.put(b"bye") == k
    assert await store.blobs.get(k) == b"bye"


@pytest_twisted.ensureDeferred
async def test_blobs_survive_reopen(harness):
    k = await harness.storage.blobs.put(b"durable")
    store = await harness.reopen()
    assert await store.blobs.get(k) == b"durable"
