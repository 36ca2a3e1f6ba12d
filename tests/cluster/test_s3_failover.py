"""Object store with replication (SeaweedFS, 3 volume servers, replication
001): with one storage server killed, blobs written before stay readable and
new writes go on (to volumes on the servers still up)."""

from __future__ import annotations

import os
import time

import pytest_twisted
from twisted.internet import defer, reactor

from mailserver.store.s3 import S3BlobStore
from mailserver.threads import run_blocking
from tests.cluster.conftest import server_script
from tests.cluster.harness import BUCKET, S3, S3_KEYS

BEFORE = 30  # blobs written with all servers up
AFTER = 30  # blobs written with one server down
WRITE_DEADLINE = 60.0  # seconds a write may take while the master reroutes


async def _sleep(seconds: float) -> None:
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d


@pytest_twisted.ensureDeferred
async def test_one_volume_server_down_reads_and_writes_continue(s3_servers):
    prefix = f"failover-{os.getpid()}-{int(time.time())}/"
    blobs = S3BlobStore(
        f"{S3[0]}:{S3[1]}", S3_KEYS[0], S3_KEYS[1], BUCKET, prefix=prefix, timeout=10.0
    )
    await blobs.ensure_bucket()
    written: dict[str, bytes] = {}
    for i in range(BEFORE):
        data = f"blob {i} ".encode() * (200 + i)
        written[await blobs.put(data)] = data

    await run_blocking(server_script, "s3.sh", "kill-volume", "1")
    try:
        # Reads: every blob has a second copy on another server.
        for key, data in written.items():
            assert await blobs.get(key) == data
            assert await blobs.get_range(key, 3, 9) == data[3:9]
        # Writes: each must succeed within the deadline (a write that hits
        # a volume with a replica on the dead server fails until the master
        # notices; SMTP would answer 4xx and the sender retry).
        retried = 0
        for i in range(AFTER):
            data = f"after {i} ".encode() * (300 + i)
            deadline = time.monotonic() + WRITE_DEADLINE
            while True:
                try:
                    key = await blobs.put(data)
                    break
                except Exception as e:
                    retried += 1
                    assert time.monotonic() < deadline, f"write {i} failing for 60 s: {e}"
                    await _sleep(1.0)
            written[key] = data
        for key, data in written.items():
            assert await blobs.get(key) == data
        assert set(written) <= set(await blobs.keys())
    finally:
        await run_blocking(server_script, "s3.sh", "start-volume", "1")
    for key in written:
        await blobs.delete(key)
