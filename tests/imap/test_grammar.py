"""Typed argument parsers: sequence sets, FETCH items, SEARCH keys, STORE,
flags, dates, mailbox names, LIST patterns, APPEND and STATUS."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.imap.grammar import (
    BADCHARSET,
    FetchItem,
    GrammarError,
    SearchKey,
    Section,
    SequenceError,
    SequenceSet,
    astring,
    list_matcher,
    mailbox_name,
    number,
    parse_append_args,
    parse_date,
    parse_date_time,
    parse_fetch_args,
    parse_fetch_items,
    parse_flag_list,
    parse_search,
    parse_search_args,
    parse_sequence_set,
    parse_status_items,
    parse_store_action,
    parse_store_args,
)
from mailserver.imap.receiver import NEED_DATA, Atom, CommandReceiver, Literal
from mailserver.store.interfaces import FlagMode


def args_of(line: bytes) -> list:
    """Tokens of a command's arguments, via the real receiver."""
    r = CommandReceiver(65536, 1 << 20)
    r.receive_data(line + b"\r\n")
    ev = r.next_event()
    while ev.__class__.__name__ == "Continuation":
        ev = r.next_event()
    assert ev is not NEED_DATA and hasattr(ev, "args"), ev
    return ev.args


# -- basic values -------------------------------------------------------------


def test_astring_and_number():
    assert astring(Atom("joe")) == b"joe"
    assert astring(b"a b") == b"a b"
    assert astring(Literal(b"x\r\ny")) == b"x\r\ny"
    assert astring(None) == b"NIL"
    with pytest.raises(GrammarError):
        astring([Atom("x")])
    assert number(Atom("42")) == 42
    for bad in (Atom("-1"), Atom("4294967296"), b"42", Atom("1e3")):
        with pytest.raises(GrammarError):
            number(bad)
    with pytest.raises(GrammarError):
        number(Atom("0"), nonzero=True)


# -- sequence sets ------------------------------------------------------------


def test_sequence_set_parse_and_str():
    s = parse_sequence_set("1,3:5,7:*,*,9:8")
    assert s.ranges == ((1, 1), (3, 5), (7, None), (None, None), (9, 8))
    assert str(s) == "1,3:5,7:*,*,9:8"
    assert parse_sequence_set("$").saved
    for bad in ("", "0", "1:0", "a", "1,", ",1", "1::2", "1:2:3", "4294967296", "1 2", "$,1"):
        with pytest.raises(GrammarError):
            parse_sequence_set(bad)


def test_sequence_set_resolve_seqs():
    assert parse_sequence_set("2:4").resolve_seqs(10) == [2, 3, 4]
    assert parse_sequence_set("4:2").resolve_seqs(10) == [2, 3, 4]
    assert parse_sequence_set("8:*").resolve_seqs(10) == [8, 9, 10]
    assert parse_sequence_set("*:8").resolve_seqs(10) == [8, 9, 10]
    assert parse_sequence_set("1,1,2:3,3").resolve_seqs(3) == [1, 2, 3]
    assert parse_sequence_set("*").resolve_seqs(5) == [5]
    with pytest.raises(SequenceError):
        parse_sequence_set("11").resolve_seqs(10)
    with pytest.raises(SequenceError):
        parse_sequence_set("1:*").resolve_seqs(0)
    assert parse_sequence_set("$").resolve_seqs(3, saved=[3, 1]) == [1, 3]


def test_sequence_set_resolve_uids():
    uids = [3, 5, 9, 100, 4827313, 4828000]
    assert parse_sequence_set("4827313:4828442").resolve_uids(uids) == [4827313, 4828000]
    assert parse_sequence_set("1:*").resolve_uids(uids) == uids
    # n:* always includes the last message even when n is above every UID
    assert parse_sequence_set("5000000:*").resolve_uids(uids) == [4828000]
    assert parse_sequence_set("*").resolve_uids(uids) == [4828000]
    assert parse_sequence_set("4,6:8").resolve_uids(uids) == []
    assert parse_sequence_set("1:*").resolve_uids([]) == []
    assert parse_sequence_set("$").resolve_uids(uids, saved=[9, 10, 3]) == [3, 9]
    assert SequenceSet(((2, 1),)).contains(1, 5)
    assert parse_sequence_set("3:*").contains(4, 4)


