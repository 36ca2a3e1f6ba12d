"""Raw RFC 5322 header-block helpers.

IMAP needs the header block both raw (``BODY[HEADER.FIELDS (...)]`` returns
the original field lines, folding included) and decoded (``SEARCH HEADER``,
``SEARCH SUBJECT``).  These functions work on the raw header bytes of one
entity, e.g. ``raw[part.header_start:part.body_start]``; anything after the
first blank line is ignored.  Bare-LF line endings are accepted; output is
always CRLF, as IMAP requires.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Iterator

from .charset import decode_base64, decode_text, header_text

__all__ = [
    "decode_header_value",
    "decode_header_value_ex",
    "header_fields",
    "iter_header_lines",
    "iter_headers",
    "search_header",
    "unfold",
]


def iter_header_lines(header_bytes: bytes) -> Iterator[tuple[bytes, list[bytes]]]:
    """Yield ``(name, lines)`` per field; ``lines`` are without line endings.

    ``name`` is the field name as written (stripped; ``b""`` for a line with
    no colon, or continuation lines before any field).  Stops at the first
    empty line.
    """
    name: bytes | None = None
    lines: list[bytes] = []
    for line in header_bytes.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            if name is None:
                name = b""
            lines.append(line)
            continue
        if name is not None:
            yield name, lines
        colon = line.find(b":")
        name = line[:colon].strip() if colon >= 0 else b""
        lines = [line]
    if name is not None:
        yield name, lines


def iter_headers(header_bytes: bytes) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, raw_value)`` for each field with a name.

    ``raw_value`` is everything after the colon, folding kept as CRLF, with
    the final line ending removed and surrounding blanks stripped.
    """
    for name, lines in iter_header_lines(header_bytes):
        if not name:
            continue
        first = lines[0]
        first = first[first.find(b":") + 1 :]
        value = b"\r\n".join([first, *lines[1:]]) if len(lines) > 1 else first
        yield name.decode("latin-1"), value.strip(b" \t\r\n")


_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_FOLD_STR = re.compile(r"\r?\n(?=[ \t])")


def unfold(value: bytes | str) -> str:
    """Unfold a raw header value (drop CRLF before blanks) into a str."""
    if isinstance(value, bytes):
        value = header_text(_FOLD.sub(b"", value))
    else:
        value = _FOLD_STR.sub("", value)
    return value.replace("\r", "").replace("\n", "").strip(" \t")


_EOL = re.compile(rb"\r*\n")


def _header_block(header_bytes: bytes) -> bytes:
    """The header lines up to (not including) the first empty line."""
    if header_bytes.startswith((b"\n", b"\r\n")):
        return b""
    ends = [i for i in (header_bytes.find(b"\n\n"), header_bytes.find(b"\n\r\n")) if i >= 0]
    return header_bytes[: min(ends) + 1] if ends else header_bytes


def _fields_regex(names: Iterable[str | bytes]) -> re.Pattern[bytes] | None:
    """A regex for ``b"\\n" + field`` (continuations, no final line break).

    Used on the block with a ``b"\\n"`` prepended: the literal newline and a
    first-letter test let the regex engine skip through non-matching lines
    in C.
    """
    wanted = {(n.encode("utf-8", "replace") if isinstance(n, str) else n).lower() for n in names}
    wanted.discard(b"")
    if not wanted:
        return None
    firsts = {c for n in wanted for c in (n[0], bytes([n[0]]).upper()[0])}
    first_class = b"".join(re.escape(bytes([c])) for c in sorted(firsts))
    alts = b"|".join(re.escape(n) for n in sorted(wanted))
    return re.compile(
        rb"\n(?=[" + first_class + rb"])((?:" + alts + rb")[ \t\r\x0b\x0c]*:"
        rb"[^\n]*(?:\n[ \t][^\n]*)*)",
        re.I,
    )


def header_fields(
    header_bytes: bytes, names: Iterable[str | bytes], exclude: bool = False
) -> bytes:
    """The fields named in ``names`` (or all others if ``exclude``).

    For ``BODY[HEADER.FIELDS (...)]`` and ``HEADER.FIELDS.NOT``: names match
    case-insensitively, continuation lines are kept, lines end in CRLF and
    the result ends with the blank line (RFC 3501 6.4.5).  Done by regex in
    C, so a header of millions of lines stays cheap.
    """
    block = b"\n" + _header_block(header_bytes)
    rx = _fields_regex(names)
    if rx is None:
        out = block[1:] if exclude else b""
    elif exclude:
        out = rx.sub(b"", block)[1:]
    else:
        out = b"\n".join(rx.findall(block))
    if out and not out.endswith(b"\n"):
        out += b"\n"
    return _crlf(out) + b"\r\n"


def _crlf(data: bytes) -> bytes:
    """Every line break as CRLF (cheap when that is already so)."""
    if data.count(b"\n") == data.count(b"\r\n") and b"\r\r\n" not in data:
        return data
    return _EOL.sub(b"\r\n", data)


_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([QqBb])\?([^?\s]*)\?=")
_BLANKS = re.compile(r"[ \t\r\n]*\Z")


def _word_bytes(enc: str, text: str) -> tuple[bytes, bool]:
    raw = text.encode("ascii", "replace")
    if enc in "Bb":
        return decode_base64(raw)
    try:
        return binascii.a2b_qp(raw, header=True), True
    except (binascii.Error, ValueError):
        return raw, False


def decode_header_value_ex(raw: bytes | str) -> tuple[str, list[str]]:
    """RFC 2047-decode a raw header value; returns (text, defects).

    Lenient: encoded words inside other text are decoded, blanks between
    adjacent encoded words are dropped, adjacent words in one charset are
    joined before decoding (so a character split across words survives),
    unknown charsets decode best-effort.  Never raises.
    """
    text = unfold(raw)
    defects: list[str] = []
    if "=?" not in text:
        return text, defects
    out: list[str] = []
    pending_cs: str | None = None
    pending: list[bytes] = []

    def flush() -> None:
        nonlocal pending_cs
        if pending:
            decoded, defect = decode_text(b"".join(pending), pending_cs)
            if defect:
                defects.append(defect)
            out.append(decoded)
            pending.clear()
        pending_cs = None

    pos = 0
    for m in _ENCODED_WORD.finditer(text):
        gap = text[pos : m.start()]
        if gap and not (pending and _BLANKS.match(gap)):
            flush()
            out.append(gap)
        charset = m.group(1).split("*", 1)[0].lower()
        data, clean = _word_bytes(m.group(2), m.group(3))
        if not clean:
            defects.append("bad encoded word")
        if pending and charset != pending_cs:
            flush()
        pending_cs = charset
        pending.append(data)
        pos = m.end()
    flush()
    out.append(text[pos:])
    return "".join(out), defects


def decode_header_value(raw: bytes | str) -> str:
    """RFC 2047-decode a raw (possibly folded) header value to Unicode."""
    return decode_header_value_ex(raw)[0]


def search_header(header_bytes: bytes, name: str, needle: str) -> bool:
    """SEARCH HEADER: does field ``name`` contain ``needle`` (decoded, any case)?

    An empty needle matches any message that has the field (RFC 3501 6.4.4).
    Case-insensitive by Unicode case folding.
    """
    rx = _fields_regex([name])
    if rx is None:
        return False
    folded = needle.casefold()
    for field in rx.findall(b"\n" + _header_block(header_bytes)):
        value = field[field.find(b":") + 1 :]
        if not folded or folded in decode_header_value(value).casefold():
            return True
    return False
