"""Parse raw RFC 5322 / MIME bytes into the stored ``ParsedMessage``.

One pass over the raw bytes with ``bytes.find`` and regexes: header/body
boundaries and MIME delimiters are located here, not by the ``email``
package, so every entity gets exact absolute offsets (RFC 2046: a child
starts after its delimiter line and ends before the CRLF that precedes the
next delimiter).  Parsing is lenient and total: broken MIME is repaired the
way common servers do and described in ``defects``; ``parse_message`` never
raises.  Work is linear in the size of the message, with explicit bounds on
nesting depth, part count and the amount of text decoded for search.
"""

from __future__ import annotations

import calendar
import email.utils
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .address import parse_address_list
from .charset import decode_text, decode_transfer, header_text
from .headers import decode_header_value_ex, unfold
from .message import Address, BodyPart, Envelope, ParsedMessage

__all__ = [
    "ADDRESS_BUDGET",
    "MAX_DEPTH",
    "MAX_PARTS",
    "SEARCH_BODY_LIMIT",
    "parse_envelope",
    "parse_message",
]

#: Nesting deeper than this (multipart or message/rfc822) is not parsed further.
MAX_DEPTH = 20
#: At most this many MIME entities per message; the rest are merged.
MAX_PARTS = 10_000
#: ``search_body`` holds at most this many characters.
SEARCH_BODY_LIMIT = 256 * 1024
#: Octets of address lists parsed for the top-level envelope (each field is
#: already cut at MAX_FIELD), and again for all enclosed messages' envelopes
#: together.  Keeps a header of pathological address lists cheap.
ADDRESS_BUDGET = 64 * 1024
NESTED_ADDRESS_BUDGET = 32 * 1024

#: Long scans are done in slices of this many bytes: one C call over a 35 MB
#: attachment would hold the GIL (and so stall the reactor) for tens of ms.
_SCAN_SLICE = 1 << 20

_HEADER_END = re.compile(rb"\n\r?\n")
_FIELD_START = re.compile(rb"[^\x00-\x20\x7f:]+[ \t]*:")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CT_PIECES = re.compile(r'"(?:[^"\\]|\\.)*"?|\((?:[^()\\]|\\.)*\)?|[^"(]+', re.S)
_PARAM = re.compile(
    r'\s*([^\s=;"]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"?\s*|([^;]*))(?:;|\Z)',
    re.S,
)
_UNESCAPE = re.compile(r"\\(.)", re.S)
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n\t "
_SCRIPT = re.compile(r"<(script|style)\b", re.I)
_TAG = re.compile(r"<[^<>]*>")


@dataclass
class _Ctx:
    data: bytes
    defects: list[str] = field(default_factory=list)
    parts: int = 0
    search: list[str] = field(default_factory=list)
    search_left: int = SEARCH_BODY_LIMIT
    address_left: int = NESTED_ADDRESS_BUDGET

    def defect(self, text: str) -> None:
        if text not in self.defects and len(self.defects) < 100:
            self.defects.append(text)


# -- header values ------------------------------------------------------------


def _strip_comments(value: str) -> str:
    """Remove RFC 822 comments outside quoted strings (not nested)."""
    if "(" not in value:
        return value
    return "".join(p for p in _CT_PIECES.findall(value) if not p.startswith("("))


def _params(rest: str) -> list[tuple[str, str]]:
    out = []
    for m in _PARAM.finditer(rest):
        name = m.group(1).lower()
        if m.group(2) is not None:
            value = _UNESCAPE.sub(r"\1", m.group(2))
        else:
            value = (m.group(3) or "").strip()
        out.append((name, value))
    return out


def _split_value(raw: str) -> tuple[str, list[tuple[str, str]]]:
    """``type/subtype; a=b; c="d"`` -> (``type/subtype``, params)."""
    value = _strip_comments(raw)
    semi = value.find(";")
    if semi < 0:
        return value.strip(), []
    return value[:semi].strip(), _params(value[semi + 1 :])


def _content_type(
    raw: str | None, default: tuple[str, str], ctx: _Ctx
) -> tuple[str, str, list[tuple[str, str]]]:
    if raw is None:
        return default[0], default[1], []
    main, params = _split_value(raw)
    typ, slash, sub = main.partition("/")
    typ, sub = typ.strip().lower(), sub.strip().lower()
    if slash and _TOKEN.fullmatch(typ) and _TOKEN.fullmatch(sub):
        return typ, sub, params
    if not main and not params:
        return default[0], default[1], []
    ctx.defect(f"invalid Content-Type {raw[:60]!r}")
    # RFC 2045 5.2: an invalid Content-Type means text/plain; keep a charset
    return "text", "plain", [(k, v) for k, v in params if k == "charset"]