# -- FETCH --------------------------------------------------------------------


def fetch_items(text: bytes) -> list[FetchItem]:
    return parse_fetch_items(args_of(b"a FETCH 1 " + text)[1])


def test_fetch_macros():
    assert [i.name for i in fetch_items(b"ALL")] == [
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
    ]
    assert [i.name for i in fetch_items(b"fast")] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
    assert [i.name for i in fetch_items(b"FULL")][-1] == "BODY"
    with pytest.raises(GrammarError):
        fetch_items(b"(ALL)")


def test_fetch_simple_items():
    names = (
        b"FLAGS UID INTERNALDATE ENVELOPE BODYSTRUCTURE BODY RFC822 "
        b"RFC822.HEADER RFC822.TEXT RFC822.SIZE MODSEQ"
    )
    items = fetch_items(b"(" + names + b")")
    assert [i.name for i in items] == names.decode().split()
    assert all(i.section is None for i in items)


def test_fetch_sections():
    items = fetch_items(
        b"(BODY[] BODY.PEEK[HEADER] BODY[TEXT]<0.100> BODY[1.2.3] BODY[2.MIME] "
        b"BODY[HEADER.FIELDS (Date From)] body.peek[3.header.fields.not (X-A)]<5.10> "
        b"BODY[4.TEXT] BODY[1.HEADER])"
    )
    assert items[0] == FetchItem("BODY", Section())
    assert items[1] == FetchItem("BODY", Section((), "HEADER"), peek=True)
    assert items[2] == FetchItem("BODY", Section((), "TEXT"), (0, 100))
    assert items[3].section == Section((1, 2, 3))
    assert items[4].section == Section((2,), "MIME")
    assert items[5].section == Section((), "HEADER.FIELDS", ("Date", "From"))
    assert items[6] == FetchItem(
        "BODY", Section((3,), "HEADER.FIELDS.NOT", ("X-A",)), (5, 10), True
    )
    assert items[7].section == Section((4,), "TEXT")
    assert items[8].section == Section((1,), "HEADER")
    assert [i.response_name() for i in items] == [
        b"BODY[]",
        b"BODY[HEADER]",
        b"BODY[TEXT]<0>",
        b"BODY[1.2.3]",
        b"BODY[2.MIME]",
        b"BODY[HEADER.FIELDS (Date From)]",
        b"BODY[3.HEADER.FIELDS.NOT (X-A)]<5>",
        b"BODY[4.TEXT]",
        b"BODY[1.HEADER]",
    ]


def test_fetch_rfc3501_examples():
    items = fetch_items(b"(FLAGS BODY[HEADER.FIELDS (DATE FROM)])")
    assert items[1].section.fields == ("DATE", "FROM")
    assert not items[1].peek
    (item,) = fetch_items(b"body[header]")
    assert item.section == Section((), "HEADER")


@pytest.mark.parametrize(
    "bad",
    [
        b"FOO",
        b"()",
        b"BODY[MIME]",
        b"BODY[0]",
        b"BODY[1.FOO]",
        b"BODY[HEADER.FIELDS]",
        b"BODY[HEADER.FIELDS ()]",
        b"BODY[HEADER (A)]",
        b"BODY[]<1>",
        b"BODY[]<0.0>",
        b"BODY[]<a.b>",
        b"BINARY[1]",
        b"(FLAGS (UID))",
        b'"FLAGS"',
    ],
)
def test_fetch_invalid(bad):
    with pytest.raises(GrammarError):
        fetch_items(bad)


