"""Sans-I/O IMAP command receiver: bytes in, events out (h11 style).

Usage::

    r = CommandReceiver(max_line=65536, max_literal=35 * 2**20)
    r.receive_data(chunk)
    while (ev := r.next_event()) is not NEED_DATA:
        ...  # Continuation / Request / Line / ProtocolError

Parsing is lazy: nothing is parsed until ``next_event`` is called, so a
session can switch modes (``expect_line`` for AUTHENTICATE and IDLE) between
two events even when the client pipelined more data.

Tokens (the ``args`` of a ``Request``):

- ``Atom`` (a ``str`` subclass): atoms, numbers, sequence sets, flags such
  as ``\\Seen``.  An atom may contain one bracketed part with spaces inside,
  as FETCH att-specs do: ``BODY.PEEK[HEADER.FIELDS (A B)]<0.10>`` is one
  ``Atom`` whose ``str`` value is the text as sent and whose ``section``
  holds the tokens between the brackets (``[Atom('HEADER.FIELDS'),
  [Atom('A'), Atom('B')]]``), ``prefix`` the text before ``[`` (``BODY.PEEK``)
  and ``suffix`` the text after ``]`` (``<0.10>``).  Mailbox names such as
  ``[Gmail]/Sent`` are atoms too: use the ``str`` value.
- ``bytes``: a quoted string (escapes removed).
- ``Literal`` (a ``bytes`` subclass): a literal; ``.binary`` is True for a
  literal8 (``~{n}``), ``.nonsync`` for LITERAL+ ``{n+}``.
- ``list``: a parenthesized list.
- ``None``: NIL (unquoted, any case).

Limit rule (documented contract for the session):

- ``max_line`` bounds the text of one command: all its lines together,
  counted without line endings but with their literal markers (literal
  contents do not count).  A longer line is discarded up to its LF without
  being stored; if it ended in a LITERAL+ marker ``{n+}`` the n literal
  octets and the rest of the command are discarded too (the client sends
  them without waiting).  Then ``ProtocolError(tag, "Command line too long",
  fatal=False)`` is returned: answer ``BAD``.
- ``max_literal`` bounds the total literal octets of one command (the
  session may change it between commands, e.g. small before login).  A
  larger synchronizing literal ``{n}`` is refused before the client sends it
  (no continuation is asked for): the client waits for our tagged answer, so
  the command ends there.  A larger LITERAL+ literal is read and discarded
  together with the rest of the command; past ``max_discard`` octets the
  error is fatal instead (send ``* BYE`` and close).  Both give
  ``ProtocolError(tag, "Literal too big", code="TOOBIG", name=<command>)``
  after the command ended: answer ``NO [TOOBIG]`` to APPEND (RFC 4469 /
  7889), ``BAD [TOOBIG]`` to anything else.
- In ``expect_line`` mode a line longer than ``max_line`` gives
  ``ProtocolError(None, "Line too long")`` (cancel the AUTHENTICATE / IDLE).
- After ``next_event`` returned NEED_DATA the receiver holds at most
  ``max_line + max_literal`` octets (plus a few while skipping); ``buffered``
  tells how much it holds, so the transport can ``pauseProducing`` while the
  session is busy and pipelined input piles up.
- Parsing is linear in the input; list nesting deeper than ``MAX_DEPTH`` is
  a syntax error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NEED_DATA",
    "Atom",
    "CommandReceiver",
    "Continuation",
    "Event",
    "Line",
    "Literal",
    "ProtocolError",
    "Request",
    "Token",
    "render_tokens",
]


class _NeedData:
    """Sentinel type of ``NEED_DATA``."""

    _instance: _NeedData | None = None

    def __new__(cls) -> _NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


#: ``next_event`` result: feed more bytes with ``receive_data``.
NEED_DATA = _NeedData()


class Atom(str):
    """An atom token; see the module docstring for bracketed atoms.

    ``Atom("x")`` is a plain atom (``section`` None, ``prefix`` the whole
    text, ``suffix`` empty); ``Atom.bracketed(...)`` builds one with a
    bracketed part."""

    __slots__ = ()
    section: list[Any] | None = None
    suffix: str = ""

    @property
    def prefix(self) -> str:
        return str(self)

    @classmethod
    def bracketed(cls, value: str, section: list[Any], prefix: str, suffix: str) -> Atom:
        return _BracketAtom(value, section, prefix, suffix)

    def __repr__(self) -> str:
        if self.section is None:
            return f"Atom({str.__repr__(self)})"
        return f"Atom({str.__repr__(self)}, section={self.section!r})"


class _BracketAtom(Atom):
    """An atom with a bracketed part, e.g. ``BODY[HEADER.FIELDS (A B)]<0.10>``."""

    __slots__ = ("section", "_prefix", "suffix")

    def __new__(cls, value: str, section: list[Any], prefix: str, suffix: str) -> _BracketAtom:
        self = super().__new__(cls, value)
        self.section = section
        self._prefix = prefix
        self.suffix = suffix
        return self

    @property
    def prefix(self) -> str:
        return self._prefix

    def __reduce__(self) -> tuple[Any, ...]:
        return (_BracketAtom, (str(self), self.section, self._prefix, self.suffix))


class Literal(bytes):
    """A literal's octets.  ``binary``: literal8 ``~{n}`` (RFC 3516);
    ``nonsync``: sent as LITERAL+ ``{n+}`` (RFC 7888)."""

    binary: bool
    nonsync: bool

    def __new__(cls, data: bytes, binary: bool = False, nonsync: bool = False) -> Literal:
        self = super().__new__(cls, data)
        self.binary = binary
        self.nonsync = nonsync
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Literal, (bytes(self), self.binary, self.nonsync))

    def __repr__(self) -> str:
        return f"Literal({bytes.__repr__(self)}, binary={self.binary})"


#: A token: Atom, bytes (quoted), Literal, list (parenthesized), None (NIL).
Token = Any


@dataclass(frozen=True)
class Continuation:
    """A synchronizing literal was accepted: send ``+ Ready`` now (never
    returned for LITERAL+ ``{n+}``)."""


@dataclass(frozen=True)
class Request:
    """One complete command.

    ``name`` is upper-case; for ``UID`` commands it is the two words, e.g.
    ``"UID FETCH"`` (``"UID"`` alone when nothing follows).  ``raw`` is the
    command text with literal contents left out (their ``{n}`` markers kept),
    lines joined with CRLF, for logging.
    """

    tag: str
    name: str
    args: list[Token]
    raw: bytes


@dataclass(frozen=True)
class Line:
    """A raw line read in ``expect_line`` mode (AUTHENTICATE response, IDLE
    ``DONE``), without its line ending."""

    data: bytes


@dataclass(frozen=True)
class ProtocolError:
    """Bad input.  ``tag`` is None when not even a tag could be read (answer
    ``* BAD``).  ``fatal``: send ``* BYE`` and close the connection.  ``code``:
    response code for the answer (e.g. ``"TOOBIG"``).  ``name``: the command
    name when known (an APPEND with a too-big literal gets ``NO [TOOBIG]``)."""

    tag: str | None
    text: str
    fatal: bool = False
    code: str | None = None
    name: str | None = None


Event = Any  # NEED_DATA | Continuation | Request | Line | ProtocolError


class TokenizeError(ValueError):
    """Syntax error inside a command line (the receiver turns it into a
    ``ProtocolError``)."""


# -- tokenizer ---------------------------------------------------------------

#: deepest list nesting accepted (real commands use 3 or 4 levels)
MAX_DEPTH = 64

# One regex call per token.  Groups: 1 atom, 2 "(", 3 ")", 4 quoted string
# contents, 5 "]", 6 "[", 7 anything else (an error).  Outside brackets "]"
# is an atom character (astring allows resp-specials); inside it closes.
_QUOTED_BODY = rb'"([^"\\\r\n]*(?:\\.[^"\\\r\n]*)*)"'
_TOK_TOP = re.compile(
    rb'[ \t]*(?:([^\x00-\x20\x7f()"\[{]+)|(\()|(\))|' + _QUOTED_BODY + rb"|(\])|(\[)|([^ \t]))",
    re.S,
)
_TOK_BR = re.compile(
    rb'[ \t]*(?:([^\x00-\x20\x7f()"\[\]{]+)|(\()|(\))|' + _QUOTED_BODY + rb"|(\])|(\[)|([^ \t]))",
    re.S,
)
_ATOM_TAIL = re.compile(rb'[^\x00-\x20\x7f()"\[{]*')  # after "]": may include "]"
_ATOM_LOOSE = re.compile(rb'[^\x00-\x20\x7f()"{]+')  # "[" that never closes
_SPECIAL = re.compile(rb'[\x00-\x08\x0a-\x1f\x7f()"\[\]{]')
_UNESCAPE = re.compile(rb"\\(.)", re.S)
_TAG = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\+]+")
_LITERAL_MARK = re.compile(rb"(~?)\{(\d{1,20})(\+?)\}\r?\n\Z")


def _atom_value(b: bytes) -> str:
    try:
        return b.decode("ascii")
    except UnicodeDecodeError:
        return b.decode("utf-8", "surrogateescape")


class _Frame:
    __slots__ = ("items", "kind", "start", "seg", "prefix")

    def __init__(self, kind: str, start: int = 0, seg: int = 0, prefix: bytes = b"") -> None:
        self.items: list[Any] = []
        self.kind = kind  # "top", "(", "["
        self.start = start
        self.seg = seg
        self.prefix = prefix


def tokenize(segments: list[bytes], literals: list[Literal]) -> list[Token]:
    """Tokenize a command: ``segments[i]`` is followed by ``literals[i]``
    (``len(literals) == len(segments) - 1``).  Raises TokenizeError."""
    if len(segments) == 1 and not _SPECIAL.search(segments[0]):
        # fast path: only atoms (most commands): one split, no regex per token
        return [
            None if len(w) == 3 and w.upper() == b"NIL" else Atom(_atom_value(w))
            for w in segments[0].split()
        ]
    stack = [_Frame("top")]
    items = stack[0].items
    tok = _TOK_TOP
    nlit = len(literals)
    for si, seg in enumerate(segments):
        pos = 0
        n = len(seg)
        last_close = seg.rfind(b"]")  # a "[" only opens brackets if a "]" follows
        while True:
            m = tok.match(seg, pos)
            if m is None:  # nothing but blanks left
                break
            pos = m.end()
            g = m.lastindex
            if g == 1:
                if pos < n and seg[pos] == 0x5B:  # word"[": bracketed atom?
                    if tok is _TOK_BR:
                        raise TokenizeError("nested '['")
                    start = m.start(1)
                    if last_close > pos or si < nlit:
                        stack.append(_Frame("[", start=start, seg=si, prefix=seg[start:pos]))
                        items = stack[-1].items
                        tok = _TOK_BR
                        pos += 1
                        continue
                    pos = _ATOM_LOOSE.match(seg, start).end()
                    items.append(Atom(_atom_value(seg[start:pos])))
                    continue
                word = m.group(1)
                if len(word) == 3 and word.upper() == b"NIL":
                    items.append(None)
                else:
                    try:
                        items.append(Atom(word.decode("ascii")))
                    except UnicodeDecodeError:
                        items.append(Atom(word.decode("utf-8", "surrogateescape")))
            elif g == 2:
                if len(stack) > MAX_DEPTH:
                    raise TokenizeError("lists nested too deeply")
                stack.append(_Frame("("))
                items = stack[-1].items
                tok = _TOK_BR if stack[-2].kind == "[" else tok
            elif g == 3:
                top = stack[-1]
                if top.kind != "(":
                    raise TokenizeError("unbalanced ')'")
                stack.pop()
                items = stack[-1].items
                items.append(top.items)
                tok = _TOK_BR if any(f.kind == "[" for f in stack) else _TOK_TOP
            elif g == 4:
                q = m.group(4)
                items.append(_UNESCAPE.sub(rb"\1", q) if b"\\" in q else q)
            elif g == 5:  # "]" closing a bracketed atom
                top = stack[-1]
                if top.kind != "[":
                    raise TokenizeError("unbalanced ']'")
                stack.pop()
                items = stack[-1].items
                tok = _TOK_TOP
                end = _ATOM_TAIL.match(seg, pos).end()
                suffix = seg[pos:end]
                if top.seg == si:
                    text = seg[top.start : end]
                else:  # a literal inside the brackets: rebuild the text
                    text = top.prefix + b"[" + render_tokens(top.items) + b"]" + suffix
                items.append(
                    Atom.bracketed(
                        _atom_value(text), top.items, _atom_value(top.prefix), _atom_value(suffix)
                    )
                )
                pos = end
            elif g == 6:  # "[" starting a token, e.g. [Gmail]/Sent
                if tok is _TOK_BR:
                    raise TokenizeError("nested '['")
                start = pos - 1
                if last_close > start or si < nlit:
                    stack.append(_Frame("[", start=start, seg=si, prefix=b""))
                    items = stack[-1].items
                    tok = _TOK_BR
                    continue
                pos = _ATOM_LOOSE.match(seg, start).end()
                items.append(Atom(_atom_value(seg[start:pos])))
            else:
                c = m.group(7)
                if c == b'"':
                    raise TokenizeError("unterminated quoted string")
                if c == b"{":
                    raise TokenizeError("literal marker not at end of line")
                raise TokenizeError("control character in command")
        if si < nlit:
            items.append(literals[si])
    if len(stack) != 1:
        raise TokenizeError("unbalanced '('" if stack[-1].kind == "(" else "unbalanced '['")
    return stack[0].items


def render_tokens(tokens: list[Token]) -> bytes:
    """Serialize tokens back to IMAP syntax (for logs and rebuilt atoms)."""
    out: list[bytes] = []
    for t in tokens:
        if t is None:
            out.append(b"NIL")
        elif isinstance(t, Atom):
            out.append(str(t).encode("utf-8", "surrogateescape"))
        elif isinstance(t, Literal):
            out.append(b"{%d}\r\n" % len(t) + bytes(t))
        elif isinstance(t, bytes):
            out.append(b'"' + t.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"')
        elif isinstance(t, list):
            out.append(b"(" + render_tokens(t) + b")")
        else:
            out.append(str(t).encode())
    return b" ".join(out)


# -- receiver ----------------------------------------------------------------


@dataclass
class _Command:
    segments: list[bytes] = field(default_factory=list)
    literals: list[Literal] = field(default_factory=list)
    line_total: int = 0
    literal_total: int = 0  # announced literal octets (limit accounting)
    literal_held: int = 0  # literal octets read and held
    # pending literal: (size, binary, nonsync)
    pending: tuple[int, bool, bool] | None = None


def _head(line: bytes) -> tuple[str | None, str | None]:
    """Best-effort (tag, command name) from the start of a command line."""
    m = _TAG.match(line)
    if not m:
        return None, None
    tag = m.group().decode("ascii", "replace")
    rest = line[m.end() :]
    if not rest.startswith(b" "):
        return tag, None
    words = rest[1:].split(b" ", 2)
    name = words[0].rstrip(b"\r\n{}~+0123456789").decode("ascii", "replace").upper() or None
    if name == "UID" and len(words) > 1:
        sub = words[1].rstrip(b"\r\n").decode("ascii", "replace").upper()
        name = f"UID {sub}" if sub else name
    return tag, name


class CommandReceiver:
    """Turns client bytes into IMAP command events.  See the module docstring
    for events, tokens and the limit rule."""

    def __init__(
        self, max_line: int = 65536, max_literal: int = 35 * 2**20, max_discard: int | None = None
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        #: largest LITERAL+ literal that is skipped rather than closing
        self.max_discard = max_discard if max_discard is not None else max(max_literal, 64 * 2**20)
        self._buf = bytearray()
        self._scan = 0  # where to resume searching for LF in _buf
        self._cmd: _Command | None = None
        self._line_mode = False
        # discard state
        self._discard_line = False  # skipping to the end of an over-long line
        self._discard_literal = 0  # octets of a literal still to skip
        self._discard_rest = False  # skip the remaining segments of the command
        self._error: ProtocolError | None = None  # reported when discarding ends
        self._skip_head = b""  # first bytes of an over-long line (for tag/name)
        self._skip_plain = False  # the skipped line was a raw Line
        self._closed = False

    # -- public API -------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client.  Parsing happens in ``next_event``."""
        if not self._closed:
            self._buf += data

    @property
    def buffered(self) -> int:
        """Octets held (current command + unparsed input)."""
        n = len(self._buf)
        if self._cmd is not None:
            n += self._cmd.line_total + self._cmd.literal_held
        return n

    @property
    def max_buffer(self) -> int:
        """``buffered`` never needs to exceed this to parse a command: pause
        the transport above it until the session drains events."""
        return self.max_line + self.max_literal

    def expect_line(self) -> None:
        """Return the next line as a raw ``Line`` event instead of parsing a
        command (AUTHENTICATE client response, IDLE ``DONE``).  One line only;
        the mode then ends by itself."""
        self._line_mode = True

    #: alias, as the session brief calls it
    receive_continuation_line = expect_line

    def cancel_line(self) -> None:
        """Leave ``expect_line`` mode without reading a line."""
        self._line_mode = False

    def next_event(self) -> Event:
        """The next event, or NEED_DATA.  Never raises on client input."""
        while True:
            ev = self._step()
            if ev is not _AGAIN:
                return ev

    # -- internals --------------------------------------------------------

    def _take_line(self) -> bytes | None:
        """Remove and return one line including its LF, or None."""
        i = self._buf.find(b"\n", self._scan)
        if i < 0:
            self._scan = len(self._buf)
            return None
        line = bytes(self._buf[: i + 1])
        del self._buf[: i + 1]
        self._scan = 0
        return line

    def _step(self) -> Event:
        if self._closed:
            return NEED_DATA
        buf = self._buf
        # 1. skipping literal octets
        if self._discard_literal:
            k = min(self._discard_literal, len(buf))
            del buf[:k]
            self._discard_literal -= k
            self._scan = 0
            if self._discard_literal:
                return NEED_DATA
            return _AGAIN
        # 2. skipping the rest of an over-long line
        if self._discard_line:
            i = buf.find(b"\n")
            if i < 0:
                # keep the tail: a literal marker may straddle chunks
                keep = buf[-32:]
                del buf[:]
                buf += keep
                return NEED_DATA
            line_end = bytes(buf[max(0, i - 31) : i + 1])
            del buf[: i + 1]
            self._scan = 0
            self._discard_line = False
            return self._after_skipped_line(line_end)
        # 3. reading a literal of the current command
        cmd = self._cmd
        if cmd is not None and cmd.pending is not None:
            size, binary, nonsync = cmd.pending
            if len(buf) < size:
                return NEED_DATA
            cmd.literals.append(Literal(bytes(buf[:size]), binary=binary, nonsync=nonsync))
            cmd.literal_held += size
            del buf[:size]
            self._scan = 0
            cmd.pending = None
            return _AGAIN
        # 4. a line
        # Line length counts everything but the line ending (literal markers
        # included); a command's lines together may not exceed max_line.
        line = self._take_line()
        if line is None:
            held = cmd.line_total if cmd is not None else 0
            # even if the next octet were LF (after a CR) the line is too long
            if len(buf) - 1 > self.max_line - held:
                return self._start_skip_line()
            return NEED_DATA
        if self._line_mode and cmd is None:
            self._line_mode = False
            body = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            if len(body) > self.max_line:
                return ProtocolError(None, "Line too long")
            return Line(body)
        if self._discard_rest:
            return self._after_skipped_line(line)
        return self._command_line(line)

    def _start_skip_line(self) -> Event:
        cmd = self._cmd
        first = cmd.segments[0] if cmd is not None and cmd.segments else bytes(self._buf[:256])
        self._skip_head = first
        if self._error is None:
            if self._line_mode and cmd is None:
                self._error = ProtocolError(None, "Line too long")
                self._skip_plain = True  # a raw line has no literals to skip
            else:
                tag, name = _head(first)
                self._error = ProtocolError(tag, "Command line too long", name=name)
        self._cmd = None
        self._line_mode = False
        self._discard_line = True
        return _AGAIN

    def _after_skipped_line(self, line_end: bytes) -> Event:
        """A discarded line ended: skip its LITERAL+ literal and following
        segments too, then report the stored error."""
        m = None if self._skip_plain else _LITERAL_MARK.search(line_end)
        self._skip_plain = False
        if m and m.group(3):  # LITERAL+: the client sends it unasked
            size = int(m.group(2))
            if size > self.max_discard:
                return self._fatal("Literal too big")
            self._discard_literal = size
            self._discard_rest = True
            return _AGAIN
        self._discard_rest = False
        err, self._error = self._error, None
        return err if err is not None else _AGAIN

    def _fatal(self, text: str) -> Event:
        err = self._error
        self._closed = True
        del self._buf[:]
        self._cmd = None
        return ProtocolError(err.tag if err else None, text, fatal=True, code="TOOBIG")

    def _command_line(self, line: bytes) -> Event:
        cmd = self._cmd
        if cmd is None:
            cmd = self._cmd = _Command()
        m = _LITERAL_MARK.search(line)
        text = line[: m.start()] if m else line[:-1]
        if not m and text.endswith(b"\r"):
            text = text[:-1]
        cmd.segments.append(text)
        cmd.line_total += len(line) - (2 if line.endswith(b"\r\n") else 1)
        if cmd.line_total > self.max_line:
            tag, name = _head(cmd.segments[0])
            self._error = ProtocolError(tag, "Command line too long", name=name)
            self._cmd = None
            return self._after_skipped_line(line[-32:])
        if m is None:
            self._cmd = None
            return self._finish(cmd)
        size = int(m.group(2))
        binary = bool(m.group(1))
        nonsync = bool(m.group(3))
        if cmd.literal_total + size > self.max_literal:
            tag, name = _head(cmd.segments[0])
            self._error = ProtocolError(tag, "Literal too big", code="TOOBIG", name=name)
            self._cmd = None
            if nonsync:
                return self._after_skipped_line(line[-32:])
            err, self._error = self._error, None
            return err
        cmd.literal_total += size
        cmd.pending = (size, binary, nonsync)
        if nonsync:
            return _AGAIN
        return Continuation()

    def _finish(self, cmd: _Command) -> Event:
        if cmd.literals:
            raw = b"".join(
                seg + (b"%s{%d}\r\n" % (b"~" if lit.binary else b"", len(lit)))
                for seg, lit in zip(cmd.segments, cmd.literals, strict=False)
            )
            raw += cmd.segments[-1]
        else:
            raw = cmd.segments[0]
        first = cmd.segments[0]
        if not first.strip() and len(cmd.segments) == 1:
            return ProtocolError(None, "Empty command line")
        m = _TAG.match(first)
        if not m:
            return ProtocolError(None, "Missing or invalid tag")
        tag = m.group().decode("ascii", "replace")
        segments = cmd.segments
        segments[0] = first[m.end() :]
        if not segments[0].startswith(b" "):
            return ProtocolError(tag, "Missing command")
        try:
            tokens = tokenize(segments, cmd.literals)
        except TokenizeError as e:
            return ProtocolError(tag, f"Syntax error: {e}", name=_head(first)[1])
        if not tokens or not isinstance(tokens[0], Atom) or tokens[0].section is not None:
            return ProtocolError(tag, "Missing command")
        name = tokens[0].upper()
        args = tokens[1:]
        if name == "UID" and args and isinstance(args[0], Atom):
            name = "UID " + args[0].upper()
            args = args[1:]
        return Request(tag, name, args, raw)


class _Again:
    pass


_AGAIN: Any = _Again()
