"""Not-authenticated state: STARTTLS, LOGIN, AUTHENTICATE PLAIN with SASL-IR
(RFC 3501 6.2, RFC 4959, RFC 4616), with RFC 5530 response codes."""

from __future__ import annotations

import binascii
from typing import TYPE_CHECKING

from twisted.python import log

from mailserver.accounts import Throttled
from mailserver.imap import grammar
from mailserver.imap.commands_base import ANSWERED, NOT_AUTH, Bad, CommandSpec, Done, No, command
from mailserver.imap.receiver import Atom, Request

if TYPE_CHECKING:
    from mailserver.imap.session import ImapSession

COMMANDS: dict[str, CommandSpec] = {}


@command(COMMANDS, "STARTTLS", NOT_AUTH)
async def starttls(session: ImapSession, req: Request) -> Done | None:
    if req.args:
        raise Bad("STARTTLS takes no arguments")
    if session.secure:
        raise Bad("TLS is already active", "CLIENTBUG")
    if not session.io.tls_available:
        raise No("TLS is not available", "UNAVAILABLE")
    # Answer first, in plaintext, then switch; anything the client pipelined
    # after STARTTLS is dropped (RFC 3501 6.2.1, CVE-2011-0411 class of bugs).
    session.tagged(req.tag, "OK", "Begin TLS negotiation now")
    session.start_tls()
    return ANSWERED


async def _check_login(session: ImapSession, username: str, password: str) -> Done:
    try:
        account = await session.ctx.auth.authenticate(username, password, session.remote_ip)
    except Throttled:
        raise No("Too many failed logins, try again later", "UNAVAILABLE") from None
    if account is None:
        log.msg(f"imap: failed login for {username!r} from {session.remote_ip}")
        raise No("Invalid credentials", "AUTHENTICATIONFAILED")
    session.logged_in(account.address)
    return Done("Logged in", "CAPABILITY " + " ".join(session.capabilities()))


@command(COMMANDS, "LOGIN", NOT_AUTH)
async def login(session: ImapSession, req: Request) -> Done | None:
    if len(req.args) != 2:
        raise Bad("LOGIN expects a user name and a password")
    user = grammar.astring(req.args[0])
    password = grammar.astring(req.args[1])
    if not session.plaintext_auth_allowed:
        raise No("Use STARTTLS before LOGIN", "PRIVACYREQUIRED")
    try:
        u, p = user.decode("utf-8"), password.decode("utf-8")
    except UnicodeDecodeError:
        raise No("Invalid credentials", "AUTHENTICATIONFAILED") from None
    return await _check_login(session, u, p)


@command(COMMANDS, "AUTHENTICATE", NOT_AUTH)
async def authenticate(session: ImapSession, req: Request) -> Done | None:
    if not req.args or len(req.args) > 2 or not isinstance(req.args[0], Atom):
        raise Bad("AUTHENTICATE expects a mechanism name")
    mech = req.args[0].upper()
    if mech != "PLAIN":
        raise No(f"Unsupported mechanism {mech[:20]}", "CANNOT")
    if not session.plaintext_auth_allowed:
        raise No("Use STARTTLS before AUTHENTICATE PLAIN", "PRIVACYREQUIRED")
    if len(req.args) == 2:
        # SASL-IR (RFC 4959): "=" is an empty initial response
        tok = req.args[1]
        if not isinstance(tok, (Atom, bytes)) or isinstance(tok, list):
            raise Bad("Invalid initial response")
        response = bytes(str(tok), "ascii", "replace") if isinstance(tok, Atom) else bytes(tok)
        if response == b"=":
            response = b""
    else:
        session.send(b"+ \r\n")
        response = (await session.read_line()).strip()
        if response == b"*":
            raise Bad("Authentication cancelled")
    try:
        decoded = binascii.a2b_base64(response) if response else b""
    except binascii.Error:
        raise Bad("Invalid base64 in AUTHENTICATE response") from None
    parts = decoded.split(b"\0")
    if len(parts) != 3:
        raise No("Malformed PLAIN response", "AUTHENTICATIONFAILED")
    authzid, authcid, password = parts
    try:
        authz, user, pw = authzid.decode(), authcid.decode(), password.decode()
    except UnicodeDecodeError:
        raise No("Invalid credentials", "AUTHENTICATIONFAILED") from None
    if authz and authz.lower() != user.lower():
        raise No("Acting as another user is not allowed", "AUTHORIZATIONFAILED")
    return await _check_login(session, user, pw)
