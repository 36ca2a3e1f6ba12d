"""Drive the sans-I/O SMTP core in tests: feed bytes in fragments, answer
events with a policy function, collect the bytes written."""

from __future__ import annotations

from collections.abc import Callable

from mailserver.smtp import replies as R
from mailserver.smtp.replies import Reply
from mailserver.smtp.session import (
    NEED_DATA,
    AuthAttempt,
    Closed,
    DataComplete,
    Event,
    Mail,
    Rcpt,
    SMTPServer,
    StartTls,
)


def accept_all(ev: Event) -> Reply:
    if isinstance(ev, Mail):
        return R.R250_SENDER_OK
    if isinstance(ev, Rcpt):
        return R.R250_RCPT_OK
    if isinstance(ev, DataComplete):
        return R.R250_QUEUED
    if isinstance(ev, StartTls):
        return R.R220_TLS_READY
    if isinstance(ev, AuthAttempt):
        return R.R235_AUTH_OK if ev.password == "secret" else R.R535_AUTH_FAILED
    raise AssertionError(ev)


def drive(
    core: SMTPServer,
    data: bytes,
    handler: Callable[[Event], Reply] = accept_all,
    chunk: int = 3,
) -> tuple[bytes, list[Event]]:
    """Feed ``data`` ``chunk`` bytes at a time; returns (output, events)."""
    out = bytearray()
    events: list[Event] = []
    for i in range(0, max(len(data), 1), chunk):
        core.receive_data(data[i : i + chunk])
        while True:
            ev = core.next_event()
            out += core.data_to_send()
            if ev is NEED_DATA:
                break
            events.append(ev)
            if isinstance(ev, Closed):
                break
            out += core.send(handler(ev))
    return bytes(out), events


def codes(out: bytes) -> list[str]:
    """Final reply lines' codes (``250``, ``354``...) in order; continuation
    lines of multi-line replies are skipped."""
    return [line[:3].decode() for line in out.split(b"\r\n") if line[3:4] == b" "]


def lines(out: bytes) -> list[str]:
    return [line.decode() for line in out.split(b"\r\n") if line]
