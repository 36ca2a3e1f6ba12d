"""IMAP latency benchmark: the real listener on 127.0.0.1, an embedded store
in a temporary directory, Python's imaplib as the client (in a thread, so
the reactor only serves).

Measures (median of ``--repeat`` runs):

- FETCH 1:N (BODY.PEEK[HEADER]) and FETCH 1:N (ENVELOPE) on N distinct
  messages (default 1000);
- FETCH 1 (BODY[]) of one 1 MB message;
- SELECT of a mailbox with M messages (default 10,000).

Usage: ``.venv/bin/python bench/bench_imap.py [--messages 1000]
[--big-mailbox 10000] [--repeat 3]``.  The whole run is bounded by
``--timeout`` seconds (default 600); it prints one line per figure.
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
from mailserver.imap.commands_mailbox import ingest  # noqa: E402
from mailserver.imap.service import services  # noqa: E402
from mailserver.store import open_storage  # noqa: E402
from mailserver.store.interfaces import DeliveryTarget  # noqa: E402

USER = "bench@example.test"
PW = "bench-password"


def make_message(i: int, body_size: int = 2000) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog. %06d\r\n" % i
    body = line * max(1, body_size // len(line))
    return (
        b"From: Sender %d <sender%d@example.org>\r\n"
        b"To: Bench <bench@example.test>\r\n"
        b"Cc: Other <other@example.org>\r\n"
        b"Subject: Benchmark message number %d\r\n"
        b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
        b"Message-ID: <bench.%d@example.org>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n" % (i, i, i, i)
    ) + body


async def populate(ctx: ServerContext, n: int, big_n: int) -> dict[str, float]:
    st = ctx.storage
    timings: dict[str, float] = {}
    for name in ("bench1k", "big", "bench10k"):
        await st.mailboxes.create_mailbox(USER, name)
    t0 = time.perf_counter()
    box = await st.mailboxes.get_mailbox(USER, "bench1k")
    for i in range(n):
        stored = await ingest(ctx, make_message(i))
        await st.messages.deliver(stored, [DeliveryTarget(box.id)])
    timings["deliver_distinct"] = time.perf_counter() - t0
    big = await st.mailboxes.get_mailbox(USER, "big")
    stored = await ingest(ctx, make_message(0, body_size=1024 * 1024))
    await st.messages.deliver(stored, [DeliveryTarget(big.id)])
    t0 = time.perf_counter()
    box10k = await st.mailboxes.get_mailbox(USER, "bench10k")
    stored = await ingest(ctx, make_message(1))
    left = big_n
    while left > 0:
        batch = min(1000, left)
        await st.messages.deliver(stored, [DeliveryTarget(box10k.id)] * batch)
        left -= batch
    timings["deliver_batched"] = time.perf_counter() - t0
    return timings


def client_runs(port: int, n: int, repeat: int) -> dict[str, list[float]]:
    """Blocking: runs in a thread against the listener."""
    out: dict[str, list[float]] = {}

    def timed(name: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        result = fn()
        out.setdefault(name, []).append(time.perf_counter() - t0)
        return result

    c = imaplib.IMAP4("127.0.0.1", port, timeout=300)
    c.login(USER, PW)
    for _ in range(repeat):
        typ, data = timed("select_1k", lambda: c.select("bench1k"))
        assert typ == "OK" and int(data[0]) == n, data
        typ, data = timed("fetch_headers", lambda: c.fetch(f"1:{n}", "(BODY.PEEK[HEADER])"))
        assert typ == "OK" and sum(isinstance(d, tuple) for d in data) == n
        typ, data = timed("fetch_envelope", lambda: c.fetch(f"1:{n}", "(ENVELOPE)"))
        assert typ == "OK" and len(data) == n
        typ, data = timed("fetch_flags", lambda: c.fetch(f"1:{n}", "(UID FLAGS)"))
        assert typ == "OK"
        typ, data = timed("search_unseen", lambda: c.search(None, "UNSEEN"))
        assert typ == "OK"
        c.select("big", readonly=True)
        typ, data = timed("fetch_1mb_body", lambda: c.fetch("1", "(BODY.PEEK[])"))
        assert typ == "OK" and len(data[0][1]) > 1024 * 1024
        typ, data = timed("select_10k", lambda: c.select("bench10k"))
        assert typ == "OK"
        typ, data = timed("examine_10k", lambda: c.select("bench10k", readonly=True))
        assert typ == "OK"
        typ, data = timed("status_10k", lambda: c.status("bench10k", "(MESSAGES UNSEEN)"))
        assert typ == "OK"
        c.close()
    c.logout()
    return out


async def run(reactor: Any, opts: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-imap-")
    guard = reactor.callLater(opts.timeout, _abort, opts.timeout)
    try:
        config = make_test_config(
            tmp,
            imap={"listen": ["127.0.0.1:0"], "tls_listen": []},
            accounts={"allow_plaintext_auth": True},
        )
        storage = await open_storage(
            {"backend": "embedded", "embedded": {"path": os.path.join(tmp, "store")}}
        )
        ctx = ServerContext.build(config, storage)
        await storage.accounts.create_account(USER, hash_password(PW, "bcrypt"))
        setup = await populate(ctx, opts.messages, opts.big_mailbox)
        print(
            f"setup: {opts.messages} distinct deliveries {setup['deliver_distinct']:.2f}s, "
            f"{opts.big_mailbox} batched {setup['deliver_batched']:.2f}s"
        )
        listeners = services(ctx)
        for s in listeners:
            s.startService()
        port = listeners[0].address[1]
        try:
            res = await threads.deferToThread(client_runs, port, opts.messages, opts.repeat)
        finally:
            for s in listeners:
                await defer.maybeDeferred(s.stopService)
        labels = {
            "select_1k": f"SELECT {opts.messages}-message mailbox",
            "fetch_headers": f"FETCH 1:{opts.messages} (BODY.PEEK[HEADER])",
            "fetch_envelope": f"FETCH 1:{opts.messages} (ENVELOPE)",
            "fetch_flags": f"FETCH 1:{opts.messages} (UID FLAGS)",
            "search_unseen": f"SEARCH UNSEEN ({opts.messages} unseen)",
            "fetch_1mb_body": "FETCH 1 (BODY.PEEK[]) of 1 MB",
            "select_10k": f"SELECT {opts.big_mailbox}-message mailbox",
            "examine_10k": f"EXAMINE {opts.big_mailbox}-message mailbox",
            "status_10k": f"STATUS {opts.big_mailbox}-message mailbox",
        }
        for key, label in labels.items():
            vals = res[key]
            print(
                f"{label:45s} median {statistics.median(vals) * 1000:9.1f} ms"
                f"  (min {min(vals) * 1000:.1f}, n={len(vals)})"
            )
        await storage.close()
    finally:
        if guard.active():
            guard.cancel()
        shutil.rmtree(tmp, ignore_errors=True)


def _abort(seconds: float) -> None:
    print(f"benchmark exceeded {seconds}s, aborting", file=sys.stderr)
    os._exit(2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--big-mailbox", type=int, default=10000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600)
    opts = p.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, opts)))


if __name__ == "__main__":
    main()
