"""RFC 5321 path and ESMTP parameter parsing (pure functions, no I/O).

Strict on purpose: the relay decision is only as good as the address it is
made on, so anything outside the RFC 5321 grammar (``user@local.`` with a
trailing dot, a bare ``@``, unbalanced quotes) is a syntax error rather than a
guess.  Source routes (``<@a,@b:user@c>``) are accepted and ignored as
RFC 5321 section 4.1.1.3 requires, so relaying is decided on the final
mailbox only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_DOT_STRING_ASCII = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*\Z")
_DOT_STRING_UTF8 = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*\Z")
_QUOTED = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*)"\Z')
_LABEL_ASCII = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_LABEL_UTF8 = (
    r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\u0080-\U0010ffff-]*[A-Za-z0-9\u0080-\U0010ffff])?"
)
_DOMAIN_ASCII = re.compile(rf"{_LABEL_ASCII}(?:\.{_LABEL_ASCII})*\Z")
_DOMAIN_UTF8 = re.compile(rf"{_LABEL_UTF8}(?:\.{_LABEL_UTF8})*\Z")
_IPV4 = re.compile(r"(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}\Z")
_IPV6 = re.compile(r"IPv6:[0-9A-Fa-f:.]+\Z")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_ESMTP_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+\Z")

MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256


class AddressError(ValueError):
    """The path does not follow RFC 5321 syntax."""


class NonAsciiAddress(AddressError):
    """A UTF-8 address without the SMTPUTF8 parameter (RFC 6531)."""


@dataclass(frozen=True)
class Mailbox:
    """A parsed mailbox: ``local`` as given (quotes removed when they were
    not needed), ``domain`` lower-cased (None only for the bare
    ``<postmaster>`` recipient)."""

    local: str
    domain: str | None

    def __str__(self) -> str:
        return self.local if self.domain is None else f"{self.local}@{self.domain}"


def _split_mailbox(text: str) -> tuple[str, str]:
    """Split at the ``@`` that ends the local part (quoted parts may contain
    ``@``)."""
    if text.startswith('"'):
        i = 1
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == '"':
                break
            i += 1
        else:
            raise AddressError("unterminated quoted local part")
        local, rest = text[: i + 1], text[i + 1 :]
        if not rest.startswith("@"):
            raise AddressError("missing domain")
        return local, rest[1:]
    at = text.rfind("@")
    if at <= 0:
        raise AddressError("missing domain")
    return text[:at], text[at + 1 :]


def _check_domain(domain: str, utf8: bool) -> str:
    if domain.startswith("["):
        if not domain.endswith("]"):
            raise AddressError("bad address literal")
        inner = domain[1:-1]
        if not (_IPV4.match(inner) or _IPV6.match(inner)):
            raise AddressError("bad address literal")
        return domain
    if not domain.isascii():
        if not utf8:
            raise NonAsciiAddress(domain)
        if not _DOMAIN_UTF8.match(domain):
            raise AddressError("bad domain")
    elif not _DOMAIN_ASCII.match(domain):
        raise AddressError("bad domain")
    if len(domain.encode("utf-8")) > MAX_DOMAIN:
        raise AddressError("domain too long")
    return domain.lower()


def _check_local(local: str, utf8: bool) -> str:
    if not local.isascii() and not utf8:
        raise NonAsciiAddress(local)
    dot = _DOT_STRING_UTF8 if utf8 else _DOT_STRING_ASCII
    if dot.match(local):
        result = local
    else:
        m = _QUOTED.match(local)
        if not m:
            raise AddressError("bad local part")
        unquoted = re.sub(r"\\(.)", r"\1", m.group(1))
        # Quotes that were not needed are dropped, so "user"@d == user@d;
        # anything else stays quoted and can never match an account.
        result = unquoted if dot.match(unquoted) else local
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError("local part too long")
    return result


def parse_mailbox(text: str, utf8: bool = False) -> Mailbox:
    """Parse ``local@domain`` (RFC 5321 ``Mailbox``)."""
    local, domain = _split_mailbox(text)
    return Mailbox(_check_local(local, utf8), _check_domain(domain, utf8))


def parse_path(
    text: str, *, utf8: bool, allow_null: bool, allow_postmaster: bool
) -> Mailbox | None:
    """Parse ``<path>`` (source route ignored); ``<>`` gives None when
    ``allow_null``; ``<postmaster>`` gives a domain-less Mailbox when
    ``allow_postmaster``."""
    if not (text.startswith("<") and text.endswith(">")):
        raise AddressError("path must be in angle brackets")
    if len(text.encode("utf-8")) > MAX_PATH + 2:
        raise AddressError("path too long")
    inner = text[1:-1]
    if inner == "":
        if allow_null:
            return None
        raise AddressError("null path not allowed here")
    if allow_postmaster and inner.lower() == "postmaster":
        return Mailbox("postmaster", None)
    if inner.startswith("@"):
        colon = inner.find(":")
        if colon < 0:
            raise AddressError("bad source route")
        for hop in inner[:colon].split(","):
            if not hop.startswith("@"):
                raise AddressError("bad source route")
            _check_domain(hop[1:], utf8)
        inner = inner[colon + 1 :]
    return parse_mailbox(inner, utf8)


def split_path_and_params(arg: str) -> tuple[str, list[str]]:
    """``<path> KEY=VALUE ...`` -> (``<path>``, [``KEY=VALUE``, ...]).

    The path ends at the first ``>`` outside a quoted string."""
    if not arg.startswith("<"):
        raise AddressError("path must be in angle brackets")
    in_quote = False
    i = 1
    while i < len(arg):
        c = arg[i]
        if in_quote and c == "\\":
            i += 2
            continue
        if c == '"':
            in_quote = not in_quote
        elif c == ">" and not in_quote:
            break
        i += 1
    else:
        raise AddressError("unterminated path")
    path, rest = arg[: i + 1], arg[i + 1 :]
    if rest and not rest.startswith(" "):
        raise AddressError("junk after path")
    return path, [p for p in rest.split(" ") if p]


def parse_params(items: list[str]) -> dict[str, str | None]:
    """ESMTP ``KEY[=VALUE]`` parameters, keys upper-cased; duplicates and bad
    syntax raise ValueError."""
    out: dict[str, str | None] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not _ESMTP_KEYWORD.match(key) or (eq and not _ESMTP_VALUE.match(value)):
            raise ValueError(f"bad parameter {item!r}")
        key = key.upper()
        if key in out:
            raise ValueError(f"duplicate parameter {key}")
        out[key] = value if eq else None
    return out


def is_xtext(value: str) -> bool:
    """RFC 3461 xtext (used by ENVID and ORCPT)."""
    return bool(_XTEXT.match(value))


def decode_xtext(value: str) -> str:
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)
