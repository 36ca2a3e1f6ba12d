"""Rules every storage backend applies the same way: canonical mailbox
names, canonical flags, and what a STORE does to a message's flags.  Kept in
one place so the backends cannot drift apart (the contract suite checks the
behaviour; this keeps the code single)."""

from __future__ import annotations

from collections.abc import Iterable

from mailserver.store.interfaces import DELIMITER, FlagMode, InvalidMailboxName

__all__ = ["MAX_NAME", "SEEN", "flags_after", "normalize_flags", "normalize_mailbox_name"]

#: longest mailbox name accepted, in characters
MAX_NAME = 1000
SEEN = "\\Seen"
_SYSTEM_FLAGS = {
    f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
}


def normalize_mailbox_name(name: str) -> str:
    """Canonical form of a mailbox name: ``INBOX`` (any case) as first level
    becomes ``INBOX``; one trailing delimiter is dropped (RFC 3501 CREATE).

    Raises InvalidMailboxName for empty levels, wildcards, control characters
    and overlong names."""
    if not isinstance(name, str):
        raise InvalidMailboxName(repr(name))
    if name.endswith(DELIMITER):
        name = name[:-1]
    if not name or len(name) > MAX_NAME:
        raise InvalidMailboxName(name)
    if any(c in "*%" or ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidMailboxName(name)
    parts = name.split(DELIMITER)
    if any(p == "" for p in parts):
        raise InvalidMailboxName(name)
    if parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    return DELIMITER.join(parts)


def normalize_flags(flags: Iterable[str]) -> frozenset[str]:
    """System flags in canonical case; ``\\Recent`` dropped (never stored)."""
    out = set()
    for f in flags:
        low = f.lower()
        if low == "\\recent":
            continue
        out.add(_SYSTEM_FLAGS.get(low, f))
    return frozenset(out)


def flags_after(
    current: frozenset[str],
    modseq: int,
    given: frozenset[str],
    mode: FlagMode,
    unchanged_since: int | None,
) -> frozenset[str] | None:
    """The flags a STORE leaves on one message, or None when it must not
    change (same flags, or its MODSEQ is past ``unchanged_since``)."""
    if unchanged_since is not None and modseq > unchanged_since:
        return None
    if mode is FlagMode.SET:
        new = given
    elif mode is FlagMode.ADD:
        new = current | given
    else:
        new = current - given
    return None if new == current else new