def _text_value(raw: bytes | None) -> str | None:
    return None if raw is None else unfold(raw)


# -- entities -------------------------------------------------------------------


def _count_lines(data: bytes, start: int, end: int) -> int:
    if end <= start:
        return 0
    n = 0
    for i in range(start, end, _SCAN_SLICE):
        n += data.count(b"\n", i, min(end, i + _SCAN_SLICE))
    if data[end - 1] != 0x0A:
        n += 1
    return n


_FIELDS = (
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-language",
    "content-id",
    "content-description",
    "content-location",
    "content-md5",
    "date",
    "subject",
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "in-reply-to",
    "message-id",
)
# Only the fields we store are looked at, so a header of millions of other
# lines costs one regex scan in C, not a Python loop per line.
_NAMES = b"|".join(re.escape(f.encode()) for f in _FIELDS)
_FIRST = "".join(sorted({f[0] for f in _FIELDS}))
_FIRST_CLASS = (_FIRST + _FIRST.upper()).encode()
# "\n" then a quick first-letter test lets the regex engine skip fast.
_FIELD_RE = re.compile(rb"\n(?=[" + _FIRST_CLASS + rb"])(" + _NAMES + rb")[ \t]*:", re.I)
_FIELD_AT = re.compile(rb"(" + _NAMES + rb")[ \t]*:", re.I)
_FIELD_END = re.compile(rb"\n(?![ \t])")
#: Header values longer than this are cut (for the envelope and search only).
MAX_FIELD = 64 * 1024
#: At most this many occurrences of one field are kept ...
MAX_OCCURRENCES = 100
#: ... and at most this many stored fields are looked at per header.
MAX_FIELD_LINES = 2000


def _header_fields(ctx: _Ctx, start: int, body_start: int) -> dict[str, list[bytes]]:
    """Raw values (folding kept) of the stored fields, by lower-case name."""
    data = ctx.data
    fields: dict[str, list[bytes]] = {}
    pos = start
    m = _FIELD_AT.match(data, start, body_start)
    seen = 0
    while pos < body_start:
        seen += 1
        if seen > MAX_FIELD_LINES:
            ctx.defect("too many header fields")
            break
        if m is None:
            m = _FIELD_RE.search(data, pos, body_start)
        if m is None:
            break
        vstart = m.end()
        e = _FIELD_END.search(data, vstart, body_start)
        vend = body_start if e is None else e.start()
        pos = vend
        values = fields.setdefault(m.group(1).decode("ascii").lower(), [])
        m = None
        if len(values) >= MAX_OCCURRENCES:
            continue
        if vend - vstart > MAX_FIELD:
            ctx.defect("header field truncated")
            vend = vstart + MAX_FIELD
        values.append(data[vstart:vend].strip(b" \t\r\n"))
    return fields


def _first(fields: Mapping[str, list[bytes]], name: str) -> bytes | None:
    values = fields.get(name)
    return values[0] if values else None


def _find_body_start(ctx: _Ctx, start: int, end: int, child: bool) -> int:
    """Offset after the blank line ending the header block at ``start``."""
    data = ctx.data
    if start >= end:
        return end
    if data.startswith(b"\n", start, end):
        return start + 1
    if data.startswith(b"\r\n", start, end):
        return start + 2
    if child and not _FIELD_START.match(data, start, end):
        ctx.defect("MIME part without header")
        return start
    m = _HEADER_END.search(data, start, end)
    if m is None:
        if end > start:
            ctx.defect("header without blank line")
        return end
    return m.end()


def _delimiters(
    data: bytes, boundary: bytes, start: int, end: int, limit: int
) -> list[tuple[int, int, bool]]:
    """Delimiter lines of ``boundary`` in ``data[start:end]``.

    Returns ``(line_start, after_line, is_close)``.  A delimiter line is
    ``--boundary`` (``--boundary--`` to close) plus optional blanks; so
    ``--b`` never matches the line ``--b2``.  Scanning stops at the close
    delimiter (what follows is the epilogue) or after ``limit`` lines.
    """
    tail = rb"(--)?[ \t\r]*(?=\n|\Z)"
    rx = re.compile(b"\n--" + re.escape(boundary) + tail)
    out: list[tuple[int, int, bool]] = []
    first = re.compile(b"--" + re.escape(boundary) + tail).match(data, start, end)
    matches = rx.finditer(data, start, end)
    if first is not None:
        out.append((start, min(first.end() + 1, end), first.group(1) is not None))
        if first.group(1) is not None:
            return out
        matches = rx.finditer(data, first.end(), end)
    for m in matches:
        out.append((m.start() + 1, min(m.end() + 1, end), m.group(1) is not None))
        if m.group(1) is not None or len(out) > limit:
            break
    return out


