"""Fuzzing the receiver and the argument parsers (hypothesis).

Properties: no exception escapes the receiver (only events come out) and
the grammar raises nothing but GrammarError; events do not depend on how
the bytes were fragmented; the buffer stays bounded; garbage is processed in
linear time.
"""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.imap import grammar
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

from .rfc3501_examples import COMMANDS

MAX_LINE = 200
MAX_LITERAL = 300

EXTRA_COMMANDS = [
    b'a FETCH 1:*,7 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS.NOT (X-A "B")]<0.10> ENVELOPE)\r\n',
    b"b UID SEARCH CHARSET UTF-8 OR (FROM {3+}\r\nabc SEEN) NOT UID 1:5 HEADER X y\r\n",
    b"c STORE 1 (UNCHANGEDSINCE 5) -FLAGS.SILENT (\\Seen $x)\r\n",
    b'd APPEND "A&-B" (\\Draft) " 1-Jan-2020 00:00:00 +0100" ~{4+}\r\nab\x00c\r\n',
    b"e STATUS INBOX (MESSAGES UNSEEN)\r\n",
    b'f LIST "" "[Gmail]/%"\r\n',
    b"g SEARCH RETURN (MIN) 1:3 $ SENTON 1-Jan-2000\r\n",
]
SEEDS = [c[0] for c in COMMANDS] + EXTRA_COMMANDS


def drain(r: CommandReceiver) -> list:
    out = []
    for _ in range(100000):
        ev = r.next_event()
        if ev is NEED_DATA:
            return out
        assert isinstance(ev, (Continuation, Request, Line, ProtocolError)), ev
        out.append(ev)
    raise AssertionError("receiver does not converge")


def run(data: bytes, cuts: list[int]) -> list:
    r = CommandReceiver(MAX_LINE, MAX_LITERAL, max_discard=10_000)
    events = []
    prev = 0
    for c in sorted(set(cuts)) + [len(data)]:
        if c <= prev:
            continue
        r.receive_data(data[prev:c])
        prev = c
        events += drain(r)
        # bounded: after draining, at most one command's worth is held
        assert r.buffered <= MAX_LINE + MAX_LITERAL + 32, r.buffered
    return events


def exercise_grammar(req: Request) -> None:
    """Run the parser the session would run; only GrammarError may escape."""
    a = req.args
    name = req.name.removeprefix("UID ")
    try:
        if name == "FETCH":
            grammar.parse_fetch_args(a)
        elif name == "SEARCH":
            grammar.parse_search_args(a)
        elif name == "STORE":
            grammar.parse_store_args(a)
        elif name == "APPEND":
            args = grammar.parse_append_args(a)
            grammar.mailbox_name(args.mailbox)
        elif name == "STATUS" and len(a) == 2:
            grammar.mailbox_name(a[0])
            grammar.parse_status_items(a[1])
        elif name in ("LIST", "LSUB") and len(a) == 2:
            grammar.list_matcher(
                grammar.mailbox_name(a[0], normalize_inbox=False),
                grammar.mailbox_name(a[1], normalize_inbox=False),
            )("INBOX/x")
        elif name in ("COPY", "MOVE") and len(a) == 2:
            grammar.parse_sequence_set(a[0]).resolve_uids([1, 5, 9])
            grammar.mailbox_name(a[1], utf8=True)
        elif name in ("SELECT", "EXAMINE", "CREATE", "DELETE") and a:
            grammar.mailbox_name(a[0])
        elif name == "LOGIN" and len(a) == 2:
            grammar.astring(a[0])
            grammar.astring(a[1])
    except grammar.GrammarError:
        pass


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        pos = rng.randrange(len(b) + 1)
        if op < 0.3 and b:
            del b[min(pos, len(b) - 1)]
        elif op < 0.6:
            b[pos:pos] = bytes([rng.choice(b'(){}[]<>"\\\r\n *%~+:.0123456789 NILxA\x00\xff')])
        elif op < 0.8 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        else:
            b[pos:pos] = rng.choice(SEEDS)[: rng.randint(0, 30)]
    return bytes(b)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=20))
