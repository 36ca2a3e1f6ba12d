"""The notifier fires after committed changes, on the reactor thread."""

from __future__ import annotations

import threading

import pytest_twisted
from twisted.internet import defer

from mailserver.store.interfaces import FlagMode
from tests.store.helpers import deliver, new_account

A = "user@example.com"


class Watch:
    """Collects notifications for one mailbox; ``next()`` awaits the next one."""

    def __init__(self, store, mailbox_id):
        self.events: list[tuple[str, bool]] = []
        self._waiting: list[defer.Deferred] = []
        self.cancel = store.notifier.subscribe(mailbox_id, self._on)

    def _on(self, mailbox_id):
        self.events.append((mailbox_id, threading.current_thread() is threading.main_thread()))
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(mailbox_id)

    def next(self) -> defer.Deferred:
        d = defer.Deferred()
        self._waiting.append(d)
        return d


@pytest_twisted.ensureDeferred
async def test_notified_after_deliver_flags_expunge(store):
    inbox = await new_account(store, A)
    trash = await store.mailboxes.get_mailbox(A, "Trash")
    w = Watch(store, inbox.id)
    wt = Watch(store, trash.id)

    async def expect(watch, action):
        n = len(watch.events)
        result = await action
        if len(watch.events) == n:  # allowed to arrive just after the commit
            await watch.next()
        assert len(watch.events) > n
        return result

    rec = await expect(w, deliver(store, inbox.id))
    # the change is visible to a reader when the callback has fired
    assert (await store.mailboxes.get_mailbox_by_id(inbox.id)).uidnext == 2
    await expect(w, store.messages.store_flags(inbox.id, [rec.uid], ["\\Seen"], FlagMode.ADD))
    await expect(wt, store.messages.copy(inbox.id, [rec.uid], trash.id))
    await expect(w, store.messages.expunge(inbox.id, [rec.uid]))
    assert {m for m, _ in w.events} == {inbox.id}
    assert all(on_main for _, on_main in w.events + wt.events)

    # after unsubscribing nothing arrives
    w.cancel()
    w.cancel()  # harmless twice
    n = len(w.events)
    await expect(wt, deliver(store, trash.id))
    await deliver(store, inbox.id)
    assert len(w.events) == n


@pytest_twisted.ensureDeferred
async def test_publish_and_subscribe_direct(store):
    got = []
    cancel = store.notifier.subscribe("mbx", got.append)
    other = []
    store.notifier.subscribe("other", other.append)
    store.notifier.publish("mbx")
    if not got:
        d = defer.Deferred()
        store.notifier.subscribe("mbx", lambda _m: d.callback(None))
        await d
    assert got[0] == "mbx" and other == []
    cancel()
