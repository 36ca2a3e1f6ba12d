"""The process: one Twisted reactor, one ``MultiService`` holding every
listener, one storage backend, and an orderly start and stop.

Start (``start_server``): open storage, load or generate the TLS
certificate, build the ``ServerContext`` (auth, delivery), ask each protocol
package for its listener services, start them (ports are bound now), then
drop root privileges if ``server.user`` says so.

Stop (``MailService.stopService``, run on SIGTERM/SIGINT as a "before
shutdown" trigger): stop listening, wait until no storage operation is in
flight (at most ``server.shutdown_timeout`` seconds), refuse new ones, close
storage.  Only then does the reactor close the remaining connections, so an
acknowledged write is never cut off half-way by our own shutdown.
"""

from __future__ import annotations

import grp
import importlib
import inspect
import os
import pwd
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mailserver.config import Config
from mailserver.context import ServerContext
from mailserver.store import open_storage
from mailserver.store.interfaces import StoreError
from mailserver.tls import TLSError, ensure_certificate, server_options

__all__ = [
    "GarbageCollector",
    "InFlight",
    "MailService",
    "PrivilegeError",
    "ShuttingDown",
    "StartupError",
    "TrackedStorage",
    "build_service",
    "drop_privileges",
    "run",
    "start_server",
]

log = Logger(namespace="mailserver.service")

#: The protocol packages; each has ``services(ctx) -> list[IService]``.
PROTOCOL_MODULES = ("mailserver.smtp.service", "mailserver.imap.service", "mailserver.pop3.service")


class StartupError(Exception):
    """Startup cannot go on; the message says why (no traceback needed)."""


class PrivilegeError(StartupError):
    pass


class ShuttingDown(StoreError):
    """A storage call arrived after shutdown closed the store."""


# --------------------------------------------------------------------------
# In-flight storage operations


class InFlight:
    """Counts running storage operations; ``wait_idle`` fires when none is."""

    def __init__(self) -> None:
        self.count = 0
        self.closed = False
        self._waiters: list[Deferred[bool]] = []

    async def run(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> Any:
        if self.closed:
            raise ShuttingDown("the server is shutting down")
        self.count += 1
        try:
            return await fn(*args, **kw)
        finally:
            self.count -= 1
            if self.count == 0:
                waiters, self._waiters = self._waiters, []
                for d in waiters:
                    d.callback(True)

    def wait_idle(self, timeout: float, clock: Any) -> Deferred[bool]:
        """Fires True as soon as nothing is in flight, False after
        ``timeout`` seconds otherwise."""
        if self.count == 0:
            return succeed(True)
        d: Deferred[bool] = Deferred()
        self._waiters.append(d)

        def expire() -> None:
            if not d.called:
                self._waiters.remove(d)
                d.callback(False)

        call = clock.callLater(timeout, expire)
        d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        return d


class _TrackedStore:
    """Proxy for one store: every coroutine method runs under ``InFlight``."""

    def __init__(self, inner: Any, inflight: InFlight):
        self._inner = inner
        self._inflight = inflight

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        inflight = self._inflight

        async def tracked(*args: Any, **kw: Any) -> Any:
            return await inflight.run(attr, *args, **kw)

        tracked.__name__ = name
        tracked.__doc__ = attr.__doc__
        return tracked


class TrackedStorage:
    """A ``Storage`` whose stores count their in-flight calls, so shutdown
    can wait for them.  Passes the storage contract unchanged."""

    def __init__(self, inner: Any, inflight: InFlight):
        self.inner = inner
        self.inflight = inflight
        self.accounts = _TrackedStore(inner.accounts, inflight)
        self.mailboxes = _TrackedStore(inner.mailboxes, inflight)
        self.messages = _TrackedStore(inner.messages, inflight)
        self.blobs = _TrackedStore(inner.blobs, inflight)
        self.notifier = inner.notifier

    async def collect_garbage(self, grace_seconds: float = 3600.0) -> int:
        return await self.inflight.run(self.inner.collect_garbage, grace_seconds)

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# --------------------------------------------------------------------------
# The service


class GarbageCollector(Service):
    """Runs ``storage.collect_garbage(grace)`` every ``interval`` seconds;
    a failed run is logged and the next one happens on schedule."""

    name = "gc"

    def __init__(self, storage: Any, interval: float, grace: float, clock: Any):
        self.storage = storage
        self.interval = interval
        self.grace = grace
        self.clock = clock
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self.run_once()))
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def stopService(self) -> Any:
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    async def run_once(self) -> int:
        try:
            removed = await self.storage.collect_garbage(self.grace)
        except ShuttingDown:
            return 0
        except Exception:
            log.failure("garbage collection failed")
            return 0
        if removed:
            log.info("garbage collection removed {n} unreferenced bodies", n=removed)
        return removed


