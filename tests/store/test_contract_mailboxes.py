"""MailboxStore contract."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserver.store.interfaces import (
    InvalidMailboxName,
    MailboxExists,
    MailboxNotFound,
)
from tests.store.helpers import deliver, new_account

A = "user@example.com"


@pytest_twisted.ensureDeferred
async def test_create_get_and_parents(store):
    await new_account(store, A)
    box = await store.mailboxes.create_mailbox(A, "Work/Projects/2026")
    assert box.name == "Work/Projects/2026"
    assert (box.uidnext, box.messages, box.unseen, box.size) == (1, 0, 0, 0)
    assert box.uidvalidity > 0 and box.highestmodseq >= 0
    for name in ("Work", "Work/Projects"):
        assert (await store.mailboxes.get_mailbox(A, name)) is not None
    assert await store.mailboxes.get_mailbox_by_id(box.id) == box
    assert await store.mailboxes.get_mailbox(A, "Work/Projects/2026") == box
    assert await store.mailboxes.get_mailbox(A, "Nope") is None
    assert await store.mailboxes.get_mailbox_by_id("0" * 32) is None
    # creating a mailbox whose parent exists does not disturb the parent
    work = await store.mailboxes.get_mailbox(A, "Work")
    await store.mailboxes.create_mailbox(A, "Work/Other")
    assert (await store.mailboxes.get_mailbox(A, "Work")).id == work.id


@pytest_twisted.ensureDeferred
async def test_special_use_and_utf8_names(store):
    await new_account(store, A)
    box = await store.mailboxes.create_mailbox(A, "Archiv/Ä 2026", special_use="\\Archive")
    assert box.special_use == "\\Archive"
    assert (await store.mailboxes.get_mailbox(A, "Archiv/Ä 2026")).id == box.id


@pytest_twisted.ensureDeferred
async def test_create_existing_raises(store):
    await new_account(store, A)
    await store.mailboxes.create_mailbox(A, "X")
    with pytest.raises(MailboxExists):
        await store.mailboxes.create_mailbox(A, "X")
    with pytest.raises(MailboxExists):
        await store.mailboxes.create_mailbox(A, "inbox")


@pytest.mark.parametrize("bad", ["", "/", "a//b", "/a", "a*", "a%b", "a\x00b", "a\nb"])
@pytest_twisted.ensureDeferred
async def test_invalid_names(store, bad):
    await new_account(store, A)
    with pytest.raises(InvalidMailboxName):
        await store.mailboxes.create_mailbox(A, bad)


@pytest_twisted.ensureDeferred
async def test_inbox_is_case_insensitive(store):
    inbox = await new_account(store, A)
    assert inbox.name == "INBOX"
    for spelling in ("inbox", "InBoX", "INBOX"):
        assert (await store.mailboxes.get_mailbox(A, spelling)).id == inbox.id
    child = await store.mailboxes.create_mailbox(A, "inbox/Sub")
    assert child.name == "INBOX/Sub"
    assert (await store.mailboxes.get_mailbox(A, "Inbox/Sub")).id == child.id
    # other names are case-sensitive
    await store.mailboxes.create_mailbox(A, "Foo")
    assert await store.mailboxes.get_mailbox(A, "foo") is None


@pytest_twisted.ensureDeferred
async def test_list_ordered_by_name_and_per_account(store):
    await new_account(store, A)
    await new_account(store, "other@example.com")
    await store.mailboxes.create_mailbox(A, "b")
    await store.mailboxes.create_mailbox(A, "a")
    await store.mailboxes.create_mailbox("other@example.com", "secret")
    names = [m.name for m in await store.mailboxes.list_mailboxes(A)]
    assert names == sorted(names)
    assert "a" in names and "b" in names and "secret" not in names
    assert await store.mailboxes.get_mailbox(A, "secret") is None


@pytest_twisted.ensureDeferred
async def test_delete_mailbox(store):
    await new_account(store, A)
    box = await store.mailboxes.create_mailbox(A, "Old")
    await deliver(store, box.id)
    await store.mailboxes.delete_mailbox(A, "Old")
    assert await store.mailboxes.get_mailbox(A, "Old") is None
    assert await store.mailboxes.get_mailbox_by_id(box.id) is None
    assert await store.messages.list_messages(box.id) == []
    assert (await store.accounts.quota_usage(A)).messages == 0
    with pytest.raises(MailboxNotFound):
        await store.mailboxes.delete_mailbox(A, "Old")
    with pytest.raises(InvalidMailboxName):
        await store.mailboxes.delete_mailbox(A, "inbox")


@pytest_twisted.ensureDeferred
async def test_delete_parent_keeps_children(store):
    await new_account(store, A)
    child = await store.mailboxes.create_mailbox(A, "P/C")
    await store.mailboxes.delete_mailbox(A, "P")
    assert await store.mailboxes.get_mailbox(A, "P") is None
    assert (await store.mailboxes.get_mailbox(A, "P/C")).id == child.id


@pytest_twisted.ensureDeferred
async def test_uidvalidity_new_after_delete_and_recreate(store):
    await new_account(store, A)
    first = await store.mailboxes.create_mailbox(A, "Again")
    await store.mailboxes.delete_mailbox(A, "Again")
    second = await store.mailboxes.create_mailbox(A, "Again")
    assert second.uidvalidity != first.uidvalidity
    assert second.id != first.id
    assert second.uidnext == 1


@pytest_twisted.ensureDeferred
async def test_uidvalidity_and_uidnext_stable_across_reopen(harness):
    store = harness.storage
    inbox = await new_account(store, A)
    await deliver(store, inbox.id)
    await deliver(store, inbox.id)
    before = await store.mailboxes.get_mailbox(A, "INBOX")
    store = await harness.reopen()
    after = await store.mailboxes.get_mailbox(A, "INBOX")
    assert after == before
    assert (after.uidvalidity, after.uidnext, after.messages) == (inbox.uidvalidity, 3, 2)


@pytest_twisted.ensureDeferred
async def test_rename_with_children(store):
    await new_account(store, A)
    a = await store.mailboxes.create_mailbox(A, "a")
    ab = await store.mailboxes.create_mailbox(A, "a/b")
    abc = await store.mailboxes.create_mailbox(A, "a/b/c")
    other = await store.mailboxes.create_mailbox(A, "ab")  # not a child of "a"
    rec = await deliver(store, ab.id)
    await store.mailboxes.rename_mailbox(A, "a", "x/y")
    for old in ("a", "a/b", "a/b/c"):
        assert await store.mailboxes.get_mailbox(A, old) is None
    assert (await store.mailboxes.get_mailbox(A, "x")) is not None  # parent created
    ny = await store.mailboxes.get_mailbox(A, "x/y")
    nyb = await store.mailboxes.get_mailbox(A, "x/y/b")
    nybc = await store.mailboxes.get_mailbox(A, "x/y/b/c")
    assert ny and nyb and nybc
    assert (await store.mailboxes.get_mailbox(A, "ab")).id == other.id
    # messages went along
    msgs = await store.messages.list_messages(nyb.id)
    assert [m.message_id for m in msgs] == [rec.message_id]
    if nyb.uidvalidity == ab.uidvalidity:  # kept UIDVALIDITY => UIDs must be kept
        assert [m.uid for m in msgs] == [rec.uid]
    assert len({ny.id, nyb.id, nybc.id}) == 3
    assert a.name == "a" and abc.name == "a/b/c"


@pytest_twisted.ensureDeferred
async def test_rename_errors(store):
    await new_account(store, A)
    await store.mailboxes.create_mailbox(A, "a")
    await store.mailboxes.create_mailbox(A, "b")
    with pytest.raises(MailboxExists):
        await store.mailboxes.rename_mailbox(A, "a", "b")
    with pytest.raises(MailboxNotFound):
        await store.mailboxes.rename_mailbox(A, "nope", "c")
    with pytest.raises(MailboxExists):
        await store.mailboxes.rename_mailbox(A, "a", "INBOX")
    assert await store.mailboxes.get_mailbox(A, "a") is not None


@pytest_twisted.ensureDeferred
async def test_rename_inbox_moves_messages_and_leaves_inbox_empty(store):
    inbox = await new_account(store, A)
    sub = await store.mailboxes.create_mailbox(A, "INBOX/Sub")
    r1 = await deliver(store, inbox.id, flags={"\\Seen"})
    r2 = await deliver(store, inbox.id)
    await store.mailboxes.rename_mailbox(A, "INBOX", "Old Inbox")
    new = await store.mailboxes.get_mailbox(A, "Old Inbox")
    assert new is not None and new.id != inbox.id
    moved = await store.messages.list_messages(new.id)
    assert [m.message_id for m in moved] == [r1.message_id, r2.message_id]
    assert [m.flags for m in moved] == [frozenset({"\\Seen"}), frozenset()]
    assert (new.messages, new.unseen) == (2, 1)
    now = await store.mailboxes.get_mailbox(A, "INBOX")
    assert now.id == inbox.id and now.uidvalidity == inbox.uidvalidity
    assert (now.messages, now.unseen, now.size) == (0, 0, 0)
    assert await store.messages.list_messages(inbox.id) == []
    # UIDs of INBOX are not reused
    assert now.uidnext == 3
    r3 = await deliver(store, inbox.id)
    assert r3.uid == 3
    # INBOX's children are not renamed
    assert (await store.mailboxes.get_mailbox(A, "INBOX/Sub")).id == sub.id


@pytest_twisted.ensureDeferred
async def test_subscriptions(store):
    await new_account(store, A)
    defaults = set(await store.mailboxes.list_subscriptions(A))
    await store.mailboxes.create_mailbox(A, "Lists")
    await store.mailboxes.set_subscribed(A, "Lists", True)
    await store.mailboxes.set_subscribed(A, "Lists", True)  # idempotent
    await store.mailboxes.set_subscribed(A, "Does/Not/Exist", True)
    subs = await store.mailboxes.list_subscriptions(A)
    assert subs == sorted(subs)
    assert set(subs) == defaults | {"Lists", "Does/Not/Exist"}
    assert (await store.mailboxes.get_mailbox(A, "Lists")).subscribed
    await store.mailboxes.set_subscribed(A, "Lists", False)
    await store.mailboxes.set_subscribed(A, "Never", False)  # not an error
    assert "Lists" not in await store.mailboxes.list_subscriptions(A)
    assert not (await store.mailboxes.get_mailbox(A, "Lists")).subscribed
    # a subscription outlives its mailbox
    await store.mailboxes.create_mailbox(A, "Tmp")
    await store.mailboxes.set_subscribed(A, "Tmp", True)
    await store.mailboxes.delete_mailbox(A, "Tmp")
    assert "Tmp" in await store.mailboxes.list_subscriptions(A)
    # per account
    await new_account(store, "b@example.com")
    assert "Lists" not in await store.mailboxes.list_subscriptions("b@example.com")
    assert "Does/Not/Exist" not in await store.mailboxes.list_subscriptions("b@example.com")


@pytest_twisted.ensureDeferred
async def test_claim_recent(store):
    inbox = await new_account(store, A)
    assert await store.mailboxes.claim_recent(inbox.id) == 1
    assert await store.mailboxes.claim_recent(inbox.id) == 1  # nothing new
    await deliver(store, inbox.id)
    await deliver(store, inbox.id)
    assert (await store.mailboxes.get_mailbox_by_id(inbox.id)).recent_watermark == 1
    assert await store.mailboxes.claim_recent(inbox.id) == 1
    # the next claimer sees nothing recent
    assert await store.mailboxes.claim_recent(inbox.id) == 3
    await deliver(store, inbox.id)
    assert await store.mailboxes.claim_recent(inbox.id) == 3
    assert (await store.mailboxes.get_mailbox_by_id(inbox.id)).recent_watermark == 4
