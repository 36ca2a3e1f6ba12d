"""SEARCH evaluation against a mailbox (RFC 3501 6.4.4).

Keys are evaluated as sets of UIDs, cheapest first: record keys (flags,
sizes, internal dates, sequence numbers) need no I/O; SEEN/UNSEEN come from
the store's unseen index and text keys from its text index (one call each);
only SENT* and HEADER look at each remaining candidate's stored message, and
only after the cheaper keys of an AND narrowed the candidates.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import time
from collections.abc import Sequence
from email.utils import parsedate_tz
from typing import TYPE_CHECKING, Protocol

from mailserver.mail.headers import search_header
from mailserver.store.interfaces import MessageRecord, SearchQuery

from .grammar import SearchKey

if TYPE_CHECKING:
    from mailserver.mail.message import ParsedMessage
    from mailserver.store.interfaces import Storage

__all__ = ["SearchContext", "StoreSearchContext", "run_search"]

_TEXT_FIELDS = {
    "FROM": "from",
    "TO": "to",
    "CC": "cc",
    "BCC": "bcc",
    "SUBJECT": "subject",
    "BODY": "body",
    "TEXT": "text",
}


class SearchContext(Protocol):
    """What ``run_search`` needs from the session and the store."""

    #: the session's \\Recent UIDs
    recent_uids: set[int]
    #: RFC 5182 saved result (UIDs) for ``$``, or None
    saved_uids: Sequence[int] | None

    async def unseen_uids(self) -> set[int]:
        """UIDs without \\Seen, from the unseen index."""

    async def search_text(self, field: str, text: str) -> set[int]:
        """UIDs whose ``field`` (SearchQuery field) contains ``text``."""

    async def parsed(self, record: MessageRecord) -> ParsedMessage:
        """The parsed message of a record."""

    async def header(self, record: MessageRecord) -> bytes:
        """The raw header block of a record's message."""


class StoreSearchContext:
    """``SearchContext`` on a ``Storage``; caches what it fetched."""

    def __init__(
        self,
        storage: Storage,
        mailbox_id: str,
        recent_uids: set[int] | None = None,
        saved_uids: Sequence[int] | None = None,
    ) -> None:
        self.storage = storage
        self.mailbox_id = mailbox_id
        self.recent_uids = set(recent_uids or ())
        self.saved_uids = saved_uids
        self._unseen: set[int] | None = None
        self._stored: dict[str, object] = {}

    async def unseen_uids(self) -> set[int]:
        if self._unseen is None:
            self._unseen = set(await self.storage.messages.unseen_uids(self.mailbox_id))
        return self._unseen

    async def search_text(self, field: str, text: str) -> set[int]:
        return set(
            await self.storage.messages.search_text(self.mailbox_id, SearchQuery(field, text))
        )

    async def _get(self, record: MessageRecord):  # type: ignore[no-untyped-def]
        stored = self._stored.get(record.message_id)
        if stored is None:
            stored = await self.storage.messages.get_message(record.message_id)
            self._stored[record.message_id] = stored
        return stored

    async def parsed(self, record: MessageRecord) -> ParsedMessage:
        return (await self._get(record)).parsed

    async def header(self, record: MessageRecord) -> bytes:
        stored = await self._get(record)
        return await self.storage.blobs.get_range(stored.blob_key, 0, stored.parsed.header_end)


# cost classes: 0 record only, 1 one index call, 2 per message I/O
_COST_INDEX = {"SEEN", "UNSEEN", *_TEXT_FIELDS}
_COST_MESSAGE = {"SENTBEFORE", "SENTON", "SENTSINCE", "HEADER"}


def _cost(key: SearchKey) -> int:
    if key.op in _COST_MESSAGE:
        return 2
    if key.op in _COST_INDEX:
        return 1
    if key.children:
        return max(_cost(c) for c in key.children)
    return 0


def _utc_date(epoch: int) -> _dt.date:
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).date()


def _sent_date(parsed: ParsedMessage) -> _dt.date | None:
    """The Date: header's own calendar date (disregarding time and zone)."""
    raw = parsed.envelope.date
    if raw:
        t = parsedate_tz(raw)
        if t is not None:
            try:
                return _dt.date(t[0], t[1], t[2])
            except ValueError:
                pass
    if parsed.date is not None:
        return _utc_date(parsed.date)
    return None


