"""Child process of test_crash: delivers messages into an embedded store in a
loop and prints ``ACK <uid> <sha256> <message_id>`` after each ``deliver``
returns, until it is killed or has sent ``count`` messages.

Usage: python crash_child.py STORE_DIR COUNT SEED
"""

from __future__ import annotations

import hashlib
import random
import sys

from twisted.internet import defer, task

from mailserver.store import open_storage
from mailserver.store.interfaces import AccountExists, DeliveryTarget
from tests.store.helpers import make_raw, parsed

ACCOUNT = "crash@example.com"


async def main(reactor, path: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    storage = await open_storage({"backend": "embedded", "embedded": {"path": path}})
    try:
        await storage.accounts.create_account(ACCOUNT, "h")
    except AccountExists:
        pass
    inbox = await storage.mailboxes.get_mailbox(ACCOUNT, "INBOX")
    sent = await storage.mailboxes.get_mailbox(ACCOUNT, "Sent")
    print("READY", flush=True)
    for i in range(count):
        body = f"seed {seed} message {i}\r\n" + "z" * rng.randrange(100, 300_000)
        raw = make_raw(subject=f"crash {seed}/{i}", body=body + "\r\n")
        key = await storage.blobs.put(raw)
        msg = await storage.messages.store_message(key, parsed(raw))
        targets = [DeliveryTarget(inbox.id)]
        if i % 3 == 0:
            targets.append(DeliveryTarget(sent.id))
        recs = await storage.messages.deliver(msg, targets)
        digest = hashlib.sha256(raw).hexdigest()
        line = " ".join(f"{t.mailbox_id}:{r.uid}" for t, r in zip(targets, recs, strict=True))
        print(f"ACK {digest} {msg.message_id} {line}", flush=True)
    await storage.close()


if __name__ == "__main__":
    task.react(
        lambda reactor: defer.ensureDeferred(
            main(reactor, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
        )
    )
