"""Modified UTF-7 for IMAP mailbox names (RFC 3501 section 5.1.3).

Printable US-ASCII except ``&`` stands for itself, ``&`` is ``&-``, and any
other run of characters is ``&`` + modified BASE64 (``,`` instead of ``/``,
no padding) of its UTF-16BE form + ``-``.  ``decode`` is strict, so every
name has exactly one encoding (two spellings never reach one mailbox).
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["decode", "encode"]

_DIRECT = re.compile(r"[\x20-\x25\x27-\x7e]+")
_B64_CHARS = re.compile(rb"[A-Za-z0-9+,]*\Z")


def encode(name: str) -> bytes:
    """Encode a Unicode mailbox name to modified UTF-7 bytes."""
    out: list[bytes] = []
    pos = 0
    n = len(name)
    while pos < n:
        m = _DIRECT.match(name, pos)
        if m:
            out.append(m.group().encode("ascii"))
            pos = m.end()
            continue
        if name[pos] == "&":
            out.append(b"&-")
            pos += 1
            continue
        end = pos
        while end < n and not ("\x20" <= name[end] <= "\x7e"):
            end += 1
        chunk = name[pos:end].encode("utf-16-be", "surrogatepass")
        b64 = base64.b64encode(chunk).rstrip(b"=").replace(b"/", b",")
        out.append(b"&" + b64 + b"-")
        pos = end
    return b"".join(out)


def decode(data: bytes | str) -> str:
    """Decode modified UTF-7 to Unicode; raises ValueError if not valid
    (8-bit octets, bad BASE64, encoded printable ASCII, unterminated shift)."""
    if isinstance(data, str):
        try:
            raw = data.encode("ascii")
        except UnicodeEncodeError as e:
            raise ValueError("non-ASCII character in modified UTF-7") from e
    else:
        raw = bytes(data)
    out: list[str] = []
    pos = 0
    n = len(raw)
    last_was_b64 = False
    while pos < n:
        amp = raw.find(b"&", pos)
        if amp < 0:
            amp = n
        direct = raw[pos:amp]
        if direct:
            if any(b < 0x20 or b > 0x7E for b in direct):
                raise ValueError("invalid octet in modified UTF-7")
            out.append(direct.decode("ascii"))
            last_was_b64 = False
        if amp >= n:
            break
        dash = raw.find(b"-", amp + 1)
        if dash < 0:
            raise ValueError("unterminated modified BASE64")
        b64 = raw[amp + 1 : dash]
        pos = dash + 1
        if not b64:
            out.append("&")
            last_was_b64 = False
            continue
        if last_was_b64:
            raise ValueError("adjacent modified BASE64 sections")
        if not _B64_CHARS.match(b64) or len(b64) % 4 == 1:
            raise ValueError("invalid modified BASE64")
        padded = b64.replace(b",", b"/") + b"=" * (-len(b64) % 4)
        try:
            chunk = base64.b64decode(padded, validate=True)
        except binascii.Error as e:
            raise ValueError("invalid modified BASE64") from e
        if len(chunk) % 2 or not chunk:
            raise ValueError("modified BASE64 is not UTF-16")
        # the unused bits must be zero: re-encoding must give the same text
        if base64.b64encode(chunk).rstrip(b"=").replace(b"/", b",") != b64:
            raise ValueError("non-canonical modified BASE64")
        try:
            text = chunk.decode("utf-16-be")
        except UnicodeDecodeError as e:
            raise ValueError("invalid UTF-16 in modified BASE64") from e
        if any("\x20" <= ch <= "\x7e" for ch in text):
            raise ValueError("printable ASCII encoded in modified BASE64")
        out.append(text)
        last_was_b64 = True
    return "".join(out)
