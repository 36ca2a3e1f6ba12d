"""Authenticated-state commands on mailboxes (RFC 3501 6.3): SELECT,
EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST (with
SPECIAL-USE and CHILDREN attributes), LSUB, STATUS, APPEND (with UIDPLUS
APPENDUID), and the mailbox name handling they share."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from mailserver.delivery import INLINE_LIMIT
from mailserver.imap import encoder, grammar
from mailserver.imap.commands_base import AUTH, Bad, CommandSpec, Done, No, command, expect_args
from mailserver.imap.receiver import Request
from mailserver.imap.selected import SelectedMailbox
from mailserver.store.interfaces import (
    DELIMITER,
    DeliveryTarget,
    InvalidMailboxName,
    MailboxExists,
    MailboxHasChildren,
    MailboxInfo,
    MailboxNotFound,
    QuotaExceeded,
    StoredMessage,
)
from mailserver.threads import run_blocking

if TYPE_CHECKING:
    from mailserver.imap.session import ImapSession

COMMANDS: dict[str, CommandSpec] = {}

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def _account(session: ImapSession) -> str:
    assert session.account is not None
    return session.account


def _name(tok: Any) -> str:
    return grammar.mailbox_name(tok)


async def _mailbox(session: ImapSession, name: str) -> MailboxInfo:
    info = await session.ctx.storage.mailboxes.get_mailbox(_account(session), name)
    if info is None:
        raise No(f"Mailbox does not exist: {name[:200]}", "NONEXISTENT")
    return info


# -- SELECT / EXAMINE ----------------------------------------------------------


async def _open(session: ImapSession, req: Request, read_only: bool) -> Done:
    expect_args(req.args, 1, req.name)
    name = _name(req.args[0])
    # RFC 3501 6.3.1: a SELECT while selected first deselects, even if the
    # new SELECT then fails.
    session.deselect()
    storage = session.ctx.storage
    info = await _mailbox(session, name)
    # SELECT claims \Recent (RFC 3501 2.3.2); EXAMINE only shows what is
    # still unclaimed and leaves it so (6.3.2).
    if read_only:
        floor = info.recent_watermark
    else:
        floor = await storage.mailboxes.claim_recent(info.id)
    records = await storage.messages.list_messages(info.id)
    unseen = await storage.messages.unseen_uids(info.id)
    view = SelectedMailbox.open(info, records, read_only, floor)
    if records:
        view.uidnext = max(view.uidnext, records[-1].uid + 1)
    session.select(view)
    session.mark_dirty()  # changes between our reads and subscribing
    flags = list(SYSTEM_FLAGS) + sorted(view.keywords)
    session.untagged(b"FLAGS " + encoder.flag_list(flags))
    session.untagged(b"%d EXISTS" % view.exists)
    session.untagged(b"%d RECENT" % len(view.recent))
    first_unseen = view.first_unseen_from(unseen)
    if first_unseen is not None:
        session.untagged(b"OK [UNSEEN %d] First unseen message" % first_unseen)
    if read_only:
        session.untagged(b"OK [PERMANENTFLAGS ()] No permanent flags in read-only mode")
    else:
        perm = encoder.flag_list(flags)[:-1] + b" \\*)"
        session.untagged(b"OK [PERMANENTFLAGS %s] Flags permitted" % perm)
    session.untagged(b"OK [UIDVALIDITY %d] UIDs valid" % view.uidvalidity)
    session.untagged(b"OK [UIDNEXT %d] Predicted next UID" % view.uidnext)
    if read_only:
        return Done(f"{req.name} completed", "READ-ONLY")
    return Done(f"{req.name} completed", "READ-WRITE")


@command(COMMANDS, "SELECT", AUTH)
async def select(session: ImapSession, req: Request) -> Done | None:
    return await _open(session, req, read_only=False)


@command(COMMANDS, "EXAMINE", AUTH)
async def examine(session: ImapSession, req: Request) -> Done | None:
    return await _open(session, req, read_only=True)


# -- CREATE / DELETE / RENAME ------------------------------------------------


@command(COMMANDS, "CREATE", AUTH)
async def create(session: ImapSession, req: Request) -> Done | None:
    expect_args(req.args, 1, "CREATE")
    name = _name(req.args[0])
    if name.rstrip(DELIMITER) == "INBOX":
        raise No("INBOX always exists", "ALREADYEXISTS")
    try:
        await session.ctx.storage.mailboxes.create_mailbox(_account(session), name)
    except MailboxExists:
        raise No("Mailbox already exists", "ALREADYEXISTS") from None
    except InvalidMailboxName:
        raise No("Invalid mailbox name", "CANNOT") from None
    return None


@command(COMMANDS, "DELETE", AUTH)
async def delete(session: ImapSession, req: Request) -> Done | None:
    expect_args(req.args, 1, "DELETE")
    name = _name(req.args[0])
    if name == "INBOX":
        raise No("INBOX cannot be deleted", "CANNOT")
    if session.selected is not None and session.selected.name == name:
        session.deselect()
    try:
        await session.ctx.storage.mailboxes.delete_mailbox(_account(session), name)
    except MailboxNotFound:
        raise No("Mailbox does not exist", "NONEXISTENT") from None
    except MailboxHasChildren:
        raise No("Mailbox has inferior hierarchical names", "INUSE") from None
    except InvalidMailboxName:
        raise No("Mailbox cannot be deleted", "CANNOT") from None
    return None


@command(COMMANDS, "RENAME", AUTH)
async def rename(session: ImapSession, req: Request) -> Done | None:
    expect_args(req.args, 2, "RENAME")
    old = _name(req.args[0])
    new = _name(req.args[1])
    if new == "INBOX":
        raise No("Cannot rename to INBOX", "ALREADYEXISTS")
    try:
        await session.ctx.storage.mailboxes.rename_mailbox(_account(session), old, new)
    except MailboxNotFound:
        raise No("Mailbox does not exist", "NONEXISTENT") from None
    except MailboxExists:
        raise No("Target mailbox already exists", "ALREADYEXISTS") from None
    except InvalidMailboxName:
        raise No("Invalid mailbox name", "CANNOT") from None
    if session.selected is not None and session.selected.name == old and old != "INBOX":
        session.selected.name = new
    return None


# -- SUBSCRIBE / UNSUBSCRIBE ---------------------------------------------------


@command(COMMANDS, "SUBSCRIBE", AUTH)
async def subscribe(session: ImapSession, req: Request) -> Done | None:
    expect_args(req.args, 1, "SUBSCRIBE")
    name = _name(req.args[0])
    await _mailbox(session, name)  # RFC 3501 6.3.6: may check that it exists
    try:
        await session.ctx.storage.mailboxes.set_subscribed(_account(session), name, True)
    except InvalidMailboxName:
        raise No("Invalid mailbox name", "CANNOT") from None
    return None


@command(COMMANDS, "UNSUBSCRIBE", AUTH)
async def unsubscribe(session: ImapSession, req: Request) -> Done | None:
    expect_args(req.args, 1, "UNSUBSCRIBE")
    name = _name(req.args[0])
    try:
        await session.ctx.storage.mailboxes.set_subscribed(_account(session), name, False)
    except InvalidMailboxName:
        raise No("Invalid mailbox name", "CANNOT") from None
    return None


# -- LIST / LSUB ---------------------------------------------------------------


def _ancestors(name: str) -> list[str]:
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


def _sort_key(name: str) -> tuple[int, str]:
    return (0 if name == "INBOX" else 1, name)


def _list_args(req: Request) -> tuple[str, str]:
    expect_args(req.args, 2, req.name)
    reference = grammar.mailbox_name(req.args[0], normalize_inbox=False)
    pattern = grammar.mailbox_name(req.args[1], normalize_inbox=False)
    return reference, pattern


def _list_line(kind: bytes, attrs: list[str], name: str) -> bytes:
    return (
        kind
        + b" ("
        + " ".join(attrs).encode("ascii")
        + b') "'
        + DELIMITER.encode()
        + b'" '
        + encoder.mailbox(name)
    )


def _options(tok: Any, what: str) -> list[Any]:
    if not isinstance(tok, list):
        raise Bad(f"LIST {what} options must be a parenthesized list")
    return tok


def _parse_list(req: Request) -> tuple[set[str], str, list[str], set[str], list[str]]:
    """Base LIST and the RFC 5258 extended form: ``LIST [(select-opts)]
    reference pattern|(patterns) [RETURN (return-opts)]``.  Returns
    (selection options, reference, patterns, return options, STATUS items)."""
    args = list(req.args)
    select: set[str] = set()
    if args and isinstance(args[0], list):
        select = {str(t).upper() for t in _options(args.pop(0), "selection")}
    if len(args) not in (2, 4):
        raise Bad("LIST expects a reference and a mailbox pattern")
    reference = grammar.mailbox_name(args[0], normalize_inbox=False)
    pats = args[1] if isinstance(args[1], list) else [args[1]]
    patterns = [grammar.mailbox_name(p, normalize_inbox=False) for p in pats]
    returns: set[str] = set()
    status_items: list[str] = []
    if len(args) == 4:
        if str(args[2]).upper() != "RETURN":
            raise Bad("Expected RETURN")
        opts = _options(args[3], "return")
        i = 0
        while i < len(opts):
            opt = str(opts[i]).upper()
            if opt == "STATUS" and i + 1 < len(opts):
                status_items = grammar.parse_status_items(opts[i + 1])
                i += 2
                continue
            returns.add(opt)
            i += 1
    return select, reference, patterns, returns, status_items


@command(COMMANDS, "LIST", AUTH)
async def list_(session: ImapSession, req: Request) -> Done | None:
    select, reference, patterns, returns, status_items = _parse_list(req)
    if patterns == [""]:
        # RFC 3501 6.3.8: the hierarchy delimiter and root of the reference
        root = reference.split(DELIMITER, 1)[0] + DELIMITER if DELIMITER in reference else ""
        session.untagged(b'LIST (\\Noselect) "/" ' + encoder.mailbox(root))
        return None
    matchers = [grammar.list_matcher(reference, p) for p in patterns if p]
    mailboxes = session.ctx.storage.mailboxes
    boxes = await mailboxes.list_mailboxes(_account(session))
    infos = {b.name: b for b in boxes}
    subscribed: set[str] = set()
    if "SUBSCRIBED" in select or "SUBSCRIBED" in returns:
        subscribed = set(await mailboxes.list_subscriptions(_account(session)))
    with_children: set[str] = set()
    for name in infos:
        with_children.update(_ancestors(name))
    candidates = set(infos) | with_children
    if "SUBSCRIBED" in select:
        candidates = set(subscribed)
    for name in sorted(candidates, key=_sort_key):
        if not any(m(name) for m in matchers):
            continue
        info = infos.get(name)
        if "SPECIAL-USE" in select and (info is None or not info.special_use):
            continue
        attrs: list[str] = []
        if info is None:
            attrs.append("\\NonExistent" if "SUBSCRIBED" in select else "\\Noselect")
        attrs.append("\\HasChildren" if name in with_children else "\\HasNoChildren")
        if info is not None and info.special_use:
            attrs.append(info.special_use)
        if name in subscribed:
            attrs.append("\\Subscribed")
        session.untagged(_list_line(b"LIST", attrs, name))
        if status_items and info is not None:
            await _send_status(session, info, status_items)
    return None


@command(COMMANDS, "LSUB", AUTH)
async def lsub(session: ImapSession, req: Request) -> Done | None:
    reference, pattern = _list_args(req)
    if pattern == "":
        session.untagged(b'LSUB (\\Noselect) "/" ""')
        return None
    match = grammar.list_matcher(reference, pattern)
    subs = set(await session.ctx.storage.mailboxes.list_subscriptions(_account(session)))
    shown: dict[str, list[str]] = {}
    for name in subs:
        if match(name):
            shown[name] = []
    if "%" in pattern:
        # RFC 3501 6.3.9: a "%" level with subscribed inferiors but not
        # itself subscribed is listed \Noselect.
        for name in subs:
            for anc in _ancestors(name):
                if anc not in subs and anc not in shown and match(anc):
                    shown[anc] = ["\\Noselect"]
    for name in sorted(shown, key=_sort_key):
        session.untagged(_list_line(b"LSUB", shown[name], name))
    return None


# -- STATUS --------------------------------------------------------------------


@command(COMMANDS, "STATUS", AUTH)
async def status(session: ImapSession, req: Request) -> Done | None:
    expect_args(req.args, 2, "STATUS")
    name = _name(req.args[0])
    items = grammar.parse_status_items(req.args[1])
    info = await _mailbox(session, name)
    await _send_status(session, info, items)
    return None


async def _send_status(session: ImapSession, info: MailboxInfo, items: list[str]) -> None:
    """``* STATUS name (...)`` from the mailbox's counters (no scan)."""
    out: list[bytes] = []
    for item in items:
        if item == "MESSAGES":
            value = info.messages
        elif item == "RECENT":
            value = await _recent_count(session, info)
        elif item == "UIDNEXT":
            value = info.uidnext
        elif item == "UIDVALIDITY":
            value = info.uidvalidity
        elif item == "UNSEEN":
            value = info.unseen
        elif item == "HIGHESTMODSEQ":
            value = info.highestmodseq
        elif item == "SIZE":
            value = info.size
        else:  # pragma: no cover - grammar rejects others
            raise Bad(f"Unknown status item {item}")
        out.append(b"%s %d" % (item.encode(), value))
    session.untagged(b"STATUS " + encoder.mailbox(info.name) + b" (" + b" ".join(out) + b")")


