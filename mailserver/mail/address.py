"""Lenient RFC 5322 address-list parsing into IMAP envelope addresses.

``parse_address_list`` takes an unfolded raw header value (RFC 2047 words
left encoded, as the IMAP ENVELOPE wants them) and returns ``Address``
items: display names from phrases or quoted strings (or, failing those, a
trailing comment), source routes as ``adl``, group start / end markers.
Anything unparsable still yields something sensible; it never raises and
runs in time linear in the input.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .message import Address

__all__ = ["parse_address_list", "MAX_ADDRESS_INPUT"]

#: Longer values are cut here before parsing (a header of megabytes of
#: addresses is an attack, not mail).
MAX_ADDRESS_INPUT = 256 * 1024


class _Tok(NamedTuple):
    kind: str  # "a" atom, "q" quoted string, "c" comment, "d" domain literal, "s" special
    text: str  # atom text, unescaped quoted content, comment content, literal, special char
    space: bool  # whitespace or a comment came before it


_PAREN = re.compile(r"[()\\]")
_UNESCAPE = re.compile(r"\\(.)", re.S)


def _comment_end(s: str, pos: int) -> tuple[str, int]:
    """Content of the (nested) comment starting at ``s[pos] == '('``."""
    depth = 0
    i = pos
    while True:
        m = _PAREN.search(s, i)
        if m is None:
            return s[pos + 1 :], len(s)
        c = m.group()
        if c == "\\":
            i = m.end() + 1
            continue
        depth += 1 if c == "(" else -1
        i = m.end()
        if depth == 0:
            return s[pos + 1 : i - 1], i


_TOKEN = re.compile(
    r"""([ \t\r\n]*)(?:"""
    r""""((?:[^"\\]|\\.?)*)(?:"|\Z)"""  # 2: quoted string content
    r"""|(\[[^\]]*(?:\]|\Z))"""  # 3: domain literal
    r"""|([<>@,;:.])"""  # 4: special
    r"""|([^ \t\r\n()<>\[\]:;@\\,."]+|\\.?|[\])])"""  # 5: atom (or stray)
    r"""|(\())""",  # 6: comment start
    re.S,
)


