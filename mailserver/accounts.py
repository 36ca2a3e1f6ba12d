"""Password hashing, login checks and failed-login throttling.

One ``Authenticator`` per process is shared by SMTP AUTH, IMAP LOGIN /
AUTHENTICATE and POP3 USER/PASS via ``ServerContext.auth``:

- hashes are passlib (libpass) ``CryptContext`` hashes: argon2 by default or
  bcrypt; older schemes (sha512_crypt, sha256_crypt, a non-default argon2 /
  bcrypt) still verify and are rewritten with the default at the next
  successful login;
- verification runs in the shared thread pool (argon2 costs tens of ms of
  CPU and must not stall the reactor);
- failures are counted per account and per client IP in a sliding window;
  while either is over its limit ``authenticate`` raises ``Throttled``
  *without* checking the password, so guessing gets no answer at all.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from passlib.context import CryptContext
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.store.interfaces import Account, AccountNotFound, AccountStore

__all__ = [
    "Authenticator",
    "AuthenticatorChecker",
    "FailureCounter",
    "Throttled",
    "hash_password",
    "make_context",
]

log = Logger()

#: Schemes that verify; the first two can be the default, the rest exist to
#: import accounts from other servers and are always upgraded.
SCHEMES = ["argon2", "bcrypt", "sha512_crypt", "sha256_crypt"]


ARGON2_MEMORY_KIB = 19456
ARGON2_TIME_COST = 2
BCRYPT_ROUNDS = 12


def make_context(default: str = "argon2") -> CryptContext:
    """A CryptContext hashing with ``default`` and marking every other
    scheme (and outdated cost settings) as needing an update."""
    if default not in ("argon2", "bcrypt"):
        raise ValueError(f"unsupported password scheme {default!r}")
    return CryptContext(
        schemes=SCHEMES,
        default=default,
        deprecated="auto",
        # OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane (~20 ms), so a
        # login costs one thread a short moment rather than 64 MiB for 0.2 s
        argon2__memory_cost=ARGON2_MEMORY_KIB,
        argon2__time_cost=ARGON2_TIME_COST,
        argon2__parallelism=1,
        bcrypt__rounds=BCRYPT_ROUNDS,
    )


_contexts: dict[str, CryptContext] = {}


def _context(scheme: str) -> CryptContext:
    ctx = _contexts.get(scheme)
    if ctx is None:
        ctx = _contexts[scheme] = make_context(scheme)
    return ctx


def hash_password(password: str, scheme: str = "argon2") -> str:
    """Hash a password with ``scheme`` (blocking: call from a thread, or from
    the CLI)."""
    return _context(scheme).hash(password)


class Throttled(UnauthorizedLogin):
    """Too many failed logins for this account or client address.

    ``retry_after``: seconds until an attempt will be considered again;
    ``scope``: ``"account"`` or ``"ip"``.  Subclasses twisted.cred's
    UnauthorizedLogin so cred-based code treats it as a failed login."""

    def __init__(self, scope: str, retry_after: float):
        super().__init__(f"too many failed logins ({scope}); retry in {retry_after:.0f}s")
        self.scope = scope
        self.retry_after = retry_after


class Clock(Protocol):
    def seconds(self) -> float: ...


class FailureCounter:
    """Failed attempts per key in a sliding window of ``window`` seconds.

    Each key keeps at most ``limit`` timestamps (older ones cannot matter),
    and keys whose newest failure left the window are dropped on ``prune``,
    so memory is bounded by the number of keys active in one window.
    """

    def __init__(self, limit: int, window: float):
        self.limit = limit
        self.window = window
        self._times: dict[str, collections.deque[float]] = {}

    def add(self, key: str, now: float) -> None:
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = collections.deque(maxlen=self.limit)
        times.append(now)

    def blocked_for(self, key: str, now: float) -> float:
        """Seconds the key stays blocked (0: not blocked)."""
        times = self._times.get(key)
        if not times:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._times[key]
            return 0.0
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.window - now

    def count(self, key: str, now: float) -> int:
        self.blocked_for(key, now)
        return len(self._times.get(key, ()))

    def clear(self, key: str) -> None:
        self._times.pop(key, None)

    def prune(self, now: float) -> None:
        cutoff = now - self.window
        for key in [k for k, t in self._times.items() if not t or t[-1] <= cutoff]:
            del self._times[key]

    def __len__(self) -> int:
        return len(self._times)


def _default_run_blocking() -> Callable[..., Awaitable[Any]]:
    from mailserver.threads import run_blocking

    return run_blocking


class Authenticator:
    """Checks logins against the account store; see the module docstring.

    ``run_blocking(fn, *args)`` runs hashing off the reactor (tests pass a
    synchronous one); ``clock.seconds()`` is the time source (tests pass a
    ``twisted.internet.task.Clock``).
    """

    #: prune the counters every this many recorded failures
    PRUNE_EVERY = 1000

    def __init__(
        self,
        accounts: AccountStore,
        *,
        password_scheme: str = "argon2",
        max_failures_per_account: int = 10,
        max_failures_per_ip: int = 30,
        failure_window: float = 300,
        clock: Clock | None = None,
        run_blocking: Callable[..., Awaitable[Any]] | None = None,
    ):
        self.accounts = accounts
        self.context = make_context(password_scheme)
        self.per_account = FailureCounter(max_failures_per_account, failure_window)
        self.per_ip = FailureCounter(max_failures_per_ip, failure_window)
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self.clock = clock
        self._run_blocking = run_blocking or _default_run_blocking()
        self._failures = 0
        # verified when the account does not exist, so a missing account
        # costs the same time as a wrong password
        self._dummy_hash: str | None = None

    @classmethod
    def from_config(cls, accounts: AccountStore, config: Any, **kw: Any) -> Authenticator:
        """Build from the ``[accounts]`` section of a ``Config``."""
        a = config.accounts
        return cls(
            accounts,
            password_scheme=a.password_scheme,
            max_failures_per_account=a.max_failures_per_account,
            max_failures_per_ip=a.max_failures_per_ip,
            failure_window=a.failure_window,
            **kw,
        )

    async def hash(self, password: str) -> str:
        """Hash with the configured scheme, off the reactor."""
        return await self._run_blocking(self.context.hash, password)

    def check_throttle(self, username: str, remote_ip: str | None) -> None:
        """Raise Throttled if the account or the address is over its limit."""
        now = self.clock.seconds()
        wait = self.per_account.blocked_for(_canon(username), now)
        if wait > 0:
            raise Throttled("account", wait)
        if remote_ip:
            wait = self.per_ip.blocked_for(remote_ip, now)
            if wait > 0:
                raise Throttled("ip", wait)

    async def authenticate(
        self, username: str, password: str, remote_ip: str | None = None
    ) -> Account | None:
        """The account if ``password`` is right, None if not (also for an
        unknown or disabled account).  Raises Throttled while over a limit."""
        name = _canon(username)
        self.check_throttle(name, remote_ip)
        account = await self.accounts.get_account(name) if name else None
        if account is not None and account.address != name:
            # logged in by alias: throttle the real account too
            self.check_throttle(account.address, None)
        if account is None or account.disabled:
            await self._run_blocking(self._verify_dummy, password)
            self._record_failure(name, account, remote_ip)
            return None
        try:
            ok, new_hash = await self._run_blocking(
                self.context.verify_and_update, password, account.password_hash
            )
        except (ValueError, TypeError) as e:
            # unknown or malformed stored hash: the login fails, loudly
            log.error(
                "cannot verify the password hash of {account}: {error}",
                account=account.address,
                error=e,
            )
            ok, new_hash = False, None
        if not ok:
            self._record_failure(name, account, remote_ip)
            return None
        self.per_account.clear(account.address)
        if name != account.address:
            self.per_account.clear(name)
        if new_hash is not None:
            try:
                await self.accounts.set_password_hash(account.address, new_hash)
                log.info(
                    "password hash of {account} upgraded to {scheme}",
                    account=account.address,
                    scheme=self.context.default_scheme(),
                )
            except AccountNotFound:
                pass
            except Exception:
                log.failure("could not store the upgraded hash of {account}", account=name)
        log.info(
            "login {account} from {remote_ip}", account=account.address, remote_ip=remote_ip or "-"
        )
        return account

    def _verify_dummy(self, password: str) -> None:
        if self._dummy_hash is None:
            self._dummy_hash = self.context.hash("dummy password for timing")
        self.context.verify(password, self._dummy_hash)

    def _record_failure(self, name: str, account: Account | None, remote_ip: str | None) -> None:
        now = self.clock.seconds()
        keys = {name}
        if account is not None:
            keys.add(account.address)
        for key in keys:
            if key:
                self.per_account.add(key, now)
        if remote_ip:
            self.per_ip.add(remote_ip, now)
        log.info(
            "failed login for {username} from {remote_ip}",
            username=name,
            remote_ip=remote_ip or "-",
        )
        self._failures += 1
        if self._failures % self.PRUNE_EVERY == 0:
            self.per_account.prune(now)
            self.per_ip.prune(now)


def _canon(username: str) -> str:
    return username.strip().lower()


@implementer(ICredentialsChecker)
class AuthenticatorChecker:
    """twisted.cred checker over an ``Authenticator``: the avatar id is the
    account's address (``str``).  Failures errback with UnauthorizedLogin
    (``Throttled`` while throttled).  ``remote_ip`` is the client of the
    connection the checker belongs to (one checker per connection, or None).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, authenticator: Authenticator, remote_ip: str | None = None):
        self.authenticator = authenticator
        self.remote_ip = remote_ip

    def requestAvatarId(self, credentials: Any) -> Deferred[str]:
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: Any) -> str:
        username, password = credentials.username, credentials.password
        try:
            if isinstance(username, bytes):
                username = username.decode("utf-8")
            if isinstance(password, bytes):
                password = password.decode("utf-8")
        except UnicodeDecodeError:
            raise UnauthorizedLogin("credentials are not UTF-8") from None
        account = await self.authenticator.authenticate(username, password, self.remote_ip)
        if account is None:
            raise UnauthorizedLogin("bad username or password")
        return account.address
