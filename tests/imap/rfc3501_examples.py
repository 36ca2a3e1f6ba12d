"""Client command lines from RFC 3501 (section 6 examples, section 8 sample
session), as the client sends them: each entry is the raw bytes of one
command (literals included) and the expected (tag, name, number of args)."""

from __future__ import annotations

APPEND_MESSAGE = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\n"
    b"From: Fred Foobar <foobar@Blurdybloop.COM>\r\n"
    b"Subject: afternoon meeting\r\n"
    b"To: mooch@owatagu.siam.edu\r\n"
    b"Message-Id: <B27397-0100000@Blurdybloop.COM>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
)

# (raw command, tag, name, args count)
COMMANDS: list[tuple[bytes, str, str, int]] = [
    (b"abcd CAPABILITY\r\n", "abcd", "CAPABILITY", 0),
    (b"a002 NOOP\r\n", "a002", "NOOP", 0),
    (b"a047 NOOP\r\n", "a047", "NOOP", 0),
    (b"A023 LOGOUT\r\n", "A023", "LOGOUT", 0),
    (b"a001 CAPABILITY\r\n", "a001", "CAPABILITY", 0),
    (b"a002 STARTTLS\r\n", "a002", "STARTTLS", 0),
    (b"a003 CAPABILITY\r\n", "a003", "CAPABILITY", 0),
    (b"a004 LOGIN joe password\r\n", "a004", "LOGIN", 2),
    (b"A001 AUTHENTICATE GSSAPI\r\n", "A001", "AUTHENTICATE", 1),
    (b"a001 LOGIN SMITH SESAME\r\n", "a001", "LOGIN", 2),
    (b"A142 SELECT INBOX\r\n", "A142", "SELECT", 1),
    (b"A932 EXAMINE blurdybloop\r\n", "A932", "EXAMINE", 1),
    (b"A003 CREATE owatagusiam/\r\n", "A003", "CREATE", 1),
    (b"A004 CREATE owatagusiam/blurdybloop\r\n", "A004", "CREATE", 1),
    (b'A682 LIST "" *\r\n', "A682", "LIST", 2),
    (b"A683 DELETE blurdybloop\r\n", "A683", "DELETE", 1),
    (b"A684 DELETE foo\r\n", "A684", "DELETE", 1),
    (b"A686 DELETE foo/bar\r\n", "A686", "DELETE", 1),
    (b"A683 RENAME blurdybloop sarasoop\r\n", "A683", "RENAME", 2),
    (b"A684 RENAME foo zowie\r\n", "A684", "RENAME", 2),
    (b"Z433 RENAME INBOX old-mail\r\n", "Z433", "RENAME", 2),
    (b"A002 SUBSCRIBE #news.comp.mail.mime\r\n", "A002", "SUBSCRIBE", 1),
    (b"A002 UNSUBSCRIBE #news.comp.mail.mime\r\n", "A002", "UNSUBSCRIBE", 1),
    (b'A101 LIST "" ""\r\n', "A101", "LIST", 2),
    (b'A102 LIST #news.comp.mail.misc ""\r\n', "A102", "LIST", 2),
    (b'A103 LIST /usr/staff/jones ""\r\n', "A103", "LIST", 2),
    (b"A202 LIST ~/Mail/ %\r\n", "A202", "LIST", 2),
    (b'A002 LSUB "#news." "comp.mail.*"\r\n', "A002", "LSUB", 2),
    (b'A003 LSUB "#news." "comp.%"\r\n', "A003", "LSUB", 2),
    (b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)\r\n", "A042", "STATUS", 2),
    (
        b"A003 APPEND saved-messages (\\Seen) {%d}\r\n" % len(APPEND_MESSAGE)
        + APPEND_MESSAGE
        + b"\r\n",
        "A003",
        "APPEND",
        3,
    ),
    (b"FXXZ CHECK\r\n", "FXXZ", "CHECK", 0),
    (b"A341 CLOSE\r\n", "A341", "CLOSE", 0),
    (b"A202 EXPUNGE\r\n", "A202", "EXPUNGE", 0),
    (b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"\r\n', "A282", "SEARCH", 6),
    (b'A283 SEARCH TEXT "string not in mailbox"\r\n', "A283", "SEARCH", 2),
    (b"A284 SEARCH CHARSET UTF-8 TEXT {6}\r\nXXXXXX\r\n", "A284", "SEARCH", 4),
    (b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n", "A654", "FETCH", 2),
    (b"A003 STORE 2:4 +FLAGS (\\Deleted)\r\n", "A003", "STORE", 3),
    (b"A003 COPY 2:4 MEETING\r\n", "A003", "COPY", 2),
    (b"A999 UID FETCH 4827313:4828442 FLAGS\r\n", "A999", "UID FETCH", 2),
    (b"a441 CAPABILITY\r\n", "a441", "CAPABILITY", 0),
    (b"A442 XPIG-LATIN\r\n", "A442", "XPIG-LATIN", 0),
    # section 8 sample session
    (b"a001 login mrc secret\r\n", "a001", "LOGIN", 2),
    (b"a002 select inbox\r\n", "a002", "SELECT", 1),
    (b"a003 fetch 12 full\r\n", "a003", "FETCH", 2),
    (b"a004 fetch 12 body[header]\r\n", "a004", "FETCH", 2),
    (b"a005 store 12 +flags \\deleted\r\n", "a005", "STORE", 3),
    (b"a006 logout\r\n", "a006", "LOGOUT", 0),
]

#: The whole stream, as one client would pipeline it.
STREAM = b"".join(c[0] for c in COMMANDS)