class MailService(MultiService):
    """All listeners plus the shared context; stopping it is the graceful
    shutdown described in the module docstring."""

    def __init__(self, config: Config, ctx: ServerContext, inflight: InFlight, reactor: Any):
        super().__init__()
        self.config = config
        self.ctx = ctx
        self.inflight = inflight
        self.reactor = reactor
        self.protocols: dict[str, list[IService]] = {}
        self._stopping: Deferred[None] | None = None

    def stopService(self) -> Deferred[None]:
        if self._stopping is None:
            self._stopping = Deferred.fromCoroutine(self._stop())
        return self._stopping

    async def _stop(self) -> None:
        timeout = self.config.server.shutdown_timeout
        log.info("shutting down: closing listeners")
        if self.running:
            await MultiService.stopService(self)
        if self.inflight.count:
            log.info(
                "waiting up to {timeout}s for {count} storage operation(s) in flight",
                timeout=timeout,
                count=self.inflight.count,
            )
        idle = await self.inflight.wait_idle(timeout, self.reactor)
        if not idle:
            log.warn(
                "shutdown_timeout reached with {count} storage operation(s) in flight",
                count=self.inflight.count,
            )
        self.inflight.closed = True
        try:
            await self.ctx.delivery.close()
        except Exception:
            log.failure("closing the outbound queue failed")
        try:
            await self.ctx.storage.close()
        except Exception:
            log.failure("closing storage failed")
        log.info("storage closed; stopped")

    def listening(self) -> list[tuple[str, str, int]]:
        """(service name, host, port) of every bound listener (port 0
        resolved), for logs and tests."""
        out = []
        for svc in self:
            port = getattr(svc, "port", None)
            if port is not None and hasattr(port, "getHost"):
                h = port.getHost()
                out.append((svc.name or type(svc).__name__, h.host, h.port))
        return out


def _prepare_tls(config: Config) -> Any:
    t = config.tls
    try:
        if ensure_certificate(t.certificate, t.private_key, config.server.hostname, t.self_signed):
            log.info(
                "generated a self-signed certificate for {host} in {path}",
                host=config.server.hostname,
                path=t.certificate,
            )
        return server_options(t.certificate, t.private_key)
    except TLSError as e:
        raise StartupError(str(e)) from None
    except OSError as e:
        raise StartupError(f"TLS: {e}") from None


async def open_configured_storage(config: Config) -> Any:
    """Open the configured backend, with clear errors."""
    if config.storage.backend == "embedded":
        Path(config.storage.embedded.path).mkdir(parents=True, exist_ok=True)
    try:
        return await open_storage(config.raw_section("storage"))
    except (ValueError, OSError) as e:
        raise StartupError(f"storage ({config.storage.backend}): {e}") from None


async def build_service(config: Config, reactor: Any = None, storage: Any = None) -> MailService:
    """Open storage (unless given), TLS, auth and delivery; build the
    ``MailService`` with every protocol's listeners (not started yet)."""
    if reactor is None:
        from twisted.internet import reactor
    Path(config.server.state_dir).mkdir(parents=True, exist_ok=True)
    tls = _prepare_tls(config)
    if storage is None:
        storage = await open_configured_storage(config)
    inflight = InFlight()
    tracked = TrackedStorage(storage, inflight)
    ctx = ServerContext.build(config, tracked, tls=tls, reactor=reactor)
    svc = MailService(config, ctx, inflight, reactor)
    if config.storage.gc_interval > 0:
        GarbageCollector(
            tracked, config.storage.gc_interval, config.storage.gc_grace, reactor
        ).setServiceParent(svc)
    for modname in PROTOCOL_MODULES:
        module = importlib.import_module(modname)
        children = list(module.services(ctx))
        svc.protocols[modname] = children
        for child in children:
            child.setServiceParent(svc)
    return svc


