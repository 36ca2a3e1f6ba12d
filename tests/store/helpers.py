"""Test messages and small helpers for the storage contract suite."""

from __future__ import annotations

from mailserver.mail.message import ParsedMessage
from mailserver.mail.parse import parse_message


def make_raw(
    subject: str = "Hello",
    sender: str = "Alice <alice@example.org>",
    to: str = "Bob <bob@example.com>",
    cc: str | None = None,
    bcc: str | None = None,
    body: str = "Hi Bob,\r\nhow are you?\r\n",
    extra: bytes = b"",
) -> bytes:
    """An RFC 5322 message with CRLF line endings."""
    lines = [
        f"From: {sender}",
        f"To: {to}",
        *([f"Cc: {cc}"] if cc else []),
        *([f"Bcc: {bcc}"] if bcc else []),
        f"Subject: {subject}",
        "Date: Fri, 04 Dec 2026 21:00:00 +0000",
        "Message-ID: <test@example.org>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    head = "\r\n".join(lines).encode() + b"\r\n\r\n"
    return head + body.encode() + extra


def parsed(raw: bytes) -> ParsedMessage:
    """The ParsedMessage of ``raw`` (the real parser)."""
    return parse_message(raw)


async def new_account(store, address: str = "user@example.com", quota_bytes: int = 0):
    """Create an account and return its INBOX MailboxInfo."""
    await store.accounts.create_account(address, "{PLAIN}x", quota_bytes=quota_bytes)
    return await store.mailboxes.get_mailbox(address, "INBOX")


async def put_message(store, raw: bytes | None = None):
    """blobs.put + store_message: a StoredMessage ready to deliver."""
    raw = make_raw() if raw is None else raw
    key = await store.blobs.put(raw)
    return await store.messages.store_message(key, parsed(raw))


async def deliver(store, mailbox_id: str, raw: bytes | None = None, flags=(), internal_date=None):
    """Deliver one message to one mailbox; returns its MessageRecord."""
    from mailserver.store.interfaces import DeliveryTarget

    message = await put_message(store, raw)
    (rec,) = await store.messages.deliver(
        message, [DeliveryTarget(mailbox_id, frozenset(flags), internal_date)]
    )
    return rec
