"""search_text contract: case-insensitive substring per field, exact."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserver.store.interfaces import SearchQuery
from tests.store.helpers import deliver, make_raw, new_account

A = "user@example.com"


async def _mailbox_with_messages(store):
    inbox = await new_account(store, A)
    await deliver(
        store,
        inbox.id,
        make_raw(
            subject="Quarterly Report",
            sender="Carol <carol@example.net>",
            to="Dave <dave@example.com>",
            cc="Erin <erin@example.org>",
            body="The numbers are in.\r\n",
        ),
    )
    await deliver(
        store,
        inbox.id,
        make_raw(
            subject="Lunch?",
            sender="Frank <frank@example.net>",
            to="Carol <carol@example.net>",
            bcc="Grace <grace@example.org>",
            body="Pizza or sushi? Let's meet at the REPORTER's cafe.\r\n",
        ),
    )
    await deliver(
        store,
        inbox.id,
        make_raw(subject="Grüße aus Köln", body="Schöne Grüße, straße 100%_x\r\n"),
    )
    return inbox


@pytest.mark.parametrize(
    "field,text,expected",
    [
        ("subject", "report", {1}),
        ("subject", "QUARTERLY", {1}),
        ("subject", "lunch?", {2}),
        ("subject", "nothing", set()),
        ("from", "carol", {1}),
        ("from", "FRANK@EXAMPLE", {2}),
        ("to", "carol", {2}),
        ("to", "dave", {1}),
        ("cc", "erin", {1}),
        ("cc", "grace", set()),
        ("bcc", "grace", {2}),
        ("body", "report", {2}),
        ("body", "numbers are", {1}),
        ("body", "pizza or", {2}),
        ("text", "report", {1, 2}),
        ("text", "carol", {1, 2}),
        ("text", "grace", {2}),
        # short needles (below any n-gram size) still match exactly
        ("subject", "lu", {2}),
        ("body", "z", {2}),
        ("text", "?", {2}),
        # non-ASCII, case-insensitive
        ("subject", "GRÜSSE", set()),
        ("subject", "grüße", {3}),
        ("subject", "KÖLN", {3}),
        ("body", "schöne", {3}),
        # SQL / FTS special characters are plain text
        ("body", "100%_x", {3}),
        ("body", '"', set()),
        ("body", "let's", {2}),
        ("body", "or sushi? let", {2}),
    ],
)
@pytest_twisted.ensureDeferred
async def test_search_text(store, field, text, expected):
    inbox = await _mailbox_with_messages(store)
    assert await store.messages.search_text(inbox.id, SearchQuery(field, text)) == expected


@pytest_twisted.ensureDeferred
async def test_search_is_per_mailbox_and_follows_expunge(store):
    inbox = await _mailbox_with_messages(store)
    trash = await store.mailboxes.get_mailbox(A, "Trash")
    await store.messages.copy(inbox.id, [1], trash.id)
    assert await store.messages.search_text(trash.id, SearchQuery("subject", "report")) == {1}
    assert await store.messages.search_text(trash.id, SearchQuery("subject", "lunch")) == set()
    await store.messages.expunge(inbox.id, [1])
    assert await store.messages.search_text(inbox.id, SearchQuery("text", "report")) == {2}
    # the same content in another account does not leak
    other = await new_account(store, "b@example.com")
    assert await store.messages.search_text(other.id, SearchQuery("text", "report")) == set()
