"""Unit tests of the cluster backend's pure parts (no servers needed)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from mailserver.store.cassandra.schema import (
    MIGRATIONS,
    _migration_text,
    keyspace_cql,
    statements,
)
from mailserver.store.cassandra.store import STATEMENTS, _KeyedLocks
from tests.cluster.harness import TABLES


def test_keyspace_uses_network_topology_and_validates():
    cql = keyspace_cql("mail", {"dc2": 2, "dc1": 3})
    assert "'class': 'NetworkTopologyStrategy'" in cql
    assert "'dc1': 3, 'dc2': 2" in cql
    for bad in ("1mail", "mail;drop", ""):
        with pytest.raises(ValueError):
            keyspace_cql(bad, {"dc1": 3})
    with pytest.raises(ValueError):
        keyspace_cql("mail", {})
    with pytest.raises(ValueError):
        keyspace_cql("mail", {"dc1'": 3})


def test_schema_file_splits_into_create_statements_for_every_table():
    stmts = statements(_migration_text(max(MIGRATIONS)), "ks")
    assert all(s.startswith("CREATE TABLE IF NOT EXISTS ks.") for s in stmts)
    created = {s.split("ks.", 1)[1].split()[0] for s in stmts}
    assert created == set(TABLES)
    # every prepared statement names only tables the schema creates
    for cql in STATEMENTS.values():
        tables = {w.split(".", 1)[1] for w in cql.split() if w.startswith("{ks}.")}
        assert tables <= created, cql


@pytest_twisted.ensureDeferred
async def test_keyed_locks_serialise_per_key_and_forget_idle_keys():
    locks = _KeyedLocks()
    order: list[str] = []
    gate: defer.Deferred = defer.Deferred()

    async def first() -> None:
        order.append("a-start")
        await gate
        order.append("a-end")

    async def second() -> None:
        order.append("b")

    async def other() -> None:
        order.append("c")

    d1 = defer.ensureDeferred(locks.run(["m1"], first))
    d2 = defer.ensureDeferred(locks.run(["m1", "m2"], second))
    d3 = defer.ensureDeferred(locks.run(["m3"], other))
    assert order == ["a-start", "c"]  # m3 is independent; b waits for m1
    gate.callback(None)
    await d1
    await d2
    await d3
    assert order == ["a-start", "c", "a-end", "b"]
    assert locks._locks == {}


@pytest_twisted.ensureDeferred
async def test_open_without_cassandra_fails_with_the_reason():
    from mailserver.store import open_storage

    cfg = {
        "backend": "cluster",
        "cassandra": {"contact_points": ["127.0.0.1"], "port": 1, "connect_timeout": 2},
        "s3": {"endpoint": "127.0.0.1:1", "access_key": "a", "secret_key": "b", "bucket": "x"},
    }
    with pytest.raises(ConnectionError, match="Cassandra not reachable at 127.0.0.1 port 1"):
        await open_storage(cfg)


@pytest_twisted.ensureDeferred
async def test_gather_raises_the_first_failure_itself():
    from mailserver.store.cassandra.store import CassandraBackend
    from mailserver.store.interfaces import MailboxNotFound

    backend = CassandraBackend(conn=None, notifier=None)  # type: ignore[arg-type]

    async def ok() -> int:
        return 1

    async def missing() -> int:
        raise MailboxNotFound("x")

    assert await backend.gather([ok(), ok()]) == [1, 1]
    with pytest.raises(MailboxNotFound):
        await backend.gather([ok(), missing()])
