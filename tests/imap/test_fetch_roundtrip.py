"""BODYSTRUCTURE / ENVELOPE output read back with the receiver's tokenizer:
whatever strings the stored structure holds (quotes, CRLF, 8-bit, empty),
the response stays well-formed and carries the same values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.imap.fetch import bodystructure, envelope_to_imap
from mailserver.imap.receiver import NEED_DATA, Atom, CommandReceiver, Request
from mailserver.mail.message import Address, BodyPart, Envelope


def read_back(value: bytes):
    """Tokenize an IMAP value by wrapping it in a fake command."""
    r = CommandReceiver(1 << 22, 1 << 22)
    r.receive_data(b"t X " + value + b"\r\n")
    while True:
        ev = r.next_event()
        assert ev is not NEED_DATA
        if isinstance(ev, Request):
            assert len(ev.args) == 1, ev.args
            return ev.args[0]
        assert ev.__class__.__name__ == "Continuation", ev


TEXT = st.text(max_size=12)
OPT = st.none() | TEXT
PARAMS = st.lists(st.tuples(st.text(alphabet="abcXYZ-", min_size=1, max_size=6), TEXT), max_size=3)
ADDR = st.builds(Address, OPT, OPT, OPT, OPT)
ENVELOPES = st.builds(
    Envelope,
    date=OPT,
    subject=OPT,
    from_=st.lists(ADDR, max_size=2).map(tuple),
    sender=st.lists(ADDR, max_size=2).map(tuple),
    reply_to=st.lists(ADDR, max_size=2).map(tuple),
    to=st.lists(ADDR, max_size=3).map(tuple),
    cc=st.lists(ADDR, max_size=2).map(tuple),
    bcc=st.lists(ADDR, max_size=2).map(tuple),
    in_reply_to=OPT,
    message_id=OPT,
)


def leaf(kind):
    return st.builds(
        BodyPart,
        type=st.just(kind[0]),
        subtype=st.just(kind[1]),
        params=PARAMS.map(tuple),
        id=OPT,
        description=OPT,
        encoding=st.sampled_from(["7bit", "base64", "quoted-printable"]),
        size=st.integers(0, 10**9),
        lines=st.integers(0, 10**6),
        md5=OPT,
        disposition=st.none()
        | st.tuples(st.sampled_from(["inline", "attachment"]), PARAMS.map(tuple)),
        language=st.none()
        | st.lists(st.text(alphabet="abcdef-", min_size=1, max_size=5), min_size=1, max_size=3).map(
            tuple
        ),
        location=OPT,
    )


def parts():
    base = st.sampled_from([("text", "plain"), ("image", "png"), ("application", "pdf")]).flatmap(
        leaf
    )
    return st.recursive(
        base,
        lambda children: st.one_of(
            st.builds(
                BodyPart,
                type=st.just("multipart"),
                subtype=st.sampled_from(["mixed", "alternative"]),
                params=PARAMS.map(tuple),
                parts=st.lists(children, min_size=1, max_size=3).map(tuple),
            ),
            st.builds(
                BodyPart,
                type=st.just("message"),
                subtype=st.just("rfc822"),
                size=st.integers(0, 1000),
                lines=st.integers(0, 100),
                message_envelope=ENVELOPES,
                message_body=children,
            ),
        ),
        max_leaves=6,
    )


def s(tok) -> str | None:
    """A string token back to text (None for NIL)."""
    if tok is None:
        return None
    assert isinstance(tok, bytes) and not isinstance(tok, Atom), tok
    return tok.decode("utf-8", "surrogateescape")


def check_params(tok, params):
    if not params:
        assert tok is None
        return
    assert [s(t) for t in tok] == [x for k, v in params for x in (k.upper(), v)]


def check_addresses(tok, addrs):
    if not addrs:
        assert tok is None
        return
    assert [[s(x) for x in a] for a in tok] == [[a.name, a.adl, a.mailbox, a.host] for a in addrs]


def check_envelope(tok, env: Envelope):
    assert len(tok) == 10
    assert s(tok[0]) == env.date and s(tok[1]) == env.subject
    check_addresses(tok[2], env.from_)
    check_addresses(tok[3], env.sender or env.from_)
    check_addresses(tok[4], env.reply_to or env.from_)
    check_addresses(tok[5], env.to)
    check_addresses(tok[6], env.cc)
    check_addresses(tok[7], env.bcc)
    assert s(tok[8]) == env.in_reply_to and s(tok[9]) == env.message_id


def check_part(tok, part: BodyPart, ext: bool):
    assert isinstance(tok, list)
    if part.is_multipart:
        n = len(part.parts)
        for child_tok, child in zip(tok[:n], part.parts, strict=True):
            check_part(child_tok, child, ext)
        assert s(tok[n]) == part.subtype.upper()
        rest = tok[n + 1 :]
        if ext:
            check_params(rest[0], part.params)
            assert len(rest) == 4
        else:
            assert rest == []
        return
    assert s(tok[0]) == part.type.upper() and s(tok[1]) == part.subtype.upper()
    check_params(tok[2], part.params)
    assert s(tok[3]) == part.id and s(tok[4]) == part.description
    assert s(tok[5]) == part.encoding.upper() and int(tok[6]) == part.size
    rest = tok[7:]
    if part.type == "message":
        check_envelope(rest[0], part.message_envelope)
        check_part(rest[1], part.message_body, ext)
        assert int(rest[2]) == part.lines
        rest = rest[3:]
    elif part.type == "text":
        assert int(rest[0]) == part.lines
        rest = rest[1:]
    if not ext:
        assert rest == []
        return
    assert s(rest[0]) == part.md5
    if part.disposition is None:
        assert rest[1] is None
    else:
        assert s(rest[1][0]) == part.disposition[0].upper()
        check_params(rest[1][1], part.disposition[1])
    if not part.language:
        assert rest[2] is None
    elif len(part.language) == 1:
        assert s(rest[2]) == part.language[0]
    else:
        assert [s(x) for x in rest[2]] == list(part.language)
    assert s(rest[3]) == part.location


@settings(max_examples=100, deadline=None)
@given(parts(), st.booleans())
def test_bodystructure_reads_back(part, ext):
    check_part(read_back(bodystructure(part, ext)), part, ext)


@settings(max_examples=100, deadline=None)
@given(ENVELOPES)
def test_envelope_reads_back(env):
    check_envelope(read_back(envelope_to_imap(env)), env)
