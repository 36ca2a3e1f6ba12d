"""Selected-state commands (RFC 3501 6.4) and their UID forms, plus
UIDPLUS (RFC 4315), MOVE (RFC 6851) and UNSELECT (RFC 3691).

FETCH reads only what it renders: record fields from the message list,
structure (ENVELOPE, BODYSTRUCTURE) from the stored parse, and the byte
ranges ``fetch.plan_ranges`` asks for through ``blobs.get_range``.
SEARCH answers UNSEEN/SEEN from the unseen index and text keys from the
text index; it lists message records only when a key needs dates or sizes.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from mailserver.imap import fetch, grammar, search
from mailserver.imap.commands_base import (
    SELECTED,
    Bad,
    CommandSpec,
    Done,
    No,
    command,
    compact_set,
    expect_args,
)
from mailserver.imap.receiver import Request
from mailserver.imap.selected import RECENT, SelectedMailbox, format_flags
from mailserver.store.interfaces import (
    FlagMode,
    MailboxNotFound,
    MessageRecord,
    QuotaExceeded,
    StoredMessage,
)

if TYPE_CHECKING:
    from mailserver.imap.session import ImapSession

COMMANDS: dict[str, CommandSpec] = {}

SEEN = "\\Seen"
DELETED = "\\Deleted"

#: a FETCH lists records per contiguous run of UIDs up to this many runs,
#: then in one query over the whole span
_MAX_RUNS = 32


def _view(session: ImapSession) -> SelectedMailbox:
    view = session.selected
    if view is None:  # the registry only lets selected-state commands here
        raise Bad("No mailbox selected")
    return view


def _targets(
    view: SelectedMailbox, seqset: grammar.SequenceSet, uid_mode: bool
) -> list[tuple[int, int]]:
    """(seq, uid) pairs the sequence set names, ascending."""
    if uid_mode:
        uids = seqset.resolve_uids(view.uids)
        out = []
        for u in uids:
            s = view.seq_of(u)
            if s is not None:
                out.append((s, u))
        return out
    seqs = seqset.resolve_seqs(view.exists)
    return [(s, view.uids[s - 1]) for s in seqs]


def _runs(view: SelectedMailbox, uids: Sequence[int]) -> list[tuple[int, int]]:
    """(first, last) UID ranges covering ``uids`` along the view's order."""
    runs: list[tuple[int, int]] = []
    prev_idx = -2
    for u in uids:
        idx = bisect.bisect_left(view.uids, u)
        if runs and idx == prev_idx + 1:
            runs[-1] = (runs[-1][0], u)
        else:
            runs.append((u, u))
        prev_idx = idx
    if len(runs) > _MAX_RUNS:
        return [(runs[0][0], runs[-1][1])]
    return runs


async def _records(
    session: ImapSession, view: SelectedMailbox, uids: Sequence[int]
) -> dict[int, MessageRecord]:
    want = set(uids)
    out: dict[int, MessageRecord] = {}
    messages = session.ctx.storage.messages
    for lo, hi in _runs(view, uids):
        for rec in await messages.list_messages(view.mailbox_id, lo, hi):
            if rec.uid in want:
                out[rec.uid] = rec
    return out


# -- CHECK / CLOSE / UNSELECT / EXPUNGE --------------------------------------------


@command(COMMANDS, "CHECK", SELECTED, poll=True)
async def check(session: ImapSession, req: Request) -> Done | None:
    if req.args:
        raise Bad("CHECK takes no arguments")
    return None


async def _expunge_deleted(
    session: ImapSession, view: SelectedMailbox, only: set[int] | None
) -> list[int]:
    """Expunge the \\Deleted messages (of ``only`` when given)."""
    await session.refresh_view()
    doomed = [
        u
        for u in view.uids
        if view.live(u) and DELETED in view.flags.get(u, ()) and (only is None or u in only)
    ]
    if not doomed:
        return []
    return await session.ctx.storage.messages.expunge(view.mailbox_id, doomed)


