"""Model-based contract test: random sequences of deliver / store_flags /
expunge / copy / move (and a restart) checked after every step against a
plain in-memory model of what IMAP requires."""

from __future__ import annotations

import random

import pytest
import pytest_twisted

from mailserver.store.interfaces import DeliveryTarget, FlagMode
from tests.store.helpers import make_raw, new_account, put_message

A = "model@example.com"
FLAG_POOL = ["\\Seen", "\\Flagged", "\\Answered", "\\Deleted", "\\Draft", "$Work", "Junk"]


class Model:
    def __init__(self, ids):
        self.boxes = {i: {} for i in ids}  # mailbox id -> {uid: (message_id, flags, size)}
        self.uidnext = dict.fromkeys(ids, 1)

    def snapshot(self, mailbox_id):
        return dict(self.boxes[mailbox_id])


async def check(store, model, mailbox_id, before, before_hms):
    """State equals the model; changes_since(before_hms) reports exactly the
    appended/flag-changed and the expunged UIDs of this step."""
    want = model.boxes[mailbox_id]
    recs = await store.messages.list_messages(mailbox_id)
    assert {r.uid: (r.message_id, r.flags, r.size) for r in recs} == want
    assert [r.uid for r in recs] == sorted(want)
    unseen = sorted(u for u, (_, f, _) in want.items() if "\\Seen" not in f)
    assert await store.messages.unseen_uids(mailbox_id) == unseen
    info = await store.mailboxes.get_mailbox_by_id(mailbox_id)
    assert (info.messages, info.unseen, info.size, info.uidnext) == (
        len(want),
        len(unseen),
        sum(s for _, _, s in want.values()),
        model.uidnext[mailbox_id],
    )
    assert all(r.modseq <= info.highestmodseq for r in recs)
    ch = await store.messages.changes_since(mailbox_id, before_hms)
    changed = {u for u, v in want.items() if before.get(u) != v}
    gone = set(before) - set(want)
    assert {r.uid for r in ch.changed} == changed
    assert set(ch.expunged) == gone
    assert all(r.modseq > before_hms for r in ch.changed)
    if changed or gone:
        assert info.highestmodseq > before_hms
    else:
        assert info.highestmodseq == before_hms
    return info.highestmodseq


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest_twisted.ensureDeferred
async def test_random_operations_match_model(harness, seed):
    rng = random.Random(seed)
    store = harness.storage
    await new_account(store, A)
    ids = [(await store.mailboxes.get_mailbox(A, n)).id for n in ("INBOX", "Trash", "Archive")]
    model = Model(ids)
    hms = {i: (await store.mailboxes.get_mailbox_by_id(i)).highestmodseq for i in ids}
    contents = [await put_message(store, make_raw(subject=f"m{k}", body="b" * k)) for k in range(4)]

    def some_uids(box):
        present = list(model.boxes[box])
        picked = rng.sample(present, k=rng.randint(0, len(present))) if present else []
        if rng.random() < 0.3:
            picked.append(model.uidnext[box] + rng.randint(0, 3))  # unknown UID
        return picked

    for step in range(60):
        before = {i: model.snapshot(i) for i in ids}
        op = rng.choice(["deliver", "deliver", "flags", "flags", "expunge", "copy", "move"])
        if step == 30:
            store = await harness.reopen()
        if op == "deliver":
            msg = rng.choice(contents)
            targets = [
                DeliveryTarget(b, frozenset(rng.sample(FLAG_POOL, k=rng.randint(0, 2))))
                for b in rng.sample(ids, k=rng.randint(1, 3))
            ]
            recs = await store.messages.deliver(msg, targets)
            for t, r in zip(targets, recs, strict=True):
                assert r.uid == model.uidnext[t.mailbox_id]
                model.uidnext[t.mailbox_id] += 1
                model.boxes[t.mailbox_id][r.uid] = (msg.message_id, t.flags, msg.size)
        elif op == "flags":
            box = rng.choice(ids)
            uids = some_uids(box)
            flags = set(rng.sample(FLAG_POOL, k=rng.randint(0, 3)))
            mode = rng.choice(list(FlagMode))
            changed = await store.messages.store_flags(box, uids, flags, mode)
            expect = set()
            for u in uids:
                if u not in model.boxes[box]:
                    continue
                mid, old, size = model.boxes[box][u]
                new = {
                    FlagMode.SET: frozenset(flags),
                    FlagMode.ADD: old | flags,
                    FlagMode.REMOVE: old - flags,
                }[mode]
                if new != old:
                    expect.add(u)
                model.boxes[box][u] = (mid, new, size)
            assert {c.uid for c in changed} == expect
        elif op == "expunge":
            box = rng.choice(ids)
            uids = some_uids(box)
            removed = await store.messages.expunge(box, uids)
            assert removed == sorted(set(uids) & set(model.boxes[box]))
            for u in removed:
                del model.boxes[box][u]
        else:
            src, dst = rng.sample(ids, k=2)
            uids = some_uids(src)
            fn = store.messages.copy if op == "copy" else store.messages.move
            pairs = await fn(src, uids, dst)
            present = sorted(set(uids) & set(model.boxes[src]))
            assert [s for s, _ in pairs] == present
            for s, d in pairs:
                assert d == model.uidnext[dst]
                model.uidnext[dst] += 1
                model.boxes[dst][d] = model.boxes[src][s]
                if op == "move":
                    del model.boxes[src][s]
        for i in ids:
            hms[i] = await check(store, model, i, before[i], hms[i])