async def _recent_count(session: ImapSession, info: MailboxInfo) -> int:
    view = session.selected
    if view is not None and view.mailbox_id == info.id:
        return len(view.recent)
    if info.recent_watermark >= info.uidnext:
        return 0
    recs = await session.ctx.storage.messages.list_messages(info.id, info.recent_watermark)
    return len(recs)


# -- APPEND ----------------------------------------------------------------------


_BARE_EOL = re.compile(rb"\r\n|\r|\n")


def crlf_normalize(raw: bytes) -> bytes:
    """Line ends as CRLF (RFC 5322 2.3): clients sometimes APPEND bare LF,
    and RFC822.SIZE and POP3 octet counts must match the bytes we serve."""
    if raw.count(b"\n") == raw.count(b"\r\n") == raw.count(b"\r"):
        return raw
    return _BARE_EOL.sub(b"\r\n", raw)


async def ingest(ctx: Any, raw: bytes) -> StoredMessage:
    """Store an APPENDed message's content durably (blob + content row)."""
    if len(raw) > INLINE_LIMIT:
        raw = await run_blocking(crlf_normalize, raw)
    else:
        raw = crlf_normalize(raw)
    return await ctx.delivery.ingest(raw)


@command(COMMANDS, "APPEND", AUTH)
async def append(session: ImapSession, req: Request) -> Done | None:
    args = grammar.parse_append_args(req.args)
    name = _name(args.mailbox)
    if len(args.message) > session.max_message_size:
        raise No("Message too big", "TOOBIG")
    if not args.message:
        raise No("Empty message", "CANNOT")
    storage = session.ctx.storage
    info = await storage.mailboxes.get_mailbox(_account(session), name)
    if info is None:
        raise No("Mailbox does not exist", "TRYCREATE")
    stored = await ingest(session.ctx, args.message)
    target = DeliveryTarget(info.id, frozenset(args.flags), args.date)
    try:
        records = await storage.messages.deliver(stored, [target])
    except MailboxNotFound:
        raise No("Mailbox does not exist", "TRYCREATE") from None
    except QuotaExceeded:
        raise No("Quota exceeded", "OVERQUOTA") from None
    uid = records[0].uid
    return Done("APPEND completed", f"APPENDUID {info.uidvalidity} {uid}")
