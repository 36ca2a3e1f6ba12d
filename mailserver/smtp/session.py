"""Sans-I/O SMTP server core (RFC 5321 with ESMTP extensions).

No sockets, no reactor, no clock: bytes go in with ``receive_data``, events
come out of ``next_event`` and replies go back with ``send(reply)``, which
returns the bytes to write.  Commands the core can answer alone (NOOP, RSET,
HELP, VRFY, EHLO, syntax errors, bad sequences, DATA's 354, BDAT chunk
acknowledgements) are answered into an output buffer drained by
``data_to_send``; commands that need a policy or storage decision come out as
events (``Mail``, ``Rcpt``, ``DataComplete``, ``StartTls``, ``AuthAttempt``)
and the core parses nothing further until the caller answers that event with
``send``, so replies always leave in command order (PIPELINING, RFC 2920).

Connection state (``Session``: HELO name, TLS, authenticated user, error
count) is kept apart from transaction state (``Transaction``: sender,
recipients, DSN parameters), which RSET, EHLO/HELO, STARTTLS and the end of
DATA/BDAT LAST reset (RFC 5321 section 4.1.4).

End of DATA is exactly ``<CRLF>.<CRLF>``: a bare LF or bare CR never ends a
line, so ``<LF>.<LF>``, ``<CR>.<CR>`` and mixtures cannot end the message
(SMTP smuggling); message data containing a bare CR or LF is refused as a
whole with 550 5.6.11 after the real end of data, nothing stored.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from mailserver.smtp import replies as R
from mailserver.smtp.address import (
    AddressError,
    Mailbox,
    NonAsciiAddress,
    is_xtext,
    parse_params,
    parse_path,
    split_path_and_params,
)
from mailserver.smtp.replies import Reply

DEFAULT_MAX_MESSAGE_SIZE = 35 * 1024 * 1024
#: RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF.
DEFAULT_MAX_LINE_LENGTH = 1000
#: RFC 4954 4: a SASL response line may be up to 12288 octets.
MAX_AUTH_LINE = 12288


class Phase(enum.Enum):
    """Where the connection is.  Commands are allowed per phase through the
    registry in ``SMTPServer._COMMANDS``."""

    INIT = "init"  # greeting sent, no EHLO/HELO yet
    READY = "ready"  # greeted, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    BDAT = "bdat"  # inside a BDAT transaction (some chunk accepted)
    DATA = "data"  # reading DATA lines (internal)
    CHUNK = "chunk"  # reading BDAT octets (internal)
    AUTH = "auth"  # inside a SASL exchange (internal)
    TLS = "tls"  # STARTTLS answered, waiting for the handshake (internal)
    CLOSED = "closed"


ANY_COMMAND_PHASE = frozenset({Phase.INIT, Phase.READY, Phase.MAIL, Phase.RCPT, Phase.BDAT})


class _Need:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: ``next_event`` result when more input is needed (or an event awaits its reply).
NEED_DATA = _Need()


# -- events ------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """MAIL FROM.  ``sender`` is None for the null reverse-path ``<>``."""

    sender: Mailbox | None
    params: dict[str, str | None]


@dataclass(frozen=True)
class Rcpt:
    """RCPT TO.  ``recipient.domain`` is None only for ``<postmaster>``."""

    recipient: Mailbox
    params: dict[str, str | None]


@dataclass(frozen=True)
class DataComplete:
    """The whole message (dot-stuffing removed, or BDAT chunks joined).
    Answer 250 only once it is durable."""

    data: bytes
    transaction: Transaction
    bdat: bool = False


@dataclass(frozen=True)
class StartTls:
    """Answer ``R220_TLS_READY`` and start TLS, then call ``tls_started``."""


@dataclass(frozen=True)
class AuthAttempt:
    """Decoded SASL PLAIN/LOGIN credentials; answer 235 to log in."""

    mechanism: str
    authzid: str
    username: str
    password: str


@dataclass(frozen=True)
class Closed:
    """The core has closed the session (QUIT, too many errors, timeout):
    write ``data_to_send()`` and drop the connection."""

    reason: str


Event = Mail | Rcpt | DataComplete | StartTls | AuthAttempt | Closed


# -- state -------------------------------------------------------------------


@dataclass
class Recipient:
    mailbox: Mailbox
    notify: tuple[str, ...] | None = None  # DSN NOTIFY, None: not given
    orcpt: str | None = None  # DSN ORCPT, as given ("rfc822;user@example")


@dataclass
class Transaction:
    """One mail transaction; gone after RSET, EHLO or the end of DATA."""

    sender: Mailbox | None = None
    mail_params: dict[str, str | None] = field(default_factory=dict)
    recipients: list[Recipient] = field(default_factory=list)
    declared_size: int | None = None
    body: str = "7BIT"
    smtputf8: bool = False
    ret: str | None = None  # DSN RET=FULL|HDRS
    envid: str | None = None  # DSN ENVID (xtext)

    @property
    def dsn(self) -> dict[str, object]:
        """DSN parameters to hand to the relay with the queued message."""
        return {
            "ret": self.ret,
            "envid": self.envid,
            "recipients": {
                str(r.mailbox): {"notify": r.notify, "orcpt": r.orcpt} for r in self.recipients
            },
        }


@dataclass
class Session:
    """Connection state: survives transactions, reset by STARTTLS."""

    helo: str | None = None
    esmtp: bool = False
    tls: bool = False
    authenticated: str | None = None
    errors: int = 0


@dataclass
class Limits:
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_line_length: int = DEFAULT_MAX_LINE_LENGTH
    max_recipients: int = 1000
    max_errors: int = 20


# -- the core ----------------------------------------------------------------


class SMTPServer:
    """One server-side SMTP connection, sans I/O."""

    def __init__(
        self,
        hostname: str,
        *,
        limits: Limits | None = None,
        tls_available: bool = False,
        tls_active: bool = False,
        auth_enabled: bool = False,
        allow_plaintext_auth: bool = False,
        auth_required: bool = False,
    ) -> None:
        self.hostname = hostname
        self.limits = limits or Limits()
        self.tls_available = tls_available
        self.auth_enabled = auth_enabled
        self.allow_plaintext_auth = allow_plaintext_auth
        self.auth_required = auth_required
        self.session = Session(tls=tls_active)
        self.transaction = Transaction()
        self.phase = Phase.INIT
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._pending: Event | None = None
        self._pending_phase: Phase | None = None
        # DATA reading state
        self._data_parts: list[bytes] = []
        self._data_size = 0
        self._data_error: Reply | None = None
        self._data_line_start = True
        # BDAT state
        self._chunk_remaining = 0
        self._chunk_last = False
        self._chunk_error: Reply | None = None
        self._chunk_return = Phase.READY  # phase to go back to after the octets
        # SASL state
        self._auth_mech: str | None = None
        self._auth_user: str | None = None
        self._auth_return = Phase.READY
        # Discard the rest of an overlong command line
        self._skip_line = False

    # -- public API -----------------------------------------------------

    def greeting(self) -> bytes:
        """The 220 banner to send when the connection opens."""
        return Reply(220, None, f"{self.hostname} ESMTP ready").to_bytes()

    def refuse(self, reply: Reply) -> bytes:
        """Answer the connection with ``reply`` (e.g. 421 too many
        connections) instead of the greeting, and close."""
        self.phase = Phase.CLOSED
        return reply.to_bytes()

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client (any fragmentation)."""
        if self.phase is not Phase.CLOSED:
            self._buf += data

    def data_to_send(self) -> bytes:
        """Replies the core produced by itself since the last call."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    @property
    def waiting_for_reply(self) -> bool:
        return self._pending is not None

    def next_event(self) -> Event | _Need:
        """Parse buffered input up to the next event needing a decision."""
        if self._pending is not None:
            return NEED_DATA
        while True:
            if self.phase is Phase.CLOSED:
                return NEED_DATA
            if self.phase is Phase.DATA:
                ev = self._read_data()
            elif self.phase is Phase.CHUNK:
                ev = self._read_chunk()
            elif self.phase is Phase.TLS:
                return NEED_DATA
            else:
                ev = self._read_command()
            if ev is NEED_DATA:
                return NEED_DATA
            if ev is not None:
                if not isinstance(ev, Closed):
                    self._pending = ev
                return ev

    def send(self, reply: Reply) -> bytes:
        """Answer the pending event; returns every byte to write now."""
        ev = self._pending
        if ev is None:
            raise RuntimeError("no event is waiting for a reply")
        self._pending = None
        if isinstance(ev, Mail):
            if reply.is_positive:
                self._start_transaction(ev)
        elif isinstance(ev, Rcpt):
            if reply.is_positive:
                self.transaction.recipients.append(_recipient(ev))
                self.phase = Phase.RCPT
        elif isinstance(ev, DataComplete):
            # Whatever the answer, the transaction is over (RFC 5321 4.1.1.4).
            self._reset_transaction()
        elif isinstance(ev, StartTls):
            if reply.is_positive:
                # Anything pipelined after STARTTLS arrived in plaintext and
                # must not be executed inside the TLS session (RFC 3207 6).
                self._buf.clear()
                self.phase = Phase.TLS
        elif isinstance(ev, AuthAttempt):
            if reply.code == 235:
                self.session.authenticated = ev.username
        self._queue(reply)
        return self.data_to_send()

    def tls_started(self) -> None:
        """The TLS handshake began: forget everything learnt in plaintext
        (RFC 3207 4.2) and wait for a new EHLO."""
        self._buf.clear()
        self.session = Session(tls=True)
        self._reset_transaction()
        self.phase = Phase.INIT

    def timeout(self) -> bytes:
        """The caller's timer fired: 421 4.4.2 and close."""
        self.phase = Phase.CLOSED
        self._pending = None
        self._queue(R.R421_TIMEOUT)
        return self.data_to_send()

    def shutdown(self) -> bytes:
        """The server is going down: 421 4.3.2 and close."""
        self.phase = Phase.CLOSED
        self._pending = None
        self._queue(R.R421_SHUTDOWN)
        return self.data_to_send()

    @property
    def in_data(self) -> bool:
        """True while message octets are being read (for the data timeout)."""
        return self.phase in (Phase.DATA, Phase.CHUNK)

    def ehlo_keywords(self) -> list[str]:
        """Extensions advertised right now (they depend on TLS and auth)."""
        kw = [
            "PIPELINING",
            f"SIZE {self.limits.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "DSN",
        ]
        if self.tls_available and not self.session.tls:
            kw.append("STARTTLS")
        if self._auth_offered():
            kw.append("AUTH PLAIN LOGIN")
        kw.append("HELP")
        return kw

    # -- output and errors ----------------------------------------------

    def _queue(self, reply: Reply) -> None:
        self._out.append(reply.to_bytes())
        if reply.is_error and reply.code != 421:
            self.session.errors += 1
            if self.session.errors >= self.limits.max_errors:
                self._out.append(R.R421_TOO_MANY_ERRORS.to_bytes())
                self.phase = Phase.CLOSED

    def _error(self, reply: Reply) -> Closed | None:
        """Queue an error reply; a session over the error limit is closed."""
        self._queue(reply)
        if self.phase is Phase.CLOSED:
            return Closed("too many errors")
        return None

    # -- command reading ------------------------------------------------

    def _line_limit(self) -> int:
        return MAX_AUTH_LINE if self.phase is Phase.AUTH else self.limits.max_line_length

    def _read_command(self) -> Event | _Need | None:
        buf = self._buf
        limit = self._line_limit()
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > limit:
                # Overlong line: answer once now, drop input up to its end.
                del buf[:]
                if not self._skip_line:
                    self._skip_line = True
                    return self._error(R.R500_LINE_TOO_LONG)
            return NEED_DATA
        raw = bytes(buf[:nl])
        del buf[: nl + 1]
        if self._skip_line:
            self._skip_line = False
            return None
        if nl + 1 > limit:
            return self._error(R.R500_LINE_TOO_LONG)
        if not raw.endswith(b"\r"):
            return self._error(R.R500_BARE_LINE_END)
        raw = raw[:-1]
        if b"\r" in raw:
            return self._error(R.R500_BARE_LINE_END)
        if b"\x00" in raw:
            return self._error(R.R501_SYNTAX)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(R.R500_BAD_UTF8)
        if self.phase is Phase.AUTH:
            return self._auth_response(line)
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        entry = self._COMMANDS.get(verb)
        if entry is None:
            return self._error(R.R500_UNKNOWN)
        handler, allowed, wrong = entry
        if self.phase not in allowed:
            return self._error(wrong(self) if callable(wrong) else wrong)
        return handler(self, arg)

    # -- command handlers -----------------------------------------------

    def _cmd_ehlo(self, arg: str) -> Event | None:
        return self._greet(arg, esmtp=True)

    def _cmd_helo(self, arg: str) -> Event | None:
        return self._greet(arg, esmtp=False)

    def _greet(self, arg: str, esmtp: bool) -> Event | None:
        name = arg.strip()
        if not name or " " in name:
            return self._error(R.R501_SYNTAX.with_text("Syntax: EHLO hostname"))
        self._reset_transaction()
        self.session.helo = name
        self.session.esmtp = esmtp
        self.phase = Phase.READY
        first = f"{self.hostname} greets {name}"
        if esmtp:
            self._queue(Reply(250, None, (first, *self.ehlo_keywords())))
        else:
            self._queue(Reply(250, None, first))
        return None

    def _cmd_mail(self, arg: str) -> Event | None:
        if self.auth_required and self.session.authenticated is None:
            return self._error(R.R530_AUTH_REQUIRED)
        head, _, rest = arg.partition(":")
        if head.upper() != "FROM":
            return self._error(R.R501_SYNTAX.with_text("Syntax: MAIL FROM:<address>"))
        try:
            path, items = split_path_and_params(rest.lstrip(" "))
            params = parse_params(items)
        except (AddressError, ValueError):
            return self._error(R.R501_BAD_SENDER)
        if params and not self.session.esmtp:
            return self._error(R.R555_PARAM)
        err = self._check_mail_params(params)
        if err is not None:
            return self._error(err)
        utf8 = "SMTPUTF8" in params
        try:
            sender = parse_path(path, utf8=utf8, allow_null=True, allow_postmaster=False)
        except NonAsciiAddress:
            return self._error(R.R553_NON_ASCII)
        except AddressError:
            return self._error(R.R501_BAD_SENDER)
        return Mail(sender, params)

    def _check_mail_params(self, params: dict[str, str | None]) -> Reply | None:
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit() or len(value) > 20:
                    return R.R501_SYNTAX
                if int(value) > self.limits.max_message_size:
                    return R.R552_TOO_BIG
            elif key == "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    return R.R501_SYNTAX.with_text("BODY must be 7BIT or 8BITMIME")
            elif key == "SMTPUTF8":
                if value is not None:
                    return R.R501_SYNTAX
            elif key == "RET":
                if value is None or value.upper() not in ("FULL", "HDRS"):
                    return R.R501_SYNTAX.with_text("RET must be FULL or HDRS")
            elif key == "ENVID":
                if value is None or not is_xtext(value) or len(value) > 100:
                    return R.R501_SYNTAX.with_text("Bad ENVID")
            elif key == "AUTH":
                # RFC 4954 5: accepted; we never trust a client-asserted
                # identity, so the value is not used.
                if value is None or not is_xtext(value):
                    return R.R501_SYNTAX
            else:
                return R.R555_PARAM
        return None

    def _cmd_rcpt(self, arg: str) -> Event | None:
        head, _, rest = arg.partition(":")
        if head.upper() != "TO":
            return self._error(R.R501_SYNTAX.with_text("Syntax: RCPT TO:<address>"))
        try:
            path, items = split_path_and_params(rest.lstrip(" "))
            params = parse_params(items)
        except (AddressError, ValueError):
            return self._error(R.R501_BAD_ADDRESS)
        if params and not self.session.esmtp:
            return self._error(R.R555_PARAM)
        for key, value in params.items():
            if key == "NOTIFY":
                if value is None:
                    return self._error(R.R501_SYNTAX)
                words = value.upper().split(",")
                if "NEVER" in words and len(words) > 1:
                    return self._error(R.R501_SYNTAX.with_text("NOTIFY=NEVER stands alone"))
                if not set(words) <= {"NEVER", "SUCCESS", "FAILURE", "DELAY"}:
                    return self._error(R.R501_SYNTAX.with_text("Bad NOTIFY"))
            elif key == "ORCPT":
                addr_type, semi, xtext = (value or "").partition(";")
                if not semi or not addr_type or not is_xtext(xtext) or len(value or "") > 500:
                    return self._error(R.R501_SYNTAX.with_text("Bad ORCPT"))
            else:
                return self._error(R.R555_PARAM)
        if len(self.transaction.recipients) >= self.limits.max_recipients:
            return self._error(R.R452_TOO_MANY_RCPTS)
        try:
            rcpt = parse_path(
                path, utf8=self.transaction.smtputf8, allow_null=False, allow_postmaster=True
            )
        except NonAsciiAddress:
            return self._error(R.R553_NON_ASCII)
        except AddressError:
            return self._error(R.R501_BAD_ADDRESS)
        assert rcpt is not None
        return Rcpt(rcpt, params)

    def _cmd_data(self, arg: str) -> Event | None:
        if arg:
            return self._error(R.R501_NO_PARAMS)
        self.phase = Phase.DATA
        self._data_parts = []
        self._data_size = 0
        self._data_error = None
        self._data_line_start = True
        self._queue(R.R354_DATA)
        return None

    def _cmd_bdat(self, arg: str) -> Event | None:
        parts = arg.split(" ")
        if not (1 <= len(parts) <= 2) or not parts[0].isdigit() or len(parts[0]) > 20:
            return self._error(R.R501_SYNTAX.with_text("Syntax: BDAT size [LAST]"))
        if len(parts) == 2 and parts[1].upper() != "LAST":
            return self._error(R.R501_SYNTAX.with_text("Syntax: BDAT size [LAST]"))
        size = int(parts[0])
        self._chunk_remaining = size
        self._chunk_last = len(parts) == 2
        self._chunk_error = None
        # The octets are read (and thrown away on error) whatever happens,
        # so chunk data is never taken for commands.
        if self.phase is Phase.MAIL or (self.phase is Phase.INIT):
            self._chunk_error = (
                R.R554_NO_VALID_RCPTS if self.phase is Phase.MAIL else R.R503_EHLO_FIRST
            )
        elif self.phase is Phase.READY:
            self._chunk_error = R.R503_NEED_MAIL
        else:
            if self.phase is Phase.RCPT:
                self._data_parts = []
                self._data_size = 0
                self._data_error = None
            if self._data_size + size > self.limits.max_message_size:
                self._chunk_error = R.R552_TOO_BIG
        self._chunk_return = self.phase
        self.phase = Phase.CHUNK
        return None

    def _cmd_rset(self, arg: str) -> Event | None:
        if arg:
            return self._error(R.R501_NO_PARAMS)
        self._reset_transaction()
        self._queue(R.R250_RESET)
        return None

    def _cmd_noop(self, arg: str) -> Event | None:
        self._queue(R.R250_OK)
        return None

    def _cmd_quit(self, arg: str) -> Event | None:
        if arg:
            return self._error(R.R501_NO_PARAMS)
        self._queue(R.R221_BYE)
        self.phase = Phase.CLOSED
        return Closed("quit")

    def _cmd_vrfy(self, arg: str) -> Event | None:
        if not arg.strip():
            return self._error(R.R501_SYNTAX.with_text("Syntax: VRFY address"))
        self._queue(R.R252_VRFY)
        return None

    def _cmd_expn(self, arg: str) -> Event | None:
        return self._error(R.R502_NOT_IMPLEMENTED)

    def _cmd_help(self, arg: str) -> Event | None:
        self._queue(R.R214_HELP)
        return None

    def _cmd_starttls(self, arg: str) -> Event | None:
        if arg:
            return self._error(R.R501_NO_PARAMS)
        if self.session.tls:
            return self._error(R.R503_TLS_ACTIVE)
        if not self.tls_available:
            return self._error(R.R454_TLS_UNAVAILABLE)
        return StartTls()

    def _auth_offered(self) -> bool:
        return self.auth_enabled and (self.session.tls or self.allow_plaintext_auth)

    def _cmd_auth(self, arg: str) -> Event | None:
        if not self.auth_enabled:
            return self._error(R.R502_NOT_IMPLEMENTED)
        if self.session.authenticated is not None:
            return self._error(R.R503_ALREADY_AUTH)
        if not self._auth_offered():
            return self._error(R.R538_ENCRYPTION_REQUIRED)
        mech, _, initial = arg.partition(" ")
        mech = mech.upper()
        if mech not in ("PLAIN", "LOGIN"):
            return self._error(R.R504_AUTH_MECH)
        if " " in initial:
            return self._error(R.R501_SYNTAX)
        self._auth_mech = mech
        self._auth_user = None
        self._auth_return = self.phase
        if mech == "PLAIN":
            if initial:
                return self._auth_plain(initial)
            self._auth_continue("")
            return None
        if initial:
            return self._auth_login(initial)
        self._auth_continue("Username:")
        return None

    def _auth_continue(self, prompt: str) -> None:
        self.phase = Phase.AUTH
        text = base64.b64encode(prompt.encode()).decode() if prompt else ""
        self._out.append(f"334 {text}\r\n".encode())

    def _auth_done(self) -> None:
        self.phase = self._auth_return
        self._auth_mech = None

    def _auth_response(self, line: str) -> Event | None:
        if line == "*":
            self._auth_done()
            return self._error(R.R501_AUTH_CANCELLED)
        if self._auth_mech == "PLAIN":
            return self._auth_plain(line)
        return self._auth_login(line)

    def _b64(self, text: str) -> str | None:
        if text == "=":  # RFC 4954: empty initial response
            return ""
        try:
            return base64.b64decode(text.encode("ascii"), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeError, ValueError):
            return None

    def _auth_plain(self, text: str) -> Event | None:
        decoded = self._b64(text)
        self._auth_done()
        if decoded is None:
            return self._error(R.R501_BAD_BASE64)
        parts = decoded.split("\x00")
        if len(parts) != 3 or not parts[1]:
            return self._error(R.R501_BAD_BASE64.with_text("Malformed PLAIN response"))
        return AuthAttempt("PLAIN", parts[0], parts[1], parts[2])

    def _auth_login(self, text: str) -> Event | None:
        decoded = self._b64(text)
        if decoded is None:
            self._auth_done()
            return self._error(R.R501_BAD_BASE64)
        if self._auth_user is None:
            self._auth_user = decoded
            self._auth_continue("Password:")
            return None
        user = self._auth_user
        self._auth_done()
        return AuthAttempt("LOGIN", "", user, decoded)

    # -- registry: verb -> (handler, allowed phases, reply otherwise) ----

    _COMMANDS: dict[
        str, tuple[Callable[[SMTPServer, str], Event | None], frozenset[Phase], object]
    ] = {}

    # -- DATA ------------------------------------------------------------

    def _read_data(self) -> Event | _Need | None:
        buf = self._buf
        if self._data_line_start and buf[:3] == b".\r\n":
            del buf[:3]
            return self._finish_data()
        idx = buf.find(b"\r\n.\r\n")
        if idx >= 0:
            with memoryview(buf) as view:
                chunk = bytes(view[: idx + 2])
            del buf[: idx + 5]
            self._feed_data(chunk)
            return self._finish_data()
        last = buf.rfind(b"\r\n")
        if last >= 0:
            with memoryview(buf) as view:
                chunk = bytes(view[: last + 2])
            del buf[: last + 2]
            self._feed_data(chunk)
            return NEED_DATA
        if len(buf) > self.limits.max_line_length:
            # A line without end: it is too long already; keep only what
            # could start the terminator.
            self._set_data_error(R.R500_DATA_LINE_TOO_LONG)
            self._data_size += len(buf) - 1
            del buf[:-1]
            self._data_line_start = False
        return NEED_DATA

    def _feed_data(self, chunk: bytes) -> None:
        """A run of complete CRLF lines (starting a line unless a previous
        overlong line was cut)."""
        line_start = self._data_line_start
        self._data_line_start = True
        self._data_size += len(chunk)
        if self._data_error is not None:
            return
        # RFC 5321 4.5.2: a line starting with "." loses that first "."
        if line_start and chunk[:1] == b".":
            chunk = chunk[1:]
        chunk = chunk.replace(b"\r\n.", b"\r\n")
        if chunk.count(b"\n") != chunk.count(b"\r\n") or chunk.count(b"\r") != chunk.count(b"\n"):
            self._set_data_error(R.R550_BARE_CR_LF)
            return
        if _has_long_line(chunk, self.limits.max_line_length - 2):
            self._set_data_error(R.R500_DATA_LINE_TOO_LONG)
            return
        if self._data_size > self.limits.max_message_size:
            self._set_data_error(R.R552_TOO_BIG)
            return
        self._data_parts.append(chunk)

    def _set_data_error(self, reply: Reply) -> None:
        if self._data_error is None:
            self._data_error = reply
            self._data_parts = []

    def _finish_data(self) -> Event | None:
        self.phase = Phase.RCPT
        error = self._data_error
        data = b"".join(self._data_parts)
        self._data_parts = []
        if error is not None:
            self._reset_transaction()
            return self._error(error)
        return DataComplete(data, self.transaction)

    # -- BDAT ------------------------------------------------------------

    def _read_chunk(self) -> Event | _Need | None:
        buf = self._buf
        take = min(self._chunk_remaining, len(buf))
        if take:
            if self._chunk_error is None:
                self._data_parts.append(bytes(buf[:take]))
            del buf[:take]
            self._chunk_remaining -= take
        if self._chunk_remaining:
            return NEED_DATA
        self.phase = self._chunk_return
        if self._chunk_error is not None:
            err = self._chunk_error
            if self.phase in (Phase.RCPT, Phase.BDAT):
                # RFC 3030 2: after a failed chunk the transaction is void.
                self._reset_transaction()
            return self._error(err)
        self._data_size = sum(map(len, self._data_parts))
        if not self._chunk_last:
            self.phase = Phase.BDAT
            self._queue(Reply(250, "2.0.0", f"{self._data_size} octets received"))
            return None
        data = b"".join(self._data_parts)
        self._data_parts = []
        self.phase = Phase.RCPT
        if data.count(b"\n") != data.count(b"\r\n") or data.count(b"\r") != data.count(b"\n"):
            self._reset_transaction()
            return self._error(R.R550_BARE_CR_LF)
        if _has_long_line(data, self.limits.max_line_length - 2):
            self._reset_transaction()
            return self._error(R.R500_DATA_LINE_TOO_LONG)
        return DataComplete(data, self.transaction, bdat=True)

    # -- transactions ----------------------------------------------------

    def _start_transaction(self, ev: Mail) -> None:
        p = ev.params
        self.transaction = Transaction(
            sender=ev.sender,
            mail_params=dict(p),
            declared_size=int(p["SIZE"]) if p.get("SIZE") else None,
            body=(p.get("BODY") or "7BIT").upper(),
            smtputf8="SMTPUTF8" in p,
            ret=(p.get("RET") or "").upper() or None,
            envid=p.get("ENVID"),
        )
        self.phase = Phase.MAIL

    def _reset_transaction(self) -> None:
        self.transaction = Transaction()
        self._data_parts = []
        self._data_size = 0
        self._data_error = None
        if self.phase in (Phase.MAIL, Phase.RCPT, Phase.BDAT):
            self.phase = Phase.READY


