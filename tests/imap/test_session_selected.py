"""The selected-mailbox view (pure data): sequence numbers, pending
EXPUNGE/EXISTS/FETCH updates and when they are released."""

from __future__ import annotations

from mailserver.imap.selected import SelectedMailbox
from mailserver.store.interfaces import Changes, MailboxInfo, MessageRecord


def rec(uid: int, flags=(), modseq: int = 1) -> MessageRecord:
    return MessageRecord(uid, f"m{uid}", frozenset(flags), modseq, 0, 10)


def view(uids=(1, 2, 3), recent_floor=None, read_only=False) -> SelectedMailbox:
    info = MailboxInfo("mb", "alice", "INBOX", 7, max(uids, default=0) + 1, 5)
    return SelectedMailbox.open(info, [rec(u) for u in uids], read_only, recent_floor)


def test_open_and_lookups():
    v = view((3, 5, 9), recent_floor=5)
    assert v.exists == 3 and v.max_uid == 9
    assert v.seq_of(5) == 2 and v.seq_of(4) is None
    assert v.uid_of(3) == 9
    assert v.recent == {5, 9}
    assert v.flags_of(5) == {"\\Recent"}
    assert v.first_unseen_from([4, 9]) == 3
    assert v.flush(allow_expunge=True) == []


def test_new_messages_give_exists_any_time():
    v = view()
    new = v.apply(Changes(6, 5, changed=(rec(4, modseq=6),)))
    assert new == [4]
    v.add_recent(new, floor=4)
    assert v.flush(allow_expunge=False) == [b"* 4 EXISTS\r\n", b"* 1 RECENT\r\n"]
    assert v.exists == 4 and v.flags_of(4) == {"\\Recent"}
    assert v.flush(allow_expunge=False) == []


def test_expunge_waits_and_keeps_sequence_numbers():
    v = view((1, 2, 3, 4))
    v.apply(Changes(7, 5, expunged=(2, 4)))
    assert v.flush(allow_expunge=False) == []
    assert v.exists == 4 and v.seq_of(3) == 3 and not v.live(2) and v.live(3)
    # a new message meanwhile: EXISTS counts the unreported expunged ones
    v.apply(Changes(8, 6, changed=(rec(5, modseq=8),)))
    assert v.flush(allow_expunge=False) == [b"* 5 EXISTS\r\n"]
    assert v.flush(allow_expunge=True) == [b"* 2 EXPUNGE\r\n", b"* 3 EXPUNGE\r\n"]
    assert v.uids == [1, 3, 5] and v.exists == 3


def test_expunge_then_new_in_one_flush():
    v = view((1, 2))
    v.apply(Changes(7, 4, changed=(rec(3, modseq=7),), expunged=(1,)))
    assert v.flush(allow_expunge=True) == [b"* 1 EXPUNGE\r\n", b"* 2 EXISTS\r\n"]
    assert v.uids == [2, 3]


def test_expunge_of_unannounced_message_is_silent():
    v = view((1,))
    v.apply(Changes(7, 3, changed=(rec(2, modseq=6),)))
    v.apply(Changes(8, 3, expunged=(2,)))
    assert v.flush(allow_expunge=True) == []
    assert v.uids == [1]


def test_flag_changes_are_reported_once_and_own_changes_not_at_all():
    v = view()
    v.apply(Changes(6, 4, changed=(rec(2, {"\\Seen"}, 6),)))
    assert v.flush(allow_expunge=False) == [b"* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n"]
    # replaying the same change (e.g. after a poll) reports nothing
    v.apply(Changes(6, 4, changed=(rec(2, {"\\Seen"}, 6),)))
    assert v.flush(allow_expunge=False) == []
    # this session's own STORE: told by the STORE handler, not again
    v.note_flags([rec(3, {"\\Flagged"}, 7)])
    v.apply(Changes(7, 4, changed=(rec(3, {"\\Flagged"}, 7),)))
    assert v.flush(allow_expunge=True) == []


def test_own_expunge_is_idempotent_with_the_change_log():
    v = view((1, 2, 3))
    v.note_expunged([2])
    assert v.flush(allow_expunge=True) == [b"* 2 EXPUNGE\r\n"]
    v.apply(Changes(9, 4, expunged=(2,)))
    assert v.flush(allow_expunge=True) == []
    assert v.uids == [1, 3]


def test_flag_change_of_expunged_message_not_reported():
    v = view((1, 2))
    v.apply(Changes(7, 3, changed=(rec(2, {"\\Deleted"}, 6),), expunged=(2,)))
    assert v.flush(allow_expunge=False) == []
    assert v.flush(allow_expunge=True) == [b"* 2 EXPUNGE\r\n"]


def test_keywords_tracked_for_flags_response():
    v = view()
    v.apply(Changes(6, 4, changed=(rec(1, {"$Label1"}, 6),)))
    assert v.keywords == {"$Label1"}
