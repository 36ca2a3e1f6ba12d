"""IMAP commands on a fake connection against the embedded store: mailbox
commands, APPEND, FETCH, STORE, SEARCH, COPY/MOVE, EXPUNGE and friends."""

from __future__ import annotations

import re

import pytest_twisted

from mailserver.imap.commands_base import State, compact_set
from mailserver.store.interfaces import FlagMode
from tests.imap.session_support import (
    add_user,
    deliver,
    make_unit_context,
    message,
    open_session,
    status_of,
)

ALICE = "alice@example.test"


@pytest_twisted.async_yield_fixture
async def ctx(tmp_path):
    c = await make_unit_context(tmp_path, limits={"max_message_size": 4096})
    await add_user(c)
    yield c
    await c.storage.close()


async def logged_in(ctx):
    c = open_session(ctx)
    await c.login()
    return c


async def selected(ctx, n=0, mailbox="INBOX"):
    for i in range(n):
        await deliver(ctx, ALICE, message(f"msg {i + 1}", f"body number {i + 1}\r\n"), mailbox)
    c = await logged_in(ctx)
    await c.ok(f"SELECT {mailbox}")
    return c


def test_compact_set():
    assert compact_set([5, 1, 2, 3, 7, 8]) == "1:3,5,7:8"
    assert compact_set([4]) == "4"


# -- SELECT / EXAMINE ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_select_responses_and_recent(ctx):
    await deliver(ctx, ALICE, message("a"))
    await deliver(ctx, ALICE, message("b"), flags=frozenset({"\\Seen", "$Label"}))
    await deliver(ctx, ALICE, message("c"))
    c = await logged_in(ctx)
    out = await c.ok("SELECT inbox")
    assert b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Label)\r\n" in out
    assert b"* 3 EXISTS\r\n" in out
    assert b"* 3 RECENT\r\n" in out
    assert b"* OK [UNSEEN 1]" in out
    assert (
        b"* OK [PERMANENTFLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen $Label \\*)]" in out
    )
    assert re.search(rb"\* OK \[UIDVALIDITY \d+\]", out)
    assert b"* OK [UIDNEXT 4]" in out
    assert out.endswith(b"OK [READ-WRITE] SELECT completed\r\n")
    assert c.session.state is State.SELECTED
    # a second session does not get \Recent for the same messages
    c2 = await logged_in(ctx)
    out = await c2.ok("SELECT INBOX")
    assert b"* 0 RECENT\r\n" in out
    # EXAMINE: read-only, no \Recent claimed
    await deliver(ctx, ALICE, message("d"))
    c3 = await logged_in(ctx)
    out = await c3.ok("EXAMINE INBOX")
    assert b"[READ-ONLY]" in out and b"* OK [PERMANENTFLAGS ()]" in out
    assert b"* 1 RECENT\r\n" in out  # shown, not claimed
    out = await c3.ok("FETCH 4 BODY[]")
    assert b"\\Seen" not in out  # EXAMINE never sets \Seen
    out = await c3.cmd("STORE 1 +FLAGS (\\Flagged)")
    assert status_of(out) == b"NO"
    out = await c2.ok("SELECT INBOX")  # re-select: message 4 is still unclaimed
    assert b"* 1 RECENT\r\n" in out


@pytest_twisted.ensureDeferred
async def test_select_missing_deselects(ctx):
    c = await selected(ctx)
    out = await c.cmd("SELECT nosuch")
    assert b"NO [NONEXISTENT]" in out
    assert c.session.state is State.AUTHENTICATED


# -- CREATE / DELETE / RENAME / LIST / LSUB / STATUS -------------------------------


@pytest_twisted.ensureDeferred
async def test_create_delete_rename_codes(ctx):
    c = await logged_in(ctx)
    await c.ok("CREATE owatagusiam/")
    await c.ok("CREATE owatagusiam/blurdybloop")
    assert b"NO [ALREADYEXISTS]" in await c.cmd("CREATE owatagusiam")
    assert b"NO [ALREADYEXISTS]" in await c.cmd("CREATE inbox")
    assert b"NO [CANNOT]" in await c.cmd("DELETE INBOX")
    assert b"NO [NONEXISTENT]" in await c.cmd("DELETE nosuch")
    assert b"NO [NONEXISTENT]" in await c.cmd("RENAME nosuch other")
    assert b"NO [ALREADYEXISTS]" in await c.cmd("RENAME Trash Sent")
    await c.ok("RENAME owatagusiam zowie")
    out = await c.ok('LIST "" zowie*')
    assert b'* LIST (\\HasChildren) "/" "zowie"\r\n' in out
    assert b'* LIST (\\HasNoChildren) "/" "zowie/blurdybloop"\r\n' in out
    # deleting a parent leaves it as \Noselect while children exist
    await c.ok("DELETE zowie")
    out = await c.ok('LIST "" %')
    assert b'* LIST (\\Noselect \\HasChildren) "/" "zowie"\r\n' in out
    assert b"blurdybloop" not in out  # "%" does not descend
    out = await c.ok("CREATE &ZeVnLIqe-")  # mUTF-7 round trip (Japanese)
    out = await c.ok('LIST "" "&ZeVnLIqe-"')
    assert b'"&ZeVnLIqe-"' in out


