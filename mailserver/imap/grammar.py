"""Typed IMAP command arguments from receiver tokens (RFC 3501 section 9).

Every parser raises ``GrammarError`` on bad input; the session answers
``BAD`` with its text (or ``NO [code]`` where ``code`` says so, e.g.
``BADCHARSET (UTF-8 US-ASCII)`` for SEARCH with an unknown charset).
"""

from __future__ import annotations

import bisect
import calendar
import datetime as _dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailserver.store.interfaces import DELIMITER, FlagMode

from . import mutf7
from .receiver import Atom, Literal, Token

__all__ = [
    "AppendArgs",
    "FetchArgs",
    "FetchItem",
    "GrammarError",
    "SearchKey",
    "SearchProgram",
    "Section",
    "SequenceError",
    "SequenceSet",
    "StoreAction",
    "StoreArgs",
    "SYSTEM_FLAGS",
    "astring",
    "list_matcher",
    "mailbox_name",
    "number",
    "parse_append_args",
    "parse_date",
    "parse_date_time",
    "parse_fetch_args",
    "parse_fetch_items",
    "parse_flag",
    "parse_flag_list",
    "parse_search",
    "parse_search_args",
    "parse_sequence_set",
    "parse_status_items",
    "parse_store_action",
    "parse_store_args",
    "string",
]


