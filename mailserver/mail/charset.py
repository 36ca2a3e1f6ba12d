"""Lenient charset and transfer-encoding decoding for message text.

Mail in the wild names charsets that Python does not know (``x-unknown``,
``ks_c_5601-1987``, ``unknown-8bit``), lies about them (8-bit bytes under
``us-ascii``) and carries broken base64.  Everything here decodes "as well as
it can" and reports what it repaired; nothing here raises on bad input.
"""

from __future__ import annotations

import binascii
import codecs
import re

# Names seen in mail that Python does not know, or knows by a narrower codec.
_ALIASES = {
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "euc-kr": "cp949",  # superset, as mail clients use it
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-8-e": "iso-8859-8",
    "x-sjis": "shift_jis",
    "shift-jis": "shift_jis",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "unicode-1-1-utf-7": "utf-7",
    "x-unicode20utf8": "utf-8",
    "utf8": "utf-8",
    "iso-8859-1": "cp1252",  # what senders of "latin-1" actually mean
    "latin1": "cp1252",
    "us-ascii": "ascii",
    "ansi_x3.4-1968": "ascii",
}

_CHARSET_NAME = re.compile(r"[A-Za-z0-9._:+-]{1,40}")


def lookup_charset(name: str | None) -> str | None:
    """Return a Python codec name for a MIME charset name, or None if unknown.

    Only real text codecs are returned (never ``rot13``, ``zlib`` and such).
    """
    if not name:
        return None
    name = name.strip().strip("\"'").lower()
    if "*" in name:  # RFC 2231 language suffix: utf-8*en
        name = name.split("*", 1)[0]
    if not _CHARSET_NAME.fullmatch(name):
        return None
    name = _ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True):
        return None
    if info.name in ("unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"):
        return None
    return info.name


_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_text(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Decode ``data`` in ``charset`` as well as possible.

    Returns the text and a defect string (None when the bytes decoded cleanly
    in the declared charset).  Falls back to UTF-8, then Windows-1252, which
    decodes every byte.  The text never holds lone surrogates (UTF-7 and
    UTF-16 can produce them), so it always encodes to UTF-8.
    """
    text, defect = _decode_text(data, charset)
    # isascii() is O(1) on str; an ASCII text has no surrogates to scan for.
    if not text.isascii() and _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
        defect = defect or f"invalid text in charset {charset[:40]!r}"
    return text, defect


def _decode_text(data: bytes, charset: str | None) -> tuple[str, str | None]:
    codec = lookup_charset(charset)
    if codec is not None:
        try:
            return data.decode(codec), None
        except UnicodeDecodeError:
            pass
        except Exception:  # a codec failing in an unexpected way
            codec = None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        if codec is None and charset:
            return text, f"unknown charset {charset[:40]!r}"
        return text, (f"text not in declared charset {charset[:40]!r}" if charset else None)
    if codec is not None:
        try:
            text = data.decode(codec, errors="replace")
            return text, f"text not in declared charset {charset[:40]!r}"
        except Exception:
            pass
    defect = f"unknown charset {charset[:40]!r}" if charset else "undeclared 8-bit text"
    return data.decode("cp1252", errors="replace"), defect


def header_text(raw: bytes) -> str:
    """Turn raw header bytes into a str: UTF-8 if valid, else Windows-1252.

    RFC 6532 allows UTF-8 in headers; anything else 8-bit is a guess.
    """
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def decode_base64(data: bytes) -> tuple[bytes, bool]:
    """Decode base64 leniently; returns (bytes, clean).

    Characters outside the alphabet are dropped, decoding stops at the first
    padding, and a dangling 1-character quantum is discarded.
    """
    clean = True
    pad = data.find(b"=")
    if pad >= 0:
        if data[pad:].translate(None, b"=\r\n\t ") != b"":
            clean = False  # data after the padding
        data = data[:pad]
    compact = data.translate(None, b"\r\n\t ")
    stripped = _B64_JUNK.sub(b"", compact)
    if len(stripped) != len(compact):
        clean = False
    rem = len(stripped) % 4
    if rem == 1:
        stripped = stripped[:-1]
        clean = False
    elif rem:
        stripped += b"=" * (4 - rem)
        if pad < 0:
            clean = False
    try:
        return binascii.a2b_base64(stripped), clean
    except (binascii.Error, ValueError):
        return b"", False


def decode_transfer(data: bytes, encoding: str | None) -> tuple[bytes, str | None]:
    """Undo a Content-Transfer-Encoding; returns (bytes, defect or None)."""
    enc = (encoding or "7bit").strip().lower()
    if enc == "base64":
        out, clean = decode_base64(data)
        return out, (None if clean else "bad base64")
    if enc == "quoted-printable":
        try:
            return binascii.a2b_qp(data), None
        except (binascii.Error, ValueError):
            return data, "bad quoted-printable"
    return data, None
