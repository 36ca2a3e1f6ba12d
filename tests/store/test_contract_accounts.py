"""AccountStore contract."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserver.store.interfaces import (
    SPECIAL_USE_DEFAULTS,
    AccountExists,
    AccountNotFound,
    DeliveryTarget,
)
from tests.store.helpers import deliver, make_raw, new_account, put_message


@pytest_twisted.ensureDeferred
async def test_create_and_get_case_insensitive(store):
    acc = await store.accounts.create_account("Alice@Example.COM", "hash1", quota_bytes=500)
    assert acc.address == "alice@example.com"
    assert acc.password_hash == "hash1"
    assert acc.quota_bytes == 500
    assert not acc.disabled
    got = await store.accounts.get_account("ALICE@example.com")
    assert got == acc
    assert await store.accounts.get_account("nobody@example.com") is None


@pytest_twisted.ensureDeferred
async def test_create_twice_raises(store):
    await store.accounts.create_account("a@example.com", "h")
    with pytest.raises(AccountExists):
        await store.accounts.create_account("A@example.com", "h")


@pytest_twisted.ensureDeferred
async def test_new_account_has_inbox_and_special_use_mailboxes(store):
    await store.accounts.create_account("a@example.com", "h")
    boxes = {m.name: m for m in await store.mailboxes.list_mailboxes("a@example.com")}
    assert set(boxes) == {"INBOX", *SPECIAL_USE_DEFAULTS}
    for name, use in SPECIAL_USE_DEFAULTS.items():
        assert boxes[name].special_use == use
    assert boxes["INBOX"].special_use is None
    # distinct ids, empty counters
    assert len({m.id for m in boxes.values()}) == len(boxes)
    for m in boxes.values():
        assert (m.messages, m.unseen, m.size, m.uidnext) == (0, 0, 0, 1)
        assert m.account == "a@example.com"
    # the default mailboxes are subscribed
    assert set(await store.mailboxes.list_subscriptions("a@example.com")) == set(boxes)


@pytest_twisted.ensureDeferred
async def test_aliases_resolve_and_replace(store):
    await store.accounts.create_account("a@example.com", "h", aliases=["Sales@Example.com"])
    acc = await store.accounts.get_account("sales@example.COM")
    assert acc is not None and acc.address == "a@example.com"
    assert acc.aliases == ("sales@example.com",)
    await store.accounts.set_aliases("a@example.com", ["info@example.com", "help@example.com"])
    assert await store.accounts.get_account("sales@example.com") is None
    acc = await store.accounts.get_account("help@example.com")
    assert acc.address == "a@example.com"
    assert sorted(acc.aliases) == ["help@example.com", "info@example.com"]
    with pytest.raises(AccountNotFound):
        await store.accounts.set_aliases("zz@example.com", [])


@pytest_twisted.ensureDeferred
async def test_alias_cannot_take_another_accounts_address(store):
    await store.accounts.create_account("a@example.com", "h", aliases=["x@example.com"])
    await store.accounts.create_account("b@example.com", "h")
    with pytest.raises(AccountExists):
        await store.accounts.set_aliases("b@example.com", ["a@example.com"])
    with pytest.raises(AccountExists):
        await store.accounts.set_aliases("b@example.com", ["x@example.com"])
    with pytest.raises(AccountExists):
        await store.accounts.create_account("x@example.com", "h")


@pytest_twisted.ensureDeferred
async def test_set_password_hash(store):
    await store.accounts.create_account("a@example.com", "old")
    await store.accounts.set_password_hash("a@example.com", "new")
    assert (await store.accounts.get_account("a@example.com")).password_hash == "new"
    with pytest.raises(AccountNotFound):
        await store.accounts.set_password_hash("zz@example.com", "x")


@pytest_twisted.ensureDeferred
async def test_list_accounts_ordered(store):
    for a in ("c@example.com", "a@example.com", "b@example.com"):
        await store.accounts.create_account(a, "h")
    assert [a.address for a in await store.accounts.list_accounts()] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]


@pytest_twisted.ensureDeferred
async def test_delete_account_removes_mailboxes_and_messages(store):
    inbox = await new_account(store, "a@example.com")
    await deliver(store, inbox.id)
    await store.accounts.delete_account("a@example.com")
    assert await store.accounts.get_account("a@example.com") is None
    assert await store.mailboxes.list_mailboxes("a@example.com") == []
    assert await store.mailboxes.get_mailbox_by_id(inbox.id) is None
    assert await store.messages.list_messages(inbox.id) == []
    with pytest.raises(AccountNotFound):
        await store.accounts.delete_account("a@example.com")
    # the address can be used again, with fresh mailboxes
    inbox2 = await new_account(store, "a@example.com")
    assert inbox2.id != inbox.id and inbox2.uidvalidity != inbox.uidvalidity


@pytest_twisted.ensureDeferred
async def test_quota_usage_counts_deliveries_and_expunges(store):
    inbox = await new_account(store, "a@example.com", quota_bytes=10_000)
    raw = make_raw(body="x" * 1000)
    r1 = await deliver(store, inbox.id, raw)
    await deliver(store, inbox.id, raw)
    usage = await store.accounts.quota_usage("a@example.com")
    assert (usage.bytes, usage.messages, usage.limit_bytes) == (2 * len(raw), 2, 10_000)
    await store.messages.expunge(inbox.id, [r1.uid])
    usage = await store.accounts.quota_usage("a@example.com")
    assert (usage.bytes, usage.messages) == (len(raw), 1)


@pytest_twisted.ensureDeferred
async def test_quota_counts_every_recipient_mailbox(store):
    inbox = await new_account(store, "a@example.com")
    sent = await store.mailboxes.get_mailbox("a@example.com", "Sent")
    msg = await put_message(store)
    await store.messages.deliver(msg, [DeliveryTarget(inbox.id), DeliveryTarget(sent.id)])
    usage = await store.accounts.quota_usage("a@example.com")
    assert (usage.bytes, usage.messages) == (2 * msg.size, 2)