@command(COMMANDS, "CLOSE", SELECTED)
async def close(session: ImapSession, req: Request) -> Done | None:
    if req.args:
        raise Bad("CLOSE takes no arguments")
    view = _view(session)
    if not view.read_only:
        await _expunge_deleted(session, view, None)  # silently (RFC 3501 6.4.2)
    session.deselect()
    return None


@command(COMMANDS, "UNSELECT", SELECTED)
async def unselect(session: ImapSession, req: Request) -> Done | None:
    if req.args:
        raise Bad("UNSELECT takes no arguments")
    session.deselect()
    return None


@command(COMMANDS, "EXPUNGE", SELECTED)
async def expunge(session: ImapSession, req: Request) -> Done | None:
    if req.args:
        raise Bad("EXPUNGE takes no arguments")
    view = _view(session)
    if view.read_only:
        raise No("Mailbox is read-only", "CANNOT")
    removed = await _expunge_deleted(session, view, None)
    view.note_expunged(removed)
    return None


@command(COMMANDS, "UID EXPUNGE", SELECTED)
async def uid_expunge(session: ImapSession, req: Request) -> Done | None:
    expect_args(req.args, 1, "UID EXPUNGE")
    seqset = grammar.parse_sequence_set(req.args[0], allow_saved=False)
    view = _view(session)
    if view.read_only:
        raise No("Mailbox is read-only", "CANNOT")
    only = set(seqset.resolve_uids(view.uids))
    removed = await _expunge_deleted(session, view, only)
    view.note_expunged(removed)
    return None


# -- SEARCH ----------------------------------------------------------------------

#: keys answered from UIDs, the flags cache and the store's indexes
_CHEAP_KEYS = {
    "ALL", "AND", "OR", "NOT", "SEQ", "UID", "FLAG", "SEEN", "UNSEEN", "RECENT",
    "FROM", "TO", "CC", "BCC", "SUBJECT", "BODY", "TEXT",
}  # fmt: skip


def _cheap(key: grammar.SearchKey) -> bool:
    return key.op in _CHEAP_KEYS and all(_cheap(c) for c in key.children)


async def _search(session: ImapSession, req: Request, uid_mode: bool) -> Done | None:
    prog = grammar.parse_search_args(req.args)
    if prog.return_opts is not None:
        raise Bad("SEARCH RETURN is not supported")
    view = _view(session)
    if _cheap(prog.key):
        records: Sequence[MessageRecord] = [
            MessageRecord(u, "", view.flags.get(u, frozenset()), 0, 0, 0) for u in view.uids
        ]
    else:
        got = await _records(session, view, view.uids)
        records = [
            got.get(u) or MessageRecord(u, "", view.flags.get(u, frozenset()), 0, 0, 0)
            for u in view.uids
        ]
    ctx = search.StoreSearchContext(session.ctx.storage, view.mailbox_id, set(view.recent))
    found = await search.run_search(prog.key, records, ctx, uid_mode)
    session.untagged(("SEARCH " + " ".join(map(str, found))).rstrip())
    return None


@command(COMMANDS, "SEARCH", SELECTED, expunge_ok=False)
async def search_(session: ImapSession, req: Request) -> Done | None:
    return await _search(session, req, uid_mode=False)


@command(COMMANDS, "UID SEARCH", SELECTED, expunge_ok=False)
async def uid_search(session: ImapSession, req: Request) -> Done | None:
    return await _search(session, req, uid_mode=True)


# -- FETCH -------------------------------------------------------------------------