def test_fetch_args_with_changedsince():
    fa = parse_fetch_args(args_of(b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)"))
    assert fa.changedsince == 12345
    assert [i.name for i in fa.items] == ["FLAGS", "MODSEQ"]
    with pytest.raises(GrammarError):
        parse_fetch_args(args_of(b"a FETCH 1 FLAGS (FOO 1)"))
    with pytest.raises(GrammarError):
        parse_fetch_args(args_of(b"a FETCH 1"))


# -- STORE and flags ----------------------------------------------------------


def test_store_actions():
    a = parse_store_args(args_of(b"A003 STORE 2:4 +FLAGS (\\Deleted)"))
    assert (a.mode, a.silent, a.flags) == (FlagMode.ADD, False, ("\\Deleted",))
    a = parse_store_args(args_of(b"a005 store 12 +flags \\deleted"))
    assert a.flags == ("\\Deleted",)
    a = parse_store_action(args_of(b"a STORE 1 -FLAGS.SILENT (\\Seen $Work \\SEEN)")[1:])
    assert (a.mode, a.silent, a.flags) == (FlagMode.REMOVE, True, ("\\Seen", "$Work"))
    a = parse_store_action(args_of(b"a STORE 1 FLAGS ()")[1:])
    assert (a.mode, a.flags) == (FlagMode.SET, ())
    a = parse_store_action(
        args_of(b"a STORE 1 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT \\A $B")[1:]
    )
    assert a.unchanged_since == 320162338 and a.flags == ("\\A", "$B")


@pytest.mark.parametrize(
    "bad",
    [
        b"a STORE 1 FLAGS",
        b"a STORE 1 XFLAGS (\\Seen)",
        b"a STORE 1 FLAGS (\\Recent)",
        b"a STORE 1 FLAGS ((\\Seen))",
        b"a STORE 1 (FOO 1) FLAGS (\\Seen)",
        b"a STORE 1 FLAGS (\\*)",
        b'a STORE 1 FLAGS ("x")',
        b"a STORE 0 FLAGS (x)",
    ],
)
def test_store_invalid(bad):
    with pytest.raises(GrammarError):
        parse_store_args(args_of(bad))


def test_flag_list():
    assert parse_flag_list([Atom("\\answered"), Atom("Junk"), Atom("\\Custom")]) == [
        "\\Answered",
        "Junk",
        "\\Custom",
    ]
    with pytest.raises(GrammarError):
        parse_flag_list(Atom("\\Seen"))


# -- dates --------------------------------------------------------------------


def test_dates():
    assert parse_date(Atom("1-Feb-1994")) == dt.date(1994, 2, 1)
    assert parse_date(b"01-feb-1994") == dt.date(1994, 2, 1)
    for bad in (Atom("1-Foo-1994"), Atom("31-Feb-1994"), Atom("1994-02-01"), [Atom("x")]):
        with pytest.raises(GrammarError):
            parse_date(bad)
    assert parse_date_time(b"17-Jul-1996 02:44:25 -0700") == 837596665
    assert parse_date_time(b" 7-Feb-1994 21:52:25 -0800") == parse_date_time(
        b"08-Feb-1994 05:52:25 +0000"
    )
    for bad in (b"17-Jul-1996 02:44:25", b"17-Jul-1996 25:00:00 +0000", Atom("x")):
        with pytest.raises(GrammarError):
            parse_date_time(bad)


# -- mailbox names and LIST -----------------------------------------------------


def test_mailbox_names():
    assert mailbox_name(Atom("inbox")) == "INBOX"
    assert mailbox_name(b"InBox/Sub") == "INBOX/Sub"
    assert mailbox_name(Atom("INBOXES")) == "INBOXES"
    assert mailbox_name(Atom("inbox"), normalize_inbox=False) == "inbox"
    assert (
        mailbox_name(b"~peter/mail/&U,BTFw-/&ZeVnLIqe-")
        == "~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e"
    )
    assert mailbox_name(b"A&-B") == "A&B"
    assert mailbox_name("Entw\u00fcrfe".encode(), utf8=True) == "Entw\u00fcrfe"
    assert mailbox_name("Entw\u00fcrfe".encode()) == "Entw\u00fcrfe"  # 8-bit: UTF-8
    assert mailbox_name(b"&-x", utf8=True) == "&-x"
    for bad in (b"&Jjo", b"&AGE-", b"a\x01b", b"\xff"):
        with pytest.raises(GrammarError):
            mailbox_name(bad)


def test_list_matcher():
    names = ["INBOX", "INBOX/a", "foo", "foo/bar", "foo/bar/baz", "fob", "#news.comp.mail.misc"]
    m = list_matcher("", "*")
    assert [n for n in names if m(n)] == names
    m = list_matcher("", "%")
    assert [n for n in names if m(n)] == ["INBOX", "foo", "fob", "#news.comp.mail.misc"]
    m = list_matcher("foo/", "%")
    assert [n for n in names if m(n)] == ["foo/bar"]
    m = list_matcher("", "fo%")
    assert [n for n in names if m(n)] == ["foo", "fob"]
    m = list_matcher("", "inbox")
    assert [n for n in names if m(n)] == ["INBOX"]
    m = list_matcher("", "Inbox/%")
    assert [n for n in names if m(n)] == ["INBOX/a"]
    m = list_matcher("#news.", "comp.mail.*")
    assert m("#news.comp.mail.misc")
    m = list_matcher("foo/", "/bar")
    assert m("foo/bar")
    m = list_matcher("", "a.b")  # regex characters are literal
    assert m("a.b") and not m("axb")


# -- APPEND / STATUS -----------------------------------------------------------


def test_append_args():
    a = parse_append_args(
        args_of(b'a APPEND INBOX (\\Seen) "17-Jul-1996 02:44:25 -0700" {3+}\r\nabc')
    )
    assert (a.flags, a.date, a.message) == (("\\Seen",), 837596665, b"abc")
    a = parse_append_args(args_of(b"a APPEND INBOX {3+}\r\nabc"))
    assert (a.flags, a.date, a.message, a.utf8) == ((), None, b"abc", False)
    a = parse_append_args(args_of(b"a APPEND INBOX () UTF8 (~{3+}\r\nabc)"))
    assert a.message == b"abc" and a.utf8
    for bad in (b'a APPEND INBOX "abc"', b"a APPEND INBOX", b"a APPEND INBOX (\\Recent) {1+}\r\nx"):
        with pytest.raises(GrammarError):
            parse_append_args(args_of(bad))


def test_status_items():
    assert parse_status_items(args_of(b"a STATUS x (uidnext MESSAGES)")[1]) == [
        "UIDNEXT",
        "MESSAGES",
    ]
    for bad in (b"a STATUS x ()", b"a STATUS x (FOO)", b"a STATUS x UIDNEXT"):
        with pytest.raises(GrammarError):
            parse_status_items(args_of(bad)[1])


# -- SEARCH -------------------------------------------------------------------


def search(text: bytes) -> SearchKey:
    return parse_search_args(args_of(b"a SEARCH " + text)).key


def K(op, value=None, *children):
    return SearchKey(op, value, tuple(children))


def test_search_rfc3501_examples():
    assert search(b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == K(
        "AND",
        None,
        K("FLAG", "\\Flagged"),
        K("SINCE", dt.date(1994, 2, 1)),
        K("NOT", None, K("FROM", "Smith")),
    )
    assert search(b'TEXT "string not in mailbox"') == K("TEXT", "string not in mailbox")
    prog = parse_search_args(args_of(b"a SEARCH CHARSET UTF-8 TEXT {6+}\r\nXXXXXX"))
    assert prog.charset == "UTF-8" and prog.key == K("TEXT", "XXXXXX")


def test_search_every_key():
    text = (
        b"ALL ANSWERED BCC b BEFORE 1-Jan-2000 BODY x CC c DELETED DRAFT FLAGGED "
        b"FROM f HEADER X-Foo bar KEYWORD $Work LARGER 100 NEW NOT SEEN OLD "
        b"ON 2-Jan-2000 OR SEEN UNSEEN RECENT SEEN SENTBEFORE 3-Jan-2000 "
        b"SENTON 4-Jan-2000 SENTSINCE 5-Jan-2000 SINCE 6-Jan-2000 SMALLER 200 "
        b"SUBJECT s TEXT t TO o UID 1:5 UNANSWERED UNDELETED UNDRAFT UNFLAGGED "
        b"UNKEYWORD $Junk UNSEEN 1,2:* (SEEN FLAGGED) MODSEQ 5 OLDER 60 YOUNGER 30"
    )
    key = search(text)
    assert key.op == "AND"
    ops = [c.op for c in key.children]
    assert ops == [
        "ALL", "FLAG", "BCC", "BEFORE", "BODY", "CC", "FLAG", "FLAG", "FLAG",
        "FROM", "HEADER", "FLAG", "LARGER", "AND", "NOT", "NOT", "ON", "OR",
        "RECENT", "SEEN", "SENTBEFORE", "SENTON", "SENTSINCE", "SINCE", "SMALLER",
        "SUBJECT", "TEXT", "TO", "UID", "NOT", "NOT", "NOT", "NOT", "NOT",
        "UNSEEN", "SEQ", "AND", "MODSEQ", "OLDER", "YOUNGER",
    ]  # fmt: skip
    assert key.children[10] == K("HEADER", ("X-Foo", "bar"))
    assert key.children[13] == K("AND", None, K("RECENT"), K("UNSEEN"))
    assert key.children[15] == K("NOT", None, K("RECENT"))
    assert key.children[29] == K("NOT", None, K("FLAG", "\\Answered"))
    assert key.children[33] == K("NOT", None, K("FLAG", "$Junk"))
    assert key.children[35].value == parse_sequence_set("1,2:*")


def test_search_nesting_and_case():
    assert search(b"or (seen flagged) not not deleted") == K(
        "OR",
        None,
        K("AND", None, K("SEEN"), K("FLAG", "\\Flagged")),
        K("FLAG", "\\Deleted"),
    )
    assert search(b"UID $") == K("UID", SequenceSet(saved=True))
    assert search(b'HEADER Subject ""') == K("HEADER", ("Subject", ""))


def test_search_charsets():
    assert parse_search_args(args_of(b"a SEARCH CHARSET us-ascii ALL")).charset == "US-ASCII"
    prog = parse_search_args(args_of("a SEARCH CHARSET UTF-8 SUBJECT {4+}\r\nGr\u00fc".encode()))
    assert prog.key == K("SUBJECT", "Gr\u00fc")
    with pytest.raises(GrammarError) as e:
        parse_search_args(args_of(b"a SEARCH CHARSET KOI8-R ALL"))
    assert e.value.code == BADCHARSET == "BADCHARSET (UTF-8 US-ASCII)"


def test_search_return_options():
    prog = parse_search_args(args_of(b"a SEARCH RETURN (MIN COUNT) CHARSET UTF-8 ALL"))
    assert prog.return_opts == ("MIN", "COUNT")
    assert parse_search_args(args_of(b"a SEARCH ALL")).return_opts is None


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"FOO",
        b"FROM",
        b"OR SEEN",
        b"NOT",
        b"()",
        b"LARGER x",
        b"BEFORE 1-1-2000",
        b"UID x",
        b"KEYWORD (a)",
        b"HEADER X",
        b"0:3",
        b"SUBJECT (x)",
    ],
)
def test_search_invalid(bad):
    with pytest.raises(GrammarError):
        parse_search_args(args_of(b"a SEARCH " + bad) if bad else [])