def _tokenize(s: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, n = 0, len(s)
    space = False
    match = _TOKEN.match
    while pos < n:
        m = match(s, pos)
        if m is None:  # only blanks left
            break
        sp = space or bool(m.group(1))
        space = False
        kind = m.lastindex
        if kind == 6:
            text, pos = _comment_end(s, m.start(6))
            toks.append(_Tok("c", text, sp))
            space = True
            continue
        pos = m.end()
        if kind == 5:
            toks.append(_Tok("a", m.group(5), sp))
        elif kind == 4:
            toks.append(_Tok("s", m.group(4), sp))
        elif kind == 2:
            text = m.group(2)
            toks.append(_Tok("q", _UNESCAPE.sub(r"\1", text) if "\\" in text else text, sp))
        else:
            toks.append(_Tok("d", m.group(3), sp))
    return toks


def _phrase(toks: list[_Tok]) -> str | None:
    """Display-name text: words as written, one blank where there were blanks."""
    out: list[str] = []
    for t in toks:
        if t.kind == "c":
            continue
        if out and t.space:
            out.append(" ")
        out.append(t.text)
    text = "".join(out).strip()
    return text or None


def _quote_local(text: str) -> str:
    if text and re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _join(toks: list[_Tok], local: bool) -> str:
    parts = []
    for t in toks:
        if t.kind == "c":
            continue
        if t.kind == "q":
            parts.append(_quote_local(t.text) if local else t.text)
        else:
            parts.append(t.text)
    return "".join(parts)


def _addr_spec(toks: list[_Tok], name: str | None, adl: str | None) -> Address:
    words = [t for t in toks if t.kind != "c"]
    at = -1
    for i in range(len(words) - 1, -1, -1):
        if words[i].kind == "s" and words[i].text == "@":
            at = i
            break
    if at < 0:
        return Address(name, adl, _join(words, True) if words else "", "")
    return Address(name, adl, _join(words[:at], True), _join(words[at + 1 :], False))


def _mailbox(toks: list[_Tok]) -> Address | None:
    """One mailbox from its tokens, or None if there is nothing in it."""
    if not any(t.kind != "c" for t in toks):
        return None
    lt = next((i for i, t in enumerate(toks) if t.kind == "s" and t.text == "<"), -1)
    if lt < 0:
        comments = [t.text.strip() for t in toks if t.kind == "c" and t.text.strip()]
        return _addr_spec(toks, comments[-1] if comments else None, None)
    name = _phrase(toks[:lt])
    inner = toks[lt + 1 :]
    gt = next((i for i, t in enumerate(inner) if t.kind == "s" and t.text == ">"), len(inner))
    inner = [t for t in inner[:gt] if t.kind != "c"]
    adl = None
    if inner and inner[0].kind == "s" and inner[0].text == "@":
        colon = next((i for i, t in enumerate(inner) if t.kind == "s" and t.text == ":"), -1)
        if colon >= 0:
            adl = _join(inner[:colon], False) or None
            inner = inner[colon + 1 :]
    return _addr_spec(inner, name, adl)


_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"
_DOMAIN = r"[A-Za-z0-9.-]+"
_SIMPLE_ITEM = re.compile(
    r"[ \t]*(?:([A-Za-z0-9!#$%&'*+/=?^_`{|}~. \t\x80-\U0010ffff-]*?)[ \t]*"
    rf"<({_LOCAL})@({_DOMAIN})>|({_LOCAL})@({_DOMAIN}))[ \t]*(?:,|\Z)"
)
_BLANKS = re.compile(r"[ \t]+")


def _simple_list(value: str) -> list[Address] | None:
    """Fast path for the common ``Name <a@b>, c@d`` lists; None if not that simple."""
    out = []
    pos, n = 0, len(value)
    while pos < n:
        m = _SIMPLE_ITEM.match(value, pos)
        if m is None or m.end() == pos:
            if not value[pos:].strip(" \t"):
                break  # trailing blanks after a final comma
            return None
        if m.group(2) is not None:
            name = _BLANKS.sub(" ", m.group(1)).strip() or None
            out.append(Address(name, None, m.group(2), m.group(3)))
        else:
            out.append(Address(None, None, m.group(4), m.group(5)))
        pos = m.end()
    return out


def parse_address_list(value: str | None) -> list[Address]:
    """Parse an address-list header value leniently (RFC 5322 section 3.4).

    Groups become a start marker ``Address(None, None, name, None)``, their
    members, and an end marker ``Address(None, None, None, None)``.  A
    missing domain gives ``host=""`` (never None, which would mean a group).
    """
    if not value:
        return []
    value = value[:MAX_ADDRESS_INPUT]
    simple = _simple_list(value)
    if simple is not None:
        return simple
    toks = _tokenize(value)
    out: list[Address] = []
    cur: list[_Tok] = []
    in_group = False
    in_angle = False
    route = False
    angle_words = 0  # non-comment tokens since the '<'

    def flush() -> None:
        a = _mailbox(cur)
        if a is not None:
            out.append(a)
        cur.clear()

    for t in toks:
        if t.kind == "s":
            c = t.text
            if in_angle:
                if c == ">":
                    in_angle = False
                elif c == "," and route:
                    pass
                elif c == ":" and route:
                    route = False
                elif c in ",;":
                    in_angle = False  # unclosed '<': the item ends here
                    if c == ";" and in_group:
                        flush()
                        out.append(Address(None, None, None, None))
                        in_group = False
                    else:
                        flush()
                    continue
                elif c == "@" and angle_words == 0:
                    route = True
                angle_words += 1
                cur.append(t)
                continue
            if c == "<":
                in_angle = True
                route = False
                angle_words = 0
                cur.append(t)
                continue
            if c == ",":
                flush()
                continue
            if c == ":" and not in_group:
                out.append(Address(None, None, _phrase(cur) or "", None))
                cur.clear()
                in_group = True
                continue
            if c == ";" and in_group:
                flush()
                out.append(Address(None, None, None, None))
                in_group = False
                continue
            if c == ">":
                continue  # stray
        if in_angle and t.kind != "c":
            angle_words += 1
        cur.append(t)
    flush()
    if in_group:
        out.append(Address(None, None, None, None))
    return out
