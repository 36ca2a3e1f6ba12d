"""Commands valid in any state (RFC 3501 6.1) plus ID (RFC 2971), ENABLE
(RFC 5161), NAMESPACE (RFC 2342) and IDLE (RFC 2177)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer

from mailserver import __version__ as _version
from mailserver.imap import encoder
from mailserver.imap.commands_base import ANY, AUTH, Bad, CommandSpec, Done, State, command
from mailserver.imap.receiver import Atom, Request

if TYPE_CHECKING:
    from mailserver.imap.session import ImapSession

COMMANDS: dict[str, CommandSpec] = {}

#: Extensions ENABLE can turn on.  None of our advertised capabilities needs
#: enabling yet (CONDSTORE/QRESYNC/UTF8=ACCEPT are not offered), so ENABLE
#: answers with an empty ENABLED list as RFC 5161 requires.
ENABLEABLE: frozenset[str] = frozenset()


@command(COMMANDS, "CAPABILITY", ANY)
async def capability(session: ImapSession, req: Request) -> Done | None:
    if req.args:
        raise Bad("CAPABILITY takes no arguments")
    session.untagged("CAPABILITY " + " ".join(session.capabilities()))
    return None


@command(COMMANDS, "NOOP", ANY, poll=True)
async def noop(session: ImapSession, req: Request) -> Done | None:
    if req.args:
        raise Bad("NOOP takes no arguments")
    return None


@command(COMMANDS, "LOGOUT", ANY)
async def logout(session: ImapSession, req: Request) -> Done | None:
    if req.args:
        raise Bad("LOGOUT takes no arguments")
    session.untagged("BYE Logging out")
    session.logout()
    return Done("LOGOUT completed")


@command(COMMANDS, "ID", ANY)
async def id_(session: ImapSession, req: Request) -> Done | None:
    """RFC 2971: the client's parameters are only checked for syntax."""
    if len(req.args) != 1 or not (req.args[0] is None or isinstance(req.args[0], list)):
        raise Bad("ID expects NIL or a parameter list")
    params = req.args[0]
    if params is not None:
        if len(params) % 2 or len(params) > 60:
            raise Bad("ID parameter list must hold at most 30 field/value pairs")
        for i, v in enumerate(params):
            if i % 2 == 0 and not isinstance(v, bytes):
                raise Bad("ID field names must be strings")
            if i % 2 == 1 and v is not None and not isinstance(v, bytes):
                raise Bad("ID values must be strings or NIL")
    session.untagged(
        b"ID ("
        + encoder.quoted("name")
        + b" "
        + encoder.quoted("mailserver")
        + b" "
        + encoder.quoted("version")
        + b" "
        + encoder.quoted(_version)
        + b")"
    )
    return None


@command(COMMANDS, "ENABLE", frozenset({State.AUTHENTICATED}))
async def enable(session: ImapSession, req: Request) -> Done | None:
    """RFC 5161: valid only in the authenticated state (before SELECT)."""
    if not req.args:
        raise Bad("ENABLE needs at least one capability")
    newly: list[str] = []
    for a in req.args:
        if not isinstance(a, Atom) or a.section is not None:
            raise Bad("ENABLE takes capability names")
        cap = a.upper()
        if cap in ENABLEABLE and cap not in session.enabled:
            session.enabled.add(cap)
            newly.append(cap)
    session.untagged(("ENABLED " + " ".join(newly)).rstrip())
    return None


@command(COMMANDS, "NAMESPACE", AUTH)
async def namespace(session: ImapSession, req: Request) -> Done | None:
    if req.args:
        raise Bad("NAMESPACE takes no arguments")
    session.untagged('NAMESPACE (("" "/")) NIL NIL')
    return None


@command(COMMANDS, "IDLE", AUTH, poll=True)
async def idle(session: ImapSession, req: Request) -> Done | None:
    """RFC 2177: send updates as they happen until the client says DONE."""
    if req.args:
        raise Bad("IDLE takes no arguments")
    wake: list[defer.Deferred[None]] = []
    running = [True]

    async def push() -> None:
        # Anything that arrived before IDLE first.
        await session.sync_selected(allow_expunge=True, poll=True)
        while running[0] and session.selected is not None:
            d: defer.Deferred[None] = defer.Deferred()
            wake.append(d)
            await d
            if not running[0]:
                break
            await session.sync_selected(allow_expunge=True)

    def on_change() -> None:
        waiters = list(wake)
        wake.clear()
        for d in waiters:
            d.callback(None)

    session.send(b"+ idling\r\n")
    pusher = None
    if session.selected is not None:
        session.set_idle_listener(on_change)
        pusher = defer.Deferred.fromCoroutine(push())
    try:
        line = await session.read_line()
    finally:
        running[0] = False
        session.set_idle_listener(None)
        on_change()
        if pusher is not None:
            await pusher
    if line.strip().upper() != b"DONE":
        raise Bad("Expected DONE to end IDLE")
    return Done("IDLE terminated")
