"""Response encoding: quoting vs literals, NIL, atoms, lists, status lines."""

from __future__ import annotations

import pytest

from mailserver.imap import encoder as e


def test_quoted_when_safe():
    assert e.string("hello world") == b'"hello world"'
    assert e.string('a"b\\c') == b'"a\\"b\\\\c"'
    assert e.string("") == b'""'


@pytest.mark.parametrize(
    "value",
    [b"a\r\nb", b"a\nb", b"a\rb", b"\x00", "Gr\u00fc\u00dfe".encode(), b"x" * 1025],
)
def test_literal_when_needed(value):
    out = e.string(value)
    assert out == b"{%d}\r\n" % len(value) + value


def test_utf8_enabled_quotes_8bit_but_not_crlf():
    assert e.string("Gr\u00fc\u00dfe", utf8=True) == '"Gr\u00fc\u00dfe"'.encode()
    assert e.string(b"a\r\nb", utf8=True).startswith(b"{4}\r\n")


def test_nstring_astring():
    assert e.nstring(None) == b"NIL"
    assert e.nstring("NIL") == b'"NIL"'
    assert e.astring("INBOX") == b"INBOX"
    assert e.astring("nil") == b'"nil"'
    assert e.astring("a b") == b'"a b"'
    assert e.astring("a]b") == b'"a]b"'
    assert e.astring("") == b'""'


def test_literal8_and_quoted():
    assert e.literal(b"ab", binary=True) == b"~{2}\r\nab"
    assert e.quoted("x") == b'"x"'


def test_mailbox_names():
    assert e.mailbox("INBOX") == b"INBOX"
    assert (
        e.mailbox("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e")
        == b'"~peter/mail/&U,BTFw-/&ZeVnLIqe-"'
    )
    assert e.mailbox("A&B") == b'"A&-B"'
    assert e.mailbox("Entw\u00fcrfe", utf8=True) == '"Entw\u00fcrfe"'.encode()
    assert e.mailbox('a"b') == b'"a\\"b"'


def test_flag_list_and_values():
    assert e.flag_list(["$Work", "\\Seen", "\\Answered"]) == b"(\\Answered \\Seen $Work)"
    assert e.flag_list([]) == b"()"
    assert e.encode_value([1, None, "a", [b"b\r\n"], e.Raw(b"\\Seen")]) == (
        b'(1 NIL "a" ({3}\r\nb\r\n) \\Seen)'
    )
    with pytest.raises(TypeError):
        e.encode_value(True)
    with pytest.raises(TypeError):
        e.encode_value(object())


def test_status_lines():
    assert e.tagged("a1", "OK", "LOGIN completed") == b"a1 OK LOGIN completed\r\n"
    assert e.tagged("a2", "NO", "too big", code="TOOBIG") == b"a2 NO [TOOBIG] too big\r\n"
    assert e.tagged("a3", "BAD", "x\r\ny") == b"a3 BAD x  y\r\n"
    assert e.untagged("5 EXISTS") == b"* 5 EXISTS\r\n"
    assert (
        e.untagged_status("OK", "Still here", "UIDNEXT 4392")
        == b"* OK [UIDNEXT 4392] Still here\r\n"
    )
    assert e.untagged_status("BYE", "Autologout") == b"* BYE Autologout\r\n"
    assert e.continuation() == b"+ Ready\r\n"
    assert e.continuation("") == b"+ \r\n"
    assert (
        e.fetch_response(12, [(b"UID", b"3"), (b"FLAGS", b"()")])
        == b"* 12 FETCH (UID 3 FLAGS ())\r\n"
    )