@pytest_twisted.ensureDeferred
async def test_rename_inbox_moves_messages(ctx):
    await deliver(ctx, ALICE, message("x"))
    await deliver(ctx, ALICE, message("y"))
    c = await logged_in(ctx)
    await c.ok("RENAME INBOX old-mail")
    out = await c.ok("STATUS INBOX (MESSAGES)")
    assert b"(MESSAGES 0)" in out
    out = await c.ok('STATUS "old-mail" (MESSAGES)')
    assert b"(MESSAGES 2)" in out


@pytest_twisted.ensureDeferred
async def test_list_special_use_children_and_reference(ctx):
    c = await logged_in(ctx)
    out = await c.ok('LIST "" *')
    assert b'* LIST (\\HasNoChildren) "/" INBOX\r\n' in out
    for name, attr in (("Sent", b"\\Sent"), ("Drafts", b"\\Drafts"), ("Trash", b"\\Trash"),
                       ("Junk", b"\\Junk"), ("Archive", b"\\Archive")):  # fmt: skip
        assert b'* LIST (\\HasNoChildren %s) "/" "%s"\r\n' % (attr, name.encode()) in out
    assert out.index(b"INBOX") < out.index(b"Archive")
    out = await c.ok('LIST "" ""')
    assert b'* LIST (\\Noselect) "/" ""\r\n' in out
    await c.ok("CREATE a/b/c")
    out = await c.ok('LIST "a/" %')
    assert b'"a/b"' in out and b'"a/b/c"' not in out
    out = await c.ok('LIST "a/" *')
    assert b'"a/b/c"' in out
    out = await c.ok('LIST a/b ""')
    assert b'* LIST (\\Noselect) "/" "a/"\r\n' in out
    out = await c.ok('LIST "" nosuch%')
    assert b"* LIST" not in out


@pytest_twisted.ensureDeferred
async def test_subscribe_lsub(ctx):
    c = await logged_in(ctx)
    await c.ok("CREATE news/comp/mail")
    await c.ok("SUBSCRIBE news/comp/mail")
    assert b"NO [NONEXISTENT]" in await c.cmd("SUBSCRIBE nosuch")
    out = await c.ok('LSUB "" news/*')
    assert b'* LSUB () "/" "news/comp/mail"\r\n' in out
    out = await c.ok('LSUB "" news/%')
    assert b'* LSUB (\\Noselect) "/" "news/comp"\r\n' in out
    await c.ok("UNSUBSCRIBE news/comp/mail")
    out = await c.ok('LSUB "" news/*')
    assert b"* LSUB" not in out


@pytest_twisted.ensureDeferred
async def test_status(ctx):
    await deliver(ctx, ALICE, message("s1"))
    await deliver(ctx, ALICE, message("s2"), flags=frozenset({"\\Seen"}))
    c = await logged_in(ctx)
    out = await c.ok("STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)")
    m = re.search(
        rb"\* STATUS INBOX \(MESSAGES 2 RECENT 2 UIDNEXT 3 UIDVALIDITY \d+ UNSEEN 1 HIGHESTMODSEQ \d+\)",
        out,
    )
    assert m, out
    assert b"NO [NONEXISTENT]" in await c.cmd("STATUS nosuch (MESSAGES)")
    assert status_of(await c.cmd("STATUS INBOX (BOGUS)")) == b"BAD"
    await c.ok("SELECT INBOX")
    out = await c.ok("STATUS INBOX (RECENT)")
    assert b"(RECENT 2)" in out  # this session's own \Recent set


