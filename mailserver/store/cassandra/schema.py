"""Cassandra schema migrations: keyspace, tables, and the applied version.

``init_schema(storage_config)`` (run by ``mailserver init-storage``) creates
the keyspace with NetworkTopologyStrategy and the configured replication,
then applies every migration newer than the version recorded in
``<keyspace>.schema_version``.  Migration 1 is ``schema.cql``; a later change
is a new file ``NNNN_<what>.cql`` added to ``MIGRATIONS``, never an edit of
an applied one.  Every statement is idempotent (IF NOT EXISTS), so two
daemons running it at once, or a run interrupted half way, are harmless.
Daemons check the version at start and refuse to run on an older schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from mailserver.store.cassandra.driver import Connection

#: version -> file in this package; SCHEMA_VERSION is the newest.
MIGRATIONS: dict[int, str] = {1: "schema.cql"}
SCHEMA_VERSION = max(MIGRATIONS)

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


def cassandra_section(storage_config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``[storage.cassandra]`` table (or the mapping itself if it already
    is one: it has ``contact_points``)."""
    if "contact_points" in storage_config:
        return storage_config
    section = storage_config.get("cassandra")
    if section is None:
        raise ValueError("[storage.cassandra] is missing")
    return section


def statements(cql: str, keyspace: str) -> list[str]:
    """Split a .cql file into statements, comments dropped, {ks} replaced."""
    lines = [ln for ln in cql.splitlines() if not ln.strip().startswith("--")]
    text = "\n".join(lines).replace("{ks}", keyspace)
    return [s.strip() for s in text.split(";") if s.strip()]


def keyspace_cql(keyspace: str, replication: Mapping[str, int]) -> str:
    """CREATE KEYSPACE with NetworkTopologyStrategy, e.g. {"dc1": 3}."""
    if not _NAME_RE.match(keyspace):
        raise ValueError(f"bad keyspace name {keyspace!r}")
    if not replication:
        raise ValueError("replication needs at least one data centre")
    parts = ["'class': 'NetworkTopologyStrategy'"]
    for dc, rf in sorted(replication.items()):
        if not re.match(r"^[A-Za-z0-9_.-]+$", dc) or int(rf) < 1:
            raise ValueError(f"bad replication entry {dc!r}: {rf!r}")
        parts.append(f"'{dc}': {int(rf)}")
    return (
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
        "{" + ", ".join(parts) + "} AND durable_writes = true"
    )


def _migration_text(version: int) -> str:
    return resources.files(__package__).joinpath(MIGRATIONS[version]).read_text("utf-8")


async def current_version(conn: Connection) -> int:
    """The applied schema version, 0 if none (or no keyspace)."""
    ks = conn.keyspace
    rows = await conn.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s "
        "AND table_name = 'schema_version'",
        [ks],
    )
    if not rows:
        return 0
    rows = await conn.execute(f"SELECT version FROM {ks}.schema_version WHERE component = 'mail'")
    return int(rows[0]["version"]) if rows else 0


async def migrate(conn: Connection, replication: Mapping[str, int]) -> int:
    """Create the keyspace and apply pending migrations; returns the version."""
    ks = conn.keyspace
    await conn.ddl(keyspace_cql(ks, replication))
    await conn.ddl(
        f"CREATE TABLE IF NOT EXISTS {ks}.schema_version "
        "(component text PRIMARY KEY, version int, applied timestamp)"
    )
    version = await current_version(conn)
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"schema version {version} is newer than this code ({SCHEMA_VERSION})")
    for v in range(version + 1, SCHEMA_VERSION + 1):
        for stmt in statements(_migration_text(v), ks):
            await conn.ddl(stmt)
        await conn.execute(
            f"INSERT INTO {ks}.schema_version (component, version, applied) "
            "VALUES ('mail', %s, toTimestamp(now()))",
            [v],
        )
    return SCHEMA_VERSION


async def init_schema(storage_config: Mapping[str, Any]) -> int:
    """Create or upgrade the schema described by ``[storage.cassandra]``
    (keys: contact_points, port, keyspace, local_dc, replication as
    {dc: factor}); returns the schema version now in place."""
    cfg = cassandra_section(storage_config)
    conn = Connection(cfg)
    await conn.connect()
    try:
        replication = cfg.get("replication") or {conn.local_dc: 1}
        return await migrate(conn, replication)
    finally:
        await conn.close()