def _compare_date(op: str, have: _dt.date, want: _dt.date) -> bool:
    if op.endswith("BEFORE"):
        return have < want
    if op.endswith("ON"):
        return have == want
    return have >= want  # SINCE


class _Evaluator:
    def __init__(self, records: Sequence[MessageRecord], ctx: SearchContext) -> None:
        self.records = records
        self.ctx = ctx
        self.by_uid = {r.uid: r for r in records}
        self.seq_of = {r.uid: i + 1 for i, r in enumerate(records)}
        self.count = len(records)
        self.max_uid = records[-1].uid if records else 0
        self.now = time.time()

    def _filter(self, cand: set[int], pred) -> set[int]:  # type: ignore[no-untyped-def]
        by_uid = self.by_uid
        return {u for u in cand if pred(by_uid[u])}

    async def eval(self, key: SearchKey, cand: set[int]) -> set[int]:
        if not cand:
            return cand
        op = key.op
        v = key.value
        if op == "ALL":
            return cand
        if op == "AND":
            for child in sorted(key.children, key=_cost):
                cand = await self.eval(child, cand)
                if not cand:
                    break
            return cand
        if op == "OR":
            a, b = sorted(key.children, key=_cost)
            first = await self.eval(a, cand)
            return first | await self.eval(b, cand - first)
        if op == "NOT":
            return cand - await self.eval(key.children[0], cand)
        if op == "SEQ":
            if v.saved:
                return cand & set(self.ctx.saved_uids or ())
            seq_of = self.seq_of
            return {u for u in cand if v.contains(seq_of[u], self.count)}
        if op == "UID":
            if v.saved:
                return cand & set(self.ctx.saved_uids or ())
            return {u for u in cand if v.contains(u, self.max_uid)}
        if op == "FLAG":
            flag = v.lower()
            return self._filter(cand, lambda r: any(f.lower() == flag for f in r.flags))
        if op == "RECENT":
            return cand & self.ctx.recent_uids
        if op == "UNSEEN":
            return cand & await self.ctx.unseen_uids()
        if op == "SEEN":
            return cand - await self.ctx.unseen_uids()
        if op in ("BEFORE", "ON", "SINCE"):
            return self._filter(cand, lambda r: _compare_date(op, _utc_date(r.internal_date), v))
        if op == "LARGER":
            return self._filter(cand, lambda r: r.size > v)
        if op == "SMALLER":
            return self._filter(cand, lambda r: r.size < v)
        if op == "OLDER":
            return self._filter(cand, lambda r: self.now - r.internal_date >= v)
        if op == "YOUNGER":
            return self._filter(cand, lambda r: self.now - r.internal_date <= v)
        if op == "MODSEQ":
            return self._filter(cand, lambda r: r.modseq >= v)
        if op in _TEXT_FIELDS:
            if not v:
                return cand
            return cand & await self.ctx.search_text(_TEXT_FIELDS[op], v)
        if op in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            out = set()
            for u in sorted(cand):
                d = _sent_date(await self.ctx.parsed(self.by_uid[u]))
                if d is not None and _compare_date(op, d, v):
                    out.add(u)
            return out
        if op == "HEADER":
            name, needle = v
            out = set()
            for u in sorted(cand):
                if search_header(await self.ctx.header(self.by_uid[u]), name, needle):
                    out.add(u)
            return out
        raise ValueError(f"unknown search key {op}")


async def run_search(
    key: SearchKey,
    records: Sequence[MessageRecord],
    context: SearchContext,
    uid_mode: bool = False,
) -> list[int]:
    """Messages of ``records`` (the session's view, in sequence order)
    matching ``key``: ascending UIDs when ``uid_mode``, else sequence
    numbers."""
    ev = _Evaluator(records, context)
    matched = await ev.eval(key, set(ev.by_uid))
    if uid_mode:
        return sorted(matched)
    return sorted(ev.seq_of[u] for u in matched)


def epoch_of(date: _dt.date) -> int:
    """Midnight UTC of a date, as epoch seconds (helper for callers)."""
    return calendar.timegm(date.timetuple())
