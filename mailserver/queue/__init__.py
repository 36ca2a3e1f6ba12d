"""The outbound queue: mail for remote recipients waiting for the relay.

``enqueue`` returns only once the entry and its body are durable, so SMTP
may answer 250.  The relay (a separate component) ``claim``s due entries
under a lease, tries them, and ``ack``s (done: entry and body removed) or
``defer``s them (next attempt later, error remembered).  A claim whose lease
ran out (the relay crashed) is due again.

An entry can be enqueued *held*: durable but not claimable until
``release``; ``cancel`` drops it.  Delivery uses this to make "queue the
remote recipients + deliver the local ones" all-or-nothing (see
docs/decisions/0003-smtp.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class QueuedMessage:
    id: str
    sender: str  # "" for the null reverse-path
    recipients: tuple[str, ...]
    body_key: str
    size: int
    dsn: Mapping[str, Any] = field(default_factory=dict)
    created: float = 0.0
    attempts: int = 0
    next_attempt: float = 0.0
    state: str = "ready"  # held | ready | claimed
    last_error: str | None = None


class QueueEntryNotFound(KeyError):
    pass


@runtime_checkable
class OutboundQueue(Protocol):
    async def enqueue(
        self,
        sender: str,
        recipients: Sequence[str],
        body: bytes,
        dsn: Mapping[str, Any] | None = None,
        *,
        hold: bool = False,
    ) -> str:
        """Store durably; returns the queue id."""

    async def release(self, queue_id: str) -> None:
        """Make a held entry claimable."""

    async def cancel(self, queue_id: str) -> None:
        """Drop an entry (held or not) and its body if unreferenced."""

    async def list(self, limit: int = 1000) -> list[QueuedMessage]:
        """Entries in creation order (all states)."""

    async def claim(self, now: float, lease: float, limit: int = 100) -> list[QueuedMessage]:
        """Take up to ``limit`` due entries (ready, or claimed with an expired
        lease) for ``lease`` seconds."""

    async def ack(self, queue_id: str) -> None:
        """The relay is done with the entry (delivered or bounced)."""

    async def defer(self, queue_id: str, next_attempt: float, error: str) -> None:
        """Try again at ``next_attempt``; counts the attempt."""

    async def body(self, entry: QueuedMessage) -> bytes:
        """The message bytes of an entry."""

    async def close(self) -> None: ...