def _before_crlf(data: bytes, i: int, floor: int) -> int:
    """The offset of the line break preceding a delimiter at ``i``."""
    if i > floor and data[i - 1] == 0x0A:
        i -= 1
        if i > floor and data[i - 1] == 0x0D:
            i -= 1
    return i


def _whole_body_child(ctx: _Ctx, start: int, end: int) -> BodyPart:
    """A headerless text/plain child for a multipart whose parts were not found."""
    ctx.parts += 1
    part = BodyPart(
        type="text",
        subtype="plain",
        params=(("charset", "us-ascii"),),
        size=end - start,
        lines=_count_lines(ctx.data, start, end),
        header_start=start,
        body_start=start,
        body_end=end,
    )
    _add_search_text(ctx, part)
    return part


def _multipart_children(
    ctx: _Ctx, subtype: str, boundary: str | None, start: int, end: int, depth: int
) -> tuple[BodyPart, ...]:
    data = ctx.data
    if not boundary:
        ctx.defect("multipart without boundary")
        return (_whole_body_child(ctx, start, end),)
    if depth >= MAX_DEPTH:
        ctx.defect("MIME nesting too deep")
        return (_whole_body_child(ctx, start, end),)
    if ctx.parts >= MAX_PARTS:
        ctx.defect("too many MIME parts")
        return (_whole_body_child(ctx, start, end),)
    bnd = boundary.encode("utf-8", "surrogateescape")
    delims = _delimiters(data, bnd, start, end, MAX_PARTS - ctx.parts + 1)
    spans: list[tuple[int, int]] = []
    for k, (_start, after, close) in enumerate(delims):
        if close:
            break
        if k + 1 < len(delims):
            nxt = delims[k + 1][0]
            spans.append((after, max(after, _before_crlf(data, nxt, start))))
        else:
            spans.append((after, end))
    if not delims:
        ctx.defect("multipart boundary never found")
    elif not delims[-1][2]:
        ctx.defect("multipart without closing boundary")
    if not spans:
        if delims:
            ctx.defect("multipart without parts")
        return (_whole_body_child(ctx, start, end),)
    budget = max(1, MAX_PARTS - ctx.parts)
    if len(spans) > budget:
        ctx.defect("too many MIME parts")
        spans = spans[: budget - 1] + [(spans[budget - 1][0], spans[-1][1])]
    default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
    return tuple(_parse_entity(ctx, s, e, default, depth + 1, child=True)[0] for s, e in spans)


def _is_base64_text(data: bytes, start: int, end: int) -> bool:
    """Only base64 alphabet, padding and blanks in ``data[start:end]``."""
    for i in range(start, end, _SCAN_SLICE):
        if data[i : min(end, i + _SCAN_SLICE)].translate(None, _B64_ALPHABET):
            return False
    return True


def _parse_entity(
    ctx: _Ctx,
    start: int,
    end: int,
    default: tuple[str, str],
    depth: int,
    child: bool = False,
) -> tuple[BodyPart, dict[str, bytes]]:
    """Parse the entity at ``data[start:end]``; returns it and its header fields."""
    data = ctx.data
    ctx.parts += 1
    body_start = _find_body_start(ctx, start, end, child)
    fields = _header_fields(ctx, start, body_start)
    ct_raw = _first(fields, "content-type")
    typ, sub, params = _content_type(
        header_text(ct_raw) if ct_raw is not None else None, default, ctx
    )
    enc_raw = _first(fields, "content-transfer-encoding")
    encoding = "7bit"
    if enc_raw is not None:
        encoding = _strip_comments(unfold(enc_raw)).strip().lower() or "7bit"
    disposition = None
    disp_raw = _first(fields, "content-disposition")
    if disp_raw is not None:
        dtype, dparams = _split_value(unfold(disp_raw))
        if dtype or dparams:
            disposition = (dtype.lower(), tuple(dparams))
    language = None
    lang_raw = _first(fields, "content-language")
    if lang_raw is not None:
        language = tuple(
            x.strip() for x in _strip_comments(unfold(lang_raw)).split(",") if x.strip()
        )
    common = dict(
        id=_text_value(_first(fields, "content-id")),
        description=_text_value(_first(fields, "content-description")),
        encoding=encoding,
        size=end - body_start,
        disposition=disposition,
        language=language,
        location=_text_value(_first(fields, "content-location")),
        header_start=start,
        body_start=body_start,
        body_end=end,
    )
    if typ == "multipart":
        boundary = next((v for k, v in params if k == "boundary"), None)
        children = _multipart_children(ctx, sub, boundary, body_start, end, depth)
        return BodyPart(typ, sub, tuple(params), parts=children, **common), fields
    if typ == "text" and not any(k == "charset" for k, _ in params):
        params.append(("charset", "us-ascii"))
    lines = _count_lines(data, body_start, end) if typ == "text" else 0
    md5 = _text_value(_first(fields, "content-md5"))
    if encoding == "base64" and not _is_base64_text(data, body_start, end):
        ctx.defect("bad base64")
    if typ == "message" and sub == "rfc822":
        lines = _count_lines(data, body_start, end)
        if encoding not in ("7bit", "8bit", "binary"):
            ctx.defect("encoded message/rfc822 not parsed")
        elif depth >= MAX_DEPTH:
            ctx.defect("MIME nesting too deep")
        elif ctx.parts >= MAX_PARTS:
            ctx.defect("too many MIME parts")
        else:
            inner, inner_fields = _parse_entity(ctx, body_start, end, ("text", "plain"), depth + 1)
            env = _envelope(inner_fields, ctx)
            return (
                BodyPart(
                    typ,
                    sub,
                    tuple(params),
                    lines=lines,
                    md5=md5,
                    message_envelope=env,
                    message_body=inner,
                    **common,
                ),
                fields,
            )
    part = BodyPart(typ, sub, tuple(params), lines=lines, md5=md5, **common)
    if typ == "text":
        _add_search_text(ctx, part)
    return part, fields


