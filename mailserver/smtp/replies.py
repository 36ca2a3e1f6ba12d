"""SMTP replies: a small value type and the named replies the server sends.

Every reply carries its RFC 5321 code and, where one applies, the RFC 3463
enhanced status code (advertised as ENHANCEDSTATUSCODES, RFC 2034).  Naming
them keeps the reply codes reviewable in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """One (possibly multi-line) SMTP reply."""

    code: int
    enhanced: str | None
    text: str | tuple[str, ...]

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else self.text

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_error(self) -> bool:
        return self.code >= 400

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.enhanced, text)

    def to_bytes(self) -> bytes:
        """Wire form: ``code-line`` continuation lines, ``code line`` last."""
        lines = self.lines or ("",)
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            # The enhanced code goes on every line (RFC 2034 section 4).
            body = f"{self.enhanced} {line}" if self.enhanced else line
            # A reply line must never carry a line break: it would let text
            # under outside control inject a second reply.
            body = body.replace("\r", " ").replace("\n", " ")
            out.append(f"{self.code}{sep}{body}".rstrip(" ") + "\r\n")
        return "".join(out).encode("utf-8")


R214_HELP = Reply(
    214,
    "2.0.0",
    (
        "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
        "See RFC 5321",
    ),
)
R220_TLS_READY = Reply(220, "2.0.0", "Ready to start TLS")
R221_BYE = Reply(221, "2.0.0", "Bye")
R235_AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
R250_OK = Reply(250, "2.0.0", "OK")
R250_SENDER_OK = Reply(250, "2.1.0", "Sender OK")
R250_RCPT_OK = Reply(250, "2.1.5", "Recipient OK")
R250_RESET = Reply(250, "2.0.0", "Reset state")
R250_QUEUED = Reply(250, "2.0.0", "OK: queued")
R252_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
R354_DATA = Reply(354, None, "Start mail input; end with <CRLF>.<CRLF>")

R421_SHUTDOWN = Reply(421, "4.3.2", "Service not available, closing transmission channel")
R421_TOO_MANY_CONN = Reply(421, "4.7.0", "Too many connections, try again later")
R421_TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
R421_TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
R451_LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
R451_TEMPFAIL = Reply(451, "4.7.1", "Temporarily rejected, try again later")
R452_TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients")
R454_AUTH_THROTTLED = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
R454_TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")

R500_UNKNOWN = Reply(500, "5.5.1", "Command unrecognized")
R500_LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
R500_BARE_LINE_END = Reply(500, "5.5.2", "Lines must end with <CRLF>")
R500_BAD_UTF8 = Reply(500, "5.5.2", "Invalid UTF-8 in command")
R500_DATA_LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long in message data; message rejected")
R501_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
R501_BAD_ADDRESS = Reply(501, "5.1.3", "Bad address syntax")
R501_BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
R501_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")
R501_AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
R501_NO_PARAMS = Reply(501, "5.5.4", "No parameters allowed")
R502_NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
R503_BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
R503_EHLO_FIRST = Reply(503, "5.5.1", "Send EHLO/HELO first")
R503_NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
R503_NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
R503_NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command")
R503_ALREADY_AUTH = Reply(503, "5.5.1", "Already authenticated")
R503_TLS_ACTIVE = Reply(503, "5.5.1", "TLS already active")
R503_MIXED_DATA = Reply(503, "5.5.1", "DATA and BDAT cannot be mixed")
R504_AUTH_MECH = Reply(504, "5.5.4", "Unrecognized authentication mechanism")
R530_AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
R535_AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
R538_ENCRYPTION_REQUIRED = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
R550_BARE_CR_LF = Reply(550, "5.6.11", "Bare CR or LF in message data; message rejected")
R550_NO_SUCH_USER = Reply(550, "5.1.1", "No such user here")
R550_RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied")
R552_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
R552_QUOTA = Reply(552, "5.2.2", "Mailbox full")
R553_NOT_OWNER = Reply(553, "5.7.1", "Sender address not owned by authenticated user")
R553_NON_ASCII = Reply(553, "5.6.7", "Non-ASCII addresses require SMTPUTF8")
R554_NO_VALID_RCPTS = Reply(554, "5.5.1", "No valid recipients")
R554_REJECTED = Reply(554, "5.7.1", "Message rejected")
R555_PARAM = Reply(555, "5.5.4", "MAIL/RCPT parameter not recognized or not implemented")
