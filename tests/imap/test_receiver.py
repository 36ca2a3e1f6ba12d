"""CommandReceiver: RFC 3501 examples whole, byte by byte and in random
fragments; literals (sync, LITERAL+, literal8); limits; line mode."""

from __future__ import annotations

import random

import pytest

from mailserver.imap.receiver import (
    NEED_DATA,
    Atom,
    CommandReceiver,
    Continuation,
    Line,
    Literal,
    ProtocolError,
    Request,
)

from .rfc3501_examples import APPEND_MESSAGE, COMMANDS, STREAM


def feed(data: bytes, chunks: list[int] | None = None, **kw) -> list:
    """Feed ``data`` in chunks of the given sizes (all at once if None) and
    collect every event."""
    r = CommandReceiver(kw.pop("max_line", 8192), kw.pop("max_literal", 1 << 20), **kw)
    out = []
    pos = 0
    sizes = chunks or [len(data)]
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        i += 1
        r.receive_data(data[pos : pos + n])
        pos += n
        while (ev := r.next_event()) is not NEED_DATA:
            out.append(ev)
    while (ev := r.next_event()) is not NEED_DATA:
        out.append(ev)
    return out


def requests(events: list) -> list[Request]:
    return [e for e in events if isinstance(e, Request)]


@pytest.mark.parametrize("raw,tag,name,nargs", COMMANDS, ids=[c[0][:30].decode() for c in COMMANDS])
def test_rfc3501_example(raw, tag, name, nargs):
    evs = feed(raw)
    reqs = requests(evs)
    assert len(reqs) == 1, evs
    req = reqs[0]
    assert (req.tag, req.name, len(req.args)) == (tag, name, nargs)
    assert not [e for e in evs if isinstance(e, ProtocolError)]


def test_rfc3501_stream_whole_bytewise_and_random():
    whole = feed(STREAM)
    assert len(requests(whole)) == len(COMMANDS)
    assert feed(STREAM, [1]) == whole
    rng = random.Random(3501)
    for _ in range(30):
        sizes = [rng.randint(1, 40) for _ in range(50)]
        assert feed(STREAM, sizes) == whole


def test_append_example_literal():
    raw = COMMANDS[[c[2] for c in COMMANDS].index("APPEND")][0]
    evs = feed(raw)
    assert isinstance(evs[0], Continuation)
    req = evs[1]
    assert req.args[0] == "saved-messages"
    assert req.args[1] == [Atom("\\Seen")]
    assert isinstance(req.args[2], Literal)
    assert bytes(req.args[2]) == APPEND_MESSAGE
    assert req.raw == b"A003 APPEND saved-messages (\\Seen) {310}\r\n"


