"""Interop with real download clients from Debian: fetchmail (STLS and
implicit TLS) and getmail6 (implicit TLS; getmail6 has no STLS for POP3),
with and without keep, delivering into a Maildir.

The server runs with the default policy (plaintext auth only over TLS), so
a client that did not really negotiate TLS could not log in at all.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.utils import getProcessOutputAndValue

from tests.pop3.conftest import deliver

USER, PASSWORD = "alice@example.test", "secret"


def _msg(n: int) -> bytes:
    return (
        f"From: bob@example.test\r\nTo: {USER}\r\nSubject: interop {n}\r\n"
        f"Message-ID: <interop{n}@example.test>\r\n\r\nbody of message {n}\r\n"
        f".a line with a leading dot\r\nend {n}\r\n"
    ).encode()


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed (scripts/test-deps.txt lists it: apt-get install)")
    return path


def _maildir(base: Path) -> Path:
    md = base / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True, exist_ok=True)
    return md


#: A minimal MDA (stdin -> Maildir/new): getmail_maildir and getmail's own
#: Maildir destination refuse to run as root, which CI containers are.
MDA = """import os, sys, time
md = sys.argv[1]
data = sys.stdin.buffer.read()
name = "%d.%d.mda" % (time.time_ns(), os.getpid())
with open(os.path.join(md, "tmp", name), "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
os.rename(os.path.join(md, "tmp", name), os.path.join(md, "new", name))
"""


def _mda(work: Path) -> list[str]:
    script = work / "mda.py"
    script.write_text(MDA)
    return [_need("python3"), str(script), str(work / "Maildir")]


def _delivered(md: Path) -> list[bytes]:
    return sorted(p.read_bytes() for sub in ("new", "cur") for p in (md / sub).iterdir())


def _assert_arrived(delivered: list[bytes], numbers: list[int], log: str = "") -> None:
    assert len(delivered) == len(numbers), log
    for n in numbers:
        body = _msg(n).replace(b"\r\n", b"\n")
        assert any(body in d for d in delivered), f"message {n} not delivered intact"


async def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=env)
    return code, (out + err).decode("utf-8", "replace")


async def fetchmail(server, work: Path, *, implicit_tls: bool, keep: bool) -> tuple[int, str]:
    binary = _need("fetchmail")
    _maildir(work)
    cert = server.ctx.config.tls.certificate
    port = server.tls_port if implicit_tls else server.port
    tls = "ssl" if implicit_tls else ""
    rc = work / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll 127.0.0.1 service {port} protocol POP3 uidl auth password\n"
        f'  user "{USER}" there with password "{PASSWORD}" is "root" here\n'
        f"  {'keep' if keep else 'nokeep'} no rewrite {tls}\n"
        f'  sslproto "TLS1.2+" sslcertck sslcertfile "{cert}" sslcommonname "localhost"\n'
        f'  mda "{" ".join(_mda(work))}"\n'
    )
    rc.chmod(0o600)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work)}
    env["FETCHMAILHOME"] = str(work)
    # Own pid file: as root fetchmail would lock /var/run/fetchmail.pid and
    # concurrent test runs would fail with "another fetchmail is running".
    argv = [binary, "-f", str(rc), "-N", "-d0", "-v", "--nosyslog"]
    return await _run(argv + ["--pidfile", str(work / "fetchmail.pid")], env)


async def getmail(server, work: Path, *, keep: bool) -> tuple[int, str]:
    binary = _need("getmail")
    _maildir(work)
    mda = _mda(work)
    rc = work / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        "server = 127.0.0.1\n"
        f"port = {server.tls_port}\n"
        f"username = {USER}\n"
        f"password = {PASSWORD}\n"
        f"ca_certs = {server.ctx.config.tls.certificate}\n"
        "[destination]\n"
        "type = MDA_external\n"
        f"path = {mda[0]}\n"
        f"arguments = ({mda[1]!r}, {mda[2]!r})\n"
        "allow_root_commands = true\n"
        "unixfrom = false\n"
        "[options]\n"
        "verbose = 2\n"
        "read_all = false\n"
        f"delete = {'false' if keep else 'true'}\n"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work)}
    return await _run([binary, f"--getmaildir={work}", f"--rcfile={rc}"], env)


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["stls", "tls"])
@pytest.mark.parametrize("keep", [True, False], ids=["keep", "nokeep"])
@pytest_twisted.ensureDeferred
async def test_fetchmail(pop3_tls_server, tmp_path, implicit_tls: bool, keep: bool) -> None:
    server = pop3_tls_server
    storage = server.ctx.storage
    inbox = await server.inbox_id()
    recs = [await deliver(server.ctx, USER, _msg(n)) for n in (1, 2)]
    before = (await storage.mailboxes.get_mailbox_by_id(inbox)).highestmodseq
    work = tmp_path / "fetchmail"
    work.mkdir()

    code, log = await fetchmail(server, work, implicit_tls=implicit_tls, keep=keep)
    assert code == 0, f"exit {code}: {log}"
    if not implicit_tls:
        assert "STLS" in log, log
    _assert_arrived(_delivered(work / "Maildir"), [1, 2], log)
    await server.sessions_finished()
    left = await server.inbox()
    if keep:
        # fetchmail downloads kept mail with "TOP n 99999999", which leaves
        # \Seen alone (RETR would set it).
        assert [r.uid for r in left] == [r.uid for r in recs]
        assert "TOP 1 99999999" in log and "RETR" not in log
        assert all("\\Seen" not in r.flags for r in left)
    else:
        assert left == []
        changes = await storage.messages.changes_since(inbox, before)
        assert changes.expunged == tuple(r.uid for r in recs)

    # A second run sees only what is new (UIDL kept across sessions).
    await deliver(server.ctx, USER, _msg(3))
    code, log = await fetchmail(server, work, implicit_tls=implicit_tls, keep=keep)
    assert code == 0, f"exit {code}: {log}"
    _assert_arrived(_delivered(work / "Maildir"), [1, 2, 3], log)
    await server.sessions_finished()
    assert len(await server.inbox()) == (3 if keep else 0)


@pytest.mark.parametrize("keep", [True, False], ids=["keep", "nokeep"])
@pytest_twisted.ensureDeferred
async def test_getmail(pop3_tls_server, tmp_path, keep: bool) -> None:
    server = pop3_tls_server
    recs = [await deliver(server.ctx, USER, _msg(n)) for n in (1, 2)]
    work = tmp_path / "getmail"
    work.mkdir()

    code, log = await getmail(server, work, keep=keep)
    assert code == 0, f"exit {code}: {log}"
    _assert_arrived(_delivered(work / "Maildir"), [1, 2], log)
    await server.sessions_finished()
    left = await server.inbox()
    assert [r.uid for r in left] == ([r.uid for r in recs] if keep else [])

    await deliver(server.ctx, USER, _msg(3))
    code, log = await getmail(server, work, keep=keep)
    assert code == 0, f"exit {code}: {log}"
    _assert_arrived(_delivered(work / "Maildir"), [1, 2, 3], log)
    await server.sessions_finished()
    assert len(await server.inbox()) == (3 if keep else 0)