def drop_privileges(user: str, group: str, state_dir: str | os.PathLike[str]) -> bool:
    """Become ``user`` (and ``group``, default: the user's group) when running
    as root; ``state_dir`` is handed to that user first so storage stays
    writable.  Returns True if privileges were dropped."""
    if not user:
        return False
    if os.getuid() != 0:
        log.warn("server.user = {user!r} ignored: not running as root", user=user)
        return False
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"server.user: no such user {user!r}") from None
    try:
        gid = grp.getgrnam(group).gr_gid if group else pw.pw_gid
    except KeyError:
        raise PrivilegeError(f"server.group: no such group {group!r}") from None
    _hand_over(Path(state_dir), pw.pw_uid, gid)
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(pw.pw_uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - would be a kernel/config bug
        raise PrivilegeError("could not drop root privileges")
    log.info("dropped privileges to {user}:{gid}", user=user, gid=gid)
    return True


def _hand_over(state_dir: Path, uid: int, gid: int) -> None:
    """chown what root created in ``state_dir`` to uid:gid.  The top two
    levels (store files, TLS files, the queue) are always checked; deeper
    directories already owned by ``uid`` were created after an earlier drop,
    so their contents are too and they are not walked (a big blob tree
    would make every start slow)."""
    base_depth = len(state_dir.parts)
    for root, dirs, files in os.walk(state_dir):
        depth = len(Path(root).parts) - base_depth
        for name in [root, *(os.path.join(root, n) for n in files)]:
            if os.lstat(name).st_uid != uid:
                os.lchown(name, uid, gid)
        keep = []
        for d in dirs:
            path = os.path.join(root, d)
            if depth >= 1 and os.lstat(path).st_uid == uid:
                continue
            keep.append(d)
        dirs[:] = keep


async def start_server(config: Config, reactor: Any = None, storage: Any = None) -> MailService:
    """Build and start the service (listeners bound), then drop privileges."""
    svc = await build_service(config, reactor, storage)
    try:
        svc.startService()
    except CannotListenError as e:
        await svc.stopService()
        raise StartupError(
            f"cannot listen on {e.interface or '*'}:{e.port}: {e.socketError}"
        ) from None
    except BaseException:
        await svc.stopService()
        raise
    try:
        drop_privileges(config.server.user, config.server.group, config.server.state_dir)
    except (PrivilegeError, OSError) as e:
        await svc.stopService()
        raise StartupError(str(e)) from None
    return svc


def run(
    config: Config,
    on_started: Callable[[MailService], Awaitable[None]] | None = None,
    reactor: Any = None,
    storage: Any = None,
) -> int:
    """Run the server on the reactor until SIGTERM/SIGINT; returns the exit
    status (0 clean, 1 startup failure)."""
    if reactor is None:
        from twisted.internet import reactor
    status = {"code": 0}
    holder: dict[str, MailService] = {}
    starting: list[Deferred[None]] = []

    async def stop() -> None:
        if starting:
            await DeferredList(starting, consumeErrors=True)
        if "svc" in holder:
            await holder["svc"].stopService()

    async def startup() -> None:
        try:
            svc = await start_server(config, reactor, storage)
            holder["svc"] = svc
            log.info(
                "mailserver started; listening: {listeners}",
                listeners=", ".join(
                    f"{name.split(':')[0]} {host}:{port}" for name, host, port in svc.listening()
                )
                or "nothing",
            )
            if on_started is not None:
                await on_started(svc)
        except StartupError as e:
            log.critical("cannot start: {error}", error=str(e))
            status["code"] = 1
            reactor.stop()
        except Exception:
            log.failure("cannot start")
            status["code"] = 1
            reactor.stop()

    def begin() -> None:
        d = Deferred.fromCoroutine(startup())
        starting.append(d)

    reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(stop()))
    reactor.callWhenRunning(begin)
    reactor.run()
    return status["code"]