def _has_long_line(data: bytes, limit: int) -> bool:
    """Is some line of ``data`` (split at CRLF) longer than ``limit``?

    ``data`` has no bare CR or LF (checked first), so a line starting at
    ``p`` is short exactly when an LF lies in ``data[p : p + limit + 2]``.
    Jumping to the last LF of each such window costs a few C searches per
    kilobyte instead of one bytes object per line.
    """
    n = len(data)
    p = 0
    while n - p > limit:
        nl = data.rfind(b"\n", p, p + limit + 2)
        if nl < 0:
            return True
        p = nl + 1
    return False


def _recipient(ev: Rcpt) -> Recipient:
    notify = ev.params.get("NOTIFY")
    return Recipient(
        ev.recipient,
        tuple(notify.upper().split(",")) if notify else None,
        ev.params.get("ORCPT"),
    )


def _wrong_mail(s: SMTPServer) -> Reply:
    if s.phase is Phase.INIT:
        return R.R503_EHLO_FIRST
    return R.R503_NESTED_MAIL


def _wrong_rcpt(s: SMTPServer) -> Reply:
    return R.R503_EHLO_FIRST if s.phase is Phase.INIT else R.R503_NEED_MAIL


def _wrong_data(s: SMTPServer) -> Reply:
    if s.phase is Phase.MAIL:
        return R.R554_NO_VALID_RCPTS
    if s.phase is Phase.BDAT:
        return R.R503_MIXED_DATA
    return R.R503_NEED_MAIL


