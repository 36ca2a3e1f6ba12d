"""Random command sequences against a live session (seeded, so a failure
reproduces): every command gets exactly one tagged answer, never
``[SERVERBUG]``, and the session's view stays consistent with the store."""

from __future__ import annotations

import random
import re

import pytest
import pytest_twisted
from twisted.python import log

from tests.imap.session_support import add_user, deliver, make_unit_context, message, open_session

ALICE = "alice@example.test"

FLAGS = ["\\Seen", "\\Deleted", "\\Flagged", "\\Answered", "\\Draft", "$Work", "Junk"]
BOXES = ["INBOX", "Archive", "Trash", "fuzz", "fuzz/sub", "nosuch", '"with space"', "&AOk-t&AOk-"]


def seqset(r: random.Random) -> str:
    def one() -> str:
        n = r.choice(["*", str(r.randint(1, 12))])
        if r.random() < 0.4:
            return f"{n}:{r.choice(['*', str(r.randint(1, 12))])}"
        return n

    return ",".join(one() for _ in range(r.randint(1, 3)))


def random_command(r: random.Random) -> str:
    box = r.choice(BOXES)
    flags = " ".join(r.sample(FLAGS, r.randint(0, 3)))
    choices = [
        lambda: "NOOP",
        lambda: "CHECK",
        lambda: f"SELECT {box}",
        lambda: "SELECT INBOX",
        lambda: f"EXAMINE {box}",
        lambda: f"CREATE {box}",
        lambda: f"DELETE {box}",
        lambda: f"RENAME {box} {r.choice(BOXES)}",
        lambda: f'LIST "" {r.choice(["*", "%", "fuzz/%", "*sub*", ""])}',
        lambda: f'LSUB "" {r.choice(["*", "%"])}',
        lambda: f"SUBSCRIBE {box}",
        lambda: f"STATUS {box} (MESSAGES RECENT UIDNEXT UNSEEN)",
        lambda: (
            f"FETCH {seqset(r)} {r.choice(['FLAGS', 'FAST', 'ALL', 'FULL', '(UID BODY.PEEK[HEADER])', 'BODY[]', 'BODY[1]', 'BODY[TEXT]<0.5>', 'BODYSTRUCTURE'])}"
        ),
        lambda: f"UID FETCH {seqset(r)} (FLAGS ENVELOPE)",
        lambda: (
            f"STORE {seqset(r)} {r.choice(['FLAGS', '+FLAGS', '-FLAGS', '+FLAGS.SILENT'])} ({flags})"
        ),
        lambda: f"UID STORE {seqset(r)} +FLAGS ({flags})",
        lambda: (
            f"SEARCH {r.choice(['ALL', 'UNSEEN', 'DELETED', 'NOT SEEN', 'OR FLAGGED SEEN', 'SUBJECT fuzz', 'UID 1:*', '1:3', 'LARGER 5'])}"
        ),
        lambda: f"UID SEARCH {r.choice(['ALL', 'UNSEEN', 'TEXT body'])}",
        lambda: f"COPY {seqset(r)} {box}",
        lambda: f"UID COPY {seqset(r)} {box}",
        lambda: f"MOVE {seqset(r)} {box}",
        lambda: f"UID MOVE {seqset(r)} {box}",
        lambda: "EXPUNGE",
        lambda: f"UID EXPUNGE {seqset(r)}",
        lambda: "CLOSE",
        lambda: "UNSELECT",
        lambda: "IDLE-CYCLE",
        lambda: "DELIVER",
        lambda: f"APPEND {box} ({flags}) {{10+}}\r\nSubject: x",
        lambda: r.choice(
            ["FETCH", "STORE 1", "SEARCH", "COPY 1", 'LIST "', "FOO BAR", "UID", "UID FROB 1"]
        ),
    ]
    return r.choice(choices)()


@pytest.mark.parametrize("seed", range(10))
@pytest_twisted.ensureDeferred
async def test_random_command_sequences(tmp_path, seed):
    ctx = await make_unit_context(tmp_path)
    errors: list[dict] = []

    def observer(event: dict) -> None:
        if event.get("isError"):
            errors.append(event)

    log.addObserver(observer)
    try:
        await add_user(ctx)
        for i in range(6):
            await deliver(ctx, ALICE, message(f"fuzz {i}", f"body {i}\r\n"))
        r = random.Random(seed)
        c = open_session(ctx)
        other = open_session(ctx)
        await c.login()
        await other.login()
        await other.ok("SELECT INBOX")
        for n in range(120):
            cmd = random_command(r) if c.session.selected is not None or n % 4 else "SELECT INBOX"
            if cmd == "DELIVER":
                await deliver(ctx, ALICE, message(f"late {n}"))
                continue
            if cmd == "IDLE-CYCLE":
                tag = f"i{n}"
                c.send(tag.encode() + b" IDLE\r\n")
                out = await c.wait_for(rb"^(\+ idling|" + tag.encode() + rb" (BAD|NO|OK)).*\r\n")
                if out.rstrip().endswith(b"idling") or b"+ idling" in out:
                    await other.cmd("STORE 1 +FLAGS (\\Seen)")
                    c.send(b"DONE\r\n")
                    out = await c.tagged(tag)
                assert b"SERVERBUG" not in out
                continue
            tag = f"t{n}"
            c.send(f"{tag} {cmd}\r\n".encode())
            out = await c.wait_for(rb"^(" + tag.encode() + rb" (OK|NO|BAD)\b|\* BYE ).*\r\n")
            assert b"SERVERBUG" not in out, (seed, n, cmd, out)
            if b"* BYE " in out:
                # the other session deleted the selected mailbox: the
                # server says BYE and closes (as Dovecot does); reconnect
                assert b"mailbox was deleted" in out, out
                await c.io.wait(lambda c=c: c.io.closed, "close after BYE")
                c = open_session(ctx)
                await c.login()
                continue
            last = out.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1]
            assert re.match(rb"^t\d+ (OK|NO|BAD) ", last), (cmd, out)
            assert last.startswith(tag.encode() + b" ")
            # the other session mutates concurrently now and then
            if r.random() < 0.2:
                other_cmd = random_command(r)
                if other_cmd in ("IDLE-CYCLE", "DELIVER"):
                    other_cmd = "NOOP"
                other.n += 1
                otag = f"o{other.n}"
                other.send(f"{otag} {other_cmd}\r\n".encode())
                out = await other.wait_for(
                    rb"^(" + otag.encode() + rb" (OK|NO|BAD)\b|\* BYE ).*\r\n"
                )
                assert b"SERVERBUG" not in out, (seed, n, other_cmd, out)
                if b"* BYE " in out:
                    await other.io.wait(lambda o=other: o.io.closed, "close after BYE")
                    other = open_session(ctx)
                    await other.login()
        # the session's view agrees with the store after a NOOP
        if c.session.selected is not None:
            await c.ok("NOOP")
            view = c.session.selected
            recs = await ctx.storage.messages.list_messages(view.mailbox_id)
            assert [x.uid for x in recs] == view.uids
            assert {x.uid: x.flags for x in recs} == {u: view.flags[u] for u in view.uids}
        # nothing failed inside the server either (e.g. after a BYE)
        assert not errors, [log.textFromEventDict(e) for e in errors]
    finally:
        log.removeObserver(observer)
        await ctx.storage.close()
