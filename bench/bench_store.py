"""Deliveries per second into the embedded store.

One delivery = ``blobs.put`` (fsynced file + directory) + ``store_message``
+ ``deliver`` (one SQLite transaction, WAL fsynced), i.e. exactly what an SMTP
250 waits for.  Runs (1, 10 recipients) x (10 KB, 1 MB) messages, each serially
and with several deliveries in flight, for a fixed time per case.

Usage: python bench/bench_store.py [--seconds 1.5] [--concurrency 8] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from twisted.internet import defer, task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mailserver.mail.parse import parse_message  # noqa: E402
from mailserver.store import open_storage  # noqa: E402
from mailserver.store.interfaces import DeliveryTarget  # noqa: E402


def make_message(size: int) -> bytes:
    head = (
        b"From: Bench <bench@example.org>\r\nTo: rcpt@example.com\r\n"
        b"Subject: benchmark\r\nX-Seq: 000000000000\r\n"
        b"Content-Type: text/plain\r\n\r\n"
    )
    line = b"The quick brown fox jumps over the lazy dog 0123456789.\r\n"
    body = (line * (size // len(line) + 1))[: size - len(head)]
    return head + body


async def run_case(
    base: str, recipients: int, size: int, seconds: float, concurrency: int
) -> tuple[float, int]:
    path = tempfile.mkdtemp(dir=base)
    storage = await open_storage({"backend": "embedded", "embedded": {"path": path}})
    try:
        inboxes = []
        for i in range(recipients):
            await storage.accounts.create_account(f"user{i}@example.com", "x")
            inboxes.append(
                (await storage.mailboxes.get_mailbox(f"user{i}@example.com", "INBOX")).id
            )
        template = make_message(size)
        parsed = parse_message(template)  # parsing is not what we measure
        targets = [DeliveryTarget(m) for m in inboxes]
        seq = 0
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal seq, done
            while time.perf_counter() < deadline:
                seq += 1
                raw = template.replace(b"X-Seq: 000000000000", b"X-Seq: %012d" % seq, 1)
                key = await storage.blobs.put(raw)
                msg = await storage.messages.store_message(key, parsed)
                await storage.messages.deliver(msg, targets)
                done += 1

        start = time.perf_counter()
        await defer.gatherResults(
            [defer.Deferred.fromCoroutine(worker()) for _ in range(concurrency)],
            consumeErrors=True,
        )
        elapsed = time.perf_counter() - start
        return done / elapsed, done
    finally:
        await storage.close()
        shutil.rmtree(path, ignore_errors=True)


async def main(reactor, args: argparse.Namespace) -> None:
    base = args.dir or tempfile.mkdtemp(prefix="bench-store-")
    os.makedirs(base, exist_ok=True)
    print(f"embedded store in {base}, {args.seconds:.1f} s per case")
    print(
        f"{'recipients':>10} {'size':>7} {'in flight':>9} {'deliveries/s':>13} {'rcpt/s':>9} {'MB/s':>7}"
    )
    try:
        for recipients in (1, 10):
            for size, label in ((10 * 1024, "10 KB"), (1024 * 1024, "1 MB")):
                for conc in (1, args.concurrency):
                    rate, _n = await run_case(base, recipients, size, args.seconds, conc)
                    print(
                        f"{recipients:>10} {label:>7} {conc:>9} {rate:>13.1f} "
                        f"{rate * recipients:>9.1f} {rate * size / 1e6:>7.1f}",
                        flush=True,
                    )
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--dir", help="directory on the disk to measure (default: a temp dir)")
    args = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, args)))
