"""POP3 on a large maildrop: login (lock + message list), STAT, LIST and UIDL
of a 10,000-message INBOX over a real TCP connection, on the embedded store.

Shows that none of these reads a message body: the blob store is wrapped and
every ``get`` / ``get_range`` is counted (a final RETR shows the counter
works).

    .venv/bin/python bench/bench_pop3.py [--messages 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import poplib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.threads import deferToThread  # noqa: E402

from mailserver.config import make_test_config  # noqa: E402
from mailserver.context import ServerContext  # noqa: E402
from mailserver.mail.parse import parse_message  # noqa: E402
from mailserver.pop3.maildrop import Maildrop  # noqa: E402
from mailserver.pop3.service import services  # noqa: E402
from mailserver.store import open_storage  # noqa: E402
from mailserver.store.interfaces import DeliveryTarget  # noqa: E402

USER, PASSWORD = "bench@example.test", "bench-password"


class CountingBlobs:
    """Wraps a BlobStore and counts body reads."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gets = 0
        self.ranges = 0

    async def get(self, key: str) -> bytes:
        self.gets += 1
        return await self.inner.get(key)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        self.ranges += 1
        return await self.inner.get_range(key, start, end)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _message(i: int) -> bytes:
    body = "".join(f"line {n} of message {i}\r\n" for n in range(40))
    return (
        f"From: sender{i % 97}@example.test\r\nTo: {USER}\r\nSubject: bench {i}\r\n"
        f"Message-ID: <bench{i}@example.test>\r\n\r\n{body}"
    ).encode()


async def fill(ctx: ServerContext, count: int, distinct: int = 50, batch: int = 200) -> float:
    storage = ctx.storage
    inbox = await storage.mailboxes.get_mailbox(USER, "INBOX")
    stored = []
    for i in range(distinct):
        raw = _message(i)
        key = await storage.blobs.put(raw)
        stored.append(await storage.messages.store_message(key, parse_message(raw)))
    t0 = time.perf_counter()
    done = 0
    while done < count:
        n = min(batch, count - done)
        # One transaction per call; the same content may be appended many times.
        for j in range(n):
            await storage.messages.deliver(
                stored[(done + j) % distinct], [DeliveryTarget(inbox.id)]
            )
        done += n
    return time.perf_counter() - t0


def client_round(port: int) -> dict[str, float]:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    p = poplib.POP3("127.0.0.1", port, timeout=60)
    p.user(USER)
    p.pass_(PASSWORD)
    timings["login"] = time.perf_counter() - t0
    for name, fn in (("STAT", p.stat), ("LIST", p.list), ("UIDL", p.uidl)):
        t0 = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - t0
        if name != "STAT":
            timings[name + "_lines"] = len(result[1])
    p.quit()
    return timings


def retr_one(port: int) -> int:
    p = poplib.POP3("127.0.0.1", port, timeout=60)
    p.user(USER)
    p.pass_(PASSWORD)
    _, lines, octets = p.retr(1)
    p.quit()
    return octets


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-pop3-") as tmp:
        config = make_test_config(tmp, accounts={"allow_plaintext_auth": True})
        storage = await open_storage(
            {"backend": "embedded", "embedded": {"path": str(Path(tmp) / "store")}}
        )
        ctx = ServerContext.build(config, storage)
        # The configured default (argon2id, tens of ms), as a real account has.
        await storage.accounts.create_account(USER, await ctx.auth.hash(PASSWORD))
        fill_s = await fill(ctx, args.messages)
        opens = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            drop = await Maildrop.open(storage, USER)
            drop.entries()
            opens.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await ctx.auth.authenticate(USER, PASSWORD)
        auth_s = time.perf_counter() - t0
        counting = CountingBlobs(storage.blobs)
        storage.blobs = counting  # every body read from now on is counted
        listeners = [s for s in services(ctx) if not s.implicit_tls]
        listeners[0].startService()
        port = listeners[0].address[1]
        try:
            rounds = [await deferToThread(client_round, port) for _ in range(args.rounds)]
            reads_listing = counting.gets + counting.ranges
            octets = await deferToThread(retr_one, port)
            reads_after_retr = counting.gets + counting.ranges
        finally:
            await listeners[0].stopService()
            await storage.close()

    print(f"POP3 large maildrop: {args.messages} messages in INBOX (embedded store)")
    print(f"  fill: {fill_s:.1f} s ({args.messages / fill_s:.0f} deliveries/s)")
    print(f"  rounds: {args.rounds} (median / min, over a real TCP connection)")
    print(
        f"  maildrop open (list_messages + entries, in process): "
        f"{statistics.median(opens) * 1000:.1f} ms; password check alone: {auth_s * 1000:.1f} ms"
    )
    for name in ("login", "STAT", "LIST", "UIDL"):
        values = [r[name] for r in rounds]
        print(
            f"  {name:6s} {statistics.median(values) * 1000:8.1f} ms  "
            f"(min {min(values) * 1000:.1f} ms)"
        )
    print(f"  LIST lines: {rounds[0]['LIST_lines']}, UIDL lines: {rounds[0]['UIDL_lines']}")
    print(f"  blob reads during login/STAT/LIST/UIDL: {reads_listing}")
    print(f"  blob reads after one RETR ({octets} octets): {reads_after_retr}")
    if reads_listing != 0:
        raise SystemExit("FAIL: listing read message bodies")
    if reads_after_retr != 1:
        raise SystemExit("FAIL: the blob counter did not see the RETR")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    ns = parser.parse_args()
    task.react(lambda _r: defer.Deferred.fromCoroutine(main(ns)))
