"""The sans-I/O SMTP core, line by line against RFC 5321 and the ESMTP
extensions, always fed in small fragments."""

from __future__ import annotations

import base64

import pytest

from mailserver.smtp import replies as R
from mailserver.smtp.session import (
    AuthAttempt,
    Closed,
    DataComplete,
    Limits,
    Mail,
    Rcpt,
    SMTPServer,
    StartTls,
)
from tests.smtp.helpers import accept_all, codes, drive, lines

CHUNKS = [1, 2, 5, 64, 100000]


def core(**kw) -> SMTPServer:
    limits = kw.pop("limits", None)
    return SMTPServer("foo.com", limits=limits, **kw)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.mark.parametrize("chunk", CHUNKS)
def test_rfc5321_d1_typical_transaction(chunk: int) -> None:
    """RFC 5321 Appendix D.1, with Green@foo.com refused by policy."""

    def policy(ev):
        if isinstance(ev, Rcpt) and ev.recipient.local == "Green":
            return R.R550_NO_SUCH_USER
        return accept_all(ev)

    c = core()
    assert c.greeting().startswith(b"220 foo.com ")
    script = (
        b"EHLO bar.com\r\n"
        b"MAIL FROM:<Smith@bar.com>\r\n"
        b"RCPT TO:<Jones@foo.com>\r\n"
        b"RCPT TO:<Green@foo.com>\r\n"
        b"RCPT TO:<Brown@foo.com>\r\n"
        b"DATA\r\n"
        b"Blah blah blah...\r\n"
        b"...etc. etc. etc.\r\n"
        b".\r\n"
        b"QUIT\r\n"
    )
    out, events = drive(c, script, policy, chunk)
    assert codes(out) == ["250", "250", "250", "550", "250", "354", "250", "221"]
    assert lines(out)[0] == "250-foo.com greets bar.com"
    data = [e for e in events if isinstance(e, DataComplete)]
    assert len(data) == 1
    # The leading "." of "...etc" is dot-stuffing and removed.
    assert data[0].data == b"Blah blah blah...\r\n..etc. etc. etc.\r\n"
    assert [str(r.mailbox) for r in data[0].transaction.recipients] == [
        "Jones@foo.com",
        "Brown@foo.com",
    ]
    assert str(data[0].transaction.sender) == "Smith@bar.com"
    assert isinstance(events[-1], Closed)
    assert c.closed


@pytest.mark.parametrize("chunk", CHUNKS)
def test_rfc5321_d4_vrfy_and_helo_session(chunk: int) -> None:
    c = core()
    out, _ = drive(c, b"HELO bar.com\r\nVRFY Crispin\r\nNOOP\r\nHELP\r\nQUIT\r\n", chunk=chunk)
    assert codes(out) == ["250", "252", "250", "214", "221"]
    # HELO gets a one-line reply, no extensions.
    assert lines(out)[0] == "250 foo.com greets bar.com"


def test_ehlo_advertises_extensions_only_where_valid() -> None:
    plain = core(tls_available=True, auth_enabled=True)
    out, _ = drive(plain, b"EHLO x\r\n")
    kws = [ln[4:] for ln in lines(out)[1:]]
    assert "PIPELINING" in kws and "8BITMIME" in kws and "SMTPUTF8" in kws
    assert "ENHANCEDSTATUSCODES" in kws and "CHUNKING" in kws and "DSN" in kws
    assert f"SIZE {35 * 1024 * 1024}" in kws
    assert "STARTTLS" in kws
    assert not any(k.startswith("AUTH") for k in kws)  # no AUTH in plaintext
    tls = core(tls_available=True, tls_active=True, auth_enabled=True)
    out, _ = drive(tls, b"EHLO x\r\n")
    kws = [ln[4:] for ln in lines(out)[1:]]
    assert "STARTTLS" not in kws  # not after TLS
    assert "AUTH PLAIN LOGIN" in kws
    allowed = core(auth_enabled=True, allow_plaintext_auth=True)
    out, _ = drive(allowed, b"EHLO x\r\n")
    assert "250-AUTH PLAIN LOGIN" in lines(out)
    nothing = core()
    out, _ = drive(nothing, b"EHLO x\r\n")
    assert not any("STARTTLS" in ln or "AUTH" in ln for ln in lines(out))


