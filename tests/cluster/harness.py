"""Harness for running the storage contract suite on the cluster backend.

It uses the real servers that ``scripts/servers/with-servers.sh`` (``make
test``) starts: Cassandra on 127.0.0.1:9042 and the SeaweedFS S3 gateway on
127.0.0.1:8333.  Each test session gets its own keyspace and bucket; each
test gets empty tables (truncated before its first open) and its own blob
prefix, so tests see only their own data.  If a server is not reachable the
test fails with the reason: it is never skipped.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import pytest

from tests.store.conftest import StorageHarness

CASSANDRA = (os.environ.get("MAILSERVER_TEST_CASSANDRA_HOST", "127.0.0.1"), 9042)
S3 = (
    os.environ.get("MAILSERVER_TEST_S3_HOST", "127.0.0.1"),
    int(os.environ.get("S3_PORT", "8333")),
)
S3_KEYS = (
    os.environ.get("S3_ACCESS_KEY", "mailserver"),
    os.environ.get("S3_SECRET_KEY", "mailserver-secret"),
)

_RUN = f"{os.getpid()}_{int(time.time())}"
KEYSPACE = f"mailtest_{_RUN}"
#: one bucket for all runs (each bucket is a SeaweedFS collection with its
#: own volumes); runs and tests are kept apart by key prefixes
BUCKET = "mailtest"

_state: dict[str, Any] = {"schema": False, "count": 0}


def require_servers() -> None:
    """Fail (never skip) with a clear reason if a server is not running."""
    for name, addr, hint in (
        ("Cassandra", CASSANDRA, "scripts/servers/cassandra.sh start"),
        ("S3 (SeaweedFS)", S3, "scripts/servers/s3.sh start"),
    ):
        try:
            socket.create_connection(addr, timeout=3).close()
        except OSError as e:
            pytest.fail(
                f"{name} is not reachable on {addr[0]}:{addr[1]} ({e}); start it with "
                f"`{hint}` or run the suite through `make test` / "
                "scripts/servers/with-servers.sh",
                pytrace=False,
            )


def cluster_config(keyspace: str = KEYSPACE, prefix: str = "", **cassandra: Any) -> dict:
    """A ``[storage]`` table for the cluster backend on the test servers."""
    return {
        "backend": "cluster",
        "cassandra": {
            "contact_points": [CASSANDRA[0]],
            "port": CASSANDRA[1],
            "keyspace": keyspace,
            "local_dc": "datacenter1",
            "replication": {"datacenter1": 1},
            "bucket_size": 1000,
            **cassandra,
        },
        "s3": {
            "endpoint": f"{S3[0]}:{S3[1]}",
            "access_key": S3_KEYS[0],
            "secret_key": S3_KEYS[1],
            "bucket": BUCKET,
            "prefix": prefix,
        },
    }


#: tables emptied before each test (schema_version is kept)
TABLES = (
    "addresses",
    "accounts",
    "mailbox_names",
    "mailboxes",
    "mailbox_alloc",
    "mailbox_state",
    "mailbox_counts",
    "subscriptions",
    "messages",
    "unseen",
    "changes",
    "content",
    "content_refs",
    "blob_refs",
)


async def truncate_all(conn: Any) -> None:
    """Empty every non-empty table, in parallel (TRUNCATE flushes, ~0.1 s)."""
    from twisted.internet.defer import ensureDeferred, gatherResults

    async def one(table: str) -> None:
        if await conn.execute(f"SELECT * FROM {KEYSPACE}.{table} LIMIT 1", limit=1):
            await conn.ddl(f"TRUNCATE {KEYSPACE}.{table}")

    await gatherResults([ensureDeferred(one(t)) for t in TABLES], consumeErrors=True)


class ClusterHarness(StorageHarness):
    """Opens the cluster Storage on a clean keyspace (first open only)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._fresh = True

    async def open(self):
        require_servers()
        storage = await super().open()
        if self._fresh:
            self._fresh = False
            await truncate_all(storage.conn)  # type: ignore[attr-defined]
        return storage


def cluster_storage_table(keyspace: str = KEYSPACE) -> dict[str, Any]:
    """The ``[storage]`` config table for the test servers with only keys of
    the config schema (``make_test_config`` validates them; the per-test blob
    prefix is added by ``cluster_harness``)."""
    table = cluster_config(keyspace)
    del table["cassandra"]["bucket_size"]
    del table["s3"]["prefix"]
    return table


def cluster_harness(tmp_path, config: dict[str, Any] | None = None) -> StorageHarness:
    """A harness for one test: ``config`` (default ``cluster_config()``) with
    this test's own blob prefix; tables are truncated on its first open."""
    _state["count"] += 1
    base = cluster_config() if config is None else config
    return ClusterHarness({**base, "s3": {**base["s3"], "prefix": f"{_RUN}/t{_state['count']}/"}})