def test_search_deep_nesting_rejected_not_crashing():
    with pytest.raises(GrammarError):
        parse_search([Atom("NOT")] * 5000 + [Atom("ALL")])
    deep: list = [Atom("ALL")]
    for _ in range(500):
        deep = [deep]
    with pytest.raises(GrammarError):
        parse_search(deep)


def _reference_match(pattern: str, name: str) -> bool:
    rx = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, name, re.S) is not None


@given(
    st.text(alphabet="ab/*%", max_size=12),
    st.text(alphabet="ab/", max_size=12),
)
def test_list_matcher_agrees_with_regex(pattern, name):
    if name[:5].upper() == "INBOX" or pattern[:5].upper() == "INBOX":
        return
    assert list_matcher("", pattern)(name) == _reference_match(pattern, name)


def test_list_matcher_no_backtracking_blowup():
    pattern = "*a" * 200 + "*b"
    name = "a" * 5000
    start = time.perf_counter()
    assert not list_matcher("", pattern)(name)
    assert not list_matcher("", "%a" * 200 + "%b")(name)
    assert time.perf_counter() - start < 5


_SEQ_NUM = st.one_of(st.none(), st.integers(1, 60))


@given(
    st.lists(st.tuples(_SEQ_NUM, _SEQ_NUM), min_size=1, max_size=6),
    st.lists(st.integers(1, 50), max_size=20).map(lambda xs: sorted(set(xs))),
)
def test_sequence_set_properties(ranges, uids):
    seq = SequenceSet(tuple(ranges))
    assert parse_sequence_set(str(seq)) == seq
    # resolve_uids agrees with contains(); "*" is the highest UID
    expected = [u for u in uids if seq.contains(u, uids[-1])] if uids else []
    assert seq.resolve_uids(uids) == expected
    count = len(uids)
    if count and all(v is None or v <= count for r in ranges for v in r):
        assert seq.resolve_seqs(count) == [n for n in range(1, count + 1) if seq.contains(n, count)]
