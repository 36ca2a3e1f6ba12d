"""Property tests: parse_message never raises, offsets stay in bounds and
ordered, and generated MIME trees come back with exact offsets."""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.mail.message import ParsedMessage
from mailserver.mail.parse import parse_message

from .test_parse import check_invariants, walk

DATA = Path(__file__).resolve().parent.parent / "data" / "messages"
SAMPLES = [p.read_bytes() for p in sorted(DATA.glob("*.eml"))]

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(raw: bytes) -> ParsedMessage:
    msg = parse_message(raw)
    check_invariants(raw, msg)
    for p in walk(msg.body):
        for a, b in zip(p.parts, p.parts[1:], strict=False):
            assert a.body_end <= b.header_start, "siblings are ordered, not overlapping"
    return msg


@SETTINGS
@given(st.binary(max_size=3000))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


MIME_ALPHABET = st.sampled_from(
    [
        b"\r\n",
        b"\n",
        b"--",
        b"--b",
        b"--b--",
        b":",
        b" ",
        b"\t",
        b"=?utf-8?q?x?=",
        b"\x00",
        b"\xff",
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b"Content-Type: message/rfc822\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"text",
        b"<a@b>",
        b'"',
        b"(",
        b";",
    ]
)


@SETTINGS
@given(st.lists(MIME_ALPHABET, max_size=80).map(b"".join))
def test_mime_shaped_noise(raw: bytes) -> None:
    check(raw)


@st.composite
def mutated_sample(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "insert", "flip", "truncate", "dup", "lf"]))
        i = draw(st.integers(0, len(raw)))
        j = draw(st.integers(i, min(len(raw), i + 200)))
        if op == "delete":
            del raw[i:j]
        elif op == "insert":
            raw[i:i] = draw(st.binary(max_size=40) | MIME_ALPHABET)
        elif op == "flip" and i < len(raw):
            raw[i] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del raw[i:]
        elif op == "dup":
            raw[j:j] = raw[i:j]
        elif op == "lf":
            raw[:] = bytes(raw).replace(b"\r\n", b"\n")
    return bytes(raw)


@SETTINGS
@given(mutated_sample())
def test_mutated_samples(raw: bytes) -> None:
    check(raw)


# -- generated well-formed MIME trees: offsets must come back exactly ---------------------


@dataclass
class Leaf:
    body: bytes


@dataclass
class Multi:
    boundary: str
    children: list


@dataclass
class Rfc822:
    inner: object  # Leaf | Multi


_text_line = st.text(alphabet="abc xyz.,!", max_size=30).map(str.encode)


def _leaf_body() -> st.SearchStrategy[bytes]:
    return st.lists(_text_line, max_size=5).map(lambda ls: b"\r\n".join(ls))


def trees(counter: list[int]) -> st.SearchStrategy:
    def multi(children):
        counter[0] += 1
        # boundaries that are prefixes of one another on purpose: b1, b12, ...
        return Multi("b1" + "2" * counter[0], children)

    leaves = _leaf_body().map(Leaf)
    return st.recursive(
        leaves,
        lambda kids: st.one_of(
            st.lists(kids, min_size=1, max_size=4).map(multi),
            kids.map(Rfc822),
        ),
        max_leaves=12,
    )


def render(node, eol: bytes, out: bytearray, expected: list) -> None:
    """Append a MIME entity (header + body) to out; record expected bodies in walk order."""
    if isinstance(node, Leaf):
        out += b"Content-Type: text/plain; charset=us-ascii" + eol + eol
        start = len(out)
        out += node.body.replace(b"\r\n", eol)
        expected.append(("text", start, len(out)))
    elif isinstance(node, Rfc822):
        out += b"Content-Type: message/rfc822" + eol + eol
        start = len(out)
        slot = len(expected)
        expected.append(None)
        out += b"Subject: inner" + eol
        render(node.inner, eol, out, expected)
        expected[slot] = ("message", start, len(out))
    else:
        b = node.boundary.encode()
        out += b"Content-Type: multipart/mixed; boundary=" + b + eol + eol
        start = len(out)
        slot = len(expected)
        expected.append(None)
        out += b"preamble" + eol
        for child in node.children:
            out += b"--" + b + eol
            render(child, eol, out, expected)
            out += eol
        out += b"--" + b + b"--" + eol
        expected[slot] = ("multipart", start, len(out))


@SETTINGS
@given(st.data())
def test_generated_trees_have_exact_offsets(data: st.DataObject) -> None:
    tree = data.draw(trees([0]))
    eol = data.draw(st.sampled_from([b"\r\n", b"\n"]))
    out = bytearray(b"From: a@b.test" + eol)
    expected: list = []
    render(tree, eol, out, expected)
    raw = bytes(out)
    msg = check(raw)
    assert msg.defects == ()
    # walk order equals render order: a message/rfc822 part is followed by
    # its enclosed message's top entity (whose header starts with "Subject:")
    flat = list(walk(msg.body))
    assert [(p.type, p.body_start, p.body_end) for p in flat] == expected
    for p in flat:
        if p.type == "text":
            text = raw[p.body_start : p.body_end]
            # lines of text, an unterminated last line included
            assert p.lines == text.count(b"\n") + (0 if text.endswith(b"\n") or not text else 1)


# -- size ------------------------------------------------------------------------------------


def test_35_mb_message_parses_fast() -> None:
    attachment = base64.encodebytes(os.urandom(25 * 1024 * 1024)).replace(b"\n", b"\r\n")
    text = b"The quick brown fox jumps over the lazy dog.\r\n" * 20_000
    raw = (
        b"From: a@b.test\r\nSubject: big\r\n"
        b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n"
        b"--zz\r\nContent-Type: text/plain\r\n\r\n" + text + b"\r\n"
        b"--zz\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + attachment + b"\r\n--zz--\r\n"
    )
    assert len(raw) > 34_000_000
    t0 = time.process_time()
    msg = parse_message(raw)
    elapsed = time.process_time() - t0
    assert elapsed < 1.5, f"{elapsed:.2f}s"
    text_part, blob = msg.body.parts
    assert raw[text_part.body_start : text_part.body_end] == text
    assert raw[blob.body_start : blob.body_end] == attachment
    assert msg.defects == ()


def test_pathological_shapes_stay_fast() -> None:
    cases = [
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n" * 3_000_000,
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--bb\r\n" * 3_000_000,
        b"X-A: b\r\n" * 2_000_000 + b"\r\n",
        b"To: a@b\r\n" * 2_000_000 + b"\r\n",
        b"Subject: a\r\n" + b" b\r\n" * 4_000_000 + b"\r\n",
        b"To: " + b"(" * 5_000_000 + b"\r\n\r\n",
        b"Content-Type: text/html\r\n\r\n" + b"<a " * 5_000_000,
        b"Content-Type: message/rfc822\r\n\r\n" * 2000 + b"x" * 10_000_000,
        # nested messages full of address lists that miss the fast path
        (
            b"".join(
                b"%s: %s\r\n" % (name, b"a (b) c <d@e>, " * 3000)
                for name in (b"From", b"To", b"Cc", b"Bcc", b"Sender", b"Reply-To")
            )
            + b"Content-Type: message/rfc822\r\n\r\n"
        )
        * 30,
    ]
    for raw in cases:
        t0 = time.process_time()
        msg = parse_message(raw)
        elapsed = time.process_time() - t0
        assert elapsed < 1.5, (raw[:40], elapsed)
        assert not any(d.startswith("internal") for d in msg.defects)