class GrammarError(ValueError):
    """Invalid arguments.  ``code``: response code text without brackets."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class SequenceError(GrammarError):
    """A sequence number beyond the mailbox size (or ``*`` in an empty one)."""


MAX_NUMBER = 2**32 - 1
MAX_NUMBER64 = 2**63 - 1

# -- basic values -------------------------------------------------------------


def astring(tok: Token) -> bytes:
    """An astring (atom, quoted string or literal) as bytes.  NIL is the atom
    "NIL" here (``LOGIN NIL x`` logs in as user "NIL")."""
    if tok is None:
        return b"NIL"
    if isinstance(tok, Atom):
        return str(tok).encode("utf-8", "surrogateescape")
    if isinstance(tok, bytes):
        return bytes(tok)
    raise GrammarError("Expected a string")


def string(tok: Token) -> bytes:
    """A string (quoted or literal), not an atom."""
    if isinstance(tok, bytes):
        return bytes(tok)
    raise GrammarError("Expected a quoted string or literal")


def number(tok: Token, nonzero: bool = False, limit: int = MAX_NUMBER) -> int:
    """An unsigned number (RFC 3501 ``number``/``nz-number``)."""
    if isinstance(tok, Atom) and tok.isdigit() and tok.isascii() and len(tok) <= 20:
        n = int(tok)
        if n <= limit and (n or not nonzero):
            return n
    raise GrammarError("Expected a number")


def _atom(tok: Token, what: str) -> str:
    if isinstance(tok, Atom) and tok.section is None:
        return str(tok)
    raise GrammarError(f"Expected {what}")


def mailbox_name(tok: Token, utf8: bool = False, normalize_inbox: bool = True) -> str:
    """Decode a mailbox name (or LIST pattern): modified UTF-7, or UTF-8 when
    the client enabled UTF8=ACCEPT.  8-bit names from clients that did not
    enable it are accepted as UTF-8.  ``INBOX`` (any case) becomes "INBOX"."""
    raw = astring(tok)
    if utf8 or not raw.isascii():
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GrammarError("Mailbox name is not valid UTF-8") from e
    else:
        try:
            name = mutf7.decode(raw)
        except ValueError as e:
            raise GrammarError(f"Mailbox name is not valid modified UTF-7: {e}") from e
    if any(c < " " or c == "\x7f" for c in name):
        raise GrammarError("Control character in mailbox name")
    if normalize_inbox and name[:5].upper() == "INBOX" and name[5:6] in ("", DELIMITER):
        name = "INBOX" + name[5:]
    return name


# -- sequence sets ------------------------------------------------------------

_SEQ_RE = re.compile(r"(?:\d+|\*)(?::(?:\d+|\*))?(?:,(?:\d+|\*)(?::(?:\d+|\*))?)*\Z")


@dataclass(frozen=True)
class SequenceSet:
    """A sequence set; ``None`` in a range stands for ``*``.  ``saved`` is
    the RFC 5182 ``$`` (the session substitutes its saved result)."""

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    def __str__(self) -> str:
        if self.saved:
            return "$"

        def one(v: int | None) -> str:
            return "*" if v is None else str(v)

        return ",".join(one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in self.ranges)

    def _bounds(self, star: int) -> list[tuple[int, int]]:
        out = []
        for a, b in self.ranges:
            lo = star if a is None else a
            hi = star if b is None else b
            out.append((lo, hi) if lo <= hi else (hi, lo))
        return out

    def contains(self, n: int, star: int) -> bool:
        """Is ``n`` in the set when ``*`` is ``star``?"""
        return any(lo <= n <= hi for lo, hi in self._bounds(star))

    def resolve_seqs(self, count: int, saved: Sequence[int] | None = None) -> list[int]:
        """Sequence numbers, ascending, for a mailbox of ``count`` messages.
        Raises SequenceError for numbers above ``count`` (RFC 3501 BAD)."""
        if self.saved:
            return sorted(set(saved or ()))
        if count == 0:
            raise SequenceError("No messages in the mailbox")
        merged = _merge(self._bounds(count))
        if merged and merged[-1][1] > count:
            raise SequenceError("Invalid message sequence number")
        out: list[int] = []
        for lo, hi in merged:
            out.extend(range(lo, hi + 1))
        return out

    def resolve_uids(self, uids: Sequence[int], saved: Sequence[int] | None = None) -> list[int]:
        """The UIDs of ``uids`` (ascending, the mailbox's) in the set.  ``*`` is
        the highest UID, so ``n:*`` always includes the last message."""
        if self.saved:
            have = set(uids)
            return sorted(u for u in set(saved or ()) if u in have)
        if not uids:
            return []
        spans: list[tuple[int, int]] = []
        for lo, hi in self._bounds(uids[-1]):
            i = bisect.bisect_left(uids, lo)
            j = bisect.bisect_right(uids, hi)
            if i < j:
                spans.append((i, j - 1))
        out: list[int] = []
        for i, j in _merge(spans):
            out.extend(uids[i : j + 1])
        return out


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    spans.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def parse_sequence_set(text: str | Token, allow_saved: bool = True) -> SequenceSet:
    """Parse ``1,3:5,7:*`` (ranges in either order) or ``$``."""
    if isinstance(text, Atom) and text.section is not None:
        raise GrammarError("Invalid sequence set")
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not isinstance(text, str):
        raise GrammarError("Expected a sequence set")
    s = str(text)
    if s == "$" and allow_saved:
        return SequenceSet(saved=True)
    if len(s) > 100000 or not _SEQ_RE.match(s):
        raise GrammarError("Invalid sequence set")
    ranges = []
    for part in s.split(","):
        a, _, b = part.partition(":")
        lo = _seq_number(a)
        hi = _seq_number(b) if b else lo
        ranges.append((lo, hi))
    return SequenceSet(tuple(ranges))


def _seq_number(s: str) -> int | None:
    if s == "*":
        return None
    if len(s) > 10:
        raise GrammarError("Invalid sequence number")
    n = int(s)
    if n == 0 or n > MAX_NUMBER:
        raise GrammarError("Invalid sequence number")
    return n


def is_sequence_set(tok: Token) -> bool:
    return (
        isinstance(tok, Atom) and tok.section is None and (tok == "$" or bool(_SEQ_RE.match(tok)))
    )


# -- flags --------------------------------------------------------------------

SYSTEM_FLAGS = {
    f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}
_FLAG_ATOM = re.compile(r'[^\x00-\x20\x7f(){%*"\\\]]+\Z')


def parse_flag(tok: Token, allow_recent: bool = False) -> str:
    """A flag: system flags in canonical case, keywords as sent."""
    s = _atom(tok, "a flag")
    if s.startswith("\\"):
        canon = SYSTEM_FLAGS.get(s.lower())
        if canon == "\\Recent" and not allow_recent:
            raise GrammarError("\\Recent cannot be set")
        if canon:
            return canon
        if _FLAG_ATOM.match(s[1:]):
            return s  # flag-extension
        raise GrammarError(f"Invalid flag {s}")
    if not _FLAG_ATOM.match(s):
        raise GrammarError(f"Invalid flag {s}")
    return s


def parse_flag_list(tok: Token) -> list[str]:
    """A parenthesized flag list (APPEND, STORE)."""
    if not isinstance(tok, list):
        raise GrammarError("Expected a flag list")
    return _unique([parse_flag(t) for t in tok])


def _unique(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for f in items:
        key = f.lower()
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


# -- dates --------------------------------------------------------------------

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUM = {m.lower(): i + 1 for i, m in enumerate(MONTHS)}
_DATE_RE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})\Z")
_DATE_TIME_RE = re.compile(
    r"([ \d]?\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\Z"
)


def _text(tok: Token) -> str:
    if isinstance(tok, Atom) and tok.section is None:
        return str(tok)
    if isinstance(tok, bytes):
        return tok.decode("ascii", "replace")
    raise GrammarError("Expected a date")


def parse_date(tok: Token) -> _dt.date:
    """SEARCH date: ``1-Feb-1994`` (atom or quoted)."""
    m = _DATE_RE.match(_text(tok))
    if not m or m.group(2).lower() not in _MONTH_NUM:
        raise GrammarError("Invalid date")
    try:
        return _dt.date(int(m.group(3)), _MONTH_NUM[m.group(2).lower()], int(m.group(1)))
    except ValueError as e:
        raise GrammarError("Invalid date") from e


def parse_date_time(tok: Token) -> int:
    """APPEND date-time ``"17-Jul-1996 02:44:25 -0700"`` -> epoch seconds."""
    if not isinstance(tok, bytes):
        raise GrammarError("Expected a quoted date-time")
    m = _DATE_TIME_RE.match(tok.decode("ascii", "replace"))
    if not m or m.group(2).lower() not in _MONTH_NUM:
        raise GrammarError("Invalid date-time")
    try:
        when = _dt.datetime(
            int(m.group(3)),
            _MONTH_NUM[m.group(2).lower()],
            int(m.group(1)),
            int(m.group(4)),
            int(m.group(5)),
            int(m.group(6)),
        )
    except ValueError as e:
        raise GrammarError("Invalid date-time") from e
    hh, mm = int(m.group(8)), int(m.group(9))
    if mm >= 60:
        raise GrammarError("Invalid time zone")
    offset = (hh * 3600 + mm * 60) * (-1 if m.group(7) == "-" else 1)
    return calendar.timegm(when.timetuple()) - offset


# -- FETCH --------------------------------------------------------------------

_SECTION_TEXTS = {"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"}


@dataclass(frozen=True)
class Section:
    """A body section: ``part`` numbers (1.2.3) and ``text`` (None for the
    whole part, or HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME);
    ``fields`` the header names as the client sent them."""

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def spec(self) -> str:
        """The section text as echoed in the response (inside the brackets)."""
        out = ".".join(str(p) for p in self.part)
        if self.text:
            out = f"{out}.{self.text}" if out else self.text
        if self.fields:
            out += " (" + " ".join(_header_name_text(f) for f in self.fields) + ")"
        return out


def _header_name_text(name: str) -> str:
    if name and re.fullmatch(r"[!#-'+-~]+", name) and name.upper() != "NIL":
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class FetchItem:
    """One FETCH attribute.

    ``name``: FLAGS, UID, INTERNALDATE, ENVELOPE, BODYSTRUCTURE, BODY,
    RFC822, RFC822.HEADER, RFC822.TEXT, RFC822.SIZE, MODSEQ.  ``BODY`` with
    ``section`` set is ``BODY[section]<partial>`` (``peek`` for BODY.PEEK);
    without it, the non-extensible body structure.  ``partial`` is
    (origin, count)."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False

    def response_name(self) -> bytes:
        """The name in the FETCH response, e.g. ``BODY[1.MIME]<0>``."""
        if self.section is None:
            return self.name.encode("ascii")
        out = f"{self.name}[{self.section.spec()}]"
        if self.partial is not None:
            out += f"<{self.partial[0]}>"
        return out.encode("utf-8", "surrogateescape")


_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE_ITEMS = {
    "FLAGS",
    "UID",
    "INTERNALDATE",
    "ENVELOPE",
    "BODYSTRUCTURE",
    "BODY",
    "RFC822",
    "RFC822.HEADER",
    "RFC822.TEXT",
    "RFC822.SIZE",
    "MODSEQ",
}
_PARTIAL_RE = re.compile(r"<(\d{1,10})\.(\d{1,10})>\Z")


def _parse_section(tokens: list[Token]) -> Section:
    if not tokens:
        return Section()
    first = _atom(tokens[0], "a section")
    parts: list[int] = []
    rest = first.upper().split(".")
    while rest and rest[0].isdigit() and rest[0].isascii():
        n = int(rest[0])
        if n == 0 or n > MAX_NUMBER:
            raise GrammarError("Invalid section part number")
        parts.append(n)
        rest.pop(0)
    text = ".".join(rest) or None
    if text is not None and text not in _SECTION_TEXTS:
        raise GrammarError(f"Invalid section {first}")
    if text == "MIME" and not parts:
        raise GrammarError("MIME needs a part number")
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        if len(tokens) != 2 or not isinstance(tokens[1], list) or not tokens[1]:
            raise GrammarError(f"{text} needs a list of header names")
        names = []
        for t in tokens[1]:
            if isinstance(t, list):
                raise GrammarError("Invalid header name")
            name = astring(t).decode("utf-8", "replace")
            if not name or any(c <= " " or c == ":" or c == "\x7f" for c in name):
                raise GrammarError("Invalid header name")
            names.append(name)
        return Section(tuple(parts), text, tuple(names))
    if len(tokens) != 1:
        raise GrammarError("Invalid section")
    return Section(tuple(parts), text)


def _parse_fetch_att(tok: Token) -> FetchItem:
    if not isinstance(tok, Atom):
        raise GrammarError("Invalid fetch attribute")
    if tok.section is None:
        name = tok.upper()
        if name in _SIMPLE_ITEMS:
            return FetchItem(name)
        raise GrammarError(f"Unknown fetch attribute {tok}")
    prefix = tok.prefix.upper()
    if prefix not in ("BODY", "BODY.PEEK"):
        raise GrammarError(f"Unknown fetch attribute {tok.prefix}")
    section = _parse_section(tok.section)
    partial = None
    if tok.suffix:
        m = _PARTIAL_RE.match(tok.suffix)
        if not m:
            raise GrammarError("Invalid partial fetch")
        origin, count = int(m.group(1)), int(m.group(2))
        if count == 0 or origin > MAX_NUMBER or count > MAX_NUMBER:
            raise GrammarError("Invalid partial fetch")
        partial = (origin, count)
    return FetchItem("BODY", section, partial, peek=prefix == "BODY.PEEK")


def parse_fetch_items(tok: Token | list[Token]) -> list[FetchItem]:
    """FETCH attributes: a macro (ALL/FAST/FULL), one attribute, or a list."""
    if isinstance(tok, list):
        if not tok:
            raise GrammarError("Empty fetch attribute list")
        items = [_parse_fetch_att(t) for t in tok]
    else:
        if isinstance(tok, Atom) and tok.section is None and tok.upper() in _MACROS:
            return [FetchItem(n) for n in _MACROS[tok.upper()]]
        items = [_parse_fetch_att(tok)]
    out: list[FetchItem] = []
    for it in items:  # drop exact duplicates, keep order
        if it not in out:
            out.append(it)
    return out


@dataclass(frozen=True)
class FetchArgs:
    sequence: SequenceSet
    items: list[FetchItem]
    changedsince: int | None = None
    vanished: bool = False


def parse_fetch_args(args: list[Token]) -> FetchArgs:
    """``FETCH sequence-set items [(CHANGEDSINCE n [VANISHED])]``."""
    if len(args) not in (2, 3):
        raise GrammarError("FETCH needs a sequence set and attributes")
    seq = parse_sequence_set(args[0])
    items = parse_fetch_items(args[1])
    changedsince = None
    vanished = False
    if len(args) == 3:
        mods = args[2]
        if not isinstance(mods, list) or not mods:
            raise GrammarError("Invalid FETCH modifiers")
        i = 0
        while i < len(mods):
            m = _atom(mods[i], "a FETCH modifier").upper()
            if m == "CHANGEDSINCE" and i + 1 < len(mods):
                changedsince = number(mods[i + 1], limit=MAX_NUMBER64)
                i += 2
            elif m == "VANISHED":
                vanished = True
                i += 1
            else:
                raise GrammarError(f"Unknown FETCH modifier {m}")
        if changedsince is not None and not any(it.name == "MODSEQ" for it in items):
            items = [*items, FetchItem("MODSEQ")]
    return FetchArgs(seq, items, changedsince, vanished)


# -- STORE --------------------------------------------------------------------


@dataclass(frozen=True)
class StoreAction:
    mode: FlagMode
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None


@dataclass(frozen=True)
class StoreArgs:
    sequence: SequenceSet
    mode: FlagMode
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None


_STORE_MODES = {"FLAGS": FlagMode.SET, "+FLAGS": FlagMode.ADD, "-FLAGS": FlagMode.REMOVE}


def parse_store_action(tokens: list[Token]) -> StoreAction:
    """``[(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] (flags)|flag...``."""
    tokens = list(tokens)
    unchanged = None
    if tokens and isinstance(tokens[0], list):
        mods = tokens.pop(0)
        if len(mods) != 2 or not isinstance(mods[0], Atom) or mods[0].upper() != "UNCHANGEDSINCE":
            raise GrammarError("Invalid STORE modifier")
        unchanged = number(mods[1], limit=MAX_NUMBER64)
    if len(tokens) < 2:
        raise GrammarError("STORE needs an action and flags")
    action = _atom(tokens[0], "FLAGS, +FLAGS or -FLAGS").upper()
    silent = action.endswith(".SILENT")
    if silent:
        action = action[: -len(".SILENT")]
    mode = _STORE_MODES.get(action)
    if mode is None:
        raise GrammarError(f"Invalid STORE action {tokens[0]}")
    rest = tokens[1:]
    if len(rest) == 1 and isinstance(rest[0], list):
        flags = parse_flag_list(rest[0])
    else:
        flags = _unique([parse_flag(t) for t in rest])
    return StoreAction(mode, silent, tuple(flags), unchanged)


def parse_store_args(args: list[Token]) -> StoreArgs:
    """``STORE sequence-set [modifiers] action flags``."""
    if not args:
        raise GrammarError("STORE needs a sequence set")
    seq = parse_sequence_set(args[0])
    a = parse_store_action(args[1:])
    return StoreArgs(seq, a.mode, a.silent, a.flags, a.unchanged_since)


# -- APPEND / STATUS ----------------------------------------------------------


@dataclass(frozen=True)
class AppendArgs:
    """``APPEND mailbox [flags] [date-time] literal``; ``mailbox`` is the raw
    token (decode with ``mailbox_name``), ``date`` epoch seconds or None."""

    mailbox: Token
    flags: tuple[str, ...]
    date: int | None
    message: bytes
    utf8: bool = False  # sent as UTF8 (~{n}) (RFC 6855)


def parse_append_args(args: list[Token]) -> AppendArgs:
    if len(args) < 2:
        raise GrammarError("APPEND needs a mailbox and a message")
    mailbox = args[0]
    if isinstance(mailbox, list):
        raise GrammarError("Invalid mailbox name")
    rest = list(args[1:])
    flags: list[str] = []
    date = None
    if rest and isinstance(rest[0], list):
        flags = parse_flag_list(rest.pop(0))
    if rest and isinstance(rest[0], bytes) and not isinstance(rest[0], Literal):
        date = parse_date_time(rest.pop(0))
    utf8 = False
    if (
        len(rest) == 2
        and isinstance(rest[0], Atom)
        and rest[0].upper() == "UTF8"
        and isinstance(rest[1], list)
        and len(rest[1]) == 1
        and isinstance(rest[1][0], Literal)
    ):
        rest = rest[1]
        utf8 = True
    if len(rest) != 1 or not isinstance(rest[0], Literal):
        raise GrammarError("APPEND message must be a literal")
    return AppendArgs(mailbox, tuple(flags), date, bytes(rest[0]), utf8)


STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE")


def parse_status_items(tok: Token) -> list[str]:
    """STATUS attribute list, upper-case, in the order given."""
    if not isinstance(tok, list) or not tok:
        raise GrammarError("STATUS needs a list of attributes")
    out = []
    for t in tok:
        name = _atom(t, "a status attribute").upper()
        if name not in STATUS_ITEMS:
            raise GrammarError(f"Unknown status attribute {name}")
        if name not in out:
            out.append(name)
    return out


# -- LIST ---------------------------------------------------------------------


def list_matcher(reference: str, pattern: str, delimiter: str = DELIMITER) -> Callable[[str], bool]:
    """A predicate telling whether a mailbox name matches LIST ``reference``
    + ``pattern`` (``*`` matches anything, ``%`` anything but the
    delimiter).  INBOX matches case-insensitively."""
    if reference and pattern.startswith(delimiter) and reference.endswith(delimiter):
        full = reference + pattern[len(delimiter) :]
    else:
        full = reference + pattern
    if full[:5].upper() == "INBOX":
        full = "INBOX" + full[5:]
    glob = _Glob(full, delimiter)
    glob_ci = _Glob(full.upper(), delimiter)

    def match(name: str) -> bool:
        if name == "INBOX":
            return glob_ci.match(name)
        return glob.match(name)

    return match


class _Glob:
    """LIST wildcard matching without backtracking: the set of reachable
    positions is advanced token by token, O(len(pattern) * len(name))."""

    def __init__(self, pattern: str, delimiter: str) -> None:
        self.delimiter = delimiter
        tokens: list[str] = []  # "*", "%" or literal text
        for piece in re.split(r"([*%]+)", pattern):
            if not piece:
                continue
            if piece[0] in "*%":
                tokens.append("*" if "*" in piece else "%")
            else:
                tokens.append(piece)
        self.tokens = tokens

    def match(self, name: str) -> bool:
        n = len(name)
        states = [0]  # ascending reachable positions
        for tok in self.tokens:
            if tok == "*":
                states = list(range(states[0], n + 1))
            elif tok == "%":
                out: list[int] = []
                reach = -1
                for p in states:
                    if p <= reach:
                        continue
                    stop = name.find(self.delimiter, p)
                    stop = n if stop < 0 else stop
                    out.extend(range(max(p, reach + 1), stop + 1))
                    reach = stop
                states = out
            else:
                states = [p + len(tok) for p in states if name.startswith(tok, p)]
            if not states:
                return False
        return states[-1] == n


# -- SEARCH -------------------------------------------------------------------


@dataclass(frozen=True)
class SearchKey:
    """A node of a SEARCH program.

    ``op``: ALL; AND/OR (``children``); NOT (one child); SEQ and UID
    (``value`` a SequenceSet); FLAG (``value`` a flag, from ANSWERED,
    DELETED, DRAFT, FLAGGED, KEYWORD); SEEN; UNSEEN; RECENT; BEFORE, ON,
    SINCE, SENTBEFORE, SENTON, SENTSINCE (``value`` a date); LARGER,
    SMALLER, OLDER, YOUNGER, MODSEQ (``value`` an int); FROM, TO, CC, BCC,
    SUBJECT, BODY, TEXT (``value`` a str); HEADER (``value`` (name, str)).
    NEW, OLD, UN* keys are expressed with AND/NOT.
    """

    op: str
    value: Any = None
    children: tuple[SearchKey, ...] = ()


@dataclass(frozen=True)
class SearchProgram:
    charset: str
    key: SearchKey
    return_opts: tuple[str, ...] | None = None  # ESEARCH RETURN (...), None if absent
    extra: dict[str, Any] = field(default_factory=dict)


SEARCH_CHARSETS = ("UTF-8", "US-ASCII")
BADCHARSET = "BADCHARSET (UTF-8 US-ASCII)"

_FLAG_KEYS = {
    "ANSWERED": "\\Answered",
    "DELETED": "\\Deleted",
    "DRAFT": "\\Draft",
    "FLAGGED": "\\Flagged",
}
_TEXT_KEYS = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
_NUMBER_KEYS = {"LARGER", "SMALLER", "OLDER", "YOUNGER"}
_MAX_DEPTH = 100


def _search_string(tok: Token, charset: str) -> str:
    if isinstance(tok, list):
        raise GrammarError("Expected a search string")
    raw = astring(tok)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GrammarError(f"Search string is not valid {charset}") from e


class _SearchParser:
    def __init__(self, charset: str) -> None:
        self.charset = charset

    def keys(self, tokens: list[Token], depth: int) -> list[SearchKey]:
        out = []
        pos = 0
        while pos < len(tokens):
            key, pos = self.key(tokens, pos, depth)
            out.append(key)
        return out

    def key(self, tokens: list[Token], pos: int, depth: int) -> tuple[SearchKey, int]:
        if depth > _MAX_DEPTH:
            raise GrammarError("Search program nested too deeply")
        tok = tokens[pos]
        pos += 1

        def arg() -> Token:
            nonlocal pos
            if pos >= len(tokens):
                raise GrammarError(f"Missing argument for {name}")
            pos += 1
            return tokens[pos - 1]

        if isinstance(tok, list):
            children = self.keys(tok, depth + 1)
            if not children:
                raise GrammarError("Empty search key list")
            return _and(children), pos
        if not isinstance(tok, Atom) or tok.section is not None:
            raise GrammarError("Invalid search key")
        name = tok.upper()
        if is_sequence_set(tok):
            return SearchKey("SEQ", parse_sequence_set(tok)), pos
        if name == "ALL":
            return SearchKey("ALL"), pos
        if name in _FLAG_KEYS:
            return SearchKey("FLAG", _FLAG_KEYS[name]), pos
        if name.startswith("UN") and name[2:] in _FLAG_KEYS:
            return _not(SearchKey("FLAG", _FLAG_KEYS[name[2:]])), pos
        if name == "SEEN":
            return SearchKey("SEEN"), pos
        if name == "UNSEEN":
            return SearchKey("UNSEEN"), pos
        if name == "RECENT":
            return SearchKey("RECENT"), pos
        if name == "NEW":
            return SearchKey("AND", children=(SearchKey("RECENT"), SearchKey("UNSEEN"))), pos
        if name == "OLD":
            return _not(SearchKey("RECENT")), pos
        if name == "KEYWORD":
            return SearchKey("FLAG", parse_flag(arg(), allow_recent=True)), pos
        if name == "UNKEYWORD":
            return _not(SearchKey("FLAG", parse_flag(arg(), allow_recent=True))), pos
        if name in _TEXT_KEYS:
            return SearchKey(name, _search_string(arg(), self.charset)), pos
        if name == "HEADER":
            field_name = _search_string(arg(), self.charset)
            return SearchKey("HEADER", (field_name, _search_string(arg(), self.charset))), pos
        if name in _DATE_KEYS:
            return SearchKey(name, parse_date(arg())), pos
        if name in _NUMBER_KEYS:
            return SearchKey(name, number(arg(), limit=MAX_NUMBER64)), pos
        if name == "MODSEQ":
            # MODSEQ [entry-name entry-type] mod-sequence-valzer (RFC 7162)
            if pos + 2 < len(tokens) and isinstance(tokens[pos], bytes):
                pos += 2
            return SearchKey("MODSEQ", number(arg(), limit=MAX_NUMBER64)), pos
        if name == "NOT":
            child, pos = self.key(tokens, _need(tokens, pos, name), depth + 1)
            return _not(child), pos
        if name == "OR":
            a, pos = self.key(tokens, _need(tokens, pos, name), depth + 1)
            b, pos = self.key(tokens, _need(tokens, pos, name), depth + 1)
            return SearchKey("OR", children=(a, b)), pos
        if name == "UID":
            t = arg()
            if not is_sequence_set(t):
                raise GrammarError("Invalid UID set")
            return SearchKey("UID", parse_sequence_set(t)), pos
        raise GrammarError(f"Unknown search key {tok}")


def _need(tokens: list[Token], pos: int, name: str) -> int:
    if pos >= len(tokens):
        raise GrammarError(f"Missing argument for {name}")
    return pos


def _not(k: SearchKey) -> SearchKey:
    if k.op == "NOT":
        return k.children[0]
    return SearchKey("NOT", children=(k,))


def _and(children: list[SearchKey]) -> SearchKey:
    if len(children) == 1:
        return children[0]
    return SearchKey("AND", children=tuple(children))


def _check_charset(tok: Token) -> str:
    cs = astring(tok).decode("ascii", "replace").upper()
    if cs in ("UTF8", "UTF-8"):
        return "UTF-8"
    if cs in ("US-ASCII", "ASCII"):
        return "US-ASCII"
    raise GrammarError(f"Unsupported charset {cs}", code=BADCHARSET)


def parse_search(tokens: list[Token], charset: str = "US-ASCII") -> SearchKey:
    """The search keys (after CHARSET/RETURN) as one key tree (AND of all)."""
    charset = _check_charset(charset.encode() if isinstance(charset, str) else charset)
    if not tokens:
        raise GrammarError("SEARCH needs a search key")
    return _and(_SearchParser(charset).keys(list(tokens), 0))


def parse_search_args(args: list[Token]) -> SearchProgram:
    """``SEARCH [RETURN (...)] [CHARSET x] keys`` (RETURN per RFC 4731)."""
    args = list(args)
    return_opts = None
    if len(args) >= 2 and isinstance(args[0], Atom) and args[0].upper() == "RETURN":
        if not isinstance(args[1], list):
            raise GrammarError("RETURN needs a list")
        return_opts = tuple(_atom(t, "a RETURN option").upper() for t in args[1])
        for o in return_opts:
            if o not in ("MIN", "MAX", "ALL", "COUNT", "SAVE"):
                raise GrammarError(f"Unknown RETURN option {o}")
        args = args[2:]
    charset = "US-ASCII"
    if len(args) >= 2 and isinstance(args[0], Atom) and args[0].upper() == "CHARSET":
        charset = _check_charset(args[1])
        args = args[2:]
    return SearchProgram(charset, parse_search(args, charset), return_opts)
