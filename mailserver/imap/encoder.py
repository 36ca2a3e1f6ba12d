"""IMAP response encoding (RFC 3501 sections 4 and 7): everything as bytes.

Strings go out quoted when that is safe (short, 7-bit, no CR/LF/NUL) and as
a literal otherwise, so any value a client stored comes back intact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from . import mutf7

__all__ = [
    "CRLF",
    "Raw",
    "astring",
    "continuation",
    "encode_value",
    "fetch_response",
    "flag_list",
    "literal",
    "mailbox",
    "nstring",
    "quoted",
    "string",
    "tagged",
    "untagged",
    "untagged_status",
]

CRLF = b"\r\n"
#: strings longer than this go out as literals even when quotable
MAX_QUOTED = 1024

_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*\Z")
_QUOTABLE_UTF8 = re.compile(rb"[^\x00\r\n]*\Z")
_ATOM = re.compile(rb"[!#$&'+-Z^-z|}~]+\Z")  # ATOM-CHAR, minus "[" "\\" "]"


class Raw(bytes):
    """Bytes that ``encode_value`` emits as they are (atoms, flags,
    pre-rendered structures)."""


def _b(s: str | bytes) -> bytes:
    return s.encode("utf-8", "surrogateescape") if isinstance(s, str) else bytes(s)


def quoted(s: str | bytes) -> bytes:
    """``"..."`` with ``\\`` and ``"`` escaped; caller ensures no CR/LF/NUL."""
    return b'"' + _b(s).replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(data: str | bytes, binary: bool = False) -> bytes:
    """``{n}\\r\\n`` + data (``~{n}`` for literal8)."""
    data = _b(data)
    return b"%s{%d}\r\n%s" % (b"~" if binary else b"", len(data), data)


def string(s: str | bytes, utf8: bool = False) -> bytes:
    """A string: quoted when safe, else a literal.  ``utf8``: the client
    enabled UTF8=ACCEPT, so 8-bit text may be quoted."""
    data = _b(s)
    if len(data) <= MAX_QUOTED and (_QUOTABLE_UTF8 if utf8 else _QUOTABLE).match(data):
        return quoted(data)
    return literal(data)


def nstring(s: str | bytes | None, utf8: bool = False) -> bytes:
    """NIL for None, else ``string``."""
    return b"NIL" if s is None else string(s, utf8)


def astring(s: str | bytes, utf8: bool = False) -> bytes:
    """An atom when possible (not "NIL"), else ``string``."""
    data = _b(s)
    if data and _ATOM.match(data) and data.upper() != b"NIL":
        return data
    return string(data, utf8)


def mailbox(name: str, utf8: bool = False) -> bytes:
    """A mailbox name: modified UTF-7 (or UTF-8 when enabled), as astring;
    quoted even when atom-safe, as most servers do, except INBOX."""
    data = name.encode("utf-8") if utf8 else mutf7.encode(name)
    if data == b"INBOX":
        return data
    return string(data, utf8)


def flag_list(flags: Iterable[str]) -> bytes:
    """``(\\Seen $Label)``; system flags first, then keywords, each sorted."""
    fl = sorted(set(flags), key=lambda f: (not f.startswith("\\"), f))
    return b"(" + b" ".join(_b(f) for f in fl) + b")"


def encode_value(v: Any, utf8: bool = False) -> bytes:
    """Generic encoder: None -> NIL, int -> number, Raw -> as is, str/bytes
    -> string, list/tuple -> parenthesized list."""
    if v is None:
        return b"NIL"
    if isinstance(v, Raw):
        return bytes(v)
    if isinstance(v, bool):
        raise TypeError("bool is not an IMAP value")
    if isinstance(v, int):
        return b"%d" % v
    if isinstance(v, (str, bytes)):
        return string(v, utf8)
    if isinstance(v, (list, tuple)):
        return b"(" + b" ".join(encode_value(x, utf8) for x in v) + b")"
    raise TypeError(f"cannot encode {type(v).__name__}")


def _text(text: str | bytes) -> bytes:
    # response text must not break the line
    return _b(text).replace(b"\r", b" ").replace(b"\n", b" ")


def _code(code: str | bytes | None) -> bytes:
    return b"[" + _text(code) + b"] " if code else b""


def tagged(tag: str, status: str, text: str | bytes, code: str | bytes | None = None) -> bytes:
    """``tag OK [code] text\\r\\n`` (status: OK, NO, BAD)."""
    return _b(tag) + b" " + _b(status) + b" " + _code(code) + _text(text) + CRLF


def untagged(data: str | bytes) -> bytes:
    """``* data\\r\\n``; ``data`` is already encoded (may hold literals)."""
    return b"* " + _b(data) + CRLF


def untagged_status(status: str, text: str | bytes, code: str | bytes | None = None) -> bytes:
    """``* OK [code] text\\r\\n`` (OK, NO, BAD, BYE, PREAUTH)."""
    return b"* " + _b(status) + b" " + _code(code) + _text(text) + CRLF


def continuation(text: str | bytes = "Ready") -> bytes:
    """``+ text\\r\\n`` (the text may be base64 for AUTHENTICATE)."""
    return b"+ " + _text(text) + CRLF


def fetch_response(seq: int, items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``* seq FETCH (name value ...)\\r\\n`` from pre-encoded pairs."""
    body = b" ".join(name + b" " + value for name, value in items)
    return b"* %d FETCH (%s)\r\n" % (seq, body)
