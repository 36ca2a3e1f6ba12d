"""A synchronous driver for the sans-I/O POP3 core, used by the unit tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailserver.pop3.core import (
    NEED_DATA,
    Authenticate,
    AuthOutcome,
    Close,
    Fetch,
    MaildropEntry,
    POP3Core,
    Send,
    StartTLS,
    Update,
    crlf_size,
)


@dataclass
class FakeBackend:
    """Answers the core's requests from memory."""

    passwords: dict[str, str] = field(default_factory=lambda: {"mrose": "tanstaaf"})
    messages: dict[str, bytes] = field(default_factory=dict)  # uidl -> raw
    outcome: AuthOutcome | None = None  # force an auth outcome
    fetch_error: str | None = None  # "temp" / "perm"
    update_ok: bool = True
    auth_requests: list[Authenticate] = field(default_factory=list)
    fetches: list[Fetch] = field(default_factory=list)
    updates: list[tuple[MaildropEntry, ...]] = field(default_factory=list)
    tls_starts: int = 0
    defer_tls: bool = False  # leave StartTLS unanswered (call finish_tls)
    closed: bool = False

    def entries(self) -> list[MaildropEntry]:
        return [MaildropEntry(crlf_size(raw), uidl, uidl) for uidl, raw in self.messages.items()]


class Driver:
    """Feeds bytes to a core and collects what it sends."""

    def __init__(self, core: POP3Core | None = None, backend: FakeBackend | None = None, **kw):
        self.core = core or POP3Core(hostname="dewey", **kw)
        self.backend = backend or FakeBackend()
        self.greeting = self.pump()

    def pump(self) -> bytes:
        out = bytearray()
        b = self.backend
        while True:
            ev = self.core.next_event()
            if ev is NEED_DATA:
                return bytes(out)
            if isinstance(ev, Send):
                assert not b.closed, "sent after Close"
                out += ev.data
            elif isinstance(ev, Authenticate):
                b.auth_requests.append(ev)
                if b.outcome is not None:
                    self.core.auth_result(b.outcome, b.entries())
                elif b.passwords.get(ev.username) == ev.password:
                    self.core.auth_result(AuthOutcome.OK, b.entries())
                else:
                    self.core.auth_result(AuthOutcome.BAD)
            elif isinstance(ev, Fetch):
                b.fetches.append(ev)
                if b.fetch_error:
                    self.core.fetch_failed(permanent=b.fetch_error == "perm")
                else:
                    self.core.message_data(b.messages[ev.entry.key])
            elif isinstance(ev, StartTLS):
                b.tls_starts += 1
                if b.defer_tls:
                    return bytes(out)
                self.core.tls_started()
            elif isinstance(ev, Update):
                b.updates.append(ev.deleted)
                self.core.update_done(b.update_ok)
            elif isinstance(ev, Close):
                b.closed = True
            else:  # pragma: no cover
                raise AssertionError(ev)

    def finish_tls(self) -> bytes:
        self.core.tls_started()
        return self.pump()

    def feed(self, data: bytes, chunk: int = 0) -> bytes:
        """Feed ``data`` in pieces of ``chunk`` octets (0: at once)."""
        out = bytearray()
        step = chunk or max(len(data), 1)
        for i in range(0, len(data), step):
            self.core.receive_data(data[i : i + step])
            if not self.core.waiting:
                out += self.pump()
        return bytes(out)

    def cmd(self, line: str | bytes, chunk: int = 0) -> bytes:
        if isinstance(line, str):
            line = line.encode()
        return self.feed(line + b"\r\n", chunk)

    def login(self, user: str = "mrose", password: str = "tanstaaf") -> bytes:
        self.cmd(f"USER {user}")
        return self.cmd(f"PASS {password}")
