"""Deliveries per second and IMAP FETCH latency, cluster backend beside the
embedded one.

For each backend (``embedded``: SQLite + files in a temporary directory;
``cluster``: the Cassandra + SeaweedFS S3 servers that scripts/servers
start on 127.0.0.1):

- deliveries/s: ingest (blob PUT + content row) + deliver into one INBOX,
  ``--messages`` distinct 2 KB messages, at concurrency 1 and ``--concurrency``;
- IMAP over a real listener (imaplib in a thread): FETCH 1 (BODY[]) of one
  message, FETCH 1:N (ENVELOPE), FETCH 1:N (UID FLAGS), SELECT; the median
  of ``--repeat`` runs.

Usage: ``scripts/servers/with-servers.sh .venv/bin/python bench/bench_cluster.py
[--messages 300] [--concurrency 16] [--repeat 5] [--backends embedded,cluster]``.
Bounded by ``--timeout`` seconds (default 900).  Prints one line per figure.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from twisted.internet import defer, task, threads  # noqa: E402

from mailserver.accounts import hash_password  # noqa: E402
from mailserver.config import make_test_config  # noqa: E402
from mailserver.context import ServerContext  # noqa: E402
from mailserver.imap.service import services  # noqa: E402
from mailserver.store import open_storage  # noqa: E402
from mailserver.store.interfaces import DeliveryTarget  # noqa: E402

PW = "bench-password"


def make_message(i: int, body_size: int = 2000) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog. %06d\r\n" % i
    body = line * max(1, body_size // len(line))
    return (
        b"From: Sender %d <sender%d@example.org>\r\n"
        b"To: Bench <bench@example.test>\r\n"
        b"Subject: Cluster benchmark message %d\r\n"
        b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
        b"Message-ID: <cbench.%d.%f@example.org>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n" % (i, i, i, i, time.time())
    ) + body


def storage_config(backend: str, tmp: str) -> dict[str, Any]:
    if backend == "embedded":
        return {"backend": "embedded", "embedded": {"path": os.path.join(tmp, "store")}}
    run = f"{os.getpid()}_{int(time.time())}"
    return {
        "backend": "cluster",
        "cassandra": {
            "contact_points": ["127.0.0.1"],
            "keyspace": f"bench_{run}",
            "local_dc": "datacenter1",
            "replication": {"datacenter1": 1},
        },
        "s3": {
            "endpoint": "127.0.0.1:8333",
            "access_key": "mailserver",
            "secret_key": "mailserver-secret",
            "bucket": "mailtest",
            "prefix": f"bench-{run}/",
        },
    }


async def deliveries(ctx: ServerContext, mailbox_ids: list[str], n: int, concurrency: int) -> float:
    """Deliveries per second: ingest + deliver, ``concurrency`` at a time,
    round robin over ``mailbox_ids``."""
    sem = defer.DeferredSemaphore(concurrency)

    async def one(i: int) -> None:
        await sem.acquire()
        try:
            stored = await ctx.delivery.ingest(make_message(i))
            target = DeliveryTarget(mailbox_ids[i % len(mailbox_ids)])
            await ctx.storage.messages.deliver(stored, [target])
        finally:
            sem.release()

    t0 = time.perf_counter()
    await defer.gatherResults([defer.ensureDeferred(one(i)) for i in range(n)], consumeErrors=True)
    return n / (time.perf_counter() - t0)


def client_runs(port: int, user: str, n: int, repeat: int) -> dict[str, list[float]]:
    """Blocking IMAP client (runs in a thread)."""
    out: dict[str, list[float]] = {}

    def timed(name: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        result = fn()
        out.setdefault(name, []).append(time.perf_counter() - t0)
        return result

    c = imaplib.IMAP4("127.0.0.1", port, timeout=120)
    c.login(user, PW)
    for _ in range(repeat):
        typ, data = timed("select", lambda: c.select("INBOX"))
        assert typ == "OK" and int(data[0]) >= n, data
        typ, data = timed("fetch_one_body", lambda: c.fetch(str(n // 2), "(BODY.PEEK[])"))
        assert typ == "OK" and isinstance(data[0], tuple)
        typ, data = timed("fetch_one_header", lambda: c.fetch("1", "(BODY.PEEK[HEADER])"))
        assert typ == "OK"
        typ, data = timed("fetch_envelope", lambda: c.fetch(f"1:{n}", "(ENVELOPE)"))
        assert typ == "OK" and len(data) >= n
        typ, data = timed("fetch_flags", lambda: c.fetch(f"1:{n}", "(UID FLAGS)"))
        assert typ == "OK"
        c.close()
    c.logout()
    return out


async def bench_backend(backend: str, opts: argparse.Namespace) -> dict[str, float]:
    tmp = tempfile.mkdtemp(prefix=f"bench-{backend}-")
    results: dict[str, float] = {}
    try:
        config = make_test_config(
            tmp,
            imap={"listen": ["127.0.0.1:0"], "tls_listen": []},
            accounts={"allow_plaintext_auth": True},
        )
        storage = await open_storage(storage_config(backend, tmp))
        try:
            ctx = ServerContext.build(config, storage)
            user = f"bench{os.getpid()}@example.test"
            await storage.accounts.create_account(user, hash_password(PW, "bcrypt"))
            inbox = await storage.mailboxes.get_mailbox(user, "INBOX")
            half = opts.messages // 2
            results["deliveries_c1"] = await deliveries(ctx, [inbox.id], half, 1)
            results[f"deliveries_c{opts.concurrency}"] = await deliveries(
                ctx, [inbox.id], opts.messages - half, opts.concurrency
            )
            # Many recipients: concurrent deliveries to different mailboxes
            # (different partitions, no shared lock or LWT row).
            others = []
            for k in range(opts.concurrency):
                other = f"bench{os.getpid()}r{k}@example.test"
                await storage.accounts.create_account(other, "{PLAIN}x")
                others.append((await storage.mailboxes.get_mailbox(other, "INBOX")).id)
            results["deliveries_spread"] = await deliveries(
                ctx, others, opts.messages, opts.concurrency
            )
            listeners = services(ctx)
            for s in listeners:
                s.startService()
            port = listeners[0].address[1]
            try:
                res = await threads.deferToThread(
                    client_runs, port, user, opts.messages, opts.repeat
                )
            finally:
                for s in listeners:
                    await defer.maybeDeferred(s.stopService)
            for key, vals in res.items():
                results[key] = statistics.median(vals) * 1000
        finally:
            await storage.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


async def run(reactor: Any, opts: argparse.Namespace) -> None:
    guard = reactor.callLater(opts.timeout, _abort, opts.timeout)
    try:
        table = {}
        for backend in opts.backends.split(","):
            table[backend] = await bench_backend(backend, opts)
        n = opts.messages
        labels = [
            ("deliveries_c1", "deliveries/s, one at a time", "/s"),
            (
                f"deliveries_c{opts.concurrency}",
                f"deliveries/s, {opts.concurrency} concurrent",
                "/s",
            ),
            ("deliveries_spread", f"deliveries/s, {opts.concurrency} conc. to N boxes", "/s"),
            ("select", f"SELECT INBOX ({n} messages)", "ms"),
            ("fetch_one_body", "FETCH 1 (BODY.PEEK[]) 2 KB", "ms"),
            ("fetch_one_header", "FETCH 1 (BODY.PEEK[HEADER])", "ms"),
            ("fetch_envelope", f"FETCH 1:{n} (ENVELOPE)", "ms"),
            ("fetch_flags", f"FETCH 1:{n} (UID FLAGS)", "ms"),
        ]
        print(f"{'':40s}" + "".join(f"{b:>14s}" for b in table))
        for key, label, unit in labels:
            cells = "".join(f"{table[b][key]:11.1f} {unit:2s}" for b in table)
            print(f"{label:40s}{cells}")
    finally:
        if guard.active():
            guard.cancel()


def _abort(seconds: float) -> None:
    print(f"benchmark exceeded {seconds}s, aborting", file=sys.stderr)
    os._exit(2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--backends", default="embedded,cluster")
    p.add_argument("--timeout", type=float, default=900)
    opts = p.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, opts)))


if __name__ == "__main__":
    main()