def test_random_bytes(data, cuts):
    events = run(data, cuts)
    assert events == run(data, [])  # fragmentation does not matter
    for ev in events:
        if isinstance(ev, Request):
            exercise_grammar(ev)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.lists(st.integers(0, 3000), max_size=30))
def test_mutated_commands(seed, cuts):
    rng = random.Random(seed)
    data = b"".join(mutate(rng, rng.choice(SEEDS)) for _ in range(rng.randint(1, 8)))
    events = run(data, cuts)
    assert events == run(data, [])
    assert events == run(data, list(range(0, len(data), 7)))
    for ev in events:
        if isinstance(ev, Request):
            exercise_grammar(ev)


@given(st.integers(0, 2**32))
@settings(max_examples=200, deadline=None)
def test_valid_commands_survive_fragmentation(seed):
    rng = random.Random(seed)
    picked = [rng.choice(SEEDS) for _ in range(5)]
    data = b"".join(picked)
    r = CommandReceiver(65536, 1 << 20)
    r.receive_data(data)
    whole = drain(r)
    cuts = sorted(rng.sample(range(len(data)), min(len(data), 40)))
    r2 = CommandReceiver(65536, 1 << 20)
    got = []
    prev = 0
    for c in [*cuts, len(data)]:
        r2.receive_data(data[prev:c])
        prev = c
        got += drain(r2)
    assert got == whole
    assert sum(isinstance(e, Request) for e in whole) == 5


@given(
    st.lists(
        st.sampled_from(
            [b"(", b")", b"[", b"]", b"{", b"}", b'"', b"\\", b" ", b"x", b"0", b"NIL"]
        ),
        max_size=300,
    )
)
@settings(max_examples=300, deadline=None)
def test_token_soup(parts):
    line = b"t X " + b"".join(parts) + b"\r\n"
    # a trailing {n} is a literal marker: the command then waits for n octets
    events = [e for e in run(line, []) if not isinstance(e, Continuation)]
    assert len(events) <= 1
    if events and isinstance(events[0], Request):
        try:
            grammar.parse_search(events[0].args)
        except grammar.GrammarError:
            pass
        try:
            grammar.parse_fetch_items(events[0].args[0] if events[0].args else [])
        except grammar.GrammarError:
            pass


# -- linear time and bounded memory on 10 MB of garbage ---------------------------
#
# Time limits are generous (shared CI machines); the linearity check compares
# the same garbage at two sizes, so a quadratic path fails however fast the
# machine is.