async def _fetch(session: ImapSession, req: Request, uid_mode: bool) -> Done | None:
    fa = grammar.parse_fetch_args(req.args)
    if fa.changedsince is not None or fa.vanished:
        raise Bad("FETCH modifiers need CONDSTORE, which is not enabled")
    view = _view(session)
    try:
        targets = _targets(view, fa.sequence, uid_mode)
    except grammar.SequenceError as e:
        raise Bad(str(e), "CLIENTBUG") from None
    items = list(fa.items)
    storage = session.ctx.storage
    uids = [u for _, u in targets if view.live(u)]
    newly_seen: set[int] = set()
    if uids and fetch.sets_seen(items) and not view.read_only:
        unseen = [u for u in uids if SEEN not in view.flags.get(u, ())]
        if unseen:
            changed = await storage.messages.store_flags(
                view.mailbox_id, unseen, [SEEN], FlagMode.ADD
            )
            view.note_flags(changed)
            newly_seen = {r.uid for r in changed}
    records = await _records(session, view, uids) if uids else {}
    with_flags = [*items, grammar.FetchItem("FLAGS")]
    asks_flags = any(it.name == "FLAGS" for it in items)
    content = fetch.needs_content(items)
    cache: dict[str, StoredMessage] = {}

    async def render(
        seq: int, rec: MessageRecord, its: list[grammar.FetchItem], flags: set[str]
    ) -> bytes:
        stored = None
        read_range = None
        if content:
            stored = cache.get(rec.message_id)
            if stored is None:
                stored = await storage.messages.get_message(rec.message_id)
                cache[rec.message_id] = stored
            read_range = _reader(storage, stored.blob_key)
        return await fetch.render_fetch(its, seq, rec, stored, read_range, uid_mode, flags=flags)

    # Render a few messages ahead (store reads overlap in the thread pool)
    # but send strictly in order; few when whole bodies may be large.
    window = _FETCH_WINDOW_BODIES if _reads_bodies(items) else _FETCH_WINDOW
    pending: deque[defer.Deferred[bytes]] = deque()
    missing = 0
    try:
        for seq, uid in targets:
            rec = records.get(uid)
            if rec is None or not view.live(uid):
                missing += 1
                continue
            its = with_flags if (uid in newly_seen and not asks_flags) else items
            flags = set(rec.flags)
            if uid in view.recent:
                flags.add(RECENT)
            if asks_flags or uid in newly_seen:
                view.flags[uid] = rec.flags
                view.pending_flags.discard(uid)
            if not content:
                session.send(await render(seq, rec, its, flags))
                continue
            pending.append(defer.Deferred.fromCoroutine(render(seq, rec, its, flags)))
            if len(pending) >= window:
                session.send(await pending.popleft())
                await session.drain()
        while pending:
            session.send(await pending.popleft())
            await session.drain()
    finally:
        for d in pending:  # after an error: do not leave failures unhandled
            d.addErrback(lambda _f: None)
    if missing and missing == len(targets):
        raise No("The requested messages were expunged", "EXPUNGEISSUED")
    return None


#: FETCH renders this many messages ahead of the one being sent
_FETCH_WINDOW = 16
#: ... or this many when whole bodies or parts are asked for (memory)
_FETCH_WINDOW_BODIES = 2


def _reads_bodies(items: Sequence[grammar.FetchItem]) -> bool:
    for it in items:
        if it.name in ("RFC822", "RFC822.TEXT"):
            return True
        if it.name == "BODY" and it.section is not None and it.partial is None:
            if it.section.text not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "MIME"):
                return True
    return False


def _reader(storage: Any, key: str) -> fetch.ReadRange:
    async def read(start: int, end: int) -> bytes:
        return await storage.blobs.get_range(key, start, end)

    return read


@command(COMMANDS, "FETCH", SELECTED, expunge_ok=False)
async def fetch_(session: ImapSession, req: Request) -> Done | None:
    return await _fetch(session, req, uid_mode=False)


@command(COMMANDS, "UID FETCH", SELECTED, expunge_ok=False)
async def uid_fetch(session: ImapSession, req: Request) -> Done | None:
    return await _fetch(session, req, uid_mode=True)


# -- STORE -------------------------------------------------------------------------