def test_fetch_section_atom_structure():
    (req,) = requests(feed(b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n"))
    items = req.args[1]
    assert items[0] == "FLAGS" and items[0].section is None
    body = items[1]
    assert body == "BODY[HEADER.FIELDS (DATE FROM)]"
    assert body.prefix == "BODY" and body.suffix == ""
    assert body.section == [Atom("HEADER.FIELDS"), [Atom("DATE"), Atom("FROM")]]


def test_partial_and_peek():
    (req,) = requests(feed(b"a FETCH 1 BODY.PEEK[1.2.MIME]<0.2048>\r\n"))
    tok = req.args[1]
    assert (tok.prefix, tok.suffix, tok.section) == ("BODY.PEEK", "<0.2048>", [Atom("1.2.MIME")])
    (req,) = requests(feed(b"a FETCH 1 (BODY[])\r\n"))
    assert req.args[1][0].section == []


def test_literal_inside_section_brackets():
    evs = feed(b"a FETCH 1 BODY[HEADER.FIELDS ({7}\r\nSubject)]\r\n")
    assert isinstance(evs[0], Continuation)
    tok = evs[1].args[1]
    assert tok.prefix == "BODY"
    assert tok.section[0] == "HEADER.FIELDS"
    assert tok.section[1] == [b"Subject"]


def test_mailbox_names_with_brackets():
    (req,) = requests(feed(b"a SELECT [Gmail]/Sent\r\nb SELECT foo[bar\r\nc SELECT a]b\r\n")[:1])
    assert str(req.args[0]) == "[Gmail]/Sent"
    reqs = requests(feed(b"b SELECT foo[bar\r\nc SELECT a]b\r\n"))
    assert [str(r.args[0]) for r in reqs] == ["foo[bar", "a]b"]


def test_quoted_strings_and_nil():
    (req,) = requests(feed(b'a LOGIN "fred \\"x\\" \\\\" NIL\r\n'))
    assert req.args == [b'fred "x" \\', None]
    (req,) = requests(feed(b'a X "" nil Nil "NIL"\r\n'))
    assert req.args == [b"", None, None, b"NIL"]


def test_nested_lists():
    (req,) = requests(feed(b"a X (1 (2 (3 ())) 4)\r\n"))
    assert req.args == [[Atom("1"), [Atom("2"), [Atom("3"), []]], Atom("4")]]


def test_sync_literal_needs_continuation_and_waits():
    r = CommandReceiver(1000, 1000)
    r.receive_data(b"a1 LOGIN {4}\r\n")
    assert r.next_event() == Continuation()
    assert r.next_event() is NEED_DATA
    r.receive_data(b"fred {3}\r\n")
    assert r.next_event() == Continuation()
    r.receive_data(b"pwd\r\n")
    ev = r.next_event()
    assert ev.args == [b"fred", b"pwd"] and ev.tag == "a1"
    assert not ev.args[0].nonsync


def test_literal_plus_never_asks_continuation():
    evs = feed(b"a1 LOGIN {4+}\r\nfred {3+}\r\npwd\r\n")
    assert len(evs) == 1
    assert evs[0].args == [b"fred", b"pwd"]
    assert evs[0].args[0].nonsync


def test_literal8():
    evs = feed(b"a APPEND INBOX ~{5}\r\na\x00b\r\n\r\n")
    req = evs[-1]
    assert isinstance(req.args[1], Literal) and req.args[1].binary
    assert bytes(req.args[1]) == b"a\x00b\r\n"
    evs = feed(b"a APPEND INBOX UTF8 (~{3+}\r\nabc)\r\n")
    assert evs[0].args[2][0].binary
    assert bytes(evs[0].args[2][0]) == b"abc"


def test_literal_containing_command_text_is_data():
    # a literal's octets are never parsed as commands, in any fragmentation
    body = b"x\r\nb LOGOUT\r\n"
    data = b"a APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n"
    for sizes in ([1], [3], [len(data)]):
        evs = feed(data, sizes)
        assert [e.name for e in requests(evs)] == ["APPEND"]
        assert bytes(evs[-1].args[1]) == body


def test_empty_and_bad_lines():
    evs = feed(b"\r\n* FOO\r\nabc\r\nabc (\r\na1 FETCH (1\r\na2 X )\r\na3 X \x01\r\n")
    assert all(isinstance(e, ProtocolError) and not e.fatal for e in evs)
    assert [e.tag for e in evs] == [None, None, "abc", "abc", "a1", "a2", "a3"]


def test_bare_lf_accepted():
    (req,) = requests(feed(b"a NOOP\n"))
    assert req.name == "NOOP"


def test_uid_command_names():
    reqs = requests(feed(b"a uid store 1 flags ()\r\nb UID\r\nc uid copy 1:* X\r\n"))
    assert [r.name for r in reqs] == ["UID STORE", "UID", "UID COPY"]
    assert reqs[0].args[0] == "1"


# -- limits -------------------------------------------------------------------


def test_line_too_long_is_skipped_not_fatal():
    data = b"a1 LOGIN " + b"x" * 5000 + b"\r\na2 NOOP\r\n"
    for sizes in ([1000], [7], [len(data)]):
        evs = feed(data, sizes, max_line=1000)
        assert isinstance(evs[0], ProtocolError)
        assert evs[0].tag == "a1" and not evs[0].fatal
        assert evs[1].name == "NOOP"


def test_line_too_long_with_literal_plus_skips_literal():
    body = b"z LOGOUT\r\n" * 20
    data = b"a1 APPEND " + b"x" * 2000 + b" {%d+}\r\n" % len(body) + body + b"\r\na2 NOOP\r\n"
    for sizes in ([1], [13], [len(data)]):
        evs = feed(data, sizes, max_line=1000)
        assert [type(e) for e in evs] == [ProtocolError, Request], evs
        assert evs[0].tag == "a1"
        assert evs[1].name == "NOOP"


def test_total_command_text_bounded_across_literals():
    data = b"a X" + (b" " + b"y" * 10 + b" {1+}\r\nx") * 200 + b"\r\nb NOOP\r\n"
    evs = feed(data, max_line=1000)
    assert isinstance(evs[0], ProtocolError) and evs[0].tag == "a"
    assert evs[-1].name == "NOOP"


def test_sync_literal_too_big_refused_without_continuation():
    evs = feed(b"a1 APPEND INBOX {2000}\r\na2 NOOP\r\n", max_literal=1000)
    assert evs[0] == ProtocolError("a1", "Literal too big", code="TOOBIG", name="APPEND")
    assert evs[1].name == "NOOP"
    assert not any(isinstance(e, Continuation) for e in evs)


def test_literal_plus_too_big_is_discarded_with_rest_of_command():
    body = b"q LOGOUT\r\n" * 200
    data = b"a1 APPEND INBOX {%d+}\r\n" % len(body) + body + b" {5+}\r\nhello\r\na2 NOOP\r\n"
    for sizes in ([1], [64], [len(data)]):
        evs = feed(data, sizes, max_literal=1000)
        assert [type(e) for e in evs] == [ProtocolError, Request]
        assert evs[0].code == "TOOBIG" and evs[0].name == "APPEND" and not evs[0].fatal
        assert evs[1].name == "NOOP"


def test_literal_plus_beyond_discard_limit_is_fatal():
    evs = feed(b"a1 APPEND INBOX {999999999+}\r\nabc", max_literal=1000, max_discard=10000)
    assert len(evs) == 1 and evs[0].fatal and evs[0].tag == "a1"


def test_total_literal_size_limit():
    evs = feed(
        b"a X {600+}\r\n" + b"x" * 600 + b" {600+}\r\n" + b"y" * 600 + b"\r\nb NOOP\r\n",
        max_literal=1000,
    )
    assert evs[0].code == "TOOBIG"
    assert evs[1].name == "NOOP"


def test_buffer_bounded_while_skipping():
    r = CommandReceiver(1000, 1000)
    for _ in range(1000):
        r.receive_data(b"y" * 1000)
        assert r.next_event() is NEED_DATA
        assert r.buffered <= 1000 + 64
    r.receive_data(b"\r\na NOOP\r\n")
    ev = r.next_event()
    assert isinstance(ev, ProtocolError)
    assert r.next_event().name == "NOOP"


# -- line mode (AUTHENTICATE, IDLE) ---------------------------------------------


def test_expect_line_for_authenticate_and_idle():
    r = CommandReceiver(1000, 1000)
    r.receive_data(b"a AUTHENTICATE PLAIN\r\nAGZyZWQAcHc=\r\nb IDLE\r\nDONE\r\nc NOOP\r\n")
    assert r.next_event().name == "AUTHENTICATE"
    r.expect_line()
    assert r.next_event() == Line(b"AGZyZWQAcHc=")
    assert r.next_event().name == "IDLE"
    r.receive_continuation_line()
    assert r.next_event() == Line(b"DONE")
    assert r.next_event().name == "NOOP"
    assert r.next_event() is NEED_DATA


def test_expect_line_fragmented_and_empty():
    r = CommandReceiver(1000, 1000)
    r.expect_line()
    r.receive_data(b"DO")
    assert r.next_event() is NEED_DATA
    r.receive_data(b"NE\r")
    assert r.next_event() is NEED_DATA
    r.receive_data(b"\n")
    assert r.next_event() == Line(b"DONE")
    r.expect_line()
    r.receive_data(b"\r\n")
    assert r.next_event() == Line(b"")


def test_expect_line_too_long():
    r = CommandReceiver(100, 1000)
    r.expect_line()
    r.receive_data(b"A" * 500 + b"\r\nx NOOP\r\n")
    ev = r.next_event()
    assert isinstance(ev, ProtocolError) and ev.tag is None
    assert r.next_event().name == "NOOP"


def test_rfc3501_authenticate_gssapi_exchange():
    # RFC 3501 6.2.2: the client answers each "+" with a bare base64 line
    # (the second answer is empty)
    lines = [
        b"YIIB+wYJKoZIhvcSAQICAQBuggHqMIIB5qADAgEFoQMCAQ6iBwMFACAAAACjggEmYYIBIjCCAR6gAwIBBaES",
        b"",
        b"YDMGCSqGSIb3EgECAgIBAAD/////3LQBHXTpFfZgrejpLlLImPwkhbfa2QteAQAgAG1yYwE=",
    ]
    data = b"A001 AUTHENTICATE GSSAPI\r\n" + b"".join(x + b"\r\n" for x in lines) + b"A002 NOOP\r\n"
    for size in (1, 5, len(data)):
        r = CommandReceiver(1000, 1000)
        got = []
        for i in range(0, len(data), size):
            r.receive_data(data[i : i + size])
            while (ev := r.next_event()) is not NEED_DATA:
                got.append(ev)
                if (
                    isinstance(ev, Request)
                    and ev.name == "AUTHENTICATE"
                    or (isinstance(ev, Line) and len(got) < 4)
                ):
                    r.expect_line()
        assert got[0].name == "AUTHENTICATE" and got[0].args == [Atom("GSSAPI")]
        assert got[1:4] == [Line(x) for x in lines]
        assert got[4].name == "NOOP"


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_line_limit_boundary(chunk):
    ok = b"a X " + b"y" * 96  # exactly 100 octets before CRLF
    evs = feed(ok + b"\r\n" + ok + b"z\r\n" + b"b NOOP\r\n", [chunk], max_line=100)
    assert isinstance(evs[0], Request)
    assert isinstance(evs[1], ProtocolError) and evs[1].tag == "a"
    assert evs[2].name == "NOOP"


def test_max_literal_can_be_lowered_per_state():
    # e.g. the session allows only small literals before authentication
    r = CommandReceiver(1000, 1 << 20)
    r.max_literal = 100
    r.receive_data(b"a LOGIN {500}\r\n")
    ev = r.next_event()
    assert ev.code == "TOOBIG" and ev.name == "LOGIN"
    r.max_literal = 1 << 20
    r.receive_data(b"b APPEND x {500}\r\n")
    assert r.next_event() == Continuation()


def test_tokens_copy_and_pickle():
    import copy
    import pickle

    (req,) = requests(feed(b"a FETCH 1 (BODY.PEEK[HEADER.FIELDS (A)]<0.5> FLAGS) ~{2+}\r\nxy\r\n"))
    for clone in (copy.deepcopy(req.args), pickle.loads(pickle.dumps(req.args))):
        assert clone == req.args
        body = clone[1][0]
        assert (body.prefix, body.suffix, body.section) == (
            "BODY.PEEK",
            "<0.5>",
            [Atom("HEADER.FIELDS"), [Atom("A")]],
        )
        assert clone[2].binary and clone[2].nonsync and isinstance(clone[2], Literal)
        assert type(clone[1][1]) is Atom and clone[1][1].section is None