# -- search text ----------------------------------------------------------------


def _strip_html(text: str) -> str:
    """Rough HTML to text: drop script/style content and tags, unescape."""
    out = []
    pos = 0
    low = None
    while True:
        m = _SCRIPT.search(text, pos)
        if m is None:
            out.append(text[pos:])
            break
        out.append(text[pos : m.start()])
        if low is None:
            low = text.lower()
        close = low.find("</" + m.group(1).lower(), m.end())
        if close < 0:
            break
        gt = text.find(">", close)
        pos = len(text) if gt < 0 else gt + 1
    text = _TAG.sub(" ", "".join(out))
    return html.unescape(text)


def _collapse_spaces(text: str, limit: int) -> str:
    """``re.sub(r"\\s+", " ", text).strip()[:limit]``, without touching more of
    ``text`` than needed.

    ``" ".join(text.split())`` is the same function (``\\s`` in a str
    pattern and ``str.split()`` both use ``str.isspace``) and several times
    faster.  Collapsing a prefix of ``text`` gives a prefix of the collapsed
    whole (a blank run cut at the end still becomes the one space that is
    then stripped), so once a prefix yields ``limit`` characters the rest of
    the text cannot change the result.
    """
    n = len(text)
    window = limit + limit // 4 + 64
    while window < n:
        out = " ".join(text[:window].split())
        if len(out) >= limit:
            return out[:limit]
        window *= 4
    return " ".join(text.split())[:limit]


def _add_search_text(ctx: _Ctx, part: BodyPart) -> None:
    if ctx.search_left <= 0 or part.body_end <= part.body_start:
        return
    # enough raw bytes for search_left characters after any decoding
    take = min(part.body_end - part.body_start, ctx.search_left * 4 + 8)
    raw = ctx.data[part.body_start : part.body_start + take]
    truncated = take < part.body_end - part.body_start
    decoded, defect = decode_transfer(raw, part.encoding)
    if defect and not truncated:
        ctx.defect(defect)
    if truncated:
        # end at a line break, not inside a multi-byte character
        cut = decoded.rfind(b"\n")
        if cut > len(decoded) // 2:
            decoded = decoded[:cut]
    text, cs_defect = decode_text(decoded, part.charset())
    if cs_defect:
        ctx.defect(cs_defect)
    if part.subtype == "html":
        text = _strip_html(text)
    text = _collapse_spaces(text, ctx.search_left)
    if not text:
        return
    ctx.search.append(text)
    ctx.search_left -= len(text) + 1


# -- envelope -------------------------------------------------------------------


def _addresses(raw: bytes | None, ctx: _Ctx) -> tuple[Address, ...]:
    if raw is None:
        return ()
    if len(raw) > ctx.address_left or len(raw) >= MAX_FIELD - 16:
        # too long, or already cut at MAX_FIELD (less the stripped blanks):
        # cut after the last whole address, not inside one
        ctx.defect("address list truncated")
        cut = raw.rfind(b",", 0, min(len(raw), ctx.address_left))
        raw = raw[:cut] if cut > 0 else b""
    ctx.address_left -= len(raw)
    return tuple(parse_address_list(unfold(raw)))


