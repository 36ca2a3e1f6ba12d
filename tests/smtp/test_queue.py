"""The embedded outbound queue: durable enqueue, hold/release, claim with
lease, defer, ack, bodies."""

from __future__ import annotations

import os

import pytest
import pytest_twisted

from mailserver.queue import OutboundQueue, QueueEntryNotFound
from mailserver.queue.sqlite import SqliteQueue


@pytest_twisted.async_yield_fixture
async def queue(tmp_path):
    q = SqliteQueue(str(tmp_path / "queue"))
    yield q
    await q.close()


@pytest_twisted.ensureDeferred
async def test_enqueue_list_body_and_reopen(queue, tmp_path) -> None:
    assert isinstance(queue, OutboundQueue)
    qid = await queue.enqueue(
        "a@example.test", ["x@remote.test", "y@remote.test"], b"body\r\n", {"ret": "HDRS"}
    )
    [e] = await queue.list()
    assert e.id == qid and e.recipients == ("x@remote.test", "y@remote.test")
    assert e.dsn == {"ret": "HDRS"} and e.state == "ready" and e.size == 6
    assert await queue.body(e) == b"body\r\n"
    # Durable: another instance on the same directory sees it.
    other = SqliteQueue(str(tmp_path / "queue"))
    try:
        [e2] = await other.list()
        assert e2 == e
    finally:
        await other.close()


@pytest_twisted.ensureDeferred
async def test_claim_lease_defer_ack(queue) -> None:
    a = await queue.enqueue("", ["x@r.test"], b"A")
    b = await queue.enqueue("s@l.test", ["y@r.test"], b"B")
    claimed = await queue.claim(now=1e12, lease=60, limit=1)
    assert [c.id for c in claimed] == [a] and claimed[0].state == "claimed"
    # Leased: not claimable again until the lease ends.
    assert [c.id for c in await queue.claim(now=1e12, lease=60)] == [b]
    assert await queue.claim(now=1e12 + 1, lease=60) == []
    assert [c.id for c in await queue.claim(now=1e12 + 61, lease=60)] == [a, b]
    await queue.defer(a, next_attempt=2e12, error="421 try later")
    entries = {e.id: e for e in await queue.list()}
    assert entries[a].attempts == 1 and entries[a].last_error == "421 try later"
    assert a not in [c.id for c in await queue.claim(now=1.9e12, lease=60)]
    await queue.ack(b)
    assert [e.id for e in await queue.list()] == [a]
    assert not os.path.exists(queue._body_path(b))
    with pytest.raises(QueueEntryNotFound):
        await queue.ack(b)


@pytest_twisted.ensureDeferred
async def test_held_entries_are_not_claimed_until_released(queue) -> None:
    h = await queue.enqueue("s@l.test", ["x@r.test"], b"H", hold=True)
    assert await queue.claim(now=1e12, lease=60) == []
    await queue.release(h)
    assert [c.id for c in await queue.claim(now=1e12, lease=60)] == [h]
    c = await queue.enqueue("s@l.test", ["x@r.test"], b"C", hold=True)
    await queue.cancel(c)
    assert c not in [e.id for e in await queue.list()]
    with pytest.raises(QueueEntryNotFound):
        await queue.release(c)


@pytest_twisted.ensureDeferred
async def test_sweep_removes_only_old_orphans(queue) -> None:
    keep = await queue.enqueue("", ["x@r.test"], b"K")
    orphan = os.path.join(queue.bodies, "deadbeef")
    with open(orphan, "wb") as f:
        f.write(b"x")
    os.utime(orphan, (0, 0))
    fresh = os.path.join(queue.bodies, "cafe")
    with open(fresh, "wb") as f:
        f.write(b"x")
    assert await queue.sweep() == 1
    assert not os.path.exists(orphan) and os.path.exists(fresh)
    assert os.path.exists(queue._body_path(keep))