def _wrong_starttls(s: SMTPServer) -> Reply:
    # STARTTLS and AUTH: not inside a transaction (AUTH also needs EHLO).
    return R.R503_EHLO_FIRST if s.phase is Phase.INIT else R.R503_BAD_SEQUENCE


_ALL = ANY_COMMAND_PHASE
SMTPServer._COMMANDS = {
    "EHLO": (SMTPServer._cmd_ehlo, _ALL, R.R503_BAD_SEQUENCE),
    "HELO": (SMTPServer._cmd_helo, _ALL, R.R503_BAD_SEQUENCE),
    "MAIL": (SMTPServer._cmd_mail, frozenset({Phase.READY}), _wrong_mail),
    "RCPT": (SMTPServer._cmd_rcpt, frozenset({Phase.MAIL, Phase.RCPT}), _wrong_rcpt),
    "DATA": (SMTPServer._cmd_data, frozenset({Phase.RCPT}), _wrong_data),
    # BDAT checks the phase itself: its octets must be consumed in any case.
    "BDAT": (SMTPServer._cmd_bdat, _ALL, R.R503_BAD_SEQUENCE),
    "RSET": (SMTPServer._cmd_rset, _ALL, R.R503_BAD_SEQUENCE),
    "NOOP": (SMTPServer._cmd_noop, _ALL, R.R503_BAD_SEQUENCE),
    "QUIT": (SMTPServer._cmd_quit, _ALL, R.R503_BAD_SEQUENCE),
    "VRFY": (SMTPServer._cmd_vrfy, _ALL, R.R503_BAD_SEQUENCE),
    "EXPN": (SMTPServer._cmd_expn, _ALL, R.R503_BAD_SEQUENCE),
    "HELP": (SMTPServer._cmd_help, _ALL, R.R503_BAD_SEQUENCE),
    "STARTTLS": (SMTPServer._cmd_starttls, frozenset({Phase.INIT, Phase.READY}), _wrong_starttls),
    "AUTH": (SMTPServer._cmd_auth, frozenset({Phase.READY}), _wrong_starttls),
}
