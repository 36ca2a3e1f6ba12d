"""Several sessions on one mailbox: unsolicited EXISTS / EXPUNGE / FETCH
exactly when RFC 3501 allows them, \\Recent ownership, IDLE, and the RFC
3501 section 8 sample session fed in small fragments."""

from __future__ import annotations

import re

import pytest_twisted

from tests.imap.session_support import (
    add_user,
    deliver,
    make_unit_context,
    message,
    open_session,
)

ALICE = "alice@example.test"


@pytest_twisted.async_yield_fixture
async def ctx(tmp_path):
    c = await make_unit_context(tmp_path)
    await add_user(c)
    yield c
    await c.storage.close()


async def two_sessions(ctx, n):
    for i in range(n):
        await deliver(ctx, ALICE, message(f"m{i + 1}"))
    a = open_session(ctx)
    await a.login()
    await a.ok("SELECT INBOX")
    b = open_session(ctx)
    await b.login()
    await b.ok("SELECT INBOX")
    return a, b


@pytest_twisted.ensureDeferred
async def test_exists_after_delivery_and_append_in_other_session(ctx):
    a, b = await two_sessions(ctx, 2)
    await deliver(ctx, ALICE, message("new one"))
    out = await a.ok("NOOP")
    # a claimed messages 1-2 at SELECT and now the new one as well
    assert b"* 3 EXISTS\r\n* 3 RECENT\r\n" in out
    msg = message("appended by b")
    out = await b.ok(b"APPEND INBOX {%d+}\r\n" % len(msg) + msg)
    # b learns the delivery and its own append with the APPEND's completion
    assert b"* 4 EXISTS\r\n" in out
    out = await a.ok("NOOP")
    assert b"* 4 EXISTS\r\n" in out
    # \Recent of each new message went to exactly one session
    out_a = await a.ok("FETCH 3:4 FLAGS")
    out_b = await b.ok("FETCH 3:4 FLAGS")
    for seq in (b"3", b"4"):
        owners = [
            o for o in (out_a, out_b) if re.search(rb"\* " + seq + rb" FETCH \(FLAGS \(\\Recent", o)
        ]
        assert len(owners) == 1, (seq, out_a, out_b)
    assert b"* 3 FETCH (FLAGS (\\Recent))" in out_a  # a saw message 3 first


@pytest_twisted.ensureDeferred
async def test_exists_may_come_during_fetch(ctx):
    a, b = await two_sessions(ctx, 1)
    await deliver(ctx, ALICE, message("during"))
    out = await a.ok("FETCH 1 FLAGS")
    assert b"* 2 EXISTS\r\n" in out


@pytest_twisted.ensureDeferred
async def test_flag_changes_reach_other_session(ctx):
    a, b = await two_sessions(ctx, 2)
    await b.ok("STORE 2 +FLAGS.SILENT (\\Flagged)")
    out = await a.ok("NOOP")
    assert b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))\r\n" in out
    out = await a.ok("NOOP")
    assert b"FETCH" not in out  # told once
    out = await b.ok("NOOP")
    assert b"FETCH" not in out  # b's own change is not echoed back


@pytest_twisted.ensureDeferred
async def test_expunge_not_during_fetch_store_search(ctx):
    a, b = await two_sessions(ctx, 3)
    await b.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    out = await b.ok("EXPUNGE")
    assert b"* 2 EXPUNGE\r\n" in out
    for cmd in ("FETCH 1:3 (UID)", "UID FETCH 1:* (FLAGS)", "STORE 1 +FLAGS (\\Seen)",
                "UID STORE 3 +FLAGS (\\Seen)", "SEARCH ALL", "UID SEARCH ALL"):  # fmt: skip
        out = await a.cmd(cmd)
        assert b"EXPUNGE" not in out, (cmd, out)
    # sequence numbers stayed stable: message 3 is still number 3
    out = await a.ok("FETCH 3 UID")
    assert b"* 3 FETCH (UID 3)" in out
    out = await a.cmd("FETCH 2 UID")
    assert b"NO [EXPUNGEISSUED]" in out
    out = await a.ok("SEARCH ALL")
    assert b"* SEARCH 1 2 3\r\n" in out
    out = await a.ok("NOOP")
    assert b"* 2 EXPUNGE\r\n" in out
    out = await a.ok("FETCH 2 UID")
    assert b"* 2 FETCH (UID 3)" in out


