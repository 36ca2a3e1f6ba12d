"""Property tests for the sans-I/O core: arbitrary input never crashes it,
every byte it writes is a well-formed reply, and the outcome does not
depend on how the input is fragmented."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.smtp.session import Limits, SMTPServer
from tests.smtp.helpers import drive

REPLY_LINE = re.compile(rb"\A[2-5][0-9][0-9][ -][^\r\n]*\Z")

TOKENS = [
    b"EHLO x\r\n",
    b"HELO y\r\n",
    b"MAIL FROM:<a@b.test>\r\n",
    b"MAIL FROM:<> SIZE=10\r\n",
    b"RCPT TO:<c@d.test>\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"DATA\r\n",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"*\r\n",
    b"STARTTLS\r\n",
    b".\r\n",
    b"\r\n.\r\n",
    b"..\r\n",
    b"\n.\n",
    b"\r\r\n",
    b"\x00\xff",
    b"x" * 1500,
    b"hello world\r\n",
]


def core() -> SMTPServer:
    return SMTPServer(
        "fuzz.test",
        limits=Limits(max_message_size=4096, max_errors=1000),
        tls_available=True,
        auth_enabled=True,
        allow_plaintext_auth=True,
    )


def script():
    return st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=40)), max_size=40).map(
        b"".join
    )


@settings(max_examples=300, deadline=None)
@given(data=script(), chunk=st.integers(min_value=1, max_value=50))
def test_never_crashes_and_replies_are_well_formed(data: bytes, chunk: int) -> None:
    out, _ = drive(core(), data, chunk=chunk)
    if out:
        assert out.endswith(b"\r\n")
        for line in out[:-2].split(b"\r\n"):
            assert REPLY_LINE.match(line), line


@settings(max_examples=300, deadline=None)
@given(data=script(), chunk=st.integers(min_value=1, max_value=50))
def test_fragmentation_does_not_change_the_outcome(data: bytes, chunk: int) -> None:
    whole_out, whole_events = drive(core(), data, chunk=len(data) + 1)
    frag_out, frag_events = drive(core(), data, chunk=chunk)
    assert frag_out == whole_out
    assert frag_events == whole_events
