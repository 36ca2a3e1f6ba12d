"""Two daemons share one cluster: a delivery, a flag change and an expunge
made through one reach subscribers on the other within 2 seconds, through
Redis pub/sub, with one Redis subscription per watched mailbox per daemon
however many sessions watch it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from mailserver.store import open_storage
from mailserver.store.cluster import _resp_encode, _resp_parse
from mailserver.store.interfaces import DeliveryTarget, FlagMode
from tests.cluster.harness import KEYSPACE, cluster_config, require_servers
from tests.store.helpers import make_raw, put_message

DEADLINE = 2.0  # seconds for a change to reach the other daemon


def test_resp_roundtrip_and_fragments():
    assert _resp_encode("PUBLISH", "c", b"x") == b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$1\r\nx\r\n"
    reply = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$-1\r\n:5\r\n+OK\r\n"
    value, pos = _resp_parse(reply)
    assert value == [b"message", b"ch", None]
    assert _resp_parse(reply, pos) == (5, pos + 4)
    for cut in range(1, 20):  # any prefix is incomplete, never misparsed
        with pytest.raises(Exception) as e:
            _resp_parse(reply[:cut])
        assert type(e.value).__name__ == "_Incomplete"


@pytest.fixture
def redis_port(tmp_path):
    """A private redis-server on a free loopback port (Debian's redis-server,
    in scripts/test-deps.txt); fails if it is not installed."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)", pytrace=False)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start", pytrace=False)
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


async def _wait_for(events: list, n: int, timeout: float) -> float:
    """Seconds until ``events`` has ``n`` entries (polled on the reactor)."""
    start = time.monotonic()
    while len(events) < n:
        assert time.monotonic() - start < timeout, f"only {len(events)} of {n} notifications"
        d: defer.Deferred = defer.Deferred()
        reactor.callLater(0.01, d.callback, None)
        await d
    return time.monotonic() - start


@pytest_twisted.ensureDeferred
async def test_change_on_one_daemon_reaches_the_other(redis_port):
    require_servers()
    notify = {"url": f"redis://127.0.0.1:{redis_port}"}
    prefix = f"notify-{os.getpid()}/"
    a = await open_storage({**cluster_config(prefix=prefix), "notify": notify})
    b = await open_storage({**cluster_config(prefix=prefix), "notify": notify})
    try:
        address = f"notify-{os.getpid()}-{int(time.time())}@example.test"
        await a.accounts.create_account(address, "{PLAIN}x")
        inbox = await a.mailboxes.get_mailbox(address, "INBOX")
        seen: list[str] = []
        # 200 idle sessions on daemon B watch the same mailbox.
        unsubs = [b.notifier.subscribe(inbox.id, seen.append) for _ in range(200)]
        assert b.notifier.subscribe_commands == 1
        await b.notifier.wait_subscribed(inbox.id)

        message = await put_message(a, make_raw(subject="cross daemon"))
        (rec,) = await a.messages.deliver(message, [DeliveryTarget(inbox.id)])
        took = await _wait_for(seen, 200, DEADLINE)
        changes = await b.messages.changes_since(inbox.id, rec.modseq - 1)
        assert [r.uid for r in changes.changed] == [rec.uid]

        await a.messages.store_flags(inbox.id, [rec.uid], ["\\Seen"], FlagMode.ADD)
        took = max(took, await _wait_for(seen, 400, DEADLINE))
        await a.messages.expunge(inbox.id, [rec.uid])
        took = max(took, await _wait_for(seen, 600, DEADLINE))
        changes = await b.messages.changes_since(inbox.id, rec.modseq)
        assert changes.expunged == (rec.uid,)
        assert took < DEADLINE

        for u in unsubs:
            u()
        await a.messages.deliver(message, [DeliveryTarget(inbox.id)])
        d = defer.Deferred()
        reactor.callLater(0.3, d.callback, None)
        await d
        assert len(seen) == 600  # unsubscribed sessions hear nothing more
        assert KEYSPACE  # same keyspace for both daemons
    finally:
        await a.close()
        await b.close()
