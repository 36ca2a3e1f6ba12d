"""cassandra-driver without blocking the reactor.

The driver's default connection class (libev, or asyncore) runs its own
event-loop thread; ``execute_async`` returns a ``ResponseFuture`` whose
callbacks run on that thread.  ``Connection.execute`` hands each result back
to the reactor thread with ``reactor.callFromThread`` and returns a Deferred.
The driver's Twisted connection class is deprecated (removed in 3.31), so it
is not used.  ``Cluster.connect()`` and ``Session.prepare()`` block: they run
in the shared thread pool, once, at open.

Load balancing is token aware over DC-aware round robin, so each statement
goes to a replica of its partition in the local data centre.  Reads of long
results are paged (``fetch_size`` rows per page, pages fetched one after the
other until the result is complete or ``limit`` rows were seen).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement, BatchType, PreparedStatement, dict_factory
from twisted.internet.defer import Deferred

from mailserver.threads import run_blocking

DEFAULT_FETCH_SIZE = 500


def consistency(name: str) -> int:
    """ConsistencyLevel value of a name such as ``LOCAL_QUORUM``."""
    try:
        return ConsistencyLevel.name_to_value[name.upper()]
    except KeyError:
        raise ValueError(f"unknown consistency level {name!r}") from None


class Connection:
    """One driver ``Cluster``/``Session`` and its prepared statements."""

    def __init__(self, cfg: Mapping[str, Any], reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self._reactor = reactor
        self.keyspace: str = cfg.get("keyspace", "mailserver")
        self.local_dc: str = cfg.get("local_dc", "datacenter1")
        self.fetch_size = int(cfg.get("fetch_size", DEFAULT_FETCH_SIZE))
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=self.local_dc)),
            consistency_level=consistency(cfg.get("consistency", "LOCAL_QUORUM")),
            serial_consistency_level=consistency(cfg.get("serial_consistency", "LOCAL_SERIAL")),
            request_timeout=float(cfg.get("request_timeout", 12.0)),
            row_factory=dict_factory,
        )
        self.cluster = Cluster(
            contact_points=list(cfg.get("contact_points", ["127.0.0.1"])),
            port=int(cfg.get("port", 9042)),
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=float(cfg.get("connect_timeout", 10.0)),
            control_connection_timeout=float(cfg.get("connect_timeout", 10.0)),
            protocol_version=int(cfg.get("protocol_version", 5)),
            idle_heartbeat_interval=10,
        )
        self.session: Session | None = None
        self._prepared: dict[str, PreparedStatement] = {}

    async def connect(self) -> None:
        """Connect (blocking in the driver, so in a thread)."""
        self.session = await run_blocking(self.cluster.connect)

    def _prepare_all(self, statements: Mapping[str, str]) -> dict[str, PreparedStatement]:
        assert self.session is not None
        out = {}
        for name, cql in statements.items():
            stmt = self.session.prepare(cql)
            # Reads may be retried on another replica when one dies mid-request;
            # writes (LWT, counters) are not retried blindly.
            stmt.is_idempotent = cql.lstrip().upper().startswith("SELECT")
            out[name] = stmt
        return out

    async def prepare(self, statements: Mapping[str, str]) -> None:
        """Prepare named statements once (``{name}`` in them names the keyspace)."""
        texts = {n: q.replace("{ks}", self.keyspace) for n, q in statements.items()}
        self._prepared.update(await run_blocking(self._prepare_all, texts))

    def bound(self, name: str, params: Sequence[Any] = ()) -> Any:
        return self._prepared[name].bind(params)

    def execute(
        self, statement: Any, params: Sequence[Any] | None = None, *, limit: int | None = None
    ) -> Deferred:
        """Run a statement (a prepared statement name, a bound statement, a
        batch or a CQL string) and fire with all its rows as dicts, paging
        through long results; ``limit`` stops paging after that many rows."""
        assert self.session is not None, "not connected"
        if isinstance(statement, str) and statement in self._prepared:
            statement = self._prepared[statement].bind(params or ())
            params = None
        if hasattr(statement, "fetch_size"):
            statement.fetch_size = self.fetch_size
        d: Deferred = Deferred()
        rows: list[dict[str, Any]] = []

        def settle(fire: Any, value: Any) -> None:
            # Runs on the reactor thread.  The driver may report a client-side
            # timeout and later the real answer: the first outcome wins.
            if not d.called:
                fire(value)

        try:
            future = self.session.execute_async(statement, params)
        except Exception as e:  # e.g. no host available synchronously
            d.errback(e)
            return d

        def on_page(page: list[dict[str, Any]] | None) -> None:
            try:
                if page:
                    rows.extend(page)
                if future.has_more_pages and (limit is None or len(rows) < limit):
                    future.start_fetching_next_page()
                    return
            except Exception as e:
                self._reactor.callFromThread(settle, d.errback, e)
                return
            self._reactor.callFromThread(settle, d.callback, rows)

        def on_error(exc: BaseException) -> None:
            self._reactor.callFromThread(settle, d.errback, exc)

        future.add_callbacks(on_page, on_error)
        return d

    def batch(self, logged: bool = True) -> BatchStatement:
        """A new batch; LOGGED batches are all-or-nothing across partitions."""
        return BatchStatement(batch_type=BatchType.LOGGED if logged else BatchType.UNLOGGED)

    async def ddl(self, cql: str) -> None:
        """Run a schema statement and wait for schema agreement (blocking in
        the driver, so in a thread)."""
        assert self.session is not None
        await run_blocking(self.session.execute, cql, timeout=60.0)

    async def close(self) -> None:
        await run_blocking(self.cluster.shutdown)
