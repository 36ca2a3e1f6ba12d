"""FETCH response rendering from stored structure (RFC 3501 6.4.5, 7.4.2).

ENVELOPE, BODY and BODYSTRUCTURE come from the parsed structure alone;
``BODY[section]<partial>`` and RFC822.* read only the byte ranges they need
(``plan_ranges``) through the caller's ``read_range(start, end)``, usually
``blobs.get_range(stored.blob_key, start, end)``.  So a header fetch reads
the header, a part fetch that part, and ``BODY[]<0.2048>`` 2 KB.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

from mailserver.mail.headers import header_fields
from mailserver.mail.message import Address, BodyPart, Envelope, ParsedMessage
from mailserver.store.interfaces import MessageRecord, StoredMessage

from .encoder import flag_list, nstring, string
from .grammar import MONTHS, FetchItem, Section

__all__ = [
    "ReadRange",
    "bodystructure",
    "envelope_to_imap",
    "find_part",
    "format_internaldate",
    "needs_content",
    "plan_ranges",
    "render_fetch",
    "section_range",
    "sets_seen",
]

ReadRange = Callable[[int, int], Awaitable[bytes]]

#: items answered from the MessageRecord alone
_RECORD_ITEMS = {"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"}


def sets_seen(items: Iterable[FetchItem]) -> bool:
    """Does this FETCH set \\Seen implicitly (BODY[...] without PEEK,
    RFC822, RFC822.TEXT)?  The session stores \\Seen before rendering (unless
    the mailbox is read-only) and includes FLAGS in the response."""
    for it in items:
        if it.name in ("RFC822", "RFC822.TEXT"):
            return True
        if it.name == "BODY" and it.section is not None and not it.peek:
            return True
    return False


def needs_content(items: Iterable[FetchItem]) -> bool:
    """Does rendering need the StoredMessage (``get_message``)?  False when
    only FLAGS/UID/INTERNALDATE/RFC822.SIZE/MODSEQ are asked for."""
    return any(it.name not in _RECORD_ITEMS for it in items)


def format_internaldate(epoch: int | float, offset_minutes: int = 0) -> str:
    """``17-Jul-1996 02:44:25 -0700`` (RFC 3501 date-time, without quotes)."""
    t = time.gmtime(int(epoch) + offset_minutes * 60)
    sign = "-" if offset_minutes < 0 else "+"
    off = abs(offset_minutes)
    return (
        f"{t.tm_mday:02d}-{MONTHS[t.tm_mon - 1]}-{t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{off // 60:02d}{off % 60:02d}"
    )


# -- ENVELOPE / BODYSTRUCTURE -------------------------------------------------


def _address(a: Address, utf8: bool) -> bytes:
    return b"(" + b" ".join(nstring(v, utf8) for v in (a.name, a.adl, a.mailbox, a.host)) + b")"


def _address_list(addrs: Sequence[Address], utf8: bool) -> bytes:
    if not addrs:
        return b"NIL"
    return b"(" + b"".join(_address(a, utf8) for a in addrs) + b")"


def envelope_to_imap(env: Envelope, utf8: bool = False) -> bytes:
    """The parenthesized ENVELOPE structure.  Sender and Reply-To default to
    From when absent (RFC 3501 7.4.2)."""
    sender = env.sender or env.from_
    reply_to = env.reply_to or env.from_
    fields = [
        nstring(env.date, utf8),
        nstring(env.subject, utf8),
        _address_list(env.from_, utf8),
        _address_list(sender, utf8),
        _address_list(reply_to, utf8),
        _address_list(env.to, utf8),
        _address_list(env.cc, utf8),
        _address_list(env.bcc, utf8),
        nstring(env.in_reply_to, utf8),
        nstring(env.message_id, utf8),
    ]
    return b"(" + b" ".join(fields) + b")"


def _params(params: Sequence[tuple[str, str]], utf8: bool) -> bytes:
    if not params:
        return b"NIL"
    return (
        b"(" + b" ".join(string(k.upper(), utf8) + b" " + string(v, utf8) for k, v in params) + b")"
    )


def _disposition(part: BodyPart, utf8: bool) -> bytes:
    if part.disposition is None:
        return b"NIL"
    kind, params = part.disposition
    return b"(" + string(kind.upper(), utf8) + b" " + _params(params, utf8) + b")"


def _language(part: BodyPart, utf8: bool) -> bytes:
    if not part.language:
        return b"NIL"
    if len(part.language) == 1:
        return string(part.language[0], utf8)
    return b"(" + b" ".join(string(x, utf8) for x in part.language) + b")"


_EMPTY_TEXT = BodyPart(type="text", subtype="plain")


def bodystructure(part: BodyPart, extensible: bool = True, utf8: bool = False) -> bytes:
    """BODYSTRUCTURE (``extensible``) or BODY form of a part, per RFC 3501
    7.4.2: multipart = bodies + subtype [params dsp lang loc]; single part =
    type subtype params id desc enc size [envelope body] [lines] [md5 dsp lang
    loc]."""
    if part.is_multipart:
        children = part.parts or (_EMPTY_TEXT,)
        out = b"".join(bodystructure(p, extensible, utf8) for p in children)
        out += b" " + string(part.subtype.upper(), utf8)
        if extensible:
            out += b" " + b" ".join(
                (
                    _params(part.params, utf8),
                    _disposition(part, utf8),
                    _language(part, utf8),
                    nstring(part.location, utf8),
                )
            )
        return b"(" + out + b")"
    fields = [
        string(part.type.upper(), utf8),
        string(part.subtype.upper(), utf8),
        _params(part.params, utf8),
        nstring(part.id, utf8),
        nstring(part.description, utf8),
        string(part.encoding.upper(), utf8),
        b"%d" % part.size,
    ]
    if part.type == "message" and part.subtype == "rfc822":
        fields.append(envelope_to_imap(part.message_envelope or Envelope(), utf8))
        fields.append(bodystructure(part.message_body or _EMPTY_TEXT, extensible, utf8))
        fields.append(b"%d" % part.lines)
    elif part.type == "text":
        fields.append(b"%d" % part.lines)
    if extensible:
        fields.append(nstring(part.md5, utf8))
        fields.append(_disposition(part, utf8))
        fields.append(_language(part, utf8))
        fields.append(nstring(part.location, utf8))
    return b"(" + b" ".join(fields) + b")"


# -- sections and byte ranges -------------------------------------------------


def find_part(root: BodyPart, path: Sequence[int]) -> BodyPart | None:
    """The entity a section part number names (RFC 3501 6.4.5): a
    non-multipart message has only part 1 (itself); inside a message/rfc822
    part the numbers continue into the enclosed message."""
    node = root
    top = True
    result: BodyPart | None = None
    for n in path:
        if node.is_multipart:
            if not 1 <= n <= len(node.parts):
                return None
            result = node.parts[n - 1]
        elif top and n == 1:
            result = node
        else:
            return None
        if result.message_body is not None:
            node, top = result.message_body, True
        else:
            node, top = result, False
    return result


def section_range(parsed: ParsedMessage, section: Section) -> tuple[int, int] | None:
    """Byte range [start, end) of the raw message holding a section's data
    (for HEADER.FIELDS: the whole header to filter), or None if the section
    does not exist."""
    size = parsed.size
    if not section.part:
        if section.text is None:
            return 0, size
        if section.text == "TEXT":
            return min(parsed.header_end, size), size
        return 0, min(parsed.header_end, size)  # HEADER, HEADER.FIELDS[.NOT]
    part = find_part(parsed.body, section.part)
    if part is None:
        return None
    if section.text is None:
        return part.body_start, part.body_end
    if section.text == "MIME":
        return part.header_start, part.body_start
    enclosed = part.message_body
    if enclosed is None:
        return None
    if section.text == "TEXT":
        return enclosed.body_start, max(enclosed.body_start, part.body_end)
    return enclosed.header_start, enclosed.body_start


def _item_range(item: FetchItem, parsed: ParsedMessage) -> tuple[int, int] | None:
    """Range to read for one item (partial applied when possible)."""
    size = parsed.size
    if item.name == "RFC822":
        return 0, size
    if item.name == "RFC822.HEADER":
        return 0, min(parsed.header_end, size)
    if item.name == "RFC822.TEXT":
        return min(parsed.header_end, size), size
    if item.name != "BODY" or item.section is None:
        return None
    r = section_range(parsed, item.section)
    if r is None:
        return None
    start, end = max(0, r[0]), min(r[1], size)
    if end < start:
        end = start
    if item.partial is not None and item.section.text not in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        origin, count = item.partial
        start = min(start + origin, end)
        end = min(start + count, end)
    return start, end


def plan_ranges(items: Iterable[FetchItem], stored: StoredMessage) -> list[tuple[int, int]]:
    """The merged, ascending byte ranges of the blob these items need; empty
    when nothing has to be read (ENVELOPE, BODYSTRUCTURE, FLAGS ...)."""
    spans = []
    for it in items:
        r = _item_range(it, stored.parsed)
        if r is not None and r[1] > r[0]:
            spans.append(r)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            if b > merged[-1][1]:
                merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


class _Chunks:
    """Bytes of the planned ranges, sliceable by absolute offsets."""

    def __init__(self, chunks: list[tuple[int, bytes]]) -> None:
        self.chunks = chunks

    def get(self, start: int, end: int) -> bytes:
        for off, data in self.chunks:
            if off <= start and end <= off + len(data):
                return data[start - off : end - off]
        # the store returned less than asked (blob shorter than recorded)
        for off, data in self.chunks:
            if off <= start < off + len(data):
                return data[start - off : end - off]
        return b""


async def _read(ranges: list[tuple[int, int]], read_range: ReadRange) -> _Chunks:
    chunks = []
    for a, b in ranges:
        chunks.append((a, await read_range(a, b)))
    return _Chunks(chunks)


def _section_value(item: FetchItem, parsed: ParsedMessage, data: _Chunks) -> bytes:
    r = _item_range(item, parsed)
    if r is None:
        return b"NIL"
    value = data.get(*r) if r[1] > r[0] else b""
    sec = item.section
    if sec is not None and sec.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        value = header_fields(value, sec.fields, exclude=sec.text == "HEADER.FIELDS.NOT")
        if item.partial is not None:
            origin, count = item.partial
            value = value[origin : origin + count]
    return string(value)


async def render_fetch(
    items: Sequence[FetchItem],
    seq: int,
    record: MessageRecord,
    stored: StoredMessage | None,
    read_range: ReadRange | None,
    uid_mode: bool = False,
    flags: Iterable[str] | None = None,
    utf8: bool = False,
    tz_offset_minutes: int = 0,
) -> bytes:
    """The complete ``* seq FETCH (...)\\r\\n`` response for one message.

    ``stored`` may be None when ``needs_content(items)`` is False;
    ``read_range(start, end)`` is awaited once per planned range.  ``flags``
    overrides ``record.flags`` (the session adds \\Recent and an implicit
    \\Seen).  In ``uid_mode`` UID is always included (first)."""
    parts: list[bytes] = []
    if uid_mode and not any(it.name == "UID" for it in items):
        parts.append(b"UID %d" % record.uid)
    data = _Chunks([])
    if stored is not None and read_range is not None:
        ranges = plan_ranges(items, stored)
        if ranges:
            data = await _read(ranges, read_range)
    for it in items:
        name = it.name
        if name == "FLAGS":
            value = flag_list(record.flags if flags is None else flags)
        elif name == "UID":
            value = b"%d" % record.uid
        elif name == "INTERNALDATE":
            value = (
                b'"' + format_internaldate(record.internal_date, tz_offset_minutes).encode() + b'"'
            )
        elif name == "RFC822.SIZE":
            value = b"%d" % record.size
        elif name == "MODSEQ":
            value = b"(%d)" % record.modseq
        else:
            if stored is None:
                raise ValueError(f"{name} needs the stored message")
            parsed = stored.parsed
            if name == "ENVELOPE":
                value = envelope_to_imap(parsed.envelope, utf8)
            elif name == "BODYSTRUCTURE":
                value = bodystructure(parsed.body, True, utf8)
            elif name == "BODY" and it.section is None:
                value = bodystructure(parsed.body, False, utf8)
            else:
                value = _section_value(it, parsed, data)
        parts.append(it.response_name() + b" " + value)
    return b"* %d FETCH (%s)\r\n" % (seq, b" ".join(parts))
