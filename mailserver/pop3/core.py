"""Sans-I/O POP3 server core (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS,
RFC 5034 SASL PLAIN, RFC 3206 response codes).

Bytes in, events out; no socket, no reactor, no storage.  The driver (the
Twisted protocol, or a test) feeds bytes with ``receive_data`` and calls
``next_event`` until it returns ``NEED_DATA``:

- ``Send(data)``: write these bytes.
- ``Authenticate(username, password)``: check credentials, lock and open the
  maildrop, then call ``auth_result``.
- ``Fetch(number, entry, top_lines, mark_seen)``: read the message, then call
  ``message_data(raw)`` or ``fetch_failed``.
- ``StartTLS()``: the ``+OK`` was already sent; start TLS, then call
  ``tls_started``.
- ``Update(deleted)``: the client said QUIT in TRANSACTION; expunge the given
  entries, then call ``update_done``.
- ``Close()``: close the connection after writing everything sent so far.

While an event that needs an answer is outstanding the core does not parse
further commands (they stay buffered: that is PIPELINING, RFC 2449 6.6).

Message sizes: the core announces ``MaildropEntry.size`` in STAT/LIST and
sends the message converted to CRLF line endings (``normalize_crlf``); the
maildrop must therefore give sizes computed with ``crlf_size`` (see
docs/decisions/0005-pop3.md).
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: RFC 2449 4: a command line is at most 255 octets including the CRLF.
MAX_COMMAND_LINE = 255
#: A SASL continuation line (base64 of "authzid NUL authcid NUL password").
MAX_AUTH_LINE = 8192
#: Syntax errors (unknown command, bad argument, overlong line) tolerated
#: before the session is dropped.
MAX_ERRORS = 10
#: Failed authentications tolerated per session before it is dropped.
MAX_AUTH_FAILURES = 3
#: Octets of one overlong line we discard before giving up on the client.
MAX_DISCARD = 1 << 20


class State(enum.Enum):
    """RFC 1939 session states (plus the end of the session)."""

    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"
    CLOSED = "CLOSED"


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: ``next_event`` result when more input is needed.
NEED_DATA: Any = _NeedData()


@dataclass(frozen=True)
class MaildropEntry:
    """One message of the maildrop as POP3 sees it.

    ``size``: octets of the CRLF-normalized message (what RETR sends before
    byte-stuffing); ``uidl``: unique-id listing (RFC 1939 7); ``key``: opaque
    to the core, the backend's handle (e.g. the IMAP UID).
    """

    size: int
    uidl: str
    key: Any = None


class AuthOutcome(enum.Enum):
    """What the driver found out about an ``Authenticate`` request."""

    OK = "ok"  # credentials good, maildrop locked and opened
    BAD = "bad"  # wrong credentials / unknown user / disabled
    THROTTLED = "throttled"  # too many failures recently: retry later
    IN_USE = "in-use"  # another POP3 session holds the maildrop
    TEMP_FAIL = "temp-fail"  # storage trouble, retry later
    PERM_FAIL = "perm-fail"  # the maildrop cannot be opened at all


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class Authenticate:
    username: str
    password: str
    mechanism: str  # "USER" or "PLAIN"


@dataclass(frozen=True)
class Fetch:
    number: int
    entry: MaildropEntry
    top_lines: int | None  # None: RETR (whole message)
    mark_seen: bool


@dataclass(frozen=True)
class StartTLS:
    pass


@dataclass(frozen=True)
class Update:
    deleted: tuple[MaildropEntry, ...]


@dataclass(frozen=True)
class Close:
    pass


Event = Send | Authenticate | Fetch | StartTLS | Update | Close


# ------------------------------------------------------ message conversion

_BARE_LF = re.compile(rb"(?<!\r)\n")
_LINE_START_DOT = re.compile(rb"(?m)^\.")


def normalize_crlf(raw: bytes) -> bytes:
    """The message as POP3 sends it: bare LF turned into CRLF and a final
    CRLF added if the message does not end with one."""
    if raw.count(b"\n") == raw.count(b"\r\n"):
        data = raw  # the usual case (SMTP stores CRLF): no copy
    else:
        data = _BARE_LF.sub(b"\r\n", raw)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def crlf_size(raw: bytes) -> int:
    """``len(normalize_crlf(raw))`` without building the copy."""
    if not raw:
        return 0
    size = len(raw) + raw.count(b"\n") - raw.count(b"\r\n")
    if not raw.endswith(b"\n"):
        size += 2
    return size


def byte_stuff(data: bytes) -> bytes:
    """RFC 1939 3: prefix every line that starts with "." with another "."
    (``data`` is CRLF-normalized and ends with CRLF or is empty)."""
    if not data.startswith(b".") and b"\n." not in data:
        return data
    return _LINE_START_DOT.sub(b"..", data)


def top_of(data: bytes, lines: int) -> bytes:
    """TOP: the header, the blank line, then ``lines`` body lines of a
    CRLF-normalized message (all of it if it is shorter)."""
    if data.startswith(b"\r\n"):
        end = 2
    else:
        sep = data.find(b"\r\n\r\n")
        if sep < 0:
            return data
        end = sep + 4
    if lines >= data.count(b"\r\n", end):  # the common "TOP n 99999999"
        return data
    pos = end
    for _ in range(lines):
        nl = data.find(b"\r\n", pos)
        if nl < 0:
            return data
        pos = nl + 2
    return data[:pos]


# ------------------------------------------------------------------ core


def _ok(text: str = "") -> bytes:
    return b"+OK" + (b" " + text.encode() if text else b"") + b"\r\n"


def _err(text: str, code: str | None = None) -> bytes:
    prefix = f"[{code}] " if code else ""
    return f"-ERR {prefix}{text}\r\n".encode()


def _multiline(first: bytes, lines: Sequence[bytes]) -> bytes:
    return first + b"".join(line + b"\r\n" for line in lines) + b".\r\n"


_Handler = Callable[["POP3Core", list[str]], None]


@dataclass
class _Command:
    handler: _Handler
    states: frozenset[State]


class POP3Core:
    """One POP3 session's protocol state machine.

    ``tls_active``: the connection is already encrypted (implicit TLS port);
    ``tls_available``: STLS can be offered; ``allow_plaintext_auth``:
    USER/PASS and AUTH PLAIN are allowed without TLS (config
    ``accounts.allow_plaintext_auth``).
    """

    #: {COMMAND: (handler, states where it is allowed)}; the one dispatch
    #: table.  Filled in below the class body.
    COMMANDS: dict[str, _Command] = {}

    def __init__(
        self,
        *,
        hostname: str = "localhost",
        tls_active: bool = False,
        tls_available: bool = False,
        allow_plaintext_auth: bool = False,
        implementation: str = "mailserver",
        max_line: int = MAX_COMMAND_LINE,
        max_errors: int = MAX_ERRORS,
        max_auth_failures: int = MAX_AUTH_FAILURES,
    ) -> None:
        self.hostname = hostname
        self.tls_active = tls_active
        self.tls_available = tls_available
        self.allow_plaintext_auth = allow_plaintext_auth
        self.implementation = implementation
        self.max_line = max_line
        self.max_errors = max_errors
        self.max_auth_failures = max_auth_failures

        self.state = State.AUTHORIZATION
        self.errors = 0
        self.auth_failures = 0
        self.username: str | None = None  # authenticated user
        self._user: str | None = None  # argument of USER, waiting for PASS
        self._pending_user: str | None = None  # being authenticated
        self._sasl_pending = False  # AUTH PLAIN sent "+ ", waiting for the response
        self._entries: list[MaildropEntry] = []
        self._deleted: set[int] = set()  # 0-based indexes
        self._buf = bytearray()
        self._pos = 0  # start of the unparsed part of _buf
        self._discarding = 0  # >0: inside an overlong line, octets dropped so far
        self._out: list[Event] = []
        self._waiting: type | None = None  # event class awaiting its answer
        self._fetch: Fetch | None = None
        self._out.append(Send(_ok(f"{hostname} POP3 server ready")))

    # ------------------------------------------------------------ input

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client (discarded after the session ended
        or while STLS is being negotiated)."""
        if self.state is State.CLOSED or self._waiting is StartTLS:
            return
        self._buf += data

    @property
    def buffered(self) -> int:
        """Octets received but not yet parsed (for flow control)."""
        return len(self._buf) - self._pos

    def next_event(self) -> Event | Any:
        """The next thing for the driver to do, or ``NEED_DATA``."""
        while True:
            if self._out:
                return self._out.pop(0)
            if self._waiting is not None:
                raise RuntimeError(f"answer the outstanding {self._waiting.__name__} first")
            if self.state in (State.CLOSED, State.UPDATE):
                return NEED_DATA
            line = self._next_line()
            if line is None:
                if self._out:  # an overlong line was answered
                    continue
                return NEED_DATA
            self._handle_line(line)

    def _next_line(self) -> bytes | None:
        """Next complete line without its CRLF (or LF), ``b""``-safe; None if
        none is complete.  Overlong lines are answered and skipped here."""
        limit = MAX_AUTH_LINE if self._sasl_pending else self.max_line
        buf = self._buf
        while True:
            nl = buf.find(b"\n", self._pos)
            if nl < 0:
                pending = len(buf) - self._pos
                if self._discarding:
                    self._discarding += pending
                    self._compact(len(buf))
                    if self._discarding > MAX_DISCARD:
                        self._fatal("line too long")
                elif pending >= limit:
                    # Answer now (the client may wait for it) and skip the rest.
                    self._discarding = pending
                    self._compact(len(buf))
                    self._too_long()
                return None
            start = self._pos
            end = nl - 1 if nl > start and buf[nl - 1] == 0x0D else nl
            line = bytes(buf[start:end])
            self._compact(nl + 1)
            if self._discarding:
                self._discarding = 0
                continue
            if nl + 1 - start > limit:
                self._too_long()
                if self.state is State.CLOSED:
                    return None
                continue
            return line

    def _compact(self, pos: int) -> None:
        self._pos = pos
        if self._pos > 65536 or self._pos == len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0

    def _too_long(self) -> None:
        if self._sasl_pending:
            self._sasl_pending = False
            self._syntax_error("SASL response too long")
        else:
            self._syntax_error("line too long")

    def _fatal(self, text: str) -> None:
        self._out.append(Send(_err(text)))
        self._close()

    def _close(self) -> None:
        self.state = State.CLOSED
        self._buf.clear()
        self._pos = 0
        self._out.append(Close())

    def _syntax_error(self, text: str) -> None:
        """A protocol error: answer -ERR, keep the session until too many."""
        self.errors += 1
        if self.errors >= self.max_errors:
            self._fatal(f"{text}; too many errors, closing connection")
        else:
            self._out.append(Send(_err(text)))

    def _reply(self, data: bytes) -> None:
        self._out.append(Send(data))

    def _handle_line(self, line: bytes) -> None:
        if self._sasl_pending:
            self._sasl_pending = False
            self._sasl_response(line)
            return
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            # USER/PASS may carry UTF-8; nothing else may.
            text = None
        if text is None:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                self._syntax_error("invalid characters in command")
                return
        name, _, rest = text.partition(" ")
        name = name.upper()
        cmd = self.COMMANDS.get(name)
        if cmd is None or not name.isascii():
            self._syntax_error("unknown command")
            return
        if self.state not in cmd.states:
            self._syntax_error(f"{name} not valid in the {self.state.value} state")
            return
        if name == "PASS":
            args = [rest] if rest else []  # a password may contain spaces
        else:
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
                self._syntax_error("invalid characters in command")
                return
            args = rest.split(" ") if rest else []
            if any(a == "" for a in args):
                self._syntax_error("arguments must be separated by one space")
                return
        cmd.handler(self, args)

    # ---------------------------------------------------- driver answers

    def _expect(self, kind: type) -> None:
        if self._waiting is not kind:
            raise RuntimeError(f"no {kind.__name__} outstanding")
        self._waiting = None

    def auth_result(self, outcome: AuthOutcome, entries: Sequence[MaildropEntry] = ()) -> None:
        """Answer an ``Authenticate`` event; on OK, ``entries`` is the maildrop."""
        self._expect(Authenticate)
        user, self._pending_user = self._pending_user, None
        if outcome is AuthOutcome.OK:
            self.username = user
            self._entries = list(entries)
            self._deleted = set()
            self.state = State.TRANSACTION
            count, size = self._stat()
            self._reply(_ok(f"maildrop has {count} messages ({size} octets)"))
            return
        if outcome is AuthOutcome.IN_USE:
            self._reply(_err("maildrop already locked by another session", "IN-USE"))
        elif outcome is AuthOutcome.THROTTLED:
            self._reply(_err("too many failed logins, try again later", "SYS/TEMP"))
        elif outcome is AuthOutcome.TEMP_FAIL:
            self._reply(_err("maildrop temporarily unavailable", "SYS/TEMP"))
        elif outcome is AuthOutcome.PERM_FAIL:
            self._reply(_err("maildrop cannot be opened", "SYS/PERM"))
        else:
            self.auth_failures += 1
            if self.auth_failures >= self.max_auth_failures:
                self._out.append(Send(_err("authentication failed; closing", "AUTH")))
                self._close()
                return
            self._reply(_err("authentication failed", "AUTH"))

    def message_data(self, raw: bytes) -> None:
        """Answer a ``Fetch`` event with the stored message bytes."""
        self._expect(Fetch)
        fetch, self._fetch = self._fetch, None
        assert fetch is not None
        data = normalize_crlf(raw)
        if fetch.top_lines is None:
            # The true count, even if the listed size was off (a stored
            # message with bare LFs not yet measured, see maildrop.py).
            first = _ok(f"{len(data)} octets")
        else:
            data = top_of(data, fetch.top_lines)
            first = _ok("top of message follows")
        # Three writes rather than one concatenation: a 35 MB message is
        # not copied once more.
        self._reply(first)
        self._reply(byte_stuff(data))
        self._reply(b".\r\n")

    def fetch_failed(self, permanent: bool = False) -> None:
        """Answer a ``Fetch`` event when the message could not be read."""
        self._expect(Fetch)
        self._fetch = None
        if permanent:
            self._reply(_err("message is no longer available", "SYS/PERM"))
        else:
            self._reply(_err("cannot read message now, try again later", "SYS/TEMP"))

    def tls_started(self) -> None:
        """Answer ``StartTLS``: the handshake is under way; forget everything
        learned before (RFC 2595 4)."""
        self._expect(StartTLS)
        self.tls_active = True
        self._user = None
        self._buf.clear()
        self._pos = 0

    def update_done(self, ok: bool = True) -> None:
        """Answer ``Update``: were all deleted messages removed?"""
        self._expect(Update)
        left = len(self._entries) - len(self._deleted)
        if ok:
            note = "maildrop empty" if left == 0 else f"{left} messages left"
            self._reply(_ok(f"{self.hostname} POP3 server signing off ({note})"))
        else:
            self._reply(_err("some deleted messages not removed", "SYS/TEMP"))
        self._close()

    def timeout(self) -> None:
        """The client was idle too long (RFC 1939 3: autologout): close
        without entering the UPDATE state."""
        if self.state is State.CLOSED:
            return
        self._out.append(Send(_err("autologout; idle for too long")))
        self._close()

    # ---------------------------------------------------------- queries

    @property
    def plaintext_auth_allowed(self) -> bool:
        return self.tls_active or self.allow_plaintext_auth

    @property
    def waiting(self) -> bool:
        """An event is outstanding (the driver owes an answer)."""
        return self._waiting is not None

    def entries(self) -> list[MaildropEntry]:
        return list(self._entries)

    def deleted_entries(self) -> list[MaildropEntry]:
        return [self._entries[i] for i in sorted(self._deleted)]

    def _stat(self) -> tuple[int, int]:
        count = len(self._entries) - len(self._deleted)
        size = sum(e.size for i, e in enumerate(self._entries) if i not in self._deleted)
        return count, size

    def capabilities(self) -> list[str]:
        """RFC 2449 capability list; the same in both states (RFC 2449 5)."""
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.plaintext_auth_allowed:
            caps += ["USER", "SASL PLAIN"]
        if self.tls_available and not self.tls_active:
            caps.append("STLS")
        caps += ["EXPIRE NEVER", f"IMPLEMENTATION {self.implementation}"]
        return caps

    def _message_index(self, arg: str) -> int | None:
        """0-based index of a live message, or None after replying -ERR."""
        if not arg.isdigit() or not arg.isascii() or len(arg) > 10:
            self._syntax_error("invalid message number")
            return None
        number = int(arg)
        if number < 1 or number > len(self._entries):
            self._reply(_err(f"no such message, only {len(self._entries)} messages in maildrop"))
            return None
        if number - 1 in self._deleted:
            self._reply(_err(f"message {number} already deleted"))
            return None
        return number - 1

    def _arity(self, args: list[str], low: int, high: int) -> bool:
        if low <= len(args) <= high:
            return True
        self._syntax_error("wrong number of arguments")
        return False

    # --------------------------------------------------------- commands

    def _cmd_capa(self, args: list[str]) -> None:
        if self._arity(args, 0, 0):
            self._reply(
                _multiline(
                    _ok("Capability list follows"), [c.encode() for c in self.capabilities()]
                )
            )

    def _cmd_quit(self, args: list[str]) -> None:
        if not self._arity(args, 0, 0):
            return
        if self.state is State.AUTHORIZATION:
            self._reply(_ok(f"{self.hostname} POP3 server signing off"))
            self._close()
            return
        self.state = State.UPDATE
        self._waiting = Update
        self._out.append(Update(tuple(self.deleted_entries())))

    def _cmd_noop(self, args: list[str]) -> None:
        if self._arity(args, 0, 0):
            self._reply(_ok())

    def _cmd_stls(self, args: list[str]) -> None:
        if not self._arity(args, 0, 0):
            return
        if self.tls_active:
            self._reply(_err("command not permitted when TLS active"))
            return
        if not self.tls_available:
            self._reply(_err("TLS not available"))
            return
        self._reply(_ok("Begin TLS negotiation"))
        # RFC 2595 / CVE-2011-0411: nothing pipelined behind STLS survives.
        self._buf.clear()
        self._pos = 0
        self._waiting = StartTLS
        self._out.append(StartTLS())

    def _plaintext_refused(self) -> bool:
        if self.plaintext_auth_allowed:
            return False
        self._reply(
            _err("plaintext authentication disallowed on non-secure connections; use STLS", "AUTH")
        )
        return True

    def _cmd_user(self, args: list[str]) -> None:
        if not self._arity(args, 1, 1) or self._plaintext_refused():
            return
        self._user = args[0]
        self._reply(_ok("send PASS"))

    def _cmd_pass(self, args: list[str]) -> None:
        if not self._arity(args, 1, 1) or self._plaintext_refused():
            return
        if self._user is None:
            self._reply(_err("USER first"))
            return
        user, self._user = self._user, None
        self._authenticate(user, args[0], "USER")

    def _authenticate(self, user: str, password: str, mechanism: str) -> None:
        self._pending_user = user
        self._waiting = Authenticate
        self._out.append(Authenticate(user, password, mechanism))

    def _cmd_auth(self, args: list[str]) -> None:
        if not args:
            # Pre-RFC 5034 clients (Outlook) list mechanisms this way.
            mechs = [b"PLAIN"] if self.plaintext_auth_allowed else []
            self._reply(_multiline(_ok("SASL mechanisms follow"), mechs))
            return
        if not self._arity(args, 1, 2):
            return
        if args[0].upper() != "PLAIN":
            self._reply(_err("unsupported SASL mechanism"))
            return
        if self._plaintext_refused():
            return
        self._user = None
        if len(args) == 1:
            self._sasl_pending = True
            self._reply(b"+ \r\n")
            return
        self._sasl_response(args[1].encode("ascii", "replace"))

    def _sasl_response(self, line: bytes) -> None:
        if line == b"*":
            self._reply(_err("authentication cancelled"))
            return
        if line == b"=":
            line = b""
        try:
            decoded = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            self._syntax_error("invalid base64 in SASL response")
            return
        parts = decoded.split(b"\0")
        if len(parts) != 3:
            self._reply(_err("malformed PLAIN response", "AUTH"))
            return
        try:
            authzid, authcid, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            self._reply(_err("PLAIN response is not UTF-8", "AUTH"))
            return
        if not authcid or (authzid and authzid != authcid):
            # No proxy authorization: only the authenticated identity itself.
            self._reply(_err("authorization identity not permitted", "AUTH"))
            return
        self._authenticate(authcid, password, "PLAIN")

    def _cmd_stat(self, args: list[str]) -> None:
        if self._arity(args, 0, 0):
            count, size = self._stat()
            self._reply(_ok(f"{count} {size}"))

    def _cmd_list(self, args: list[str]) -> None:
        if not self._arity(args, 0, 1):
            return
        if args:
            i = self._message_index(args[0])
            if i is not None:
                self._reply(_ok(f"{i + 1} {self._entries[i].size}"))
            return
        count, size = self._stat()
        lines = [
            b"%d %d" % (i + 1, e.size)
            for i, e in enumerate(self._entries)
            if i not in self._deleted
        ]
        self._reply(_multiline(_ok(f"{count} messages ({size} octets)"), lines))

    def _cmd_uidl(self, args: list[str]) -> None:
        if not self._arity(args, 0, 1):
            return
        if args:
            i = self._message_index(args[0])
            if i is not None:
                self._reply(_ok(f"{i + 1} {self._entries[i].uidl}"))
            return
        lines = [
            b"%d %s" % (i + 1, e.uidl.encode())
            for i, e in enumerate(self._entries)
            if i not in self._deleted
        ]
        self._reply(_multiline(_ok(), lines))

    def _cmd_retr(self, args: list[str]) -> None:
        if not self._arity(args, 1, 1):
            return
        i = self._message_index(args[0])
        if i is not None:
            self._start_fetch(Fetch(i + 1, self._entries[i], None, True))

    def _cmd_top(self, args: list[str]) -> None:
        if not self._arity(args, 2, 2):
            return
        if not (args[1].isdigit() and args[1].isascii() and len(args[1]) <= 10):
            self._syntax_error("invalid line count")
            return
        i = self._message_index(args[0])
        if i is not None:
            self._start_fetch(Fetch(i + 1, self._entries[i], int(args[1]), False))

    def _start_fetch(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._waiting = Fetch
        self._out.append(fetch)

    def _cmd_dele(self, args: list[str]) -> None:
        if not self._arity(args, 1, 1):
            return
        i = self._message_index(args[0])
        if i is not None:
            self._deleted.add(i)
            self._reply(_ok(f"message {i + 1} deleted"))

    def _cmd_rset(self, args: list[str]) -> None:
        if not self._arity(args, 0, 0):
            return
        self._deleted.clear()
        count, size = self._stat()
        self._reply(_ok(f"maildrop has {count} messages ({size} octets)"))


_AUTH = frozenset({State.AUTHORIZATION})
_TRANS = frozenset({State.TRANSACTION})
_BOTH = _AUTH | _TRANS

POP3Core.COMMANDS = {
    "CAPA": _Command(POP3Core._cmd_capa, _BOTH),
    "QUIT": _Command(POP3Core._cmd_quit, _BOTH),
    "NOOP": _Command(POP3Core._cmd_noop, _TRANS),
    "STLS": _Command(POP3Core._cmd_stls, _AUTH),
    "USER": _Command(POP3Core._cmd_user, _AUTH),
    "PASS": _Command(POP3Core._cmd_pass, _AUTH),
    "AUTH": _Command(POP3Core._cmd_auth, _AUTH),
    "STAT": _Command(POP3Core._cmd_stat, _TRANS),
    "LIST": _Command(POP3Core._cmd_list, _TRANS),
    "UIDL": _Command(POP3Core._cmd_uidl, _TRANS),
    "RETR": _Command(POP3Core._cmd_retr, _TRANS),
    "TOP": _Command(POP3Core._cmd_top, _TRANS),
    "DELE": _Command(POP3Core._cmd_dele, _TRANS),
    "RSET": _Command(POP3Core._cmd_rset, _TRANS),
}