# -- APPEND -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_append_flags_date_appenduid(ctx):
    c = await logged_in(ctx)
    msg = message("appended")
    c.send(b'a1 APPEND Drafts (\\Draft $Todo) "05-Dec-2026 10:11:12 +0100" {%d}\r\n' % len(msg))
    await c.wait_for(rb"^\+ .*\r\n")
    c.send(msg + b"\r\n")
    out = await c.tagged("a1")
    m = re.search(rb"a1 OK \[APPENDUID (\d+) 1\]", out)
    assert m, out
    await c.ok("SELECT Drafts")
    out = await c.ok("FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE)")
    assert b"FLAGS (\\Draft \\Recent $Todo)" in out
    assert b'INTERNALDATE "05-Dec-2026 09:11:12 +0000"' in out
    assert b"RFC822.SIZE %d" % len(msg) in out
    # LITERAL+ form, no continuation
    out = await c.cmd(b"APPEND INBOX {%d+}\r\n" % len(msg) + msg)
    assert b"[APPENDUID" in out


@pytest_twisted.ensureDeferred
async def test_append_errors(ctx):
    c = await logged_in(ctx)
    msg = message("x")
    out = await c.cmd(b"APPEND nosuch {%d+}\r\n" % len(msg) + msg)
    assert b"NO [TRYCREATE]" in out
    # bigger than limits.max_message_size (4096 here): refused before sending
    c.send(b"a9 APPEND INBOX {10000}\r\n")
    out = await c.tagged("a9")
    assert b"a9 NO [TOOBIG]" in out and b"+ " not in out
    # LITERAL+ too big: read and discarded, still NO [TOOBIG]
    out = await c.cmd(b"APPEND INBOX {5000+}\r\n" + b"x" * 5000)
    assert b"NO [TOOBIG]" in out
    out = await c.cmd("NOOP")
    assert status_of(out) == b"OK"
    out = await c.cmd(b'APPEND INBOX "bad date" {3+}\r\nabc')
    assert status_of(out) == b"BAD"


# -- FETCH ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_fetch_items_and_implicit_seen(ctx):
    c = await selected(ctx, 3)
    out = await c.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)] UID RFC822.SIZE)")
    assert b"BODY[HEADER.FIELDS (Subject)] {18}\r\nSubject: msg 1\r\n\r\n UID 1" in out
    assert b"\\Seen" not in out
    out = await c.ok("FETCH 1 BODY[TEXT]")
    assert b"BODY[TEXT] {15}\r\nbody number 1\r\n" in out
    assert b"FLAGS (\\Recent \\Seen)" in out  # implicit \Seen reported
    out = await c.ok("FETCH 1 BODY[TEXT]")
    assert b"FLAGS" not in out  # already seen: nothing changes
    out = await c.ok("FETCH 2 (RFC822.HEADER)")
    assert b"\\Seen" not in out
    out = await c.ok("FETCH 2 BODY[]<0.4>")
    assert b'BODY[]<0> "From"' in out and b"\\Seen" in out
    out = await c.ok("FETCH 1:* FAST")
    assert out.count(b" FETCH (") == 3
    out = await c.ok("UID FETCH 3 FLAGS")
    assert b"* 3 FETCH (UID 3 FLAGS (\\Recent))" in out
    out = await c.ok("FETCH 3 (ENVELOPE BODYSTRUCTURE BODY INTERNALDATE)")
    assert b'ENVELOPE ("Fri, 04 Dec 2026 10:00:00 +0000" "msg 3"' in out
    assert b'BODYSTRUCTURE ("TEXT" "PLAIN"' in out
    out = await c.cmd("FETCH 9 FLAGS")
    assert status_of(out) == b"BAD"
    out = await c.ok("UID FETCH 9:20 FLAGS")  # UID ranges may be empty
    assert b"* " not in out
    out = await c.cmd("FETCH 1 (BOGUS)")
    assert status_of(out) == b"BAD"
    out = await c.ok("UID FETCH 1:* (FLAGS)")
    assert out.count(b"FETCH (UID") == 3


@pytest_twisted.ensureDeferred
async def test_fetch_header_does_not_read_whole_blob(ctx):
    body = "line of text\r\n" * 200
    await deliver(ctx, ALICE, message("big", body))
    c = await logged_in(ctx)
    await c.ok("SELECT INBOX")
    calls = []
    blobs = ctx.storage.blobs
    orig_get, orig_range = blobs.get, blobs.get_range

    async def get(key):
        calls.append(("get", key))
        return await orig_get(key)

    async def get_range(key, start, end):
        calls.append(("range", start, end))
        return await orig_range(key, start, end)

    blobs.get, blobs.get_range = get, get_range
    try:
        await c.ok("FETCH 1 (ENVELOPE BODYSTRUCTURE FLAGS)")
        assert calls == []
        await c.ok("FETCH 1 BODY.PEEK[HEADER]")
        assert len(calls) == 1 and calls[0][0] == "range" and calls[0][2] < 400
    finally:
        blobs.get, blobs.get_range = orig_get, orig_range