GARBAGE = {
    "random": lambda rng, n: rng.randbytes(n),
    "no newline": lambda rng, n: b"a" * n,
    "long lines": lambda rng, n: (b"a SEARCH " + b"x" * 50000 + b"\r\n") * (n // 50011),
    "open brackets": lambda rng, n: (b"a FETCH 1 " + b"x[ " * 60 + b"\r\n") * (n // 192),
    "parens": lambda rng, n: (b"(" * 150 + b"\r\n") * (n // 152),
    "quotes": lambda rng, n: (b'a X "' + b"\\" * 150 + b"\r\n") * (n // 157),
}
#: many tiny events per megabyte: checked for linearity on smaller feeds
TINY = {
    "short lines": lambda n: b"x NOOP\r\n" * (n // 8),
    "huge sync literals": lambda n: b"a APPEND x {999999999}\r\n" * (n // 25),
    "literal plus chain": lambda n: (b"a X" + b" {5+}\r\n12345" * 50 + b"\r\n") * (n // 752),
}


def feed_all(data: bytes, check_bound: bool = True) -> float:
    r = CommandReceiver(MAX_LINE * 10, MAX_LITERAL * 10)
    limit = r.max_buffer + 32
    start = time.perf_counter()
    for i in range(0, len(data), 64 * 1024):
        r.receive_data(data[i : i + 64 * 1024])
        while (ev := r.next_event()) is not NEED_DATA:
            assert not (isinstance(ev, ProtocolError) and ev.fatal)
        if check_bound:
            assert r.buffered <= limit
    return time.perf_counter() - start


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_10mb_garbage_is_fast_and_bounded(kind):
    data = GARBAGE[kind](random.Random(7), 10 * 2**20)
    elapsed = feed_all(data)
    assert elapsed < 60, f"{kind}: {elapsed:.1f}s for 10 MB"


@pytest.mark.parametrize("kind", sorted(TINY))
def test_tiny_commands_linear(kind):
    small = min(feed_all(TINY[kind](2**18)) for _ in range(2))
    big = min(feed_all(TINY[kind](2**20)) for _ in range(2))
    assert big < 8 * small + 0.5, f"{kind}: 256 KB {small:.2f}s, 1 MB {big:.2f}s"


# -- the argument parsers on arbitrary token trees ------------------------------------

_ATOM_TEXT = st.one_of(
    st.sampled_from(
        [
            "ALL",
            "FAST",
            "FULL",
            "BODY",
            "BODY.PEEK",
            "FLAGS",
            "+FLAGS.SILENT",
            "UID",
            "OR",
            "NOT",
            "HEADER",
            "SINCE",
            "1-Jan-2000",
            "CHARSET",
            "UTF-8",
            "RETURN",
            "1:*",
            "*",
            "$",
            "\\Seen",
            "\\Recent",
            "UNCHANGEDSINCE",
            "CHANGEDSINCE",
            "LARGER",
            "KEYWORD",
            "UTF8",
            "MODSEQ",
            "0",
            "4294967296",
            "inbox",
            "&-",
        ]
    ),  # fmt: skip
    st.text(alphabet="0123456789:,*.$", min_size=1, max_size=30),
    st.text(min_size=1, max_size=10).filter(lambda t: not t.isspace()),
    st.text(alphabet="0123456789", min_size=1, max_size=6000),  # beyond int() limits
)


def _atom_token(text: str):
    return Atom(text)


def _bracket_token(draw_items):
    prefix, items, suffix = draw_items
    return Atom.bracketed(f"{prefix}[...]{suffix}", items, prefix, suffix)


TOKENS = st.recursive(
    st.one_of(
        _ATOM_TEXT.map(_atom_token),
        st.binary(max_size=20),
        st.binary(max_size=20).map(Literal),
        st.none(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.tuples(
            st.sampled_from(["BODY", "BODY.PEEK", "BINARY", "X"]),
            st.lists(children, max_size=3),
            st.sampled_from(["", "<0.10>", "<1>", "<a.b>", "<5.0>"]),
        ).map(_bracket_token),
    ),
    max_leaves=30,
)

PARSERS = [
    grammar.parse_fetch_args,
    grammar.parse_search_args,
    grammar.parse_store_args,
    grammar.parse_append_args,
    lambda a: grammar.parse_status_items(a[0] if a else None),
    lambda a: grammar.parse_fetch_items(a[0] if a else []),
    lambda a: [grammar.mailbox_name(t) for t in a],
    lambda a: [grammar.mailbox_name(t, utf8=True) for t in a],
    lambda a: [grammar.parse_sequence_set(t).resolve_uids([1, 2, 3]) for t in a],
    lambda a: [grammar.parse_sequence_set(t).resolve_seqs(3) for t in a],
    lambda a: [grammar.parse_date(t) for t in a],
    lambda a: [grammar.parse_date_time(t) for t in a],
    lambda a: [grammar.parse_flag_list(t) for t in a],
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKENS, max_size=8))
def test_grammar_raises_only_grammar_error(args):
    for parse in PARSERS:
        try:
            parse(args)
        except grammar.GrammarError:
            pass
