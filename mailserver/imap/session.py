"""Per-connection IMAP state machine (RFC 3501 section 3).

``ImapSession`` takes client bytes (``data_received``), parses them with the
sans-I/O ``CommandReceiver``, and runs one command at a time through the
explicit registry ``REGISTRY = {name: CommandSpec(handler, states, ...)}``.
It talks to the network only through a small ``SessionIO`` object (the
Twisted protocol in production, a fake in unit tests), so it holds no socket
and no timer itself.

States and transitions (all of them are here or in the handlers' explicit
``session.set_state`` calls)::

    NOT_AUTHENTICATED --LOGIN/AUTHENTICATE--> AUTHENTICATED
    AUTHENTICATED --SELECT/EXAMINE ok--> SELECTED
    SELECTED --CLOSE/UNSELECT/failed SELECT--> AUTHENTICATED
    any --LOGOUT/autologout/fatal error--> LOGOUT

Unsolicited updates: while a mailbox is selected the session subscribes to
``storage.notifier``; a notification marks the view dirty, and before the
tagged completion of the next command (or at once while IDLE) the session
reads ``messages.changes_since`` and sends what RFC 3501 5.2 / 7.4.1 allow:
EXISTS, RECENT and FETCH FLAGS at any time, EXPUNGE only when the command
in progress is not FETCH, STORE or SEARCH (nor their UID forms).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.python import failure, log

from mailserver.imap import (
    commands_any,
    commands_auth,
    commands_mailbox,
    commands_message,
    encoder,
)
from mailserver.imap.commands_base import (
    Answered,
    Bad,
    CommandSpec,
    Done,
    No,
    Response,
    State,
)
from mailserver.imap.grammar import GrammarError
from mailserver.imap.receiver import (
    NEED_DATA,
    CommandReceiver,
    Continuation,
    Line,
    ProtocolError,
    Request,
)
from mailserver.imap.selected import SelectedMailbox
from mailserver.store.interfaces import MailboxNotFound

__all__ = ["REGISTRY", "ImapSession", "SessionIO", "State"]

#: The command registry: every command the server knows, the states it is
#: valid in, and whether EXPUNGE may be sent while completing it.
REGISTRY: dict[str, CommandSpec] = {
    **commands_any.COMMANDS,
    **commands_auth.COMMANDS,
    **commands_mailbox.COMMANDS,
    **commands_message.COMMANDS,
}


class SessionIO(Protocol):
    """What the session needs from its connection."""

    remote_ip: str

    @property
    def tls_available(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def start_tls(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def reset_timer(self) -> None: ...


#: literal size limit before authentication (LOGIN/AUTHENTICATE arguments)
PREAUTH_MAX_LITERAL = 64 * 1024


class ConnectionGone(Exception):
    """The connection closed while a handler waited for client input."""


class ImapSession:
    """One IMAP connection's protocol state.  See the module docstring."""

    def __init__(self, ctx: Any, io: SessionIO, secure: bool = False) -> None:
        self.ctx = ctx
        self.io = io
        self.secure = secure
        self.state = State.NOT_AUTHENTICATED
        self.account: str | None = None
        self.selected: SelectedMailbox | None = None
        self.enabled: set[str] = set()
        self.current: Request | None = None
        self.remote_ip = getattr(io, "remote_ip", "") or ""
        limits = ctx.config.limits
        self.max_message_size = int(limits.max_message_size)
        self.receiver = self._new_receiver()
        self._busy = False
        self._pumping = False
        self._paused = False
        self._line_waiter: defer.Deferred[bytes] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._dirty = False
        self._idle_listener: Callable[[], None] | None = None
        self._refreshing: defer.Deferred[None] | None = None
        self._closed = False
        #: fired when the session has nothing to do (tests await it)
        self._idle_waiters: list[defer.Deferred[None]] = []

    def _new_receiver(self) -> CommandReceiver:
        limits = self.ctx.config.limits
        receiver = CommandReceiver(
            max_line=int(limits.max_line_length),
            max_literal=int(limits.max_message_size),
        )
        if self.state is State.NOT_AUTHENTICATED:
            # Before login nothing needs big literals (APPEND is not
            # allowed): an anonymous client cannot make us buffer 35 MB.
            receiver.max_literal = min(receiver.max_literal, PREAUTH_MAX_LITERAL)
        return receiver

    # -- connection events (called by the protocol) ---------------------

    def start(self) -> None:
        """Send the greeting."""
        caps = " ".join(self.capabilities())
        self.send(
            b"* OK [CAPABILITY %s] %s IMAP4rev1 server ready\r\n"
            % (caps.encode(), self.ctx.config.server.hostname.encode())
        )

    def data_received(self, data: bytes) -> None:
        if self._closed or self.state is State.LOGOUT:
            return
        self.receiver.receive_data(data)
        self._pump()

    def connection_lost(self) -> None:
        """The connection is gone: stop everything this session started."""
        self._closed = True
        self.state = State.LOGOUT
        self._unwatch()
        waiter, self._line_waiter = self._line_waiter, None
        if waiter is not None and not waiter.called:
            waiter.errback(failure.Failure(ConnectionGone()))
        self._fire_idle()

    def autologout(self) -> None:
        """The autologout timer fired (RFC 3501 5.4)."""
        if self._closed:
            return
        self.send(b"* BYE Autologout; idle for too long\r\n")
        self._shutdown()

    # -- output ----------------------------------------------------------

    def send(self, data: bytes) -> None:
        if not self._closed:
            self.io.write(data)

    async def drain(self) -> None:
        """Wait while the connection's send buffer is full (flow control for
        large responses)."""
        drain = getattr(self.io, "drain", None)
        d = drain() if drain is not None else None
        if d is not None:
            await d

    def untagged(self, text: str | bytes) -> None:
        if isinstance(text, str):
            text = text.encode("utf-8")
        self.send(b"* " + text + b"\r\n")

    def tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        """``tag status [code] text``; CR/LF in the text cannot break the line."""
        self.send(encoder.tagged(tag, status, text, code))

    # -- capabilities ----------------------------------------------------

    @property
    def plaintext_auth_allowed(self) -> bool:
        return self.secure or bool(self.ctx.config.accounts.allow_plaintext_auth)

    def capabilities(self) -> list[str]:
        """CAPABILITY for the current state (RFC 3501 6.1.1, 6.2.3, 7.2.1)."""
        caps = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE"]
        if self.state is State.NOT_AUTHENTICATED:
            if not self.secure and self.io.tls_available:
                caps.append("STARTTLS")
            if self.plaintext_auth_allowed:
                caps.append("AUTH=PLAIN")
            else:
                caps.append("LOGINDISABLED")
        else:
            caps += ["UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE"]
        return caps

    # -- the command loop --------------------------------------------------

    def _pump(self) -> None:
        """Turn buffered bytes into work while no command runs (or while a
        running handler waits for a continuation line)."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self._closed and self.state is not State.LOGOUT:
                if self._busy and self._line_waiter is None:
                    break
                ev = self.receiver.next_event()
                if ev is NEED_DATA:
                    break
                self._handle_event(ev)
        finally:
            self._pumping = False
        self._flow_control()
        if not self._busy:
            self._fire_idle()

    def _flow_control(self) -> None:
        if self._closed:
            return
        over = self.receiver.buffered > self.receiver.max_buffer
        if over and not self._paused:
            self._paused = True
            self.io.pause()
        elif not over and self._paused:
            self._paused = False
            self.io.resume()

    def _handle_event(self, ev: Any) -> None:
        if isinstance(ev, Line):
            waiter, self._line_waiter = self._line_waiter, None
            if waiter is not None:
                waiter.callback(ev.data)
            return
        if isinstance(ev, Continuation):
            self.io.reset_timer()
            self.send(b"+ Ready for literal data\r\n")
            return
        if isinstance(ev, ProtocolError):
            self._protocol_error(ev)
            return
        if isinstance(ev, Request):
            self._start_command(ev)

    def _protocol_error(self, err: ProtocolError) -> None:
        if err.fatal:
            self.send(f"* BYE {err.text}\r\n".encode())
            self._shutdown()
            return
        if err.tag is None:
            self.send(f"* BAD {err.text}\r\n".encode())
            return
        if (
            err.code == "TOOBIG"
            and err.name == "APPEND"
            and self.state is not State.NOT_AUTHENTICATED
        ):
            self.tagged(err.tag, "NO", err.text, "TOOBIG")
        elif err.code:
            self.tagged(err.tag, "BAD", err.text, err.code)
        else:
            self.tagged(err.tag, "BAD", err.text, "CLIENTBUG")

    def _start_command(self, req: Request) -> None:
        self.io.reset_timer()
        spec = REGISTRY.get(req.name)
        if spec is None:
            self.tagged(req.tag, "BAD", f"Unknown command {req.name[:40]}", "CLIENTBUG")
            return
        if self.state not in spec.states:
            self.tagged(req.tag, "BAD", f"{req.name} not allowed {self._state_text()}", "CLIENTBUG")
            return
        self._busy = True
        self.current = req
        d = defer.Deferred.fromCoroutine(self._run(spec, req))
        d.addErrback(self._internal_error, req)
        d.addBoth(self._command_finished)

    def _state_text(self) -> str:
        return {
            State.NOT_AUTHENTICATED: "before authentication",
            State.AUTHENTICATED: "without a selected mailbox",
            State.SELECTED: "with a selected mailbox",
            State.LOGOUT: "after logout",
        }[self.state]

    async def _run(self, spec: CommandSpec, req: Request) -> None:
        try:
            done = await spec.handler(self, req)
            if done is None:
                done = Done(f"{req.name} completed")
        except Response as r:
            done = Done(r.text, r.code, r.status)
        except GrammarError as e:
            code = e.code
            if code and code.startswith("BADCHARSET"):
                done = Done(str(e), code, "NO")
            else:
                done = Done(str(e) or "Syntax error", code or "CLIENTBUG", "BAD")
        except MailboxNotFound:
            # deleted by another session while this command ran
            done = Done("Mailbox does not exist", "NONEXISTENT", "NO")
            self.mark_dirty()
        except ConnectionGone:
            return
        if self._closed:
            return
        if self.selected is not None and self.state is State.SELECTED:
            await self.sync_selected(
                allow_expunge=spec.expunge_ok,
                poll=spec.poll,
                uid_mode=req.name.startswith("UID "),
            )
        if not isinstance(done, Answered):
            self.tagged(req.tag, done.status, done.text, done.code)
        if self.state is State.LOGOUT:
            self._shutdown()

    def _internal_error(self, f: failure.Failure, req: Request) -> None:
        log.err(f, f"imap: {req.name} failed")
        if not self._closed:
            self.tagged(req.tag, "NO", "Internal server error", "SERVERBUG")

    def _command_finished(self, _: Any) -> None:
        self._busy = False
        self.current = None
        if not self._closed:
            self._pump()
        else:
            self._fire_idle()

    def _shutdown(self) -> None:
        """Enter LOGOUT and close the connection after the output drains."""
        self.state = State.LOGOUT
        self._unwatch()
        if not self._closed:
            self._closed = True
            self.io.close()
        self._fire_idle()

    # -- helpers for handlers ------------------------------------------

    def set_state(self, state: State) -> None:
        self.state = state

    def read_line(self) -> defer.Deferred[bytes]:
        """The next raw client line (AUTHENTICATE response, IDLE DONE)."""
        if self._closed:
            return defer.fail(ConnectionGone())
        d: defer.Deferred[bytes] = defer.Deferred()
        self._line_waiter = d
        self.receiver.expect_line()
        # A line may already be buffered (inside the pump loop this returns
        # at once and the loop goes on reading the line).
        self._pump()
        return d

    def _reactor(self) -> Any:
        reactor = getattr(self.ctx, "reactor", None)
        if reactor is None:
            from twisted.internet import reactor as default

            reactor = default
        return reactor

    def start_tls(self) -> None:
        """Drop pipelined plaintext and switch the connection to TLS."""
        self.receiver = self._new_receiver()
        self.io.start_tls()
        self.secure = True

    def logged_in(self, address: str) -> None:
        self.account = address
        self.state = State.AUTHENTICATED
        self.receiver.max_literal = self.max_message_size

    def logout(self) -> None:
        self.state = State.LOGOUT

    # -- selected mailbox ------------------------------------------------

    def select(self, view: SelectedMailbox) -> None:
        """Make ``view`` the selected mailbox and follow its changes."""
        self.deselect()
        self.selected = view
        self.state = State.SELECTED
        self._dirty = False
        self._unsubscribe = self.ctx.storage.notifier.subscribe(view.mailbox_id, self._on_change)

    def deselect(self) -> None:
        self._unwatch()
        self.selected = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    def _unwatch(self) -> None:
        unsub, self._unsubscribe = self._unsubscribe, None
        if unsub is not None:
            unsub()
        self._idle_listener = None

    def mark_dirty(self) -> None:
        """Ask the store for changes before the next tagged completion."""
        self._dirty = True

    def _on_change(self, mailbox_id: str) -> None:
        self._dirty = True
        if self._idle_listener is not None:
            self._idle_listener()

    def set_idle_listener(self, cb: Callable[[], None] | None) -> None:
        """While IDLE: called on every change notification."""
        self._idle_listener = cb

    async def sync_selected(
        self, allow_expunge: bool, poll: bool = False, uid_mode: bool = False
    ) -> None:
        """Read what changed in the selected mailbox (if notified, or always
        with ``poll``) and send the untagged responses allowed now."""
        view = self.selected
        if view is None:
            return
        if self._dirty or poll:
            await self.refresh_view()
        if self.selected is not view or self._closed:
            return
        for line in view.flush(allow_expunge):
            self.send(line)

    async def refresh_view(self) -> None:
        """Merge the store's changes into the selected view (nothing sent)."""
        view = self.selected
        while self._refreshing is not None:
            await self._refreshing
        if view is None or self.selected is not view:
            return
        self._dirty = False
        d: defer.Deferred[None] = defer.Deferred()
        self._refreshing = d
        try:
            await self._refresh(view)
        finally:
            self._refreshing = None
            d.callback(None)

    async def _refresh(self, view: SelectedMailbox) -> None:
        messages = self.ctx.storage.messages
        try:
            changes = await messages.changes_since(view.mailbox_id, view.modseq)
        except MailboxNotFound:
            self.send(b"* BYE [UNAVAILABLE] The selected mailbox was deleted\r\n")
            self._shutdown()
            return
        new = view.apply(changes)
        if new and not view.read_only:
            try:
                floor = await self.ctx.storage.mailboxes.claim_recent(view.mailbox_id)
            except MailboxNotFound:
                floor = None
            if floor is not None:
                view.add_recent(new, floor)

    # -- tests -----------------------------------------------------------

    def wait_idle(self) -> defer.Deferred[None]:
        """Fires when no command is running and all buffered input was used."""
        if not self._busy or self._closed:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    def _fire_idle(self) -> None:
        if self._busy and not self._closed:
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)


__all__ += ["Bad", "No", "Done"]
