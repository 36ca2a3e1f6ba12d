"""The stored structure of a parsed RFC 5322 / MIME message.

Parsing happens once, at delivery or APPEND (``mailserver.mail.parse``); the
result is stored as metadata beside the blob key.  IMAP answers ENVELOPE,
BODYSTRUCTURE, header fetches and part fetches from it: the byte offsets of
every part let a FETCH read only the range it needs from the blob store.

All offsets are absolute octet positions in the raw message.  Header values
in the envelope are raw (unfolded, not RFC 2047-decoded, as IMAP wants them);
the ``search_*`` fields are decoded to Unicode for searching.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Address:
    """An IMAP envelope address (RFC 3501 7.4.2).

    A group start has ``host`` None and ``mailbox`` the group name; a group
    end has both None.
    """

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None


@dataclass(frozen=True)
class Envelope:
    """The RFC 3501 ENVELOPE fields; absent header: None / empty tuple."""

    date: str | None = None
    subject: str | None = None
    from_: tuple[Address, ...] = ()
    sender: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    in_reply_to: str | None = None
    message_id: str | None = None


@dataclass(frozen=True)
class BodyPart:
    """One MIME entity and where it lies in the raw message.

    ``header_start``..``body_start`` is the entity's MIME header (including
    the blank line), ``body_start``..``body_end`` its body.  ``size`` is the
    body's size in octets and ``lines`` its line count (text/* and
    message/rfc822), both as IMAP BODYSTRUCTURE reports them.
    """

    type: str  # lower case, e.g. "text"
    subtype: str  # lower case, e.g. "plain"
    params: tuple[tuple[str, str], ...] = ()
    id: str | None = None
    description: str | None = None
    encoding: str = "7bit"
    size: int = 0
    lines: int = 0
    md5: str | None = None
    disposition: tuple[str, tuple[tuple[str, str], ...]] | None = None
    language: tuple[str, ...] | None = None
    location: str | None = None
    header_start: int = 0
    body_start: int = 0
    body_end: int = 0
    parts: tuple[BodyPart, ...] = ()  # children of a multipart
    # message/rfc822: the enclosed message's envelope and body
    message_envelope: Envelope | None = None
    message_body: BodyPart | None = None

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart"

    def charset(self) -> str | None:
        for k, v in self.params:
            if k.lower() == "charset":
                return v
        return None

    def param(self, name: str) -> str | None:
        """The first Content-Type parameter ``name`` (any case), or None."""
        name = name.lower()
        for k, v in self.params:
            if k.lower() == name:
                return v
        return None

    def walk(self) -> Iterator[BodyPart]:
        """This entity and everything inside it, depth first (as email's walk()).

        A message/rfc822 part is followed by its enclosed message's body.
        """
        yield self
        for child in self.parts:
            yield from child.walk()
        if self.message_body is not None:
            yield from self.message_body.walk()


@dataclass(frozen=True)
class ParsedMessage:
    """Everything stored about a message besides its raw bytes."""

    size: int
    header_end: int  # offset of the body (after the blank line)
    envelope: Envelope
    body: BodyPart
    # decoded text for SEARCH (header fields and body text parts)
    search_subject: str = ""
    search_from: str = ""
    search_to: str = ""
    search_cc: str = ""
    search_bcc: str = ""
    search_body: str = ""  # decoded text parts, bounded in length
    date: int | None = None  # Date: header as epoch seconds (SENTBEFORE &c.)
    defects: tuple[str, ...] = field(default=())  # what lenient parsing repaired

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    def part(self, section: Sequence[int]) -> BodyPart | None:
        """The entity an IMAP section part number names (RFC 3501 6.4.5), or None.

        ``(1, 2)`` is section ``1.2``; ``()`` is the whole message's body.
        Inside a message/rfc822 part, numbers address the enclosed message's
        parts (``2.1`` is part 1 of the message in part 2; if the enclosed
        body is not multipart, ``2.1`` is that body).  A non-multipart
        message has only part 1, its body.  For ``N.HEADER`` / ``N.TEXT`` of
        a message/rfc822 part use its ``message_body`` offsets
        (``header_start..body_start`` / ``body_start..body_end``); ``N.MIME``
        is the part's own ``header_start..body_start``.
        """
        part = self.body
        for i, n in enumerate(section):
            if i > 0:
                if part.message_body is not None:
                    part = part.message_body
                elif not part.is_multipart:
                    return None
            if part.is_multipart:
                if not 1 <= n <= len(part.parts):
                    return None
                part = part.parts[n - 1]
            elif n != 1:
                return None
        return part

    @classmethod
    def from_json(cls, text: str | bytes) -> ParsedMessage:
        return _message_from_dict(json.loads(text))


def _addresses(items: Any) -> tuple[Address, ...]:
    return tuple(Address(**a) for a in items or ())


def _envelope_from_dict(d: dict[str, Any]) -> Envelope:
    return Envelope(
        date=d["date"],
        subject=d["subject"],
        from_=_addresses(d["from_"]),
        sender=_addresses(d["sender"]),
        reply_to=_addresses(d["reply_to"]),
        to=_addresses(d["to"]),
        cc=_addresses(d["cc"]),
        bcc=_addresses(d["bcc"]),
        in_reply_to=d["in_reply_to"],
        message_id=d["message_id"],
    )


def _pairs(items: Any) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in items or ())


def _part_from_dict(d: dict[str, Any]) -> BodyPart:
    disp = d.get("disposition")
    return BodyPart(
        type=d["type"],
        subtype=d["subtype"],
        params=_pairs(d.get("params")),
        id=d.get("id"),
        description=d.get("description"),
        encoding=d.get("encoding", "7bit"),
        size=d.get("size", 0),
        lines=d.get("lines", 0),
        md5=d.get("md5"),
        disposition=(disp[0], _pairs(disp[1])) if disp else None,
        language=tuple(d["language"]) if d.get("language") is not None else None,
        location=d.get("location"),
        header_start=d.get("header_start", 0),
        body_start=d.get("body_start", 0),
        body_end=d.get("body_end", 0),
        parts=tuple(_part_from_dict(p) for p in d.get("parts") or ()),
        message_envelope=(
            _envelope_from_dict(d["message_envelope"]) if d.get("message_envelope") else None
        ),
        message_body=_part_from_dict(d["message_body"]) if d.get("message_body") else None,
    )


def _message_from_dict(d: dict[str, Any]) -> ParsedMessage:
    return ParsedMessage(
        size=d["size"],
        header_end=d["header_end"],
        envelope=_envelope_from_dict(d["envelope"]),
        body=_part_from_dict(d["body"]),
        search_subject=d.get("search_subject", ""),
        search_from=d.get("search_from", ""),
        search_to=d.get("search_to", ""),
        search_cc=d.get("search_cc", ""),
        search_bcc=d.get("search_bcc", ""),
        search_body=d.get("search_body", ""),
        date=d.get("date"),
        defects=tuple(d.get("defects") or ()),
    )
