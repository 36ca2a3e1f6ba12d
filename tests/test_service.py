"""The process layer: service start/stop, in-flight writes on shutdown,
protocol discovery, privilege drop, TLS options and log formats."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import pytest_twisted
from OpenSSL import SSL
from twisted.application.service import Service
from twisted.internet import defer, protocol, reactor
from twisted.internet import ssl as tssl
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import Logger, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailserver import service as service_mod
from mailserver.config import make_test_config
from mailserver.logs import make_observer
from mailserver.service import (
    InFlight,
    ShuttingDown,
    StartupError,
    build_service,
    drop_privileges,
    start_server,
)
from mailserver.store import open_storage
from mailserver.tls import TLSError, ensure_certificate, server_options

# -- a stand-in protocol package ---------------------------------------------


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class EchoListener(Service):
    """Listens like the real protocol listeners do: in startService."""

    def __init__(self, ctx, addr, tls):
        self.ctx, self.addr, self.tls = ctx, addr, tls
        self.port = None
        self.setName(f"echo{'s' if tls else ''}:{addr}")

    def startService(self):
        super().startService()
        factory = protocol.Factory.forProtocol(Echo)
        if self.tls:
            factory = TLSMemoryBIOFactory(self.ctx.tls, False, factory)
        self.port = reactor.listenTCP(self.addr.port, factory, interface=self.addr.host)

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


@pytest.fixture
def fake_protocols(monkeypatch):
    mod = types.ModuleType("fake_protocol_service")
    mod.services = lambda ctx: [
        EchoListener(ctx, ctx.config.imap.listen[0], False),
        EchoListener(ctx, ctx.config.imap.tls_listen[0], True),
    ]
    monkeypatch.setitem(sys.modules, "fake_protocol_service", mod)
    monkeypatch.setattr(service_mod, "PROTOCOL_MODULES", ("fake_protocol_service",))
    return mod


@pytest.fixture
def no_protocols(monkeypatch):
    monkeypatch.setattr(service_mod, "PROTOCOL_MODULES", ())


@pytest.fixture
def captured_log():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


class Collect(protocol.Protocol):
    def __init__(self):
        self.data = b""
        self.got = defer.Deferred()

    def dataReceived(self, data):
        self.data += data
        if not self.got.called:
            self.got.callback(self.data)


# -- start / stop ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_start_listens_and_stop_closes(tmp_path, fake_protocols):
    config = make_test_config(tmp_path)
    svc = await start_server(config)
    try:
        listening = svc.listening()
        assert len(listening) == 2 and all(port > 0 for _, _, port in listening)
        # the plain listener answers
        port = listening[0][2]
        client = Collect()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        client.transport.write(b"hello")
        assert await client.got == b"hello"
        client.transport.loseConnection()
        # storage is open and usable through the context
        await svc.ctx.storage.accounts.create_account("a@example.test", "h")
        assert (await svc.ctx.storage.accounts.get_account("a@example.test")).address == (
            "a@example.test"
        )
        assert svc.ctx.auth is not None and svc.ctx.tls is not None
    finally:
        await svc.stopService()
    with pytest.raises(ConnectionRefusedError):
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Collect())
    with pytest.raises(ShuttingDown):
        await svc.ctx.storage.accounts.get_account("a@example.test")
    # stopService is idempotent
    await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_implicit_tls_listener_with_generated_certificate(tmp_path, fake_protocols):
    config = make_test_config(tmp_path)
    svc = await start_server(config)
    try:
        port = svc.listening()[1][2]
        cert = tssl.Certificate.loadPEM(Path(config.tls.certificate).read_bytes())
        opts = tssl.optionsForClientTLS(
            "mail.example.test", trustRoot=tssl.trustRootFromCertificates([cert])
        )
        client = Collect()
        await connectProtocol(SSL4ClientEndpoint(reactor, "127.0.0.1", port, opts), client)
        client.transport.write(b"over tls")
        assert await client.got == b"over tls"
        client.transport.loseConnection()
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_stop_waits_for_in_flight_writes(tmp_path, no_protocols):
    config = make_test_config(tmp_path)
    svc = await start_server(config)
    inner = svc.ctx.storage.inner
    real_create = inner.accounts.create_account
    gate: defer.Deferred[None] = defer.Deferred()

    async def slow_create(*args, **kw):
        await gate
        return await real_create(*args, **kw)

    inner.accounts.create_account = slow_create
    write = defer.Deferred.fromCoroutine(
        svc.ctx.storage.accounts.create_account("late@example.test", "hash")
    )
    assert svc.inflight.count == 1
    stopping = svc.stopService()
    # listeners are closed, but storage stays open while the write runs
    assert not stopping.called
    # a new call made during the drain still works (the store is not closed yet)
    assert await svc.ctx.storage.accounts.get_account("nobody@example.test") is None
    gate.callback(None)
    account = await write
    await stopping
    assert account.address == "late@example.test"
    assert svc.inflight.count == 0
    # the write is durable: a fresh open sees it
    storage = await open_storage(config.raw_section("storage"))
    try:
        assert (await storage.accounts.get_account("late@example.test")) is not None
    finally:
        await storage.close()


@pytest_twisted.ensureDeferred
async def test_stop_gives_up_after_shutdown_timeout(tmp_path, no_protocols, captured_log):
    config = make_test_config(tmp_path, server={"shutdown_timeout": 7})
    clock = Clock()
    svc = await build_service(config, reactor=clock)
    svc.startService()
    never: defer.Deferred[None] = defer.Deferred()

    async def hang(*args, **kw):
        await never

    svc.ctx.storage.inner.accounts.set_aliases = hang
    hung = defer.Deferred.fromCoroutine(svc.ctx.storage.accounts.set_aliases("x@example.test", []))
    stopping = svc.stopService()
    clock.advance(6.9)
    assert not stopping.called
    clock.advance(0.2)
    await stopping
    assert any("shutdown_timeout reached" in (e.get("log_format") or "") for e in captured_log)
    never.cancel()
    with pytest.raises(defer.CancelledError):
        await hung


def test_inflight_wait_idle_immediate_and_timeout():
    clock = Clock()
    f = InFlight()
    d = f.wait_idle(5, clock)
    assert d.called and d.result is True
    gate: defer.Deferred[None] = defer.Deferred()

    async def op():
        await gate

    running = defer.Deferred.fromCoroutine(f.run(op))
    late = f.wait_idle(5, clock)
    clock.advance(5)
    assert late.result is False
    soon = f.wait_idle(5, clock)
    gate.callback(None)
    assert running.called and soon.result is True
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_missing_protocol_module_is_a_startup_failure(tmp_path, monkeypatch):
    """A broken installation must not come up with a protocol silently absent."""
    monkeypatch.setattr(service_mod, "PROTOCOL_MODULES", ("mailserver.no_such_protocol.service",))
    with pytest.raises(ImportError, match="no_such_protocol"):
        await build_service(make_test_config(tmp_path))


@pytest_twisted.ensureDeferred
async def test_port_in_use_is_a_clear_startup_error(tmp_path, fake_protocols):
    blocker = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
    try:
        port = blocker.getHost().port
        config = make_test_config(tmp_path, imap={"listen": [f"127.0.0.1:{port}"]})
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            await start_server(config)
    finally:
        await blocker.stopListening()


@pytest_twisted.ensureDeferred
async def test_missing_certificate_without_self_signed(tmp_path, no_protocols):
    config = make_test_config(tmp_path, tls={"self_signed": False})
    with pytest.raises(StartupError, match="TLS file.*missing"):
        await build_service(config)


# -- privilege drop ------------------------------------------------------------


def test_drop_privileges_without_user_is_a_no_op(tmp_path):
    assert drop_privileges("", "", tmp_path) is False


def test_drop_privileges_to_nobody(tmp_path):
    """As root: the process becomes nobody and the state dir is handed over.
    (Run in a child process: a dropped process cannot come back.)"""
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    state = tmp_path / "state"
    (state / "store" / "new" / "deep").mkdir(parents=True)
    (state / "store" / "f").write_text("x")
    (state / "store" / "new" / "deep" / "g").write_text("x")
    (state / "store" / "blobs").mkdir()
    (state / "store" / "blobs" / "old").write_text("x")
    if os.getuid() == 0:
        # a tree handed over at an earlier start is not walked again
        os.chown(state / "store" / "blobs", nobody, nobody)
    code = (
        "import os, sys; from mailserver.service import drop_privileges\n"
        f"r = drop_privileges('nobody', '', {str(state)!r})\n"
        "print(r, os.getuid(), os.geteuid())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    if os.getuid() == 0:
        assert out == ["True", str(nobody), str(nobody)]
        assert (state / "store" / "f").stat().st_uid == nobody
        assert (state / "store" / "new" / "deep" / "g").stat().st_uid == nobody
        assert state.stat().st_uid == nobody
        assert (state / "store" / "blobs" / "old").stat().st_uid == 0
    else:
        assert out[0] == "False"


def test_drop_privileges_unknown_user(tmp_path):
    if os.getuid() != 0:
        assert drop_privileges("no-such-user-xyz", "", tmp_path) is False
        return
    with pytest.raises(StartupError, match="no such user"):
        drop_privileges("no-such-user-xyz", "", tmp_path)


# -- TLS -------------------------------------------------------------------


def test_self_signed_certificate_files(tmp_path):
    cert, key = tmp_path / "tls" / "c.pem", tmp_path / "tls" / "k.pem"
    assert ensure_certificate(cert, key, "mail.example.test", True) is True
    assert key.stat().st_mode & 0o777 == 0o600
    assert ensure_certificate(cert, key, "mail.example.test", True) is False  # kept
    opts = server_options(cert, key)
    assert opts._options & SSL.OP_NO_TLSv1_1 and opts._options & SSL.OP_NO_TLSv1
    # a key that does not match the certificate is refused with both names
    ensure_certificate(tmp_path / "c2.pem", tmp_path / "k2.pem", "x.example.test", True)
    with pytest.raises(TLSError, match="k2.pem"):
        server_options(cert, tmp_path / "k2.pem")


# -- logging -------------------------------------------------------------------


def test_text_log_format_and_level_filter():
    out = io.StringIO()
    log = Logger(namespace="test.ns", observer=make_observer("text", "warn", out))
    log.info("hidden {x}", x=1)
    log.warn("shown {x}", x=2)
    [line] = out.getvalue().splitlines()
    assert line.endswith(" warn [test.ns] shown 2")


def test_json_log_lines():
    out = io.StringIO()
    log = Logger(namespace="test.json", observer=make_observer("json", "debug", out))
    log.info("delivered to {rcpt}", rcpt="a@example.test", size=12)
    try:
        raise ZeroDivisionError("x")
    except ZeroDivisionError:
        log.failure("boom")
    first, second = (json.loads(x) for x in out.getvalue().splitlines())
    assert first["msg"] == "delivered to a@example.test"
    assert first["level"] == "info" and first["namespace"] == "test.json"
    assert first["rcpt"] == "a@example.test" and first["size"] == 12
    assert first["time"].endswith("Z")
    assert second["level"] == "critical" and "ZeroDivisionError" in second["traceback"]


# -- the real protocol packages ----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_all_protocol_listeners_come_up_and_greet(tmp_path):
    """With the real SMTP, IMAP and POP3 packages: seven listeners (three
    SMTP, two IMAP, two POP3) on port 0, each greeting a client, the TLS
    ones after the handshake."""
    config = make_test_config(tmp_path)
    svc = await start_server(config)
    try:
        assert {m: len(s) for m, s in svc.protocols.items()} == {
            "mailserver.smtp.service": 3,
            "mailserver.imap.service": 2,
            "mailserver.pop3.service": 2,
        }
        listening = svc.listening()
        assert len(listening) == 7
        cert = tssl.Certificate.loadPEM(Path(config.tls.certificate).read_bytes())
        tls_opts = tssl.optionsForClientTLS(
            "mail.example.test", trustRoot=tssl.trustRootFromCertificates([cert])
        )
        greetings = []
        for name, host, port in listening:
            tls = name.startswith(("imaps", "pop3s", "smtp-submissions"))
            endpoint = (
                SSL4ClientEndpoint(reactor, host, port, tls_opts)
                if tls
                else TCP4ClientEndpoint(reactor, host, port)
            )
            client = Collect()
            await connectProtocol(endpoint, client)
            greetings.append((name, (await client.got)[:4]))
            client.transport.loseConnection()
        by_kind = {name.split(":")[0]: g for name, g in greetings}
        assert by_kind["smtp-mx"] == b"220 "
        assert by_kind["smtp-submission"] == b"220 "
        assert by_kind["smtp-submissions"] == b"220 "
        assert by_kind["imap"] == by_kind["imaps"] == b"* OK"
        assert by_kind["pop3"] == by_kind["pop3s"] == b"+OK "
    finally:
        await svc.stopService()


def test_twisted_port_chatter_only_at_debug():
    from twisted.python import log as legacy

    for level, expected in (("info", 1), ("debug", 4)):
        out = io.StringIO()
        observer = make_observer("text", level, out)
        Logger(namespace="x", observer=observer).info("Starting factory {factory!r}", factory=1)
        legacy.theLogPublisher.addObserver(
            wrapped := (lambda ev, o=observer: o({**ev, "log_namespace": "log_legacy"}))
        )
        try:
            legacy.msg("SmtpFactory (TLS) starting on 2465")
            legacy.msg("(TCP Port 2465 Closed)")
            legacy.msg("smtp: listening on 127.0.0.1:2465")
        finally:
            legacy.theLogPublisher.removeObserver(wrapped)
        lines = out.getvalue().splitlines()
        assert len(lines) == expected, lines
        assert lines[-1].endswith("smtp: listening on 127.0.0.1:2465")


@pytest_twisted.ensureDeferred
async def test_periodic_garbage_collection(tmp_path, no_protocols, captured_log):
    config = make_test_config(tmp_path, storage={"gc_interval": 600, "gc_grace": 120})
    clock = Clock()
    svc = await build_service(config, reactor=clock)
    calls = []
    results = [3, RuntimeError("disk on fire"), 0]

    async def fake_gc(grace):
        calls.append((clock.seconds(), grace))
        r = results.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    svc.ctx.storage.inner.collect_garbage = fake_gc
    svc.startService()
    try:
        assert calls == []  # not at startup
        clock.advance(600)
        clock.advance(600)  # this run fails: logged, the loop goes on
        clock.advance(600)
        assert calls == [(600, 120), (1200, 120), (1800, 120)]
        texts = [e.get("log_format", "") for e in captured_log]
        assert "garbage collection removed {n} unreferenced bodies" in texts
        assert "garbage collection failed" in texts
    finally:
        await svc.stopService()
    clock.advance(600)
    assert len(calls) == 3


@pytest_twisted.ensureDeferred
async def test_gc_interval_zero_disables(tmp_path, no_protocols):
    svc = await build_service(make_test_config(tmp_path, storage={"gc_interval": 0}))
    try:
        assert list(svc) == []
    finally:
        await svc.stopService()
