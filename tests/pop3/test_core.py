"""Unit tests of the sans-I/O POP3 core against the RFC 1939 / 2449 / 2595 /
5034 / 3206 examples, fed in fragments."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.pop3.core import (
    MAX_COMMAND_LINE,
    NEED_DATA,
    AuthOutcome,
    Close,
    POP3Core,
    Send,
    State,
    byte_stuff,
    crlf_size,
    normalize_crlf,
    top_of,
)
from tests.pop3.helpers import Driver, FakeBackend


def _msg(size: int, tag: str) -> bytes:
    """An RFC 5322 message of exactly ``size`` octets."""
    head = f"From: someone@example.test\r\nSubject: {tag}\r\n\r\n".encode()
    body = b"x" * (size - len(head) - 2) + b"\r\n"
    raw = head + body
    assert len(raw) == size
    return raw


def rfc_backend() -> FakeBackend:
    return FakeBackend(
        messages={
            "whqtswO00WBw418f9t5JxYwZ": _msg(120, "one"),
            "QhdPYR:00WBw1Ph7x7": _msg(200, "two"),
        }
    )


def plain(**kw) -> Driver:
    kw.setdefault("allow_plaintext_auth", True)
    return Driver(backend=kw.pop("backend", None) or rfc_backend(), **kw)


def logged_in(**kw) -> Driver:
    d = plain(**kw)
    assert d.login().startswith(b"+OK")
    return d


CHUNKS = [0, 1, 2, 5, 13]


# ------------------------------------------------------ RFC 1939 session


@pytest.mark.parametrize("chunk", CHUNKS)
def test_rfc1939_example_session(chunk: int) -> None:
    """RFC 1939 10 (with USER/PASS instead of APOP), line by line."""
    d = plain()
    assert d.greeting == b"+OK dewey POP3 server ready\r\n"
    assert d.cmd("USER mrose", chunk).startswith(b"+OK")
    assert d.cmd("PASS tanstaaf", chunk) == b"+OK maildrop has 2 messages (320 octets)\r\n"
    assert d.cmd("STAT", chunk) == b"+OK 2 320\r\n"
    assert d.cmd("LIST", chunk) == b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n"
    one = d.backend.messages["whqtswO00WBw418f9t5JxYwZ"]
    two = d.backend.messages["QhdPYR:00WBw1Ph7x7"]
    assert d.cmd("RETR 1", chunk) == b"+OK 120 octets\r\n" + one + b".\r\n"
    assert d.cmd("DELE 1", chunk) == b"+OK message 1 deleted\r\n"
    assert d.cmd("RETR 2", chunk) == b"+OK 200 octets\r\n" + two + b".\r\n"
    assert d.cmd("DELE 2", chunk) == b"+OK message 2 deleted\r\n"
    assert d.cmd("QUIT", chunk) == b"+OK dewey POP3 server signing off (maildrop empty)\r\n"
    assert d.backend.closed
    assert [e.uidl for e in d.backend.updates[0]] == [
        "whqtswO00WBw418f9t5JxYwZ",
        "QhdPYR:00WBw1Ph7x7",
    ]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_rfc1939_whole_session_in_one_write(chunk: int) -> None:
    """The same session pipelined (RFC 2449 PIPELINING), cut anywhere."""
    d = plain()
    script = b"USER mrose\r\nPASS tanstaaf\r\nSTAT\r\nLIST 2\r\nDELE 1\r\nQUIT\r\n"
    out = d.feed(script, chunk)
    assert out == (
        b"+OK send PASS\r\n"
        b"+OK maildrop has 2 messages (320 octets)\r\n"
        b"+OK 2 320\r\n"
        b"+OK 2 200\r\n"
        b"+OK message 1 deleted\r\n"
        b"+OK dewey POP3 server signing off (1 messages left)\r\n"
    )


def test_stat_and_list_examples() -> None:
    """RFC 1939 5 STAT / LIST examples."""
    d = logged_in()
    assert d.cmd("STAT") == b"+OK 2 320\r\n"
    assert d.cmd("LIST 2") == b"+OK 2 200\r\n"
    assert d.cmd("LIST 3") == b"-ERR no such message, only 2 messages in maildrop\r\n"
    assert d.cmd("LIST 0").startswith(b"-ERR no such message")
    assert d.cmd("LIST x").startswith(b"-ERR invalid message number")
    assert d.cmd("LIST 1 2").startswith(b"-ERR wrong number of arguments")
    d.cmd("DELE 1")
    assert d.cmd("LIST 1") == b"-ERR message 1 already deleted\r\n"
    assert d.cmd("LIST") == b"+OK 1 messages (200 octets)\r\n2 200\r\n.\r\n"
    assert d.cmd("STAT") == b"+OK 1 200\r\n"


def test_dele_rset_noop_examples() -> None:
    d = logged_in()
    assert d.cmd("DELE 1") == b"+OK message 1 deleted\r\n"
    assert d.cmd("DELE 1") == b"-ERR message 1 already deleted\r\n"
    assert d.cmd("RETR 1") == b"-ERR message 1 already deleted\r\n"
    assert d.cmd("NOOP") == b"+OK\r\n"
    assert d.cmd("RSET") == b"+OK maildrop has 2 messages (320 octets)\r\n"
    assert d.cmd("LIST 1") == b"+OK 1 120\r\n"
    assert d.cmd("QUIT").startswith(b"+OK dewey POP3 server signing off (2 messages left)")
    assert d.backend.updates == [()]


def test_quit_in_authorization_does_not_update() -> None:
    d = plain()
    assert d.cmd("QUIT") == b"+OK dewey POP3 server signing off\r\n"
    assert d.backend.closed and d.backend.updates == []
    assert d.core.state is State.CLOSED
    # Nothing is processed after the session ended.
    assert d.cmd("NOOP") == b""


def test_update_failure_reports_sys_temp() -> None:
    d = logged_in()
    d.backend.update_ok = False
    d.cmd("DELE 2")
    assert d.cmd("QUIT") == b"-ERR [SYS/TEMP] some deleted messages not removed\r\n"
    assert d.backend.closed


def test_top_examples() -> None:
    """RFC 1939 7 TOP."""
    raw = b"Subject: t\r\nX: y\r\n\r\nl1\r\n.l2\r\nl3\r\n"
    d = Driver(backend=FakeBackend(messages={"u1": raw}), allow_plaintext_auth=True)
    d.login()
    assert d.cmd("TOP 1 0") == b"+OK top of message follows\r\nSubject: t\r\nX: y\r\n\r\n.\r\n"
    assert d.cmd("TOP 1 2") == (
        b"+OK top of message follows\r\nSubject: t\r\nX: y\r\n\r\nl1\r\n..l2\r\n.\r\n"
    )
    assert d.cmd("TOP 1 10") == b"+OK top of message follows\r\n" + byte_stuff(raw) + b".\r\n"
    assert d.cmd("TOP 100 3") == b"-ERR no such message, only 1 messages in maildrop\r\n"
    assert d.cmd("TOP 1 -1").startswith(b"-ERR invalid line count")
    assert d.cmd("TOP 1").startswith(b"-ERR wrong number of arguments")
    assert [f.mark_seen for f in d.backend.fetches] == [False, False, False]
    d.cmd("RETR 1")
    assert d.backend.fetches[-1].mark_seen is True


def test_uidl_examples() -> None:
    """RFC 1939 7 UIDL."""
    d = logged_in()
    assert d.cmd("UIDL") == (b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n")
    assert d.cmd("UIDL 2") == b"+OK 2 QhdPYR:00WBw1Ph7x7\r\n"
    assert d.cmd("UIDL 3") == b"-ERR no such message, only 2 messages in maildrop\r\n"
    d.cmd("DELE 1")
    assert d.cmd("UIDL") == b"+OK\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n"
    assert d.cmd("UIDL 1") == b"-ERR message 1 already deleted\r\n"


# ---------------------------------------------------- message conversion


def test_retr_normalizes_bare_lf_and_stuffs_dots() -> None:
    raw = b"Subject: x\n\n.hidden\n..two\nend"
    d = Driver(backend=FakeBackend(messages={"u": raw}), allow_plaintext_auth=True)
    d.login()
    size = crlf_size(raw)
    assert d.cmd("LIST 1") == b"+OK 1 %d\r\n" % size
    out = d.cmd("RETR 1")
    assert out == (b"+OK %d octets\r\nSubject: x\r\n\r\n..hidden\r\n...two\r\nend\r\n.\r\n" % size)
    # The announced size is what RETR sends before byte-stuffing.
    assert size == len(b"Subject: x\r\n\r\n.hidden\r\n..two\r\nend\r\n")


def test_lone_dot_line_cannot_end_the_response() -> None:
    raw = b"Subject: x\r\n\r\n.\r\nafter\r\n"
    d = Driver(backend=FakeBackend(messages={"u": raw}), allow_plaintext_auth=True)
    d.login()
    out = d.cmd("RETR 1")
    assert out.endswith(b"\r\n..\r\nafter\r\n.\r\n")
    assert out.count(b"\r\n.\r\n") == 1


@given(st.binary(max_size=300))
def test_crlf_size_matches_normalized_length(raw: bytes) -> None:
    data = normalize_crlf(raw)
    assert crlf_size(raw) == len(data)
    assert not data or data.endswith(b"\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")


@given(st.lists(st.sampled_from([b"", b".", b"..", b"a", b".a", b"\r", b"x.y"]), max_size=20))
def test_byte_stuffing_roundtrip(lines: list[bytes]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    stuffed = byte_stuff(data) + b".\r\n"
    # The first ".\r\n" line is the terminator, and unstuffing restores data.
    received = stuffed.split(b"\r\n")
    end = received.index(b".")
    body = [line[1:] if line.startswith(b".") else line for line in received[:end]]
    assert b"".join(line + b"\r\n" for line in body) == data


def test_top_of_message_without_body() -> None:
    assert top_of(b"Subject: x\r\n", 3) == b"Subject: x\r\n"
    assert top_of(b"\r\nbody\r\nmore\r\n", 1) == b"\r\nbody\r\n"


# ------------------------------------------------------------------ CAPA


def caps(d: Driver) -> list[str]:
    out = d.cmd("CAPA").decode()
    lines = out.split("\r\n")
    assert lines[0].startswith("+OK") and lines[-2:] == [".", ""]
    return lines[1:-2]


def test_capa_without_tls_offers_stls_but_no_plaintext_auth() -> None:
    d = Driver(tls_available=True)
    c = caps(d)
    for cap in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS"):
        assert cap in c
    assert "USER" not in c and not any(x.startswith("SASL") for x in c)
    assert any(x.startswith("IMPLEMENTATION ") for x in c)
    assert "EXPIRE NEVER" in c


def test_capa_after_stls_offers_auth_not_stls() -> None:
    d = Driver(tls_available=True)
    assert d.cmd("STLS") == b"+OK Begin TLS negotiation\r\n"
    assert d.backend.tls_starts == 1
    c = caps(d)
    assert "STLS" not in c and "USER" in c and "SASL PLAIN" in c


def test_capa_same_in_transaction_state() -> None:
    d = logged_in(tls_available=True)
    before = caps(plain(tls_available=True))
    assert caps(d) == before


def test_capa_with_plaintext_allowed_and_no_tls() -> None:
    c = caps(plain())
    assert "USER" in c and "SASL PLAIN" in c and "STLS" not in c


# ------------------------------------------------------------------ STLS


@pytest.mark.parametrize("chunk", [0, 1, 4])
def test_stls_discards_pipelined_plaintext(chunk: int) -> None:
    """RFC 2595 / CVE-2011-0411: commands sent behind STLS in the clear must
    not be executed inside the TLS session."""
    backend = rfc_backend()
    backend.defer_tls = True
    d = Driver(tls_available=True, backend=backend)
    out = d.feed(b"STLS\r\nUSER mrose\r\nPASS tanstaaf\r\nSTAT\r\n", chunk)
    assert out == b"+OK Begin TLS negotiation\r\n"
    assert d.finish_tls() == b""
    assert d.backend.auth_requests == []
    backend.defer_tls = False
    # After the handshake, the session is a fresh AUTHORIZATION state.
    assert d.cmd("PASS tanstaaf") == b"-ERR USER first\r\n"
    assert d.login().startswith(b"+OK maildrop has 2 messages")


def test_stls_forgets_user_given_before() -> None:
    d = Driver(tls_available=True, allow_plaintext_auth=True, backend=rfc_backend())
    d.cmd("USER mrose")
    d.cmd("STLS")
    assert d.cmd("PASS tanstaaf") == b"-ERR USER first\r\n"


def test_stls_errors() -> None:
    assert Driver().cmd("STLS") == b"-ERR TLS not available\r\n"
    d = Driver(tls_available=True, tls_active=True)
    assert d.cmd("STLS") == b"-ERR command not permitted when TLS active\r\n"
    d = logged_in(tls_available=True)
    assert d.cmd("STLS").startswith(b"-ERR STLS not valid in the TRANSACTION state")


# ------------------------------------------------------------------ auth


def test_plaintext_auth_refused_without_tls() -> None:
    d = Driver(tls_available=True, backend=rfc_backend())
    assert d.cmd("USER mrose").startswith(b"-ERR [AUTH] plaintext authentication disallowed")
    assert d.cmd("PASS tanstaaf").startswith(b"-ERR [AUTH] plaintext authentication disallowed")
    assert d.cmd("AUTH PLAIN AG1yb3NlAHRhbnN0YWFm").startswith(b"-ERR [AUTH]")
    assert d.backend.auth_requests == []


def test_plaintext_auth_allowed_on_tls() -> None:
    d = Driver(tls_active=True, backend=rfc_backend())
    assert d.login() == b"+OK maildrop has 2 messages (320 octets)\r\n"


def test_pass_needs_user_and_keeps_spaces() -> None:
    d = plain()
    d.backend.passwords["mrose"] = "with two  spaces"
    assert d.cmd("PASS x") == b"-ERR USER first\r\n"
    assert d.cmd("USER mrose") == b"+OK send PASS\r\n"
    assert d.cmd("PASS with two  spaces").startswith(b"+OK maildrop")
    assert d.backend.auth_requests[-1].password == "with two  spaces"


def test_wrong_password_then_too_many() -> None:
    d = plain()
    assert d.login("mrose", "nope") == b"-ERR [AUTH] authentication failed\r\n"
    assert d.core.state is State.AUTHORIZATION
    assert d.login("mrose", "nope") == b"-ERR [AUTH] authentication failed\r\n"
    assert d.login("mrose", "nope") == b"-ERR [AUTH] authentication failed; closing\r\n"
    assert d.backend.closed


@pytest.mark.parametrize(
    "outcome, reply",
    [
        (AuthOutcome.IN_USE, b"-ERR [IN-USE] maildrop already locked by another session\r\n"),
        (AuthOutcome.THROTTLED, b"-ERR [SYS/TEMP] too many failed logins, try again later\r\n"),
        (AuthOutcome.TEMP_FAIL, b"-ERR [SYS/TEMP] maildrop temporarily unavailable\r\n"),
        (AuthOutcome.PERM_FAIL, b"-ERR [SYS/PERM] maildrop cannot be opened\r\n"),
    ],
)
def test_auth_outcome_response_codes(outcome: AuthOutcome, reply: bytes) -> None:
    d = plain()
    d.backend.outcome = outcome
    assert d.login() == reply
    assert d.core.state is State.AUTHORIZATION and not d.backend.closed
    assert d.core.auth_failures == 0


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


@pytest.mark.parametrize("chunk", [0, 1, 3])
def test_auth_plain_initial_response(chunk: int) -> None:
    """RFC 5034 6 example, PLAIN with an initial response."""
    d = plain()
    out = d.cmd("AUTH PLAIN " + b64(b"\0mrose\0tanstaaf"), chunk)
    assert out == b"+OK maildrop has 2 messages (320 octets)\r\n"
    assert d.backend.auth_requests[0].mechanism == "PLAIN"


def test_auth_plain_with_authzid_equal_to_authcid() -> None:
    d = plain()
    assert d.cmd("AUTH PLAIN " + b64(b"mrose\0mrose\0tanstaaf")).startswith(b"+OK")


@pytest.mark.parametrize("chunk", [0, 1])
def test_auth_plain_continuation(chunk: int) -> None:
    d = plain()
    assert d.cmd("auth plain", chunk) == b"+ \r\n"
    assert d.cmd(b64(b"\0mrose\0tanstaaf"), chunk).startswith(b"+OK maildrop has 2")


def test_auth_plain_cancel_and_errors() -> None:
    d = plain()
    assert d.cmd("AUTH PLAIN") == b"+ \r\n"
    assert d.cmd("*") == b"-ERR authentication cancelled\r\n"
    assert d.core.state is State.AUTHORIZATION
    assert d.cmd("AUTH PLAIN") == b"+ \r\n"
    assert d.cmd("not base64!") == b"-ERR invalid base64 in SASL response\r\n"
    assert d.cmd("AUTH PLAIN =") == b"-ERR [AUTH] malformed PLAIN response\r\n"
    assert d.cmd("AUTH PLAIN " + b64(b"other\0mrose\0tanstaaf")) == (
        b"-ERR [AUTH] authorization identity not permitted\r\n"
    )
    assert d.cmd("AUTH CRAM-MD5") == b"-ERR unsupported SASL mechanism\r\n"
    assert d.cmd("AUTH PLAIN " + b64(b"\0mrose\0bad")) == b"-ERR [AUTH] authentication failed\r\n"
    assert d.backend.auth_requests[-1].username == "mrose"


def test_auth_without_mechanism_lists_mechanisms() -> None:
    assert plain().cmd("AUTH") == b"+OK SASL mechanisms follow\r\nPLAIN\r\n.\r\n"
    assert Driver().cmd("AUTH") == b"+OK SASL mechanisms follow\r\n.\r\n"


# ------------------------------------------------- states and bad input


def test_commands_in_wrong_state() -> None:
    d = plain()
    for cmd in ("STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL"):
        assert d.cmd(cmd).startswith(b"-ERR " + cmd.split()[0].encode() + b" not valid")
    d = logged_in()
    for cmd in ("USER x", "PASS y", "AUTH PLAIN"):
        assert d.cmd(cmd).startswith(b"-ERR " + cmd.split()[0].encode() + b" not valid")


def test_unknown_command_and_case_insensitivity() -> None:
    d = logged_in()
    assert d.cmd("XYZZY") == b"-ERR unknown command\r\n"
    assert d.cmd("stat") == b"+OK 2 320\r\n"
    assert d.cmd("LIST  1") == b"-ERR arguments must be separated by one space\r\n"
    assert d.cmd("") == b"-ERR unknown command\r\n"
    assert d.cmd(b"ST\x00AT") == b"-ERR unknown command\r\n"
    assert d.cmd(b"\xff\xfe") == b"-ERR invalid characters in command\r\n"


def test_bare_lf_terminates_commands() -> None:
    d = plain()
    assert d.feed(b"USER mrose\nPASS tanstaaf\nSTAT\n") == (
        b"+OK send PASS\r\n+OK maildrop has 2 messages (320 octets)\r\n+OK 2 320\r\n"
    )


def test_line_length_limit_keeps_session() -> None:
    d = logged_in()
    ok_line = "NOOP" + " " * 0
    assert d.cmd(ok_line) == b"+OK\r\n"
    # 255 octets including CRLF is allowed (answered as an unknown command).
    assert d.cmd("X" * (MAX_COMMAND_LINE - 2)) == b"-ERR unknown command\r\n"
    assert d.cmd("X" * (MAX_COMMAND_LINE - 1)) == b"-ERR line too long\r\n"
    assert d.cmd("STAT") == b"+OK 2 320\r\n"


@pytest.mark.parametrize("chunk", [1, 100, 1000])
def test_overlong_line_in_fragments_answered_once(chunk: int) -> None:
    d = logged_in()
    out = d.feed(b"A" * 5000 + b"\r\nSTAT\r\n", chunk)
    assert out == b"-ERR line too long\r\n+OK 2 320\r\n"
    assert d.core.buffered == 0


def test_endless_line_drops_session() -> None:
    d = logged_in()
    out = b""
    for _ in range(40):
        out += d.feed(b"A" * 65536)
    assert out == b"-ERR line too long\r\n-ERR line too long\r\n"
    assert d.backend.closed and d.backend.updates == []


def test_repeated_errors_drop_session_without_update() -> None:
    d = logged_in()
    d.cmd("DELE 1")
    out = b"".join(d.cmd("BOGUS") for _ in range(10))
    assert out.count(b"-ERR unknown command\r\n") == 9
    assert out.endswith(b"-ERR unknown command; too many errors, closing connection\r\n")
    assert d.backend.closed and d.backend.updates == []


def test_sasl_response_line_limit() -> None:
    d = plain()
    assert d.cmd("AUTH PLAIN") == b"+ \r\n"
    assert d.cmd("A" * 9000) == b"-ERR SASL response too long\r\n"
    assert d.cmd("STAT").startswith(b"-ERR STAT not valid")


def test_timeout_closes_without_update() -> None:
    d = logged_in()
    d.cmd("DELE 1")
    d.core.timeout()
    assert d.pump() == b"-ERR autologout; idle for too long\r\n"
    assert d.backend.closed and d.backend.updates == []


@pytest.mark.parametrize(
    "kind, reply",
    [
        ("temp", b"-ERR [SYS/TEMP] cannot read message now, try again later\r\n"),
        ("perm", b"-ERR [SYS/PERM] message is no longer available\r\n"),
    ],
)
def test_fetch_failure(kind: str, reply: bytes) -> None:
    d = logged_in()
    d.backend.fetch_error = kind
    assert d.cmd("RETR 1") == reply
    assert d.cmd("NOOP") == b"+OK\r\n"


def test_core_refuses_to_parse_while_waiting() -> None:
    core = POP3Core(allow_plaintext_auth=True)
    assert isinstance(core.next_event(), Send)
    core.receive_data(b"USER a\r\nPASS b\r\nSTAT\r\n")
    assert core.next_event() == Send(b"+OK send PASS\r\n")
    ev = core.next_event()
    assert ev.username == "a" and core.waiting
    with pytest.raises(RuntimeError):
        core.next_event()
    core.auth_result(AuthOutcome.OK, [])
    assert core.next_event() == Send(b"+OK maildrop has 0 messages (0 octets)\r\n")
    assert core.next_event() == Send(b"+OK 0 0\r\n")
    assert core.next_event() is NEED_DATA


def test_close_event_is_last() -> None:
    core = POP3Core()
    core.next_event()
    core.receive_data(b"QUIT\r\nNOOP\r\n")
    assert isinstance(core.next_event(), Send)
    assert isinstance(core.next_event(), Close)
    assert core.next_event() is NEED_DATA


COMMAND_WORDS = st.sampled_from(
    [
        b"USER mrose",
        b"PASS tanstaaf",
        b"STAT",
        b"LIST",
        b"LIST 1",
        b"RETR 2",
        b"DELE 1",
        b"RSET",
        b"NOOP",
        b"TOP 1 0",
        b"UIDL",
        b"CAPA",
        b"AUTH PLAIN",
        b"*",
        b"STLS",
        b"QUIT",
    ]
)


@given(
    st.lists(st.one_of(COMMAND_WORDS, st.binary(max_size=40)), max_size=30),
    st.integers(min_value=1, max_value=64),
)
def test_fuzz_never_crashes_and_stays_bounded(parts: list[bytes], chunk: int) -> None:
    """Any input, cut anywhere: no exception, replies are whole lines, the
    buffer stays bounded, and nothing is expunged without a QUIT."""
    d = Driver(backend=rfc_backend(), allow_plaintext_auth=True, tls_available=True)
    data = b"\r\n".join(parts) + b"\r\n"
    out = d.feed(data, chunk)
    assert out == b"" or out.endswith(b"\r\n")
    assert d.core.buffered <= MAX_COMMAND_LINE + chunk
    if b"QUIT" not in data.upper():
        assert d.backend.updates == []


@given(
    st.lists(st.sampled_from([b"", b"a: b", b"x", b".", b"\r"]), max_size=12),
    st.integers(min_value=0, max_value=15),
)
def test_top_of_matches_line_model(lines: list[bytes], n: int) -> None:
    data = normalize_crlf(b"\r\n".join(lines) + b"\r\n") if lines else b""
    got = top_of(data, n)
    rows = data.split(b"\r\n")[:-1] if data else []
    if b"" in rows:
        cut = rows.index(b"") + 1 + n
        expected = b"".join(r + b"\r\n" for r in rows[:cut])
    else:
        expected = data
    assert got == expected
