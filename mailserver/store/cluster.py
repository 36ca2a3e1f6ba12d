"""The distributed backend: Cassandra metadata + S3 bodies ("cluster").

``open_cluster_storage`` builds it from the ``[storage]`` table::

    backend = "cluster"
    [storage.cassandra]   contact_points, port, keyspace, local_dc,
                          replication = {dc = factor}, consistency,
                          serial_consistency, bucket_size, create_schema
    [storage.s3]          endpoint, access_key, secret_key, bucket, secure,
                          region, create_bucket
    [storage.notify]      url = "" (one daemon) | "redis://host:port" (many)

Any number of daemons share one cluster; ``notify`` says how a change made
through one reaches the sessions of the others (``RedisNotifier`` below).  Design and scaling: docs/decisions/0006-cluster-storage.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, ReconnectingClientFactory

from mailserver.store.cassandra.driver import Connection
from mailserver.store.cassandra.schema import (
    SCHEMA_VERSION,
    cassandra_section,
    current_version,
    migrate,
)
from mailserver.store.cassandra.store import (
    DEFAULT_BUCKET_SIZE,
    STATEMENTS,
    CassandraAccountStore,
    CassandraBackend,
    CassandraMailboxStore,
    CassandraMessageStore,
)
from mailserver.store.notify import LocalNotifier
from mailserver.store.s3 import S3BlobStore


class ClusterStorage:
    """``Storage`` on a Cassandra cluster and an S3 object store."""

    def __init__(
        self,
        conn: Connection,
        blobs: S3BlobStore,
        notifier: Any,
        bucket_size: int = DEFAULT_BUCKET_SIZE,
    ) -> None:
        self.conn = conn
        self.blobs = blobs
        self.notifier = notifier
        self.backend = CassandraBackend(conn, notifier, bucket_size)
        self.accounts = CassandraAccountStore(self.backend)
        self.messages = CassandraMessageStore(self.backend)
        self.mailboxes = CassandraMailboxStore(self.backend, self.messages)

    async def collect_garbage(self, grace_seconds: float = 3600.0) -> int:
        """Mark and sweep, both halves older than the grace period:

        1. content rows whose references (``content_refs``, each checked
           against its message row, stale ones dropped) are all gone are
           deleted with their ``blob_refs`` row;
        2. blobs with no ``blob_refs`` row are deleted from the object store.

        Returns the number of blobs removed.  Full scans (paged): run it as a
        background task, per token range at scale."""
        b = self.backend
        cutoff = time.time() - grace_seconds
        for row in await b.q("content_all"):
            created = row["created"]
            if created is not None and created.timestamp() > cutoff:
                continue
            if await self._referenced(row["message_id"]):
                continue
            await b.q("content_delete", row["message_id"])
            await b.q("blobref_del", row["blob_key"], row["message_id"])
        # Blobs listed before their references are read: one put after the
        # scan is not in it, one re-put during it has a fresh Last-Modified.
        removed = 0
        for key, mtime in await self.blobs.scan():
            if mtime > cutoff or await b.q("blobref_list", key):
                continue
            if await self.blobs.delete_if_older(key, cutoff):
                removed += 1
        return removed

    async def _referenced(self, message_id: str) -> bool:
        b = self.backend
        live = False
        for ref in await b.q("ref_list", message_id):
            rows = await b.q("msg_one", ref["mailbox_id"], b.bucket(ref["uid"]), ref["uid"])
            if rows and rows[0]["message_id"] == message_id:
                live = True
            else:
                await b.q("ref_del", message_id, ref["mailbox_id"], ref["uid"])
        return live

    async def repair_counters(self, mailbox_id: str) -> tuple[int, int, int]:
        """Recount messages / unseen / bytes of a mailbox from its rows and
        correct the counters (which drift if an increment was retried after
        a timeout).  Returns the corrected (messages, unseen, bytes).  Run it
        when the mailbox is quiet; counters cannot be set, only adjusted."""
        b = self.backend
        records = await b.records_range(mailbox_id, 1, None)
        unseen = len(await self.messages.unseen_uids(mailbox_id))
        actual = (len(records), unseen, sum(r.size for r in records))
        rows = await b.q("counts_get", mailbox_id)
        c = rows[0] if rows else {}
        have = (c.get("messages") or 0, c.get("unseen") or 0, c.get("bytes") or 0)
        delta = tuple(a - h for a, h in zip(actual, have, strict=True))
        if any(delta):
            await b.q("counts_add", *delta, mailbox_id)
        return actual

    async def close(self) -> None:
        close = getattr(self.notifier, "close", None)
        if close is not None:
            await close()
        await self.conn.close()


async def _notifier(cfg: Mapping[str, Any]) -> Any:
    """``[storage.notify]``: ``url = ""`` (in-process only: one daemon) or
    ``url = "redis://host:port"`` (all daemons sharing the cluster)."""
    url = cfg.get("url", "")
    if not url:
        return LocalNotifier()
    parsed = urlsplit(url)
    if parsed.scheme != "redis" or not parsed.hostname:
        raise ValueError(f"[storage.notify] url {url!r}: expected redis://host:port")
    notifier = RedisNotifier(
        host=parsed.hostname,
        port=parsed.port or 6379,
        prefix=(parsed.path.strip("/") or "mailserver") + ":",
    )
    await notifier.start()
    return notifier


async def open_cluster_storage(storage_config: Mapping[str, Any]) -> ClusterStorage:
    """Connect to Cassandra and the object store; with ``create_schema``
    (default true) create or upgrade the schema, else require it current."""
    ccfg = cassandra_section(storage_config)
    s3cfg = storage_config.get("s3")
    if not s3cfg:
        raise ValueError("[storage.s3] is missing")
    conn = Connection(ccfg)
    try:
        await conn.connect()
    except Exception as e:
        points = ", ".join(ccfg.get("contact_points", ["127.0.0.1"]))
        raise ConnectionError(
            f"Cassandra not reachable at {points} port {ccfg.get('port', 9042)}: {e}"
        ) from e
    try:
        if ccfg.get("create_schema", True):
            await migrate(conn, ccfg.get("replication") or {conn.local_dc: 1})
        else:
            version = await current_version(conn)
            if version != SCHEMA_VERSION:
                raise RuntimeError(
                    f"Cassandra schema version {version}, this code needs {SCHEMA_VERSION}: "
                    "run `mailserver init-storage`"
                )
        await conn.prepare(STATEMENTS)
        blobs = S3BlobStore.from_config(s3cfg)
        if s3cfg.get("create_bucket", True):
            try:
                await blobs.ensure_bucket()
            except Exception as e:
                raise ConnectionError(
                    f"S3 object store at {s3cfg['endpoint']} (bucket {s3cfg['bucket']}): {e}"
                ) from e
        notifier = await _notifier(storage_config.get("notify") or {})
    except BaseException:
        await conn.close()
        raise
    return ClusterStorage(conn, blobs, notifier, int(ccfg.get("bucket_size", DEFAULT_BUCKET_SIZE)))


# -- cross-daemon change notification ------------------------------------------------


class _Incomplete(Exception):
    pass


def _resp_encode(*args: bytes | str) -> bytes:
    """A RESP array of bulk strings (a Redis command)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _resp_parse(buf: bytes, pos: int = 0) -> tuple[Any, int]:
    """One RESP value from ``buf[pos:]``: (value, end).  Raises _Incomplete."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind, line = buf[pos : pos + 1], buf[pos + 1 : end]
    pos = end + 2
    if kind == b"+":
        return line, pos
    if kind == b"-":
        return RuntimeError(line.decode("utf-8", "replace")), pos
    if kind == b":":
        return int(line), pos
    if kind == b"$":
        n = int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            raise _Incomplete
        return buf[pos : pos + n], pos + n + 2
    if kind == b"*":
        n = int(line)
        items = []
        for _ in range(max(n, 0)):
            item, pos = _resp_parse(buf, pos)
            items.append(item)
        return items, pos
    raise ValueError(f"bad RESP type byte {kind!r}")


_MAX_REPLY = 1 << 20


class _RedisConnection(Protocol):
    """A Redis client connection: sends commands, hands replies to ``on_reply``."""

    def __init__(self, on_reply: Callable[[Any], None]) -> None:
        self._buf = b""
        self._on_reply = on_reply

    def send(self, *args: bytes | str) -> None:
        self.transport.write(_resp_encode(*args))

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        pos = 0
        try:
            while pos < len(self._buf):
                value, pos = _resp_parse(self._buf, pos)
                self._on_reply(value)
        except _Incomplete:
            pass
        self._buf = self._buf[pos:]
        if len(self._buf) > _MAX_REPLY:
            self.transport.loseConnection()


class _RedisFactory(ReconnectingClientFactory):
    maxDelay = 5.0

    def __init__(self, on_connect: Callable[[_RedisConnection], None], on_reply: Any) -> None:
        self._on_connect = on_connect
        self._on_reply = on_reply

    def buildProtocol(self, addr: Any) -> _RedisConnection:
        self.resetDelay()
        proto = _RedisConnection(self._on_reply)
        proto.factory = self
        self._reactor_call(proto)
        return proto

    def _reactor_call(self, proto: _RedisConnection) -> None:
        from twisted.internet import reactor

        # connectionMade has not run yet: connect callbacks after it.
        reactor.callLater(0, self._on_connect, proto)


class RedisNotifier:
    """``ChangeNotifier`` shared by all daemons through Redis pub/sub.

    Local subscribers are kept in a ``LocalNotifier``.  The daemon holds one
    Redis SUBSCRIBE per mailbox that has at least one local subscriber (not
    one per session), and ``publish`` fires local callbacks at once and
    PUBLISHes ``<prefix><mailbox id>`` with this daemon's id, which the
    daemon itself ignores when Redis echoes it back.  The cost of a change
    is one PUBLISH plus one message per daemon that watches the mailbox,
    whatever the number of idle sessions.  While Redis is unreachable the
    connections retry (at most every 5 s) and resubscribe; sessions still
    see changes on their next own command (NOOP/poll).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, prefix: str = "mailserver:"):
        self.host, self.port, self.prefix = host, port, prefix
        self.daemon_id = uuid.uuid4().hex.encode()
        self._local = LocalNotifier()
        self._watch: dict[str, int] = {}  # mailbox id -> local subscribers
        self._pub: _RedisConnection | None = None
        self._sub: _RedisConnection | None = None
        self._pending: list[bytes] = []  # PUBLISHes made while disconnected
        self._connectors: list[Any] = []
        self._ready: Deferred | None = Deferred()
        self.subscribe_commands = 0  # SUBSCRIBEs sent (for cost tests)
        self._confirmed: set[str] = set()
        self._waiters: dict[str, list[Deferred]] = {}

    async def start(self, timeout: float = 10.0) -> None:
        """Connect (publisher and subscriber); fails if Redis does not
        answer within ``timeout`` seconds."""
        from twisted.internet import reactor

        self._pub_factory = _RedisFactory(self._pub_connected, lambda v: None)
        self._sub_factory = _RedisFactory(self._sub_connected, self._sub_reply)
        for f in (self._pub_factory, self._sub_factory):
            self._connectors.append(reactor.connectTCP(self.host, self.port, f, timeout=5))
        ready = self._ready
        assert ready is not None
        timer = reactor.callLater(
            timeout,
            lambda: (
                ready.called
                or ready.errback(ConnectionError(f"Redis not reachable on {self.host}:{self.port}"))
            ),
        )
        try:
            await ready
        except BaseException:
            await self.close()
            raise
        finally:
            if timer.active():
                timer.cancel()

    def _maybe_ready(self) -> None:
        if self._pub is not None and self._sub is not None and self._ready is not None:
            d, self._ready = self._ready, None
            d.callback(None)

    def _pub_connected(self, proto: _RedisConnection) -> None:
        self._pub = proto
        pending, self._pending = self._pending, []
        for mailbox_id in pending:
            proto.send("PUBLISH", self.prefix.encode() + mailbox_id, self.daemon_id)
        self._maybe_ready()

    def _sub_connected(self, proto: _RedisConnection) -> None:
        self._sub = proto
        self._confirmed.clear()
        if self._watch:
            self.subscribe_commands += 1
            proto.send("SUBSCRIBE", *(self.prefix + m for m in sorted(self._watch)))
        self._maybe_ready()

    def wait_subscribed(self, mailbox_id: str) -> Deferred:
        """Fires once Redis confirmed this daemon's subscription to the
        mailbox (changes published after that reach it)."""
        d: Deferred = Deferred()
        if mailbox_id in self._confirmed:
            d.callback(None)
        else:
            self._waiters.setdefault(mailbox_id, []).append(d)
        return d

    def _sub_reply(self, value: Any) -> None:
        if isinstance(value, list) and len(value) == 3 and value[0] == b"subscribe":
            mailbox_id = value[1][len(self.prefix) :].decode("utf-8", "replace")
            if mailbox_id in self._watch:
                self._confirmed.add(mailbox_id)
            for d in self._waiters.pop(mailbox_id, []):
                d.callback(None)
            return
        if isinstance(value, list) and len(value) == 3 and value[0] == b"message":
            channel, payload = value[1], value[2]
            if payload == self.daemon_id:
                return  # our own publish, already delivered locally
            mailbox_id = channel[len(self.prefix) :].decode("utf-8", "replace")
            self._local.publish(mailbox_id)

    def subscribe(self, mailbox_id: str, callback: Callable[[str], None]) -> Callable[[], None]:
        unsubscribe_local = self._local.subscribe(mailbox_id, callback)
        n = self._watch.get(mailbox_id, 0)
        self._watch[mailbox_id] = n + 1
        if n == 0 and self._sub is not None:
            self.subscribe_commands += 1
            self._sub.send("SUBSCRIBE", self.prefix + mailbox_id)
        done = False

        def unsubscribe() -> None:
            nonlocal done
            if done:
                return
            done = True
            unsubscribe_local()
            left = self._watch.get(mailbox_id, 1) - 1
            if left > 0:
                self._watch[mailbox_id] = left
                return
            self._watch.pop(mailbox_id, None)
            self._confirmed.discard(mailbox_id)
            if self._sub is not None:
                self._sub.send("UNSUBSCRIBE", self.prefix + mailbox_id)

        return unsubscribe

    def publish(self, mailbox_id: str) -> None:
        self._local.publish(mailbox_id)
        if self._pub is not None and self._pub.transport is not None:
            self._pub.send("PUBLISH", self.prefix + mailbox_id, self.daemon_id)
        elif len(self._pending) < 10_000:
            self._pending.append(mailbox_id.encode())

    async def close(self) -> None:
        for f in (getattr(self, "_pub_factory", None), getattr(self, "_sub_factory", None)):
            if f is not None:
                f.stopTrying()
        for c in self._connectors:
            c.disconnect()
        self._connectors = []
        self._pub = self._sub = None