# -- STORE ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_store_forms(ctx):
    c = await selected(ctx, 3)
    out = await c.ok("STORE 1:2 +FLAGS (\\Flagged $Work)")
    assert b"* 1 FETCH (FLAGS (\\Flagged \\Recent $Work))\r\n" in out
    assert b"* 2 FETCH (FLAGS (\\Flagged \\Recent $Work))\r\n" in out
    out = await c.ok("STORE 1 -FLAGS.SILENT (\\Flagged)")
    assert b"FETCH" not in out
    out = await c.ok("UID STORE 2 FLAGS (\\Answered)")
    assert b"* 2 FETCH (UID 2 FLAGS (\\Answered \\Recent))\r\n" in out
    out = await c.ok("STORE 3 +FLAGS \\Seen")
    assert b"\\Seen" in out
    out = await c.cmd("STORE 1 +FLAGS (\\Recent)")
    assert status_of(out) == b"BAD"
    out = await c.cmd("STORE 7 +FLAGS (\\Seen)")
    assert status_of(out) == b"BAD"
    out = await c.ok("FETCH 1:3 FLAGS")
    assert b"* 1 FETCH (FLAGS (\\Recent $Work))" in out


# -- SEARCH ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_search_keys(ctx):
    await deliver(ctx, ALICE, message("apple pie", "sweet\r\n", frm="carol@example.org"))
    await deliver(ctx, ALICE, message("banana split", "cold\r\n"), flags=frozenset({"\\Seen"}))
    await deliver(ctx, ALICE, message("cherry tart", "sweet and sour\r\n"),
                  flags=frozenset({"\\Flagged", "$Pie"}))  # fmt: skip
    c = await logged_in(ctx)
    await c.ok("SELECT INBOX")

    async def search(q):
        out = await c.ok(q)
        line = [x for x in out.split(b"\r\n") if x.startswith(b"* SEARCH")][0]
        return [int(x) for x in line.split()[2:]]

    assert await search("SEARCH ALL") == [1, 2, 3]
    assert await search("SEARCH UNSEEN") == [1, 3]
    assert await search("SEARCH SEEN") == [2]
    assert await search("SEARCH FLAGGED") == [3]
    assert await search("SEARCH KEYWORD $Pie") == [3]
    assert await search("SEARCH UNKEYWORD $Pie") == [1, 2]
    assert await search("SEARCH SUBJECT banana") == [2]
    assert await search("SEARCH FROM carol") == [1]
    assert await search("SEARCH BODY sweet") == [1, 3]
    assert await search('SEARCH TEXT "SOUR"') == [3]
    assert await search("SEARCH OR SEEN FLAGGED") == [2, 3]
    assert await search("SEARCH NOT SEEN NOT FLAGGED") == [1]
    assert await search("SEARCH 2:*") == [2, 3]
    assert await search("SEARCH UID 1,3") == [1, 3]
    assert await search("SEARCH LARGER 10 SMALLER 100000") == [1, 2, 3]
    assert await search("SEARCH SINCE 1-Jan-2000") == [1, 2, 3]
    assert await search("SEARCH SENTON 4-Dec-2026") == [1, 2, 3]
    assert await search("SEARCH HEADER Subject cherry") == [3]
    assert await search("SEARCH RECENT") == [1, 2, 3]
    assert await search("SEARCH NEW") == [1, 3]
    assert await search("SEARCH OLD") == []
    assert await search("SEARCH (ANSWERED) ") == []
    assert await search("UID SEARCH SUBJECT tart") == [3]
    out = await c.ok(b"SEARCH CHARSET UTF-8 SUBJECT {5+}\r\napple")
    assert b"* SEARCH 1\r\n" in out
    out = await c.cmd("SEARCH CHARSET KOI8-R ALL")
    assert b"NO [BADCHARSET" in out
    out = await c.cmd("SEARCH FROBNICATE")
    assert status_of(out) == b"BAD"


# -- COPY / MOVE / EXPUNGE / CLOSE / UNSELECT ------------------------------------------


