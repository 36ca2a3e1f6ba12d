"""MessageStore contract: UIDs, flags, MODSEQ, expunge, copy/move, quota."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from mailserver.store.interfaces import (
    DeliveryTarget,
    FlagMode,
    MailboxNotFound,
    QuotaExceeded,
)
from tests.store.helpers import deliver, make_raw, new_account, parsed, put_message

A = "user@example.com"


def gather(*coros):
    return defer.gatherResults([defer.Deferred.fromCoroutine(c) for c in coros], consumeErrors=True)


@pytest_twisted.ensureDeferred
async def test_store_message_and_get_message_roundtrip(store):
    raw = make_raw(subject="Round trip")
    key = await store.blobs.put(raw)
    msg = await store.messages.store_message(key, parsed(raw))
    assert msg.blob_key == key and msg.size == len(raw)
    inbox = await new_account(store, A)
    await store.messages.deliver(msg, [DeliveryTarget(inbox.id)])
    got = await store.messages.get_message(msg.message_id)
    assert got.message_id == msg.message_id
    assert got.blob_key == key and got.size == len(raw)
    assert got.parsed == parsed(raw)
    assert await store.blobs.get(got.blob_key) == raw
    with pytest.raises(KeyError):
        await store.messages.get_message("no-such-message")


@pytest_twisted.ensureDeferred
async def test_deliver_to_several_mailboxes_shares_content(store):
    inbox = await new_account(store, A)
    inbox_b = await new_account(store, "b@example.com")
    msg = await put_message(store)
    recs = await store.messages.deliver(
        msg,
        [
            DeliveryTarget(inbox.id, frozenset({"\\Seen"}), internal_date=1_700_000_000),
            DeliveryTarget(inbox_b.id),
        ],
    )
    assert [r.message_id for r in recs] == [msg.message_id, msg.message_id]
    assert recs[0].flags == frozenset({"\\Seen"})
    assert recs[0].internal_date == 1_700_000_000
    assert recs[1].flags == frozenset()
    assert all(r.uid == 1 and r.size == msg.size for r in recs)
    a = await store.mailboxes.get_mailbox_by_id(inbox.id)
    b = await store.mailboxes.get_mailbox_by_id(inbox_b.id)
    assert (a.messages, a.unseen, a.size, a.uidnext) == (1, 0, msg.size, 2)
    assert (b.messages, b.unseen, b.size, b.uidnext) == (1, 1, msg.size, 2)
    assert a.highestmodseq >= recs[0].modseq and b.highestmodseq >= recs[1].modseq


@pytest_twisted.ensureDeferred
async def test_deliver_to_missing_mailbox_writes_nothing(store):
    inbox = await new_account(store, A)
    msg = await put_message(store)
    before = await store.mailboxes.get_mailbox_by_id(inbox.id)
    with pytest.raises(MailboxNotFound):
        await store.messages.deliver(msg, [DeliveryTarget(inbox.id), DeliveryTarget("f" * 32)])
    assert await store.mailboxes.get_mailbox_by_id(inbox.id) == before
    assert await store.messages.list_messages(inbox.id) == []


@pytest_twisted.ensureDeferred
async def test_internal_date_defaults_to_now(store):
    import time

    inbox = await new_account(store, A)
    t0 = int(time.time())
    rec = await deliver(store, inbox.id)
    assert t0 - 1 <= rec.internal_date <= int(time.time()) + 1


@pytest_twisted.ensureDeferred
async def test_uids_ascending_never_reused_after_expunge_and_reopen(harness):
    store = harness.storage
    inbox = await new_account(store, A)
    uids = [(await deliver(store, inbox.id)).uid for _ in range(3)]
    assert uids == [1, 2, 3]
    assert await store.messages.expunge(inbox.id, [3, 2]) == [2, 3]
    rec = await deliver(store, inbox.id)
    assert rec.uid == 4
    store = await harness.reopen()
    assert (await store.mailboxes.get_mailbox_by_id(inbox.id)).uidnext == 5
    await store.messages.expunge(inbox.id, [4])
    store = await harness.reopen()
    rec = await deliver(store, inbox.id)
    assert rec.uid == 5
    assert [m.uid for m in await store.messages.list_messages(inbox.id)] == [1, 5]


@pytest_twisted.ensureDeferred
async def test_concurrent_deliveries_get_distinct_uids(store):
    inbox = await new_account(store, A)
    sent = await store.mailboxes.get_mailbox(A, "Sent")

    async def one(i):
        msg = await put_message(store, make_raw(subject=f"n{i}"))
        return await store.messages.deliver(
            msg, [DeliveryTarget(inbox.id), DeliveryTarget(sent.id)]
        )

    results = await gather(*(one(i) for i in range(50)))
    inbox_uids = sorted(r[0].uid for r in results)
    sent_uids = sorted(r[1].uid for r in results)
    assert inbox_uids == list(range(1, 51))
    assert sent_uids == list(range(1, 51))
    modseqs = [r[0].modseq for r in results]
    assert len(set(modseqs)) == 50
    listed = await store.messages.list_messages(inbox.id)
    assert [m.uid for m in listed] == list(range(1, 51))
    info = await store.mailboxes.get_mailbox_by_id(inbox.id)
    assert (info.messages, info.unseen, info.uidnext) == (50, 50, 51)
    assert info.highestmodseq == max(modseqs)


@pytest_twisted.ensureDeferred
async def test_concurrent_deliveries_with_failures_in_between(store):
    """Failing deliveries (missing mailbox, quota) interleaved with good ones:
    the failures write nothing and the others are unaffected."""
    inbox = await new_account(store, A)
    raw = make_raw(body="q" * 500)
    small = await new_account(store, "small@example.com", quota_bytes=len(raw) * 3)
    msgs = [await put_message(store, raw) for _ in range(3)]

    async def good():
        return await store.messages.deliver(msgs[0], [DeliveryTarget(inbox.id)])

    async def missing():
        await store.messages.deliver(msgs[1], [DeliveryTarget(inbox.id), DeliveryTarget("9" * 32)])

    async def to_small():
        return await store.messages.deliver(msgs[2], [DeliveryTarget(small.id)])

    coros = []
    for i in range(30):
        coros.append([good, missing, to_small][i % 3]())
    results = await defer.DeferredList(
        [defer.Deferred.fromCoroutine(c) for c in coros], consumeErrors=True
    )
    kinds = [i % 3 for i in range(30)]
    ok_inbox = [r[0].uid for (ok, r), k in zip(results, kinds, strict=True) if k == 0 and ok]
    assert sorted(ok_inbox) == list(range(1, 11))
    for (ok, r), k in zip(results, kinds, strict=True):
        if k == 1:
            assert not ok and r.check(MailboxNotFound)
    small_ok = [ok for (ok, r), k in zip(results, kinds, strict=True) if k == 2]
    small_fail = [r for (ok, r), k in zip(results, kinds, strict=True) if k == 2 and not ok]
    assert sum(small_ok) == 3 and all(f.check(QuotaExceeded) for f in small_fail)
    info = await store.mailboxes.get_mailbox_by_id(inbox.id)
    assert (info.messages, info.uidnext) == (10, 11)
    assert {m.message_id for m in await store.messages.list_messages(inbox.id)} == {
        msgs[0].message_id
    }
    s_info = await store.mailboxes.get_mailbox_by_id(small.id)
    assert (s_info.messages, s_info.uidnext, s_info.size) == (3, 4, 3 * len(raw))


@pytest_twisted.ensureDeferred
async def test_list_messages_range(store):
    inbox = await new_account(store, A)
    for _ in range(5):
        await deliver(store, inbox.id)
    await store.messages.expunge(inbox.id, [3])
    assert [m.uid for m in await store.messages.list_messages(inbox.id, 2, 4)] == [2, 4]
    assert [m.uid for m in await store.messages.list_messages(inbox.id, 4)] == [4, 5]
    assert await store.messages.list_messages(inbox.id, 6) == []


@pytest_twisted.ensureDeferred
async def test_flags_modes_and_modseq_only_on_real_change(store):
    inbox = await new_account(store, A)
    r1 = await deliver(store, inbox.id)
    r2 = await deliver(store, inbox.id, flags={"\\Flagged"})
    hms = (await store.mailboxes.get_mailbox_by_id(inbox.id)).highestmodseq

    changed = await store.messages.store_flags(inbox.id, [1, 2], ["\\Seen"], FlagMode.ADD)
    assert [c.uid for c in changed] == [1, 2]
    assert changed[0].flags == frozenset({"\\Seen"})
    assert changed[1].flags == frozenset({"\\Seen", "\\Flagged"})
    assert all(c.modseq > hms for c in changed)
    assert changed[0].modseq > r1.modseq and changed[1].modseq > r2.modseq
    hms2 = (await store.mailboxes.get_mailbox_by_id(inbox.id)).highestmodseq
    assert hms2 == max(c.modseq for c in changed)

    # no real change: nothing returned, no MODSEQ spent
    assert await store.messages.store_flags(inbox.id, [1, 2], ["\\Seen"], FlagMode.ADD) == []
    assert await store.messages.store_flags(inbox.id, [1], ["\\Draft"], FlagMode.REMOVE) == []
    assert (await store.mailboxes.get_mailbox_by_id(inbox.id)).highestmodseq == hms2

    changed = await store.messages.store_flags(inbox.id, [2], ["\\Flagged"], FlagMode.REMOVE)
    assert changed[0].flags == frozenset({"\\Seen"})
    changed = await store.messages.store_flags(
        inbox.id, [1, 2], ["$Important", "\\Answered"], FlagMode.SET
    )
    assert {c.uid: c.flags for c in changed} == {
        1: frozenset({"$Important", "\\Answered"}),
        2: frozenset({"$Important", "\\Answered"}),
    }
    listed = await store.messages.list_messages(inbox.id)
    assert [m.flags for m in listed] == [frozenset({"$Important", "\\Answered"})] * 2
    assert [m.modseq for m in listed] == [c.modseq for c in changed]


@pytest_twisted.ensureDeferred
async def test_recent_is_never_stored_and_unknown_uids_ignored(store):
    inbox = await new_account(store, A)
    rec = await deliver(store, inbox.id, flags={"\\Recent", "\\Seen"})
    assert rec.flags == frozenset({"\\Seen"})
    changed = await store.messages.store_flags(inbox.id, [1, 99], ["\\Recent"], FlagMode.ADD)
    assert changed == []
    changed = await store.messages.store_flags(
        inbox.id, [1, 99], ["\\Recent", "\\Deleted"], FlagMode.ADD
    )
    assert [(c.uid, c.flags) for c in changed] == [(1, frozenset({"\\Seen", "\\Deleted"}))]


@pytest_twisted.ensureDeferred
async def test_unchanged_since(store):
    inbox = await new_account(store, A)
    r1 = await deliver(store, inbox.id)
    await deliver(store, inbox.id)
    (c2,) = await store.messages.store_flags(inbox.id, [2], ["\\Flagged"], FlagMode.ADD)
    # UID 2 changed after r1.modseq: left alone; UID 1 is changed
    changed = await store.messages.store_flags(
        inbox.id, [1, 2], ["\\Seen"], FlagMode.ADD, unchanged_since=r1.modseq
    )
    assert [c.uid for c in changed] == [1]
    listed = {m.uid: m for m in await store.messages.list_messages(inbox.id)}
    assert listed[2].flags == frozenset({"\\Flagged"}) and listed[2].modseq == c2.modseq
    changed = await store.messages.store_flags(
        inbox.id, [2], ["\\Seen"], FlagMode.ADD, unchanged_since=c2.modseq
    )
    assert [c.uid for c in changed] == [2]


@pytest_twisted.ensureDeferred
async def test_unseen_index_and_counters(store):
    inbox = await new_account(store, A)
    for i in range(4):
        await deliver(store, inbox.id, flags={"\\Seen"} if i == 1 else ())
    assert await store.messages.unseen_uids(inbox.id) == [1, 3, 4]
    await store.messages.store_flags(inbox.id, [3], ["\\Seen"], FlagMode.ADD)
    await store.messages.store_flags(inbox.id, [2], ["\\Seen"], FlagMode.REMOVE)
    assert await store.messages.unseen_uids(inbox.id) == [1, 2, 4]
    await store.messages.store_flags(inbox.id, [4], ["\\Flagged"], FlagMode.SET)
    assert await store.messages.unseen_uids(inbox.id) == [1, 2, 4]
    await store.messages.store_flags(inbox.id, [1], ["\\Seen", "\\Answered"], FlagMode.SET)
    await store.messages.expunge(inbox.id, [2])
    assert await store.messages.unseen_uids(inbox.id) == [4]
    info = await store.mailboxes.get_mailbox_by_id(inbox.id)
    assert (info.messages, info.unseen) == (3, 1)


@pytest_twisted.ensureDeferred
async def test_expunge_and_changes_since(store):
    inbox = await new_account(store, A)
    for _ in range(4):
        await deliver(store, inbox.id)
    base = (await store.mailboxes.get_mailbox_by_id(inbox.id)).highestmodseq
    ch = await store.messages.changes_since(inbox.id, base)
    assert (ch.changed, ch.expunged, ch.highestmodseq, ch.uidnext) == ((), (), base, 5)

    await store.messages.store_flags(inbox.id, [2], ["\\Deleted"], FlagMode.ADD)
    await store.messages.store_flags(inbox.id, [3], ["\\Seen"], FlagMode.ADD)
    assert await store.messages.expunge(inbox.id, [2, 4, 77]) == [2, 4]
    new = await deliver(store, inbox.id)
    ch = await store.messages.changes_since(inbox.id, base)
    assert [r.uid for r in ch.changed] == [3, 5]
    assert ch.changed[0].flags == frozenset({"\\Seen"})
    assert ch.changed[1] == new
    assert ch.expunged == (2, 4)
    info = await store.mailboxes.get_mailbox_by_id(inbox.id)
    assert ch.highestmodseq == info.highestmodseq > base
    assert ch.uidnext == 6
    # changes after the latest MODSEQ: nothing
    later = await store.messages.changes_since(inbox.id, info.highestmodseq)
    assert (later.changed, later.expunged) == ((), ())
    # a full resync from 0 lists every present message
    full = await store.messages.changes_since(inbox.id, 0)
    assert [r.uid for r in full.changed] == [1, 3, 5]
    assert info.messages == 3
    # expunging again is a no-op
    assert await store.messages.expunge(inbox.id, [2]) == []
    with pytest.raises(MailboxNotFound):
        await store.messages.changes_since("0" * 32, 0)


@pytest_twisted.ensureDeferred
async def test_copy(store):
    inbox = await new_account(store, A)
    trash = await store.mailboxes.get_mailbox(A, "Trash")
    await deliver(store, trash.id)  # so destination UIDs differ from source UIDs
    r1 = await deliver(store, inbox.id, flags={"\\Seen", "$Label"}, internal_date=1_600_000_000)
    r2 = await deliver(store, inbox.id)
    pairs = await store.messages.copy(inbox.id, [r2.uid, r1.uid, 99], trash.id)
    assert pairs == [(1, 2), (2, 3)]
    copied = await store.messages.list_messages(trash.id, 2)
    assert [m.message_id for m in copied] == [r1.message_id, r2.message_id]
    assert copied[0].flags == r1.flags and copied[0].internal_date == 1_600_000_000
    assert copied[1].flags == frozenset()
    # source untouched
    assert [m.uid for m in await store.messages.list_messages(inbox.id)] == [1, 2]
    t = await store.mailboxes.get_mailbox_by_id(trash.id)
    assert (t.messages, t.unseen, t.uidnext) == (3, 2, 4)
    assert (await store.accounts.quota_usage(A)).messages == 5
    with pytest.raises(MailboxNotFound):
        await store.messages.copy(inbox.id, [1], "0" * 32)


@pytest_twisted.ensureDeferred
async def test_move(store):
    inbox = await new_account(store, A)
    arch = await store.mailboxes.get_mailbox(A, "Archive")
    r1 = await deliver(store, inbox.id, flags={"\\Flagged"})
    r2 = await deliver(store, inbox.id)
    base = (await store.mailboxes.get_mailbox_by_id(inbox.id)).highestmodseq
    pairs = await store.messages.move(inbox.id, [r1.uid], arch.id)
    assert pairs == [(1, 1)]
    assert [m.uid for m in await store.messages.list_messages(inbox.id)] == [r2.uid]
    moved = await store.messages.list_messages(arch.id)
    assert [(m.message_id, m.flags) for m in moved] == [(r1.message_id, r1.flags)]
    ch = await store.messages.changes_since(inbox.id, base)
    assert ch.expunged == (1,)
    src = await store.mailboxes.get_mailbox_by_id(inbox.id)
    assert (src.messages, src.unseen) == (1, 1)
    assert (await store.accounts.quota_usage(A)).messages == 2


@pytest_twisted.ensureDeferred
async def test_quota_exceeded_writes_nothing(store):
    raw = make_raw(body="y" * 2000)
    inbox = await new_account(store, A, quota_bytes=2 * len(raw) + 10)
    other = await new_account(store, "b@example.com")
    await deliver(store, inbox.id, raw)
    msg = await put_message(store, raw)
    # two copies to the same account would exceed: neither target gets it
    before_b = await store.mailboxes.get_mailbox_by_id(other.id)
    with pytest.raises(QuotaExceeded):
        await store.messages.deliver(
            msg, [DeliveryTarget(other.id), DeliveryTarget(inbox.id), DeliveryTarget(inbox.id)]
        )
    assert await store.mailboxes.get_mailbox_by_id(other.id) == before_b
    assert (await store.accounts.quota_usage(A)).messages == 1
    # one copy fits exactly within the limit
    await store.messages.deliver(msg, [DeliveryTarget(inbox.id)])
    usage = await store.accounts.quota_usage(A)
    assert (usage.bytes, usage.messages) == (2 * len(raw), 2)
    with pytest.raises(QuotaExceeded):
        await store.messages.deliver(msg, [DeliveryTarget(inbox.id)])
    trash = await store.mailboxes.get_mailbox(A, "Trash")
    with pytest.raises(QuotaExceeded):
        await store.messages.copy(inbox.id, [1], trash.id)
    assert await store.messages.list_messages(trash.id) == []
    # after an expunge there is room again
    await store.messages.expunge(inbox.id, [1])
    assert await store.messages.copy(inbox.id, [2], trash.id) == [(2, 1)]
