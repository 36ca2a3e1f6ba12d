"""SMTP ingest: messages per second accepted *and durably delivered*.

Our daemon (``mailserver.service.start_server``, embedded store, the MX
listener) runs in a child process; the same load generator then drives an
isolated Postfix from Debian delivering into a Maildir via virtual(8) on the
same machine (tests/smtp/postfix.py).  Cells: 10 KB, 100 KB and 1 MB
messages, 1 and 20 concurrent sessions, a few seconds each.

- ours: 250 after DATA means stored and fsynced (blob + SQLite commit), so
  the rate is accepted messages / elapsed;
- Postfix: 250 means queued (fsynced queue file); delivery to the Maildir
  follows, so the rate is accepted messages / time until the last one is a
  file in Maildir/new.

The load generator is one OS process per session (no shared GIL with each
other or with the server), pipelining MAIL/RCPT/DATA as RFC 2920 allows.

    .venv/bin/python bench/bench_smtp.py [--seconds 3] [--sizes 10,100,1000]
        [--sessions 1,20] [--only ours|postfix]

Must run as root for the Postfix half.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RCPT = "bench@example.test"


def make_message(size_kb: int, seq: int = 0) -> bytes:
    head = (
        f"From: load@client.test\r\nTo: {RCPT}\r\nSubject: bench {size_kb} KB\r\n"
        f"Message-ID: <{seq}.{size_kb}@client.test>\r\n"
        "Date: Fri, 04 Dec 2026 21:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n"
    body = line * max(1, (size_kb * 1024 - len(head)) // len(line))
    return head + body


# -- load generator ------------------------------------------------------------


class _Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""

    def reply(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            while i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2 :]
                if line[3:4] != b"-":
                    return line
                i = self.buf.find(b"\r\n")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed")
            self.buf += chunk


def _session(
    port: int, size_kb: int, seconds: float, start_at: float, out: multiprocessing.Queue
) -> None:
    msg = make_message(size_kb)
    assert b"\r\n." not in msg
    c = _Conn(port)
    c.reply()
    c.sock.sendall(b"EHLO load.client.test\r\n")
    c.reply()
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    n = 0
    errors = 0
    while time.time() < end:
        c.sock.sendall(
            b"MAIL FROM:<load@client.test>\r\nRCPT TO:<" + RCPT.encode() + b">\r\nDATA\r\n"
        )
        r1, r2, r3 = c.reply(), c.reply(), c.reply()
        if not (r1.startswith(b"250") and r2.startswith(b"250") and r3.startswith(b"354")):
            errors += 1
            c.sock.sendall(b"RSET\r\n")
            c.reply()
            continue
        c.sock.sendall(msg + b".\r\n")
        if c.reply().startswith(b"250"):
            n += 1
        else:
            errors += 1
    finished = time.time()
    c.sock.sendall(b"QUIT\r\n")
    out.put((n, errors, finished))


def drive(port: int, size_kb: int, sessions: int, seconds: float) -> tuple[int, int, float, float]:
    """Returns (accepted, errors, start, end of the last session)."""
    q: multiprocessing.Queue = multiprocessing.Queue()
    start_at = time.time() + 0.5
    procs = [
        multiprocessing.Process(target=_session, args=(port, size_kb, seconds, start_at, q))
        for _ in range(sessions)
    ]
    for p in procs:
        p.start()
    results = [q.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    return (
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        start_at,
        max(r[2] for r in results),
    )


# -- our daemon in a child process ----------------------------------------------


def serve(state_dir: str) -> None:
    """Child: run the real daemon and print the MX port."""
    from twisted.internet import defer, reactor

    from mailserver.config import make_test_config
    from mailserver.service import start_server

    config = make_test_config(
        state_dir,
        server={"hostname": "mx.example.test", "local_domains": ["example.test"]},
        limits={"max_connections_per_ip": 200, "max_connections": 1000},
        imap={"listen": [], "tls_listen": []},
        pop3={"listen": [], "tls_listen": []},
    )

    async def main() -> None:
        svc = await start_server(config, reactor)
        await svc.ctx.storage.accounts.create_account(RCPT, "!bench-no-login")
        port = next(p for name, _h, p in svc.listening() if name.startswith("smtp-mx"))
        print(f"PORT {port}", flush=True)

    defer.ensureDeferred(main()).addErrback(lambda f: (f.printTraceback(), reactor.stop()))
    reactor.run()


def bench_ours(
    sizes: list[int], sessions: list[int], seconds: float
) -> dict[tuple[int, int], float]:
    results = {}
    for size in sizes:
        for n in sessions:
            with tempfile.TemporaryDirectory(prefix="bench-smtp-") as state:
                proc = subprocess.Popen(
                    [sys.executable, __file__, "--serve", state],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                try:
                    line = proc.stdout.readline()  # type: ignore[union-attr]
                    if not line.startswith("PORT "):
                        raise RuntimeError(f"daemon did not start: {line!r}")
                    port = int(line.split()[1])
                    cpu0 = _cpu_seconds(proc.pid)
                    accepted, errors, start, end = drive(port, size, n, seconds)
                    cpu = _cpu_seconds(proc.pid) - cpu0
                finally:
                    proc.terminate()
                    proc.wait(30)
            rate = accepted / (end - start)
            results[(size, n)] = rate
            print(
                f"  ours     {size:5d} KB x {n:2d} sessions: {accepted:6d} msgs "
                f"{rate:8.1f} msg/s  {rate * size / 1024:7.1f} MB/s  errors={errors}  "
                f"server CPU {1000 * cpu / max(1, accepted):6.2f} ms/msg",
                flush=True,
            )
    return results


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far:
    unlike msg/s it hardly moves when other work shares the machine."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_postfix(
    sizes: list[int], sessions: list[int], seconds: float
) -> dict[tuple[int, int], float]:
    from tests.smtp.postfix import PostfixInstance

    results = {}
    for size in sizes:
        for n in sessions:
            pf = PostfixInstance(maildir_domain="example.test")
            try:
                pf.start()
                accepted, errors, start, _end = drive(pf.port, size, n, seconds)
                deadline = time.time() + 300
                while pf.maildir_count() < accepted:
                    if time.time() > deadline:
                        raise RuntimeError(
                            f"postfix delivered {pf.maildir_count()} of {accepted}:\n{pf.read_log()}"
                        )
                    time.sleep(0.01)
                done = time.time()
            finally:
                pf.stop()
            rate = accepted / (done - start)
            results[(size, n)] = rate
            print(
                f"  postfix  {size:5d} KB x {n:2d} sessions: {accepted:6d} msgs "
                f"{rate:8.1f} msg/s  {rate * size / 1024:7.1f} MB/s  errors={errors}",
                flush=True,
            )
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--sizes", default="10,100,1000", help="message sizes in KB")
    ap.add_argument("--sessions", default="1,20")
    ap.add_argument("--only", choices=("ours", "postfix"))
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    sizes = [int(x) for x in args.sizes.split(",")]
    sessions = [int(x) for x in args.sessions.split(",")]
    print(f"SMTP ingest, {args.seconds:.0f} s per cell, durable delivery, {os.cpu_count()} CPUs")
    ours = postfix = {}
    if args.only in (None, "ours"):
        ours = bench_ours(sizes, sessions, args.seconds)
    if args.only in (None, "postfix"):
        postfix = bench_postfix(sizes, sessions, args.seconds)
    if ours and postfix:
        print("\n  size    sessions   ours msg/s   postfix msg/s   ours/postfix")
        for key in ours:
            print(
                f"  {key[0]:5d} KB  {key[1]:4d}     {ours[key]:10.1f}   {postfix[key]:13.1f}"
                f"   {ours[key] / postfix[key]:12.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