def _envelope(fields: Mapping[str, list[bytes]], ctx: _Ctx) -> Envelope:
    """The RFC 3501 ENVELOPE from first-occurrence header fields.

    Values are raw (unfolded, not decoded).  As RFC 3501 7.4.2 requires, an
    absent or empty Sender / Reply-To takes the From addresses.
    """
    # parsed in order of importance, as the address budget may run out
    from_ = _addresses(_first(fields, "from"), ctx)
    to = _addresses(_first(fields, "to"), ctx)
    cc = _addresses(_first(fields, "cc"), ctx)
    bcc = _addresses(_first(fields, "bcc"), ctx)
    sender = _addresses(_first(fields, "sender"), ctx) or from_
    reply_to = _addresses(_first(fields, "reply-to"), ctx) or from_
    return Envelope(
        date=_text_value(_first(fields, "date")),
        subject=_text_value(_first(fields, "subject")),
        from_=from_,
        sender=sender,
        reply_to=reply_to,
        to=to,
        cc=cc,
        bcc=bcc,
        in_reply_to=_text_value(_first(fields, "in-reply-to")),
        message_id=_text_value(_first(fields, "message-id")),
    )


def _parse_date(value: str | None) -> int | None:
    if not value:
        return None
    try:
        tup = email.utils.parsedate_tz(value[:200])
        if tup is None:
            return None
        if tup[0] < 100:  # two-digit years, RFC 5322 4.3
            tup = (tup[0] + (2000 if tup[0] < 50 else 1900),) + tuple(tup[1:])
        if not (1 <= tup[1] <= 12 and 1 <= tup[2] <= 31 and 1 <= tup[0] <= 9999):
            return None
        t = calendar.timegm((*tup[:6], 0, 1, 0))
        return t - (tup[9] or 0)
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


def _search_headers(fields: Mapping[str, list[bytes]], ctx: _Ctx) -> dict[str, str]:
    """Decoded text of every Subject/From/To/Cc/Bcc field."""
    out = {}
    for name in _SEARCH_FIELDS:
        values = []
        for raw in fields.get(name, ()):
            text, defects = decode_header_value_ex(raw)
            for d in defects:
                ctx.defect(d)
            values.append(text)
        out[name] = ", ".join(values)
    return out


_SEARCH_FIELDS = ("subject", "from", "to", "cc", "bcc")


def parse_envelope(header: bytes) -> Envelope:
    """The ENVELOPE of a raw header block (e.g. ``raw[:header_end]``)."""
    ctx = _Ctx(header)
    return _envelope(_header_fields(ctx, 0, len(header)), ctx)


# -- entry point ------------------------------------------------------------------


def _parse(data: bytes) -> ParsedMessage:
    ctx = _Ctx(data)
    body, fields = _parse_entity(ctx, 0, len(data), ("text", "plain"), 0)
    header_end = body.body_start
    header = data[:header_end]
    if not header.isascii():
        ctx.defect("8-bit header")
    ctx.address_left = ADDRESS_BUDGET  # the top-level envelope has its own budget
    env = _envelope(fields, ctx)
    search = _search_headers(fields, ctx)
    return ParsedMessage(
        size=len(data),
        header_end=header_end,
        envelope=env,
        body=body,
        search_subject=search["subject"],
        search_from=search["from"],
        search_to=search["to"],
        search_cc=search["cc"],
        search_bcc=search["bcc"],
        search_body="\n".join(ctx.search)[:SEARCH_BODY_LIMIT],
        date=_parse_date(env.date),
        defects=tuple(ctx.defects),
    )


def parse_message(data: bytes) -> ParsedMessage:
    """Parse raw message bytes; lenient, linear-time, never raises.

    An unexpected internal error still yields a usable single-part
    structure (and an ``internal parser error`` defect) so that delivery
    never fails because of the parser.
    """
    data = bytes(data)
    try:
        return _parse(data)
    except Exception as exc:  # pragma: no cover - a bug; tests assert it never happens
        n = len(data)
        end = _HEADER_END.search(data)
        body_start = end.end() if end else n
        body = BodyPart(
            type="text",
            subtype="plain",
            params=(("charset", "us-ascii"),),
            size=n - body_start,
            lines=_count_lines(data, body_start, n),
            header_start=0,
            body_start=body_start,
            body_end=n,
        )
        return ParsedMessage(
            size=n,
            header_end=body_start,
            envelope=Envelope(),
            body=body,
            defects=(f"internal parser error: {type(exc).__name__}",),
        )