@pytest_twisted.ensureDeferred
async def test_expunge_then_new_message_order(ctx):
    a, b = await two_sessions(ctx, 2)
    await b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await b.ok("EXPUNGE")
    await deliver(ctx, ALICE, message("late"))
    out = await a.ok("FETCH 2 UID")
    # EXISTS counts the not-yet-reported expunged message
    assert b"* 3 EXISTS\r\n" in out and b"EXPUNGE" not in out
    out = await a.ok("CHECK")
    assert b"* 1 EXPUNGE\r\n" in out
    out = await a.ok("FETCH 1:* UID")
    assert re.findall(rb"UID (\d+)", out) == [b"2", b"3"]


@pytest_twisted.ensureDeferred
async def test_idle_woken_by_delivery_and_expunge(ctx):
    a, b = await two_sessions(ctx, 2)
    a.send(b"i1 IDLE\r\n")
    await a.wait_for(rb"^\+ idling\r\n")
    await deliver(ctx, ALICE, message("wake up"))
    out = await a.wait_for(rb"^\* 3 EXISTS\r\n")
    assert b"i1 OK" not in out
    await b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await b.ok("EXPUNGE")
    await a.wait_for(rb"^\* 1 EXPUNGE\r\n")
    await b.ok("STORE 1 +FLAGS.SILENT (\\Seen)")
    await a.wait_for(rb"^\* 1 FETCH \(UID 2 FLAGS \(\\Recent \\Seen\)\)\r\n")
    a.send(b"DO")
    a.send(b"NE\r\n")
    out = await a.tagged("i1")
    assert out.startswith(b"i1 OK")
    out = await a.ok("NOOP")
    assert b"EXISTS" not in out and b"EXPUNGE" not in out


@pytest_twisted.ensureDeferred
async def test_idle_requires_done(ctx):
    a, _ = await two_sessions(ctx, 0)
    a.send(b"i1 IDLE\r\n")
    await a.wait_for(rb"^\+ ")
    a.send(b"NOTDONE\r\n")
    assert b"i1 BAD" in await a.tagged("i1")
    # IDLE without a selected mailbox is allowed (authenticated state)
    c = open_session(ctx)
    await c.login()
    c.send(b"i2 IDLE\r\n")
    await c.wait_for(rb"^\+ ")
    c.send(b"DONE\r\n")
    assert b"i2 OK" in await c.tagged("i2")


@pytest_twisted.ensureDeferred
async def test_mailbox_deleted_under_session(ctx):
    a = open_session(ctx)
    await a.login()
    await a.ok("CREATE box")
    await a.ok("SELECT box")
    b = open_session(ctx)
    await b.login()
    await b.ok("DELETE box")
    a.send(b"n1 NOOP\r\n")
    await a.wait_for(rb"^\* BYE .*deleted")
    await a.io.wait(lambda: a.io.closed, "close")


# -- RFC 3501 section 8 sample session, fed in fragments ------------------------------

SAMPLE = [
    b"a001 login alice@example.test secret\r\n",
    b"a002 select inbox\r\n",
    b"a003 fetch 12 full\r\n",
    b"a004 fetch 12 body[header]\r\n",
    b"a005 store 12 +flags \\deleted\r\n",
    b"a006 noop\r\n",
    b"a007 logout\r\n",
]


@pytest_twisted.ensureDeferred
async def test_rfc3501_sample_session_in_fragments(ctx):
    for i in range(12):
        await deliver(ctx, ALICE, message(f"sample {i + 1}"))
    for size in (1, 3, 7):
        c = open_session(ctx)
        stream = b"".join(SAMPLE)
        for i in range(0, len(stream), size):
            c.send(stream[i : i + size])
        out = await c.tagged("a007")
        tags = re.findall(rb"(?m)^(a00\d) (OK|NO|BAD)", out)
        assert tags == [(b"a00%d" % n, b"OK") for n in range(1, 8)], out
        assert b"* 12 EXISTS" in out
        assert b"* 12 FETCH (FLAGS (" in out and b"ENVELOPE (" in out and b"BODY (" in out
        assert b"BODY[HEADER] {" in out
        assert re.search(rb"\* 12 FETCH \(FLAGS \([^)]*\\Deleted", out)
        assert b"* BYE" in out
        await c.io.wait(lambda c=c: c.io.closed, "close")
