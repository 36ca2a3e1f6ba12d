"""parse_imap_log: Thunderbird's MOZ_LOG=IMAP:5 lines into command/answer pairs."""

from __future__ import annotations

from tests.clients.thunderbird import parse_imap_log

PREFIX = "2026-12-04 21:59:08.{n:06d} UTC - [Parent 1: IMAP]: I/IMAP {conn}:127.0.0.1:{st}:"


def line(n: int, kind: str, data: str, conn: str = "7f01", st: str = "A") -> str:
    sep = ": " if data else ":"
    return PREFIX.format(n=n, conn=conn, st=st) + kind + sep + data


def test_pairs_commands_with_tagged_answers_per_connection():
    text = "\n".join(
        [
            line(1, "SendData", '5 select "INBOX"'),
            line(2, "SendData", "9 noop", conn="7f02"),
            line(3, "CreateNewLineFromSocket", "* 4 EXISTS"),
            line(4, "CreateNewLineFromSocket", "9 OK NOOP completed", conn="7f02"),
            line(5, "CreateNewLineFromSocket", "5 OK [READ-WRITE] SELECT completed"),
            "2026-12-04 21:59:08.000006 UTC - [Parent 1: IMAP]: V/IMAP ReadNextLine [rv=0x0]",
        ]
    )
    log = parse_imap_log(text)
    assert [(e.conn, e.tag, e.command, e.status) for e in log.exchanges] == [
        ("7f01", "5", 'select "INBOX"', "OK"),
        ("7f02", "9", "noop", "OK"),
    ]
    assert log.exchanges[0].untagged == ["* 4 EXISTS"]
    assert log.exchanges[0].response == "[READ-WRITE] SELECT completed"
    assert log.problems() == []


def test_reports_bad_no_and_untagged_errors():
    text = "\n".join(
        [
            line(1, "SendData", "7 UID fetch 1:* (FLAGS)"),
            line(2, "CreateNewLineFromSocket", "7 BAD Unknown fetch item"),
            line(3, "SendData", '8 create "x"'),
            line(4, "CreateNewLineFromSocket", "* BAD stray"),
            line(5, "CreateNewLineFromSocket", "8 NO [ALREADYEXISTS] exists"),
        ]
    )
    problems = parse_imap_log(text).problems()
    assert len(problems) == 3
    assert "C: 7 UID fetch 1:* (FLAGS)" in problems[0] and "S: 7 BAD Unknown" in problems[0]
    assert 'C: 8 create "x"' in problems[1] and "S: 8 NO [ALREADYEXISTS]" in problems[1]
    assert problems[2].endswith("S: * BAD stray")


def test_literal_lines_that_look_tagged_are_not_answers():
    """A message body line "5 NO ..." inside a FETCH literal must not close
    command 6 nor count as an error; only the sent tag's answer does."""
    text = "\n".join(
        [
            line(1, "SendData", "6 UID fetch 1 (BODY.PEEK[])"),
            line(2, "CreateNewLineFromSocket", "* 1 FETCH (UID 1 BODY[] {40}"),
            line(3, "CreateNewLineFromSocket", "5 NO this is body text"),
            line(4, "CreateNewLineFromSocket", ")"),
            line(5, "CreateNewLineFromSocket", "6 OK UID FETCH completed"),
            line(6, "SendData", "Logging suppressed for this command"),
            line(7, "SendData", "DONE"),
        ]
    )
    log = parse_imap_log(text)
    assert [(e.tag, e.status) for e in log.exchanges] == [("6", "OK")]
    assert log.problems() == []


def test_client_side_errors_are_problems():
    text = "2026-12-04 21:59:08.000001 UTC - [Parent 1: IMAP]: E/IMAP server response unparseable"
    assert parse_imap_log(text).problems() == [text]