@pytest.mark.parametrize(
    "script,expected",
    [
        (b"MAIL FROM:<a@b.c>\r\n", ["503"]),  # before EHLO
        (b"EHLO x\r\nRCPT TO:<a@b.c>\r\n", ["250", "503"]),
        (b"EHLO x\r\nDATA\r\n", ["250", "503"]),
        (b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nDATA\r\n", ["250", "250", "554"]),
        (b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nMAIL FROM:<a@b.c>\r\n", ["250", "250", "503"]),
        (b"EHLO x\r\nFROB\r\n", ["250", "500"]),
        (b"EHLO\r\n", ["501"]),
        (b"EHLO x\r\nMAIL TO:<a@b.c>\r\n", ["250", "501"]),
        (b"EHLO x\r\nMAIL FROM:a@b.c\r\n", ["250", "501"]),
        (b"EHLO x\r\nRSET extra\r\n", ["250", "501"]),
        (b"EHLO x\r\nEXPN list\r\n", ["250", "502"]),
        (b"EHLO x\r\nMAIL FROM:<a@b.c> FOO=BAR\r\n", ["250", "555"]),
        (b"HELO x\r\nMAIL FROM:<a@b.c> SIZE=10\r\n", ["250", "555"]),  # no ESMTP
        (b"EHLO x\r\nMAIL FROM:<a@b.c> SIZE=1 SIZE=2\r\n", ["250", "501"]),
        (b"EHLO x\r\nMAIL FROM:<a@b.c> BODY=BINARYMIME\r\n", ["250", "501"]),
        (b"EHLO x\r\nMAIL FROM:<a@b.c> RET=ALL\r\n", ["250", "501"]),
        (b"EHLO x\r\nMAIL FROM:<a@b.c> ENVID=a=b\r\n", ["250", "501"]),
        (b"EHLO x\r\nSTARTTLS\r\n", ["250", "454"]),  # no TLS configured
        (b"EHLO x\r\nAUTH PLAIN\r\n", ["250", "502"]),  # no AUTH here
    ],
)
def test_bad_sequences_and_syntax(script: bytes, expected: list[str]) -> None:
    for chunk in (1, 1000):
        out, _ = drive(core(), script, chunk=chunk)
        assert codes(out) == expected


def test_mail_size_over_limit_552_at_mail() -> None:
    c = core(limits=Limits(max_message_size=1000))
    out, events = drive(
        c, b"EHLO x\r\nMAIL FROM:<a@b.c> SIZE=1001\r\nMAIL FROM:<a@b.c> SIZE=1000\r\n"
    )
    assert lines(out)[-2] == "552 5.3.4 Message size exceeds fixed maximum message size"
    assert codes(out)[-1] == "250"
    assert [type(e) for e in events] == [Mail]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_data_too_big_stops_storing_and_552_after_end(chunk: int) -> None:
    c = core(limits=Limits(max_message_size=1000))
    body = b"x" * 70 + b"\r\n"
    script = (
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n" + body * 20 + b".\r\nNOOP\r\n"
    )
    out, events = drive(c, script, chunk=chunk)
    assert codes(out) == ["250", "250", "250", "354", "552", "250"]
    assert "552 5.3.4" in out.decode()
    assert not [e for e in events if isinstance(e, DataComplete)]
    # The transaction is gone: a new DATA needs MAIL again.
    out, _ = drive(c, b"DATA\r\n")
    assert codes(out) == ["503"]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_dot_stuffing_and_empty_message(chunk: int) -> None:
    c = core()
    script = (
        b"EHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"
        b"..\r\n.leading\r\n...\r\nend\r\n.\r\n"
        b"MAIL FROM:<>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n.\r\n"
    )
    out, events = drive(c, script, chunk=chunk)
    datas = [e.data for e in events if isinstance(e, DataComplete)]
    assert datas == [b".\r\nleading\r\n..\r\nend\r\n", b""]
    assert events[0].sender is None  # null reverse-path


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize(
    "smuggle",
    [
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r",
        b"\r\n.\n",
        b"\r\n.\r",
        b"\r.\r\n",
        b"\n.\r",
    ],
)
def test_smtp_smuggling_variants_never_end_data(chunk: int, smuggle: bytes) -> None:
    """Only <CRLF>.<CRLF> ends DATA; the smuggled MAIL/RCPT/DATA is inside
    the message, which is then refused whole with 550 5.6.11."""
    c = core()
    script = (
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"
        b"Subject: hi\r\n\r\nbody" + smuggle + b"MAIL FROM:<evil@x.y>\r\n"
        b"RCPT TO:<victim@e.f>\r\nDATA\r\nSpoofed\r\n.\r\nNOOP\r\n"
    )
    out, events = drive(c, script, chunk=chunk)
    assert codes(out) == ["250", "250", "250", "354", "550", "250"]
    assert "550 5.6.11" in out.decode()
    assert [type(e) for e in events] == [Mail, Rcpt]


def test_bare_lf_alone_in_data_is_rejected() -> None:
    c = core()
    out, events = drive(
        c, b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nline\nline2\r\n.\r\n"
    )
    assert codes(out)[-1] == "550"
    assert not [e for e in events if isinstance(e, DataComplete)]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_data_line_too_long_rejected_after_end(chunk: int) -> None:
    c = core()
    script = (
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"
        + b"y" * 998
        + b"\r\n"  # exactly 1000 with CRLF: fine
        + b"z" * 5000
        + b"\r\n.\r\nNOOP\r\n"
    )
    out, events = drive(c, script, chunk=chunk)
    assert codes(out) == ["250", "250", "250", "354", "500", "250"]
    assert "500 5.5.2" in out.decode()
    assert not [e for e in events if isinstance(e, DataComplete)]


def test_data_line_of_exactly_1000_octets_accepted() -> None:
    c = core()
    out, events = drive(
        c,
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n" + b"y" * 998 + b"\r\n.\r\n",
    )
    assert codes(out)[-1] == "250"
    assert events[-1].data == b"y" * 998 + b"\r\n"


@pytest.mark.parametrize("chunk", [1, 7, 100000])
def test_command_line_too_long(chunk: int) -> None:
    c = core()
    out, _ = drive(c, b"EHLO x\r\nNOOP " + b"a" * 3000 + b"\r\nNOOP\r\n", chunk=chunk)
    assert codes(out) == ["250", "500", "250"]
    assert "500 5.5.2 Line too long" in out.decode()


def test_bare_lf_command_and_garbage() -> None:
    c = core()
    out, _ = drive(c, b"EHLO x\nNOOP\r\n\xff\xfe\x00garbage\r\n\x00\r\nNOOP\r\n")
    assert codes(out) == ["500", "250", "501", "501", "250"]
    out, _ = drive(c, b"\xff\xfegarbage\r\n")
    assert codes(out) == ["500"]


def test_error_counter_closes_abusive_session() -> None:
    c = core(limits=Limits(max_errors=3))
    out, events = drive(c, b"A\r\nB\r\nC\r\nD\r\n")
    assert codes(out) == ["500", "500", "500", "421"]
    assert isinstance(events[-1], Closed)
    assert c.closed
    # Nothing after the close is processed.
    out, events = drive(c, b"NOOP\r\n")
    assert out == b"" and events == []


def test_rset_and_ehlo_reset_transaction_not_session() -> None:
    c = core(auth_enabled=True, allow_plaintext_auth=True)
    out, _ = drive(c, f"EHLO x\r\nAUTH PLAIN {b64(chr(0) + 'u' + chr(0) + 'secret')}\r\n".encode())
    assert codes(out) == ["250", "235"]
    out, _ = drive(c, b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRSET\r\nRCPT TO:<d@e.f>\r\n")
    assert codes(out) == ["250", "250", "250", "503"]
    out, _ = drive(c, b"MAIL FROM:<a@b.c>\r\nEHLO y\r\nRCPT TO:<d@e.f>\r\n")
    assert codes(out) == ["250", "250", "503"]
    assert c.session.authenticated == "u"  # connection state survives


def test_max_recipients_452() -> None:
    c = core(limits=Limits(max_recipients=2))
    out, _ = drive(
        c,
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<a@e.f>\r\nRCPT TO:<b@e.f>\r\nRCPT TO:<c@e.f>\r\n",
    )
    assert codes(out) == ["250", "250", "250", "250", "452"]
    assert "452 4.5.3" in out.decode()


@pytest.mark.parametrize(
    "rcpt,code,address",
    [
        (b"<@hosta.int,@jkl.org:userc@d.bar.org>", "250", "userc@d.bar.org"),
        (b"<user%foreign.example@foo.com>", "250", "user%foreign.example@foo.com"),
        (b'<"user@foreign.example"@foo.com>', "250", '"user@foreign.example"@foo.com'),
        (b'<"simple"@Foo.COM>', "250", "simple@foo.com"),
        (b"<Postmaster>", "250", "postmaster"),
        (b"<user@foo.com.>", "501", None),
        (b"<user@>", "501", None),
        (b"<@foo.com>", "501", None),
        (b"<user>", "501", None),
        (b"<>", "501", None),
        (b"user@foo.com", "501", None),
        (b"<a@b.c>junk", "501", None),
        (b"<user@[127.0.0.1]>", "250", "user@[127.0.0.1]"),
        (b"<user@[999.0.0.1]>", "501", None),
        (b"<us er@foo.com>", "501", None),
        ("<j\u00f6rg@foo.com>".encode(), "553", None),
    ],
)
def test_rcpt_path_parsing(rcpt: bytes, code: str, address: str | None) -> None:
    c = core()
    out, events = drive(c, b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:" + rcpt + b"\r\n")
    assert codes(out)[-1] == code
    if address is not None:
        assert str(events[-1].recipient) == address


def test_smtputf8_addresses() -> None:
    c = core()
    addr = "<j\u00f6rg@b\u00fccher.example>".encode()
    out, events = drive(
        c, b"EHLO x\r\nMAIL FROM:" + addr + b" SMTPUTF8\r\nRCPT TO:" + addr + b"\r\n"
    )
    assert codes(out) == ["250", "250", "250"]
    assert str(events[-1].recipient) == "j\u00f6rg@b\u00fccher.example"
    assert c.transaction.smtputf8


def test_dsn_parameters_kept_on_transaction() -> None:
    c = core()
    out, events = drive(
        c,
        b"EHLO x\r\nMAIL FROM:<a@b.c> RET=HDRS ENVID=QQ314159+2B1 BODY=8BITMIME SIZE=10\r\n"
        b"RCPT TO:<d@e.f> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;d+40e.f\r\n"
        b"RCPT TO:<g@e.f> NOTIFY=NEVER\r\n"
        b"RCPT TO:<h@e.f> NOTIFY=NEVER,SUCCESS\r\n"
        b"RCPT TO:<h@e.f> ORCPT=bad\r\n"
        b"DATA\r\nx\r\n.\r\n",
    )
    assert codes(out) == ["250", "250", "250", "250", "501", "501", "354", "250"]
    t = events[-1].transaction
    assert t.ret == "HDRS" and t.envid == "QQ314159+2B1" and t.body == "8BITMIME"
    assert t.declared_size == 10
    assert t.recipients[0].notify == ("SUCCESS", "FAILURE")
    assert t.recipients[0].orcpt == "rfc822;d+40e.f"
    assert t.recipients[1].notify == ("NEVER",)
    assert t.dsn["recipients"]["d@e.f"]["notify"] == ("SUCCESS", "FAILURE")


@pytest.mark.parametrize("chunk", CHUNKS)
def test_bdat_chunks_and_last(chunk: int) -> None:
    c = core()
    part1 = b"Subject: x\r\n\r\n"
    part2 = b"BDAT data with a line\r\n.\r\nand a dot line\r\n"
    script = (
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n"
        + f"BDAT {len(part1)}\r\n".encode()
        + part1
        + f"BDAT {len(part2)} LAST\r\n".encode()
        + part2
        + b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 0 LAST\r\n"
    )
    out, events = drive(c, script, chunk=chunk)
    assert codes(out) == ["250"] * 8
    assert f"250 2.0.0 {len(part1)} octets received" in out.decode()
    datas = [e for e in events if isinstance(e, DataComplete)]
    # No dot-unstuffing in BDAT.
    assert [d.data for d in datas] == [part1 + part2, b""]
    assert datas[0].bdat


def test_bdat_octets_consumed_even_when_refused() -> None:
    """A refused BDAT still swallows its octets: they are never commands."""
    c = core(limits=Limits(max_message_size=10))
    payload = b"RSET\r\nQUIT\r\n"
    script = (
        b"EHLO x\r\nBDAT 12\r\n"
        + payload
        + b"MAIL FROM:<a@b.c>\r\nBDAT 12\r\n"
        + payload
        + b"RCPT TO:<d@e.f>\r\nBDAT 12 LAST\r\n"
        + payload
        + b"NOOP\r\n"
    )
    out, events = drive(c, script)
    assert codes(out) == ["250", "503", "250", "554", "250", "552", "250"]
    # The failed chunk voided the transaction.
    assert c.transaction.sender is None
    assert not c.closed
    assert not [e for e in events if isinstance(e, DataComplete)]


def test_data_after_bdat_is_503() -> None:
    c = core()
    out, _ = drive(c, b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 2\r\nabDATA\r\n")
    assert codes(out) == ["250", "250", "250", "250", "503"]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_pipelining_replies_in_order_and_wait_for_decisions(chunk: int) -> None:
    decisions = []

    def policy(ev):
        decisions.append(type(ev).__name__)
        if isinstance(ev, Rcpt) and ev.recipient.local == "bad":
            return R.R550_NO_SUCH_USER
        return accept_all(ev)

    c = core()
    script = (
        b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bad@e.f>\r\nRCPT TO:<ok@e.f>\r\nNOOP\r\nDATA\r\n"
    )
    out, events = drive(c, script, policy, chunk)
    assert codes(out) == ["250", "250", "550", "250", "250", "354"]
    assert decisions == ["Mail", "Rcpt", "Rcpt"]


def test_event_waits_for_reply_before_parsing_on() -> None:
    c = core()
    c.receive_data(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nNOOP\r\n")
    ev = c.next_event()
    assert isinstance(ev, Mail)
    assert c.data_to_send().startswith(b"250-foo.com")
    assert c.next_event() is not ev and c.waiting_for_reply
    assert c.data_to_send() == b""  # NOOP not answered before MAIL
    assert c.send(R.R250_SENDER_OK).startswith(b"250 2.1.0")
    c.next_event()
    assert c.data_to_send() == b"250 2.0.0 OK\r\n"


def test_starttls_discards_pipelined_plaintext() -> None:
    c = core(tls_available=True)
    out, events = drive(c, b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<evil@x.y>\r\n", chunk=100000)
    assert codes(out) == ["250", "220"]
    assert [type(e) for e in events] == [StartTls]
    c.tls_started()
    out, events = drive(c, b"MAIL FROM:<a@b.c>\r\nEHLO x\r\nSTARTTLS\r\n")
    # The injected MAIL never ran; after TLS the session starts over.
    assert codes(out) == ["503", "250", "503"]
    assert c.session.tls
    assert "STARTTLS" not in out.decode()


def test_auth_plain_initial_and_continuation() -> None:
    c = core(auth_enabled=True, tls_active=True)
    creds = b64("\0alice@foo.com\0secret")
    out, events = drive(c, f"EHLO x\r\nAUTH PLAIN\r\n{creds}\r\n".encode(), chunk=2)
    assert lines(out)[-2] == "334 "
    assert codes(out)[-1] == "235"
    assert events[-1] == AuthAttempt("PLAIN", "", "alice@foo.com", "secret")
    assert c.session.authenticated == "alice@foo.com"
    out, _ = drive(c, f"AUTH PLAIN {creds}\r\n".encode())
    assert codes(out) == ["503"]


def test_auth_login_and_failure() -> None:
    c = core(auth_enabled=True, tls_active=True)
    out, events = drive(
        c, f"EHLO x\r\nAUTH LOGIN\r\n{b64('bob')}\r\n{b64('wrong')}\r\n".encode(), chunk=3
    )
    assert lines(out)[-3] == "334 " + b64("Username:")
    assert lines(out)[-2] == "334 " + b64("Password:")
    assert codes(out)[-1] == "535"
    assert c.session.authenticated is None
    out, events = drive(c, f"AUTH LOGIN {b64('bob')}\r\n{b64('secret')}\r\n".encode())
    assert codes(out)[-1] == "235"
    assert events[-1].username == "bob"


def test_auth_bad_base64_cancel_and_plaintext() -> None:
    c = core(auth_enabled=True, tls_active=True)
    out, _ = drive(c, b"EHLO x\r\nAUTH PLAIN !!!notbase64\r\nAUTH LOGIN\r\n*\r\nAUTH CRAM-MD5\r\n")
    assert codes(out) == ["250", "501", "334", "501", "504"]
    assert "501 5.5.2" in out.decode() and "501 5.0.0" in out.decode()
    plain = core(auth_enabled=True, tls_available=True)
    out, _ = drive(plain, f"EHLO x\r\nAUTH PLAIN {b64(chr(0) + 'a' + chr(0) + 'b')}\r\n".encode())
    assert codes(out) == ["250", "538"]


def test_auth_required_before_mail() -> None:
    c = core(auth_enabled=True, tls_active=True, auth_required=True)
    out, _ = drive(c, b"EHLO x\r\nMAIL FROM:<a@b.c>\r\n")
    assert codes(out) == ["250", "530"]
    assert "530 5.7.0" in out.decode()


def test_timeout_and_shutdown() -> None:
    c = core()
    drive(c, b"EHLO x\r\n")
    assert c.timeout() == b"421 4.4.2 Timeout exceeded, closing connection\r\n"
    assert c.closed
    assert core().shutdown().startswith(b"421 4.3.2")


def test_reply_never_carries_line_breaks() -> None:
    r = R.Reply(550, "5.1.1", "evil\r\n250 OK")
    assert r.to_bytes() == b"550 5.1.1 evil  250 OK\r\n"


@pytest.mark.parametrize("chunk", CHUNKS)
def test_rfc5321_d2_aborted_transaction(chunk: int) -> None:
    """Appendix D.2: RSET after a refused recipient, then QUIT."""

    def policy(ev):
        if isinstance(ev, Rcpt) and ev.recipient.local == "Jones":
            return R.R550_NO_SUCH_USER
        return accept_all(ev)

    c = core()
    out, events = drive(
        c,
        b"EHLO bar.com\r\nMAIL FROM:<Smith@bar.com>\r\nRCPT TO:<Jones@foo.com>\r\nRSET\r\nQUIT\r\n",
        policy,
        chunk,
    )
    assert codes(out) == ["250", "250", "550", "250", "221"]
    assert not [e for e in events if isinstance(e, DataComplete)]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_rfc5321_d3_relayed_mail_with_trace_fields(chunk: int) -> None:
    """Appendix D.3: the relayed message keeps the Received fields and the
    routed reverse-path parses to its final mailbox."""
    c = core()
    msg = (
        b"Received: from bar.com by foo.com ; Thu, 21 May 1998\r\n"
        b"    05:33:29 -0700\r\n"
        b"Date: Thu, 21 May 1998 05:33:22 -0700\r\n"
        b"From: John Q. Public <JQP@bar.com>\r\n"
        b"Subject: The Next Meeting of the Board\r\n"
        b"To: Jones@xyz.com\r\n"
        b"\r\n"
        b"Bill:\r\n"
        b"The next meeting of the board of directors will be\r\n"
        b"on Tuesday.\r\n"
        b"John.\r\n"
    )
    out, events = drive(
        c,
        b"EHLO foo.com\r\nMAIL FROM:<JQP@bar.com>\r\nRCPT TO:<@foo.com:Jones@XYZ.COM>\r\n"
        b"DATA\r\n" + msg + b".\r\nQUIT\r\n",
        chunk=chunk,
    )
    assert codes(out) == ["250", "250", "250", "354", "250", "221"]
    done = [e for e in events if isinstance(e, DataComplete)][0]
    assert done.data == msg
    assert str(done.transaction.recipients[0].mailbox) == "Jones@xyz.com"