@pytest_twisted.ensureDeferred
async def test_copy_and_move(ctx):
    c = await selected(ctx, 4)
    out = await c.ok("COPY 2:3 Archive")
    m = re.search(rb"OK \[COPYUID (\d+) 2:3 1:2\] COPY completed", out)
    assert m, out
    out = await c.cmd("COPY 1 nosuch")
    assert b"NO [TRYCREATE]" in out
    out = await c.ok("UID COPY 4 Archive")
    assert b"[COPYUID" in out and b" 4 3]" in out
    out = await c.ok("MOVE 1,3 Trash")
    lines = out.split(b"\r\n")
    assert re.match(rb"\* OK \[COPYUID \d+ 1,3 1:2\]", lines[0]), out
    assert lines[1:3] == [b"* 1 EXPUNGE", b"* 2 EXPUNGE"]
    out = await c.ok("UID MOVE 4 Trash")
    assert b"* 2 EXPUNGE\r\n" in out
    out = await c.ok("STATUS Trash (MESSAGES)")
    assert b"MESSAGES 3" in out
    out = await c.ok("FETCH 1 UID")
    assert b"* 1 FETCH (UID 2)" in out


@pytest_twisted.ensureDeferred
async def test_expunge_sequence_numbers(ctx):
    c = await selected(ctx, 5)
    await c.ok("STORE 2,4,5 +FLAGS.SILENT (\\Deleted)")
    out = await c.ok("EXPUNGE")
    assert re.findall(rb"\* (\d+) EXPUNGE", out) == [b"2", b"3", b"3"]
    out = await c.ok("FETCH 1:* UID")
    assert re.findall(rb"UID (\d+)", out) == [b"1", b"3"]


@pytest_twisted.ensureDeferred
async def test_uid_expunge_only_given_uids(ctx):
    c = await selected(ctx, 3)
    await c.ok("STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    out = await c.ok("UID EXPUNGE 2:3")
    assert re.findall(rb"\* (\d+) EXPUNGE", out) == [b"2", b"2"]
    out = await c.ok("FETCH 1 UID")
    assert b"UID 1" in out


@pytest_twisted.ensureDeferred
async def test_close_expunges_silently_unselect_does_not(ctx):
    c = await selected(ctx, 2)
    await c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    out = await c.ok("UNSELECT")
    assert b"EXPUNGE" not in out and c.session.state is State.AUTHENTICATED
    out = await c.ok("STATUS INBOX (MESSAGES)")
    assert b"MESSAGES 2" in out
    await c.ok("SELECT INBOX")
    out = await c.ok("CLOSE")
    assert b"EXPUNGE" not in out and c.session.state is State.AUTHENTICATED
    out = await c.ok("STATUS INBOX (MESSAGES)")
    assert b"MESSAGES 1" in out
    # EXAMINE + CLOSE never expunges
    await ctx.storage.messages.store_flags(
        (await ctx.storage.mailboxes.get_mailbox(ALICE, "INBOX")).id, [2], ["\\Deleted"],
        FlagMode.ADD,
    )  # fmt: skip
    await c.ok("EXAMINE INBOX")
    await c.ok("CLOSE")
    out = await c.ok("STATUS INBOX (MESSAGES)")
    assert b"MESSAGES 1" in out


@pytest_twisted.ensureDeferred
async def test_check_and_delete_selected(ctx):
    c = await selected(ctx, 1)
    await c.ok("CHECK")
    await c.ok("CREATE tmpbox")
    await c.ok("SELECT tmpbox")
    await c.ok("DELETE tmpbox")
    assert c.session.state is State.AUTHENTICATED


@pytest_twisted.ensureDeferred
async def test_list_extended_forms(ctx):
    """RFC 5258 / 6154 / 5819 syntax is understood even though LIST-EXTENDED
    is not advertised (clients that send it anyway get sensible answers)."""
    c = await logged_in(ctx)
    await c.ok("SUBSCRIBE Sent")
    await c.ok("UNSUBSCRIBE Trash")
    await c.ok("CREATE gone")
    await c.ok("SUBSCRIBE gone")
    await c.ok("DELETE gone")
    out = await c.ok('LIST (SPECIAL-USE) "" *')
    names = re.findall(rb'"/" (\S+)\r\n', out)
    assert sorted(names) == [b'"Archive"', b'"Drafts"', b'"Junk"', b'"Sent"', b'"Trash"']
    out = await c.ok('LIST (SUBSCRIBED) "" *')
    assert b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"\r\n' in out
    assert b'* LIST (\\NonExistent \\HasNoChildren \\Subscribed) "/" "gone"\r\n' in out
    assert b"Trash" not in out
    out = await c.ok('LIST "" (INBOX Sent) RETURN (SUBSCRIBED CHILDREN STATUS (MESSAGES UNSEEN))')
    assert (
        b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX\r\n* STATUS INBOX (MESSAGES 0 UNSEEN 0)\r\n'
        in out
    )
    assert b'"Sent"\r\n* STATUS "Sent" (MESSAGES 0 UNSEEN 0)\r\n' in out
    out = await c.cmd('LIST "" * RETURN')
    assert status_of(out) == b"BAD"
