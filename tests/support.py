"""Test support shared by the protocol suites: a full ``ServerContext`` on an
embedded store in a temporary directory, with port-0 listeners and a
self-signed certificate.

    ctx = await make_test_context(tmp_path, smtp={"max_errors": 3})
    await add_test_user(ctx, "alice@example.test", "secret")
    ...
    await close_test_context(ctx)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from mailserver import tls as tlsmod
from mailserver.config import make_test_config
from mailserver.context import ServerContext
from mailserver.store import open_storage
from mailserver.store.interfaces import Account

_CERT_DIR: Path | None = None


def _certificate() -> tuple[Path, Path]:
    """One self-signed certificate per test process (RSA keygen is slow)."""
    global _CERT_DIR
    if _CERT_DIR is None:
        _CERT_DIR = Path(tempfile.mkdtemp(prefix="mailserver-test-tls-"))
        tlsmod.generate_self_signed(
            _CERT_DIR / "cert.pem", _CERT_DIR / "key.pem", "mail.example.test"
        )
    return _CERT_DIR / "cert.pem", _CERT_DIR / "key.pem"


def certificate_path() -> str:
    """The PEM certificate test servers present (for clients that pin it)."""
    return str(_certificate()[0])


#: the storage backends a protocol suite can run on (``backend=`` below)
BACKENDS = ("embedded", "cluster")


async def make_test_context(
    tmp_path: Path, backend: str = "embedded", **overrides: dict[str, Any]
) -> ServerContext:
    """A context on a fresh store: embedded under ``tmp_path``, or cluster
    (Cassandra + S3 on the test servers, as the storage contract suite's
    cluster harness opens it: per-session keyspace, tables truncated for this
    test, its own blob prefix).  Unreachable servers fail the test.

    ``overrides`` are config section tables (see ``make_test_config``)."""
    from twisted.internet import reactor

    if backend not in BACKENDS:
        raise ValueError(f"unknown test backend {backend!r} (known: {', '.join(BACKENDS)})")

    state = Path(tmp_path) / "state"
    state.mkdir(parents=True, exist_ok=True)
    cert, key = _certificate()
    tls_dir = state / "tls"
    tls_dir.mkdir(exist_ok=True)
    shutil.copy(cert, tls_dir / "cert.pem")
    shutil.copy(key, tls_dir / "key.pem")
    overrides.setdefault("tls", {})
    overrides["tls"] = {
        "certificate": str(tls_dir / "cert.pem"),
        "private_key": str(tls_dir / "key.pem"),
        **overrides["tls"],
    }
    storage_over = overrides.pop("storage", None)
    storage_table: dict[str, Any]
    if backend == "cluster":
        from tests.cluster.harness import cluster_harness, cluster_storage_table, require_servers

        require_servers()
        storage_table = cluster_storage_table()
    else:
        storage_table = {"backend": "embedded", "embedded": {"path": str(state / "data")}}
    if storage_over:
        storage_table.update(storage_over)
    config = make_test_config(state, storage=storage_table, **overrides)
    if backend == "cluster":
        storage = await cluster_harness(tmp_path, config.raw_section("storage")).open()
    else:
        storage = await open_storage(config.raw_section("storage"))
    tls = tlsmod.server_options(tls_dir / "cert.pem", tls_dir / "key.pem")
    return ServerContext.build(config, storage, tls=tls, reactor=reactor)


async def add_test_user(ctx: ServerContext, address: str, password: str, **kw: Any) -> Account:
    """Create an account (INBOX and special-use mailboxes included).

    bcrypt with few rounds keeps tests fast; login still goes through the
    configured CryptContext, which verifies any scheme it knows."""
    from passlib.hash import bcrypt

    return await ctx.storage.accounts.create_account(
        address, bcrypt.using(rounds=4).hash(password), **kw
    )


async def close_test_context(ctx: ServerContext) -> None:
    """Close the queue (if opened) and the store."""
    queue = getattr(ctx.delivery, "_queue", None)
    if queue is not None and hasattr(queue, "close"):
        await queue.close()
    await ctx.storage.close()


@pytest.fixture(name="backend")
def backend_fixture(request: pytest.FixtureRequest) -> str:
    """The storage backend of the current test: ``embedded`` unless the test
    is parametrized by ``parametrize_backends`` (import this fixture into a
    suite's conftest)."""
    return getattr(request, "param", "embedded")


def parametrize_backends(metafunc: pytest.Metafunc, tests: Collection[str]) -> None:
    """For ``pytest_generate_tests``: run the tests named ``"<file>::<function>"``
    in ``tests`` on every backend (ids ``[embedded]`` / ``[cluster]``); other
    tests using the ``backend`` fixture stay embedded."""
    name = f"{Path(str(metafunc.definition.path)).name}::{metafunc.function.__name__}"
    if "backend" in metafunc.fixturenames and name in tests:
        metafunc.parametrize("backend", BACKENDS, indirect=True, ids=BACKENDS)