async def _store(session: ImapSession, req: Request, uid_mode: bool) -> Done | None:
    sa = grammar.parse_store_args(req.args)
    if sa.unchanged_since is not None:
        raise Bad("UNCHANGEDSINCE needs CONDSTORE, which is not enabled")
    view = _view(session)
    if view.read_only:
        raise No("Mailbox is read-only", "CANNOT")
    try:
        targets = _targets(view, sa.sequence, uid_mode)
    except grammar.SequenceError as e:
        raise Bad(str(e), "CLIENTBUG") from None
    live = [(s, u) for s, u in targets if view.live(u)]
    if live:
        changed = await session.ctx.storage.messages.store_flags(
            view.mailbox_id, [u for _, u in live], sa.flags, sa.mode
        )
        view.note_flags(changed)
    if not sa.silent:
        for seq, uid in live:
            item = b"FLAGS " + format_flags(view.flags_of(uid))
            if uid_mode:
                item = b"UID %d " % uid + item
            session.send(b"* %d FETCH (%s)\r\n" % (seq, item))
    if len(live) < len(targets):
        raise No("Some of the messages were expunged", "EXPUNGEISSUED")
    return None


@command(COMMANDS, "STORE", SELECTED, expunge_ok=False)
async def store(session: ImapSession, req: Request) -> Done | None:
    return await _store(session, req, uid_mode=False)


@command(COMMANDS, "UID STORE", SELECTED, expunge_ok=False)
async def uid_store(session: ImapSession, req: Request) -> Done | None:
    return await _store(session, req, uid_mode=True)


# -- COPY / MOVE -------------------------------------------------------------------


async def _copy_or_move(session: ImapSession, req: Request, uid_mode: bool, move: bool) -> Done:
    expect_args(req.args, 2, req.name)
    seqset = grammar.parse_sequence_set(req.args[0])
    dest = grammar.mailbox_name(req.args[1])
    view = _view(session)
    if move and view.read_only:
        raise No("Mailbox is read-only", "CANNOT")
    try:
        targets = _targets(view, seqset, uid_mode)
    except grammar.SequenceError as e:
        raise Bad(str(e), "CLIENTBUG") from None
    storage = session.ctx.storage
    info = await storage.mailboxes.get_mailbox(session.account, dest)
    if info is None:
        raise No("Destination mailbox does not exist", "TRYCREATE")
    uids = [u for _, u in targets if view.live(u)]
    verb = "MOVE" if move else "COPY"
    if len(uids) < len(targets) and not uid_mode:
        raise No("Some of the messages were expunged", "EXPUNGEISSUED")
    if not uids:
        return Done(f"{verb} completed, no messages")
    try:
        if move:
            pairs = await storage.messages.move(view.mailbox_id, uids, info.id)
        else:
            pairs = await storage.messages.copy(view.mailbox_id, uids, info.id)
    except MailboxNotFound:
        raise No("Destination mailbox does not exist", "TRYCREATE") from None
    except QuotaExceeded:
        raise No("Quota exceeded", "OVERQUOTA") from None
    if not pairs:
        return Done(f"{verb} completed, no messages")
    src_set = compact_set(s for s, _ in pairs)
    dst_set = compact_set(d for _, d in pairs)
    code = f"COPYUID {info.uidvalidity} {src_set} {dst_set}"
    if not move:
        return Done("COPY completed", code)
    # RFC 6851 3.3: COPYUID in an untagged OK before the EXPUNGEs.
    session.untagged(f"OK [{code}] Moved")
    view.note_expunged(s for s, _ in pairs)
    return Done("MOVE completed")


@command(COMMANDS, "COPY", SELECTED)
async def copy(session: ImapSession, req: Request) -> Done | None:
    return await _copy_or_move(session, req, uid_mode=False, move=False)


@command(COMMANDS, "UID COPY", SELECTED)
async def uid_copy(session: ImapSession, req: Request) -> Done | None:
    return await _copy_or_move(session, req, uid_mode=True, move=False)


@command(COMMANDS, "MOVE", SELECTED)
async def move(session: ImapSession, req: Request) -> Done | None:
    return await _copy_or_move(session, req, uid_mode=False, move=True)


@command(COMMANDS, "UID MOVE", SELECTED)
async def uid_move(session: ImapSession, req: Request) -> Done | None:
    return await _copy_or_move(session, req, uid_mode=True, move=True)


__all__ = ["COMMANDS"]
