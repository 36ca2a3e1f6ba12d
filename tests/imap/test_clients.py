"""Real IMAP clients from Debian against ``services(ctx)`` on port 0:
``mbsync`` (isync) syncing both ways, ``offlineimap`` (offlineimap3) and
``mutt`` in batch mode reading and moving mail.

Each client runs as a subprocess in a thread (the reactor keeps serving);
tests assert its exit code, that its log shows no protocol error, and what
the store holds afterwards.  A missing client is a failure naming the Debian
package (scripts/test-deps.txt lists them), never a skip.
"""

from __future__ import annotations

import hashlib
import os
import pty
import re
import select
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.imap.test_interop import ALICE, PW, msg, start_server, stop_server
from tests.support import certificate_path

pytestmark = pytest.mark.slow

#: what a client's log must not contain (protocol errors from either side)
PROTOCOL_ERRORS = re.compile(
    rb"(?i)(\bBAD\b|protocol error|unexpected|parse error|unable to parse|"
    rb"malformed|IMAP error|Error: |< b'\S+ NO )"
)


def need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    assert path, f"{binary} not installed: apt-get install {package} (see scripts/test-deps.txt)"
    return path


def run(args, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("timeout", 120)
    return threads.deferToThread(subprocess.run, args, **kw)


async def mailbox_state(ctx, mailbox: str) -> list[tuple[int, frozenset[str], bytes]]:
    """(uid, flags, subject) of each message in a mailbox of alice."""
    info = await ctx.storage.mailboxes.get_mailbox(ALICE, mailbox)
    assert info is not None, mailbox
    out = []
    for rec in await ctx.storage.messages.list_messages(info.id):
        stored = await ctx.storage.messages.get_message(rec.message_id)
        out.append((rec.uid, rec.flags, (stored.parsed.envelope.subject or "").encode()))
    return out


def subjects(state) -> list[bytes]:
    return sorted(s for _, _, s in state)


def maildir_files(root: Path) -> dict[str, list[Path]]:
    """{folder: [message files]} of a Maildir++/verbatim tree."""
    out: dict[str, list[Path]] = {}
    for d in root.rglob("cur"):
        folder = str(d.parent.relative_to(root))
        out[folder] = sorted(list(d.iterdir()) + list((d.parent / "new").iterdir()))
    return out


def subject_of(path: Path) -> bytes:
    m = re.search(rb"(?m)^Subject: (.*?)\r?$", path.read_bytes())
    return m.group(1) if m else b""


def assert_clean_log(name: str, log: bytes) -> None:
    bad = [
        line
        for line in log.splitlines()
        if PROTOCOL_ERRORS.search(line) or re.match(rb"^(\S+) (NO|BAD)\b", line)
    ]
    assert not bad, f"{name} log shows errors:\n" + b"\n".join(bad).decode("utf-8", "replace")


# -- mbsync -------------------------------------------------------------------------


def mbsyncrc(tmp: Path, port: int) -> Path:
    rc = tmp / "mbsyncrc"
    (tmp / "mail").mkdir(exist_ok=True)
    rc.write_text(
        f"""IMAPAccount test
Host 127.0.0.1
Port {port}
User {ALICE}
Pass "{PW}"
SSLType STARTTLS
SystemCertificates no
CertificateFile {certificate_path()}
AuthMechs PLAIN

IMAPStore remote
Account test

MaildirStore local
Path {tmp}/mail/
Inbox {tmp}/mail/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
Remove None
Sync All
SyncState *
"""
    )
    return rc


@pytest_twisted.ensureDeferred
async def test_mbsync_syncs_both_ways(tmp_path):
    mbsync = need("mbsync", "isync")
    server = await start_server(tmp_path / "srv")
    try:
        for i in range(3):
            await server.deliver(msg(f"inbox {i}", f"text {i}\r\n"))
        await server.deliver(msg("archived"), "Archive")
        rc = mbsyncrc(tmp_path, server.port)
        res = await run([mbsync, "-Dn", "-c", str(rc), "-a"])
        log = res.stdout + res.stderr
        assert res.returncode == 0, log.decode()
        assert_clean_log("mbsync", log)
        local = maildir_files(tmp_path / "mail")
        assert sorted(subject_of(p) for p in local["INBOX"]) == [b"inbox 0", b"inbox 1", b"inbox 2"]
        assert [subject_of(p) for p in local["Archive"]] == [b"archived"]
        assert "Sent" in local and "Trash" in local

        # near-side changes: a new message in Sent, one message read, one deleted
        sent_new = tmp_path / "mail" / "Sent" / "new" / "1700000000.1.local"
        sent_new.write_bytes(msg("written locally"))
        inbox = sorted(local["INBOX"], key=subject_of)
        read_file = inbox[0]
        base = read_file.name.split(":2,")[0]
        read_file.rename(read_file.parent.parent / "cur" / f"{base}:2,S")
        deleted = inbox[1]
        deleted.rename(deleted.parent.parent / "cur" / (deleted.name.split(":2,")[0] + ":2,T"))
        # a far-side change too
        await server.deliver(msg("arrived later"))

        res = await run([mbsync, "-Dn", "-c", str(rc), "-a"])
        log = res.stdout + res.stderr
        assert res.returncode == 0, log.decode()
        assert_clean_log("mbsync", log)
        Path("/tmp/mbsync2.log").write_bytes(log)
        assert b"APPEND" in log and b"UID STORE" in log  # it really pushed

        inbox_state = await mailbox_state(server.ctx, "INBOX")
        assert subjects(inbox_state) == [b"arrived later", b"inbox 0", b"inbox 2"]
        flags = {s: f for _, f, s in inbox_state}
        assert "\\Seen" in flags[b"inbox 0"] and "\\Seen" not in flags[b"inbox 2"]
        assert subjects(await mailbox_state(server.ctx, "Sent")) == [b"written locally"]
        local = maildir_files(tmp_path / "mail")
        assert sorted(subject_of(p) for p in local["INBOX"]) == [
            b"arrived later",
            b"inbox 0",
            b"inbox 2",
        ]
    finally:
        await stop_server(server)


# -- offlineimap ------------------------------------------------------------------------


def cert_fingerprint() -> str:
    pem = Path(certificate_path()).read_text()
    der = ssl.PEM_cert_to_DER_cert(pem)
    return hashlib.sha512(der).hexdigest()


@pytest_twisted.ensureDeferred
async def test_offlineimap_syncs_both_ways(tmp_path):
    offlineimap = need("offlineimap", "offlineimap3")
    server = await start_server(tmp_path / "srv")
    try:
        for i in range(2):
            await server.deliver(msg(f"oi {i}"))
        rc = tmp_path / "offlineimaprc"
        rc.write_text(
            f"""[general]
accounts = test
metadata = {tmp_path}/meta
ui = basic

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {tmp_path}/mail

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {server.tls_port}
remoteuser = {ALICE}
remotepass = {PW}
ssl = yes
cert_fingerprint = {cert_fingerprint()}
"""
        )
        log_file = str(tmp_path / "oi.log")
        # "-d imap" logs the IMAP conversation, so a NO/BAD answer shows up
        args = [offlineimap, "-c", str(rc), "-o", "-d", "imap", "-u", "basic", "-l", log_file]
        res = await run(args)
        log = res.stdout + res.stderr + (tmp_path / "oi.log").read_bytes()
        assert res.returncode == 0, log.decode()
        assert_clean_log("offlineimap", log)
        local = maildir_files(tmp_path / "mail")
        assert sorted(subject_of(p) for p in local["INBOX"]) == [b"oi 0", b"oi 1"]
        # push a local message and a flag change back
        (tmp_path / "mail" / "Drafts" / "new" / "1700000001.2.local").write_bytes(msg("oi draft"))
        f = sorted(local["INBOX"], key=subject_of)[0]
        f.rename(f.parent.parent / "cur" / (f.name.split(":2,")[0] + ":2,FS"))
        res = await run(args)
        log = res.stdout + res.stderr + (tmp_path / "oi.log").read_bytes()
        assert res.returncode == 0, log.decode()
        assert_clean_log("offlineimap", log)
        assert subjects(await mailbox_state(server.ctx, "Drafts")) == [b"oi draft"]
        flags = {s: f for _, f, s in await mailbox_state(server.ctx, "INBOX")}
        assert {"\\Seen", "\\Flagged"} <= flags[b"oi 0"]
    finally:
        await stop_server(server)


# -- mutt -------------------------------------------------------------------------------


def run_in_pty(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, bytes]:
    """Run a full-screen program on a pseudo terminal; returns (exit code, screen output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"{args[0]} did not finish; screen:\n{out[-3000:]!r}")
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(), out
    finally:
        os.close(master)


@pytest_twisted.ensureDeferred
async def test_mutt_reads_and_moves_mail(tmp_path):
    mutt = need("mutt", "mutt")
    server = await start_server(tmp_path / "srv")
    try:
        await server.deliver(msg("keep me", "first body\r\n"))
        await server.deliver(msg("move me", "second body\r\n"))
        home = tmp_path / "home"
        home.mkdir()
        muttrc = home / "muttrc"
        muttrc.write_text(
            f"""set folder="imaps://127.0.0.1:{server.tls_port}/"
set spoolfile="+INBOX"
set imap_user="{ALICE}"
set imap_pass="{PW}"
set certificate_file="{home}/certs"
set ssl_verify_host=no
set ssl_force_tls=yes
set imap_check_subscribed=no
set mbox_type=Maildir
set move=no
set delete=yes
set quit=yes
set confirmappend=no
set confirmcreate=no
set mark_old=no
set wait_key=no
set beep=no
set pager_stop=yes
set header_cache=""
set message_cachedir=""
set sort=subject
"""
        )
        # trust the server certificate as mutt's "accepted certificates" file
        shutil.copy(certificate_path(), home / "certs")
        env = {
            "HOME": str(home),
            "TERM": "xterm",
            "LANG": "C.UTF-8",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        # read "keep me" (sorted by subject it is first), then tag "move me"
        # and save it to Archive, sync and quit
        keys = (
            "<display-message><exit>"
            "<tag-pattern>~s move<enter>"
            "<tag-prefix><save-message>=Archive<enter>"
            "<sync-mailbox><quit>"
        )
        args = [mutt, "-n", "-F", str(muttrc), "-d", "2", "-e", f"push '{keys}'"]
        code, screen = await threads.deferToThread(run_in_pty, args, env)
        debug = b"".join(p.read_bytes() for p in home.glob(".muttdebug*"))
        assert code == 0, screen[-3000:]
        # mutt's debug log has the IMAP conversation; no BAD answers in it
        server_bad = [
            line for line in debug.splitlines() if re.search(rb"\d< \S+ (BAD|NO)\b", line)
        ]
        assert not server_bad, b"\n".join(server_bad).decode()
        assert b"UID COPY 2" in debug and b"* 2 EXPUNGE" in debug  # it really moved
        inbox = await mailbox_state(server.ctx, "INBOX")
        assert subjects(inbox) == [b"keep me"]
        assert "\\Seen" in inbox[0][1]
        assert subjects(await mailbox_state(server.ctx, "Archive")) == [b"move me"]
    finally:
        await stop_server(server)
