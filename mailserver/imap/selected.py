"""The selected-mailbox view of one IMAP session (RFC 3501 sections 2.3.1, 5.2, 7.4.1).

A session's message sequence numbers are its own: they change only when the
session itself tells the client (untagged EXPUNGE / EXISTS).  This module
keeps that view and the updates the client has not been told yet:

- ``uids``: the UIDs the client knows, ascending; sequence number n is
  ``uids[n - 1]``.  A message expunged by another session stays here, with
  its sequence number, until an EXPUNGE response may be sent (never during
  FETCH, STORE or SEARCH).
- pending expunges, pending new messages (announced by EXISTS, which may be
  sent at any time) and pending flag changes (untagged FETCH FLAGS).
- the flags the client was last told, so a change made by this session's own
  STORE is not reported twice when the store's change log replays it.
- the session's \\Recent set (RFC 3501 2.3.2), filled from
  ``MailboxStore.claim_recent`` by a read-write SELECT.

Everything here is pure data manipulation: the session feeds it store
``Changes`` and asks it for the untagged responses it may send now.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mailserver.imap.encoder import flag_list
from mailserver.store.interfaces import Changes, MailboxInfo, MessageRecord

RECENT = "\\Recent"


def format_flags(flags: Iterable[str]) -> bytes:
    """``(\\Answered \\Seen $Label)``: system flags first, then keywords."""
    return flag_list(flags)


@dataclass
class SelectedMailbox:
    """The client's view of its selected mailbox plus pending unsolicited updates."""

    mailbox_id: str
    name: str
    uidvalidity: int
    read_only: bool
    uids: list[int] = field(default_factory=list)
    flags: dict[int, frozenset[str]] = field(default_factory=dict)
    recent: set[int] = field(default_factory=set)
    #: highest MODSEQ whose changes are reflected here (``changes_since`` argument)
    modseq: int = 0
    #: UIDNEXT as last seen (for the UIDNEXT response code and APPEND)
    uidnext: int = 1
    pending_expunge: set[int] = field(default_factory=set)
    pending_new: list[int] = field(default_factory=list)
    pending_flags: set[int] = field(default_factory=set)
    #: the client was told this many messages / recent (to send EXISTS/RECENT only on change)
    told_exists: int = 0
    told_recent: int = 0
    #: keywords seen in the mailbox (for the FLAGS / PERMANENTFLAGS responses)
    keywords: set[str] = field(default_factory=set)

    @classmethod
    def open(
        cls,
        info: MailboxInfo,
        records: Sequence[MessageRecord],
        read_only: bool,
        recent_floor: int | None,
    ) -> SelectedMailbox:
        """Build the view from a listing; UIDs >= ``recent_floor`` are \\Recent
        for this session (``None``: nothing is, e.g. EXAMINE)."""
        view = cls(
            mailbox_id=info.id,
            name=info.name,
            uidvalidity=info.uidvalidity,
            read_only=read_only,
            modseq=info.highestmodseq,
            uidnext=info.uidnext,
        )
        for rec in records:
            view.uids.append(rec.uid)
            view.flags[rec.uid] = rec.flags
            view._note_keywords(rec.flags)
            view.modseq = max(view.modseq, rec.modseq)
        if recent_floor is not None:
            view.recent = {u for u in view.uids if u >= recent_floor}
        view.told_exists = len(view.uids)
        view.told_recent = len(view.recent)
        return view

    # -- lookups -------------------------------------------------------

    @property
    def exists(self) -> int:
        """Number of messages the client knows of (its highest sequence number)."""
        return len(self.uids)

    @property
    def max_uid(self) -> int:
        """The highest UID the client knows of, or 0 for an empty mailbox."""
        return self.uids[-1] if self.uids else 0

    def seq_of(self, uid: int) -> int | None:
        """Sequence number of ``uid`` in the client's view, or None."""
        i = bisect.bisect_left(self.uids, uid)
        if i < len(self.uids) and self.uids[i] == uid:
            return i + 1
        return None

    def uid_of(self, seq: int) -> int:
        return self.uids[seq - 1]

    def live(self, uid: int) -> bool:
        """True unless ``uid`` was expunged (reported or not)."""
        return uid not in self.pending_expunge and uid in self.flags

    def flags_of(self, uid: int) -> frozenset[str]:
        """Flags as the client should see them, \\Recent included."""
        base = self.flags.get(uid, frozenset())
        return base | {RECENT} if uid in self.recent else base

    def first_unseen_from(self, unseen_uids: Sequence[int]) -> int | None:
        """[UNSEEN n] from the store's unseen index (ascending UIDs)."""
        for uid in unseen_uids:
            seq = self.seq_of(uid)
            if seq is not None:
                return seq
        return None

    # -- changes from the store ----------------------------------------

    def apply(self, changes: Changes) -> list[int]:
        """Merge store changes after ``self.modseq``; returns the UIDs of
        messages new to this view (so a read-write session can claim
        \\Recent for them).  Idempotent: replaying a change this view
        already reflects (e.g. its own STORE or EXPUNGE) records nothing."""
        new: list[int] = []
        known_top = max(self.max_uid, self.pending_new[-1] if self.pending_new else 0)
        for rec in changes.changed:
            if rec.uid > known_top:
                new.append(rec.uid)
                self.flags[rec.uid] = rec.flags
                self._note_keywords(rec.flags)
                known_top = rec.uid
            elif rec.uid in self.flags:
                if self.flags[rec.uid] != rec.flags:
                    self.flags[rec.uid] = rec.flags
                    self._note_keywords(rec.flags)
                    if rec.uid not in self.pending_expunge:
                        self.pending_flags.add(rec.uid)
        self.pending_new.extend(new)
        for uid in changes.expunged:
            self._expunged(uid)
        self.modseq = max(self.modseq, changes.highestmodseq)
        self.uidnext = max(self.uidnext, changes.uidnext)
        return new

    def _expunged(self, uid: int) -> None:
        if uid not in self.flags:
            return
        if self.pending_new and uid >= self.pending_new[0]:
            i = bisect.bisect_left(self.pending_new, uid)
            if i < len(self.pending_new) and self.pending_new[i] == uid:
                del self.pending_new[i]
                self.flags.pop(uid, None)
                self.recent.discard(uid)
                return
        self.pending_expunge.add(uid)
        self.pending_flags.discard(uid)

    def note_flags(self, records: Iterable[MessageRecord]) -> None:
        """This session's own STORE changed these; the client is told by the
        STORE handler, so they are not pending."""
        for rec in records:
            if rec.uid in self.flags:
                self.flags[rec.uid] = rec.flags
                self._note_keywords(rec.flags)
                self.pending_flags.discard(rec.uid)

    def note_expunged(self, uids: Iterable[int]) -> None:
        """This session expunged these (EXPUNGE, CLOSE, MOVE): pending until
        the handler flushes with expunges allowed."""
        for uid in uids:
            self._expunged(uid)

    def add_recent(self, uids: Iterable[int], floor: int) -> None:
        """Mark the given new UIDs >= ``floor`` as \\Recent for this session."""
        self.recent.update(u for u in uids if u >= floor)

    def _note_keywords(self, flags: Iterable[str]) -> None:
        for f in flags:
            if not f.startswith("\\"):
                self.keywords.add(f)

    # -- responses -----------------------------------------------------

    def has_pending(self) -> bool:
        return bool(self.pending_expunge or self.pending_new or self.pending_flags)

    def flush(self, allow_expunge: bool, with_uid: bool = True) -> list[bytes]:
        """The untagged responses that bring the client up to date, as far as
        RFC 3501 5.2 allows now: EXPUNGE only if ``allow_expunge``, then
        EXISTS / RECENT when their counts changed, then FETCH FLAGS."""
        out: list[bytes] = []
        if allow_expunge and self.pending_expunge:
            for uid in sorted(self.pending_expunge):
                seq = self.seq_of(uid)
                if seq is None:
                    continue
                del self.uids[seq - 1]
                self.flags.pop(uid, None)
                self.recent.discard(uid)
                out.append(b"* %d EXPUNGE\r\n" % seq)
            self.pending_expunge.clear()
            self.told_exists = len(self.uids)
        if self.pending_new:
            self.uids.extend(self.pending_new)
            self.pending_new.clear()
        recent = len(self.recent)
        if len(self.uids) != self.told_exists:
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
            self.told_exists = len(self.uids)
            # RECENT goes with a size change (RFC 3501 7.3.2); after
            # EXPUNGE alone the client adjusts its count itself.
            if recent != self.told_recent:
                out.append(b"* %d RECENT\r\n" % recent)
        self.told_recent = recent
        if self.pending_flags:
            for uid in sorted(self.pending_flags):
                seq = self.seq_of(uid)
                if seq is None or uid in self.pending_expunge:
                    continue
                item = b"FLAGS " + format_flags(self.flags_of(uid))
                if with_uid:
                    item = b"UID %d " % uid + item
                out.append(b"* %d FETCH (%s)\r\n" % (seq, item))
            self.pending_flags.clear()
        return out
