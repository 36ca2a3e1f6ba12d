"""Accounts: hashing, verification, hash upgrade on login, throttling."""

from __future__ import annotations

import pytest
import pytest_twisted
from passlib.hash import bcrypt, sha256_crypt
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import Clock

from mailserver.accounts import (
    Authenticator,
    AuthenticatorChecker,
    FailureCounter,
    Throttled,
    hash_password,
    make_context,
)
from mailserver.store.interfaces import Account, AccountNotFound


class MemoryAccounts:
    """The part of AccountStore the Authenticator uses."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.lookups = 0
        self.hash_writes: list[tuple[str, str]] = []

    def add(self, address: str, password_hash: str, **kw) -> Account:
        acct = Account(address=address, password_hash=password_hash, **kw)
        self.accounts[address] = acct
        return acct

    async def get_account(self, address: str) -> Account | None:
        self.lookups += 1
        address = address.lower()
        for acct in self.accounts.values():
            if acct.address == address or address in acct.aliases:
                return acct
        return None

    async def set_password_hash(self, address: str, password_hash: str) -> None:
        if address not in self.accounts:
            raise AccountNotFound(address)
        old = self.accounts[address]
        self.accounts[address] = Account(
            address=old.address,
            password_hash=password_hash,
            quota_bytes=old.quota_bytes,
            aliases=old.aliases,
            disabled=old.disabled,
        )
        self.hash_writes.append((address, password_hash))


async def run_inline(fn, *args):
    """Synchronous stand-in for mailserver.threads.run_blocking."""
    return fn(*args)


def make_auth(store, clock=None, **kw) -> Authenticator:
    return Authenticator(store, clock=clock or Clock(), run_blocking=run_inline, **kw)


def test_hash_password_argon2_default_and_verifies():
    h = hash_password("s3cret")
    assert h.startswith("$argon2")
    ctx = make_context()
    assert ctx.verify("s3cret", h)
    assert not ctx.verify("s3cret!", h)
    assert not ctx.needs_update(h)


def test_bcrypt_default_marks_argon2_for_update():
    h = hash_password("pw", scheme="bcrypt")
    assert h.startswith("$2b$")
    assert make_context("bcrypt").verify("pw", h)
    assert make_context("bcrypt").needs_update(hash_password("pw"))
    with pytest.raises(ValueError):
        make_context("md5_crypt")


@pytest_twisted.ensureDeferred
async def test_authenticate_right_and_wrong_password():
    store = MemoryAccounts()
    store.add("alice@example.test", hash_password("right"))
    auth = make_auth(store)
    acct = await auth.authenticate("Alice@Example.TEST ", "right", "192.0.2.1")
    assert acct is not None and acct.address == "alice@example.test"
    assert await auth.authenticate("alice@example.test", "wrong", "192.0.2.1") is None
    assert await auth.authenticate("nobody@example.test", "right", "192.0.2.1") is None
    assert store.hash_writes == []  # argon2 hash is current: no rewrite


@pytest_twisted.ensureDeferred
async def test_disabled_account_cannot_log_in():
    store = MemoryAccounts()
    store.add("bob@example.test", hash_password("pw"), disabled=True)
    assert await make_auth(store).authenticate("bob@example.test", "pw") is None


@pytest_twisted.ensureDeferred
async def test_login_by_alias_returns_the_account():
    store = MemoryAccounts()
    store.add("carol@example.test", hash_password("pw"), aliases=("c@example.test",))
    acct = await make_auth(store).authenticate("c@example.test", "pw")
    assert acct is not None and acct.address == "carol@example.test"


@pytest.mark.parametrize(
    "legacy",
    [
        lambda pw: bcrypt.using(rounds=4).hash(pw),
        lambda pw: sha256_crypt.using(rounds=1000).hash(pw),
    ],
    ids=["bcrypt", "sha256_crypt"],
)
@pytest_twisted.ensureDeferred
async def test_legacy_hash_upgraded_to_argon2_on_login(legacy):
    store = MemoryAccounts()
    store.add("dave@example.test", legacy("old pw"))
    auth = make_auth(store)
    # a failed login does not rewrite anything
    assert await auth.authenticate("dave@example.test", "bad", "192.0.2.9") is None
    assert store.hash_writes == []
    acct = await auth.authenticate("dave@example.test", "old pw", "192.0.2.9")
    assert acct is not None
    [(addr, new_hash)] = store.hash_writes
    assert addr == "dave@example.test" and new_hash.startswith("$argon2")
    # the upgraded hash still accepts the same password, and is not rewritten again
    assert await auth.authenticate("dave@example.test", "old pw", "192.0.2.9") is not None
    assert len(store.hash_writes) == 1


@pytest_twisted.ensureDeferred
async def test_corrupt_stored_hash_fails_login_without_crashing():
    store = MemoryAccounts()
    store.add("eve@example.test", "not-a-hash")
    assert await make_auth(store).authenticate("eve@example.test", "x") is None


@pytest_twisted.ensureDeferred
async def test_throttle_per_account_sliding_window():
    store = MemoryAccounts()
    store.add("frank@example.test", hash_password("pw"))
    clock = Clock()
    auth = make_auth(store, clock, max_failures_per_account=3, failure_window=100)
    for i in range(3):
        clock.advance(10)
        # different IPs: only the account limit applies
        assert await auth.authenticate("frank@example.test", "bad", f"192.0.2.{i}") is None
    lookups = store.lookups
    # now even the right password is refused without looking anything up
    with pytest.raises(Throttled) as exc:
        await auth.authenticate("frank@example.test", "pw", "198.51.100.1")
    assert exc.value.scope == "account"
    # first failure at t=10, window 100 -> free again at t=110; now t=30
    assert exc.value.retry_after == pytest.approx(80)
    assert store.lookups == lookups
    # another account is not affected
    store.add("gina@example.test", hash_password("pw"))
    assert await auth.authenticate("gina@example.test", "pw", "198.51.100.1") is not None
    # the window slides: after the first failure ages out, one attempt is allowed
    clock.advance(80)
    assert await auth.authenticate("frank@example.test", "pw", "198.51.100.1") is not None


@pytest_twisted.ensureDeferred
async def test_throttle_per_ip_across_accounts():
    store = MemoryAccounts()
    store.add("henry@example.test", hash_password("pw"))
    clock = Clock()
    auth = make_auth(
        store, clock, max_failures_per_account=100, max_failures_per_ip=4, failure_window=60
    )
    for i in range(4):
        clock.advance(1)
        assert await auth.authenticate(f"guess{i}@example.test", "x", "203.0.113.7") is None
    with pytest.raises(Throttled) as exc:
        await auth.authenticate("henry@example.test", "pw", "203.0.113.7")
    assert exc.value.scope == "ip"
    assert isinstance(exc.value, UnauthorizedLogin)
    # the same account from another address still works
    assert await auth.authenticate("henry@example.test", "pw", "203.0.113.8") is not None
    clock.advance(60)
    assert await auth.authenticate("henry@example.test", "pw", "203.0.113.7") is not None


@pytest_twisted.ensureDeferred
async def test_success_resets_account_counter_but_not_ip_counter():
    store = MemoryAccounts()
    store.add("ida@example.test", hash_password("pw"))
    clock = Clock()
    auth = make_auth(store, clock, max_failures_per_account=2, max_failures_per_ip=3)
    assert await auth.authenticate("ida@example.test", "bad", "192.0.2.50") is None
    assert await auth.authenticate("ida@example.test", "pw", "192.0.2.50") is not None
    assert await auth.authenticate("ida@example.test", "bad", "192.0.2.50") is None
    # account counter was reset by the success: 1 failure < 2
    assert auth.per_account.count("ida@example.test", clock.seconds()) == 1
    # the ip counter was not: 2 failures, the third hits the limit of 3
    assert await auth.authenticate("ida@example.test", "bad", "192.0.2.50") is None
    with pytest.raises(Throttled):
        await auth.authenticate("ida@example.test", "pw", "192.0.2.50")


def test_failure_counter_is_bounded():
    c = FailureCounter(limit=3, window=10)
    for i in range(1000):
        c.add("k", float(i) / 1000)
    assert c.count("k", 1.0) == 3
    for i in range(100):
        c.add(f"ip{i}", 0.0)
    c.prune(20.0)
    assert len(c) == 0


@pytest_twisted.ensureDeferred
async def test_cred_checker():
    store = MemoryAccounts()
    store.add("jack@example.test", hash_password("pw"))
    clock = Clock()
    auth = make_auth(store, clock, max_failures_per_ip=1)
    checker = AuthenticatorChecker(auth, remote_ip="192.0.2.77")
    assert (
        await checker.requestAvatarId(UsernamePassword(b"jack@example.test", b"pw"))
        == "jack@example.test"
    )
    with pytest.raises(UnauthorizedLogin):
        await checker.requestAvatarId(UsernamePassword(b"jack@example.test", b"nope"))
    with pytest.raises(Throttled):
        await checker.requestAvatarId(UsernamePassword(b"jack@example.test", b"pw"))
    other = AuthenticatorChecker(auth, remote_ip="192.0.2.78")
    with pytest.raises(UnauthorizedLogin):
        await other.requestAvatarId(UsernamePassword(b"\xff", b"pw"))


@pytest_twisted.ensureDeferred
async def test_default_run_blocking_uses_thread_pool():
    """Without an injected runner, verification goes through
    mailserver.threads.run_blocking (off the reactor thread)."""
    import threading

    store = MemoryAccounts()
    store.add("kate@example.test", hash_password("pw"))
    seen = []
    auth = Authenticator(store)
    original = auth.context.verify_and_update

    def spy(*a):
        seen.append(threading.current_thread() is threading.main_thread())
        return original(*a)

    auth.context.verify_and_update = spy
    assert await auth.authenticate("kate@example.test", "pw") is not None
    assert seen == [False]
