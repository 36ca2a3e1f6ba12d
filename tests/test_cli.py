"""The ``mailserver`` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted

from mailserver.accounts import make_context
from mailserver.cli import parse_size
from mailserver.store import open_storage

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "mailserver"
BASE = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "mailserver.cli"]


@pytest.fixture
def conf(tmp_path) -> Path:
    """A copy of the default config with state under tmp_path and every
    listener on a free port."""
    text = (REPO / "conf" / "mailserver.toml").read_text()
    text = text.replace('state_dir = "../var"', 'state_dir = "var"')
    text = re.sub(r'"127\.0\.0\.1:\d+"', '"127.0.0.1:0"', text)
    p = tmp_path / "mailserver.toml"
    p.write_text(text)
    return p


def ms(*args: str, stdin: str | None = None, cwd: Path | None = None, env=None):
    full_env = {k: v for k, v in os.environ.items() if k != "MAILSERVER_CONFIG"}
    full_env.update(env or {})
    return subprocess.run(
        [*BASE, *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=full_env,
    )


async def stored_account(conf: Path, address: str):
    storage = await open_storage(
        {"backend": "embedded", "embedded": {"path": str(conf.parent / "var" / "store")}}
    )
    try:
        return await storage.accounts.get_account(address)
    finally:
        await storage.close()


def test_check_config_ok():
    r = ms("check-config", str(REPO / "conf" / "mailserver.toml"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("OK (storage: embedded, state_dir: " + str(REPO / "var") + ")")


def test_check_config_typo_names_file_and_key(conf):
    conf.write_text(conf.read_text().replace("max_recipients =", "max_recipient ="))
    r = ms("check-config", str(conf))
    assert r.returncode == 1
    assert f"{conf}:limits.max_recipient: unknown key (did you mean 'max_recipients'?)" in r.stderr
    assert r.stdout == ""


def test_check_config_default_path_from_env(conf):
    r = ms("check-config", env={"MAILSERVER_CONFIG": str(conf)})
    assert r.returncode == 0 and str(conf) in r.stdout


def test_invalid_config_stops_every_command(conf):
    conf.write_text("[smtp]\nmx_listen = [25]\n")
    r = ms("user", "list", "-c", str(conf))
    assert r.returncode == 1
    assert f"{conf}:smtp.mx_listen: must be a string 'host:port'" in r.stderr


def test_missing_config_file(tmp_path):
    r = ms("user", "list", "-c", str(tmp_path / "none.toml"))
    assert r.returncode == 1 and "config file not found" in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["serve"],
        ["check-config"],
        ["user"],
        ["user", "add"],
        ["user", "passwd"],
        ["user", "del"],
        ["mailbox", "list"],
        ["run-dev"],
        ["init-storage"],
        ["gc"],
    ],
)
def test_help(args):
    r = ms(*args, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: mailserver")


def test_unknown_command_is_a_usage_error():
    r = ms("frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr


@pytest_twisted.ensureDeferred
async def test_user_lifecycle(conf):
    c = ["-c", str(conf)]
    r = ms("init-storage", *c)
    assert r.returncode == 0 and "storage ready: embedded" in r.stdout, r.stderr

    r = ms(
        "user", "add", "Alice@Example.test", "--quota", "10M", "--alias", "al@example.test",
        "--password-stdin", *c, stdin="first secret\n",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "created alice@example.test"
    acct = await stored_account(conf, "alice@example.test")
    assert acct.quota_bytes == 10 * 1024 * 1024 and acct.aliases == ("al@example.test",)
    assert acct.password_hash.startswith("$argon2")
    assert make_context().verify("first secret", acct.password_hash)

    r = ms("user", "add", "alice@example.test", *c, stdin="x\n")
    assert r.returncode == 1 and "account alice@example.test already exists" in r.stderr
    r = ms("user", "add", "bob@elsewhere.test", *c, stdin="x\n")
    assert r.returncode == 1 and "not in server.local_domains" in r.stderr
    r = ms("user", "add", "not-an-address", *c, stdin="x\n")
    assert r.returncode == 1 and "is not a valid address" in r.stderr
    r = ms("user", "add", "carol@example.test", *c, stdin="")
    assert r.returncode == 1 and "no password on stdin" in r.stderr

    r = ms("user", "list", *c)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ADDRESS", "QUOTA", "USED", "MESSAGES", "ALIASES", "STATUS"]
    assert lines[1].split() == [
        "alice@example.test",
        "10.0M",
        "0B",
        "0",
        "al@example.test",
        "active",
    ]

    r = ms("mailbox", "list", "alice@example.test", *c)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0] == ["NAME", "MESSAGES", "UNSEEN", "UIDVALIDITY", "UIDNEXT", "SPECIAL-USE"]
    by_name = {row[0]: row for row in rows[1:]}
    assert set(by_name) == {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}
    assert by_name["INBOX"][1:3] == ["0", "0"] and by_name["INBOX"][4] == "1"
    assert by_name["Sent"][5] == "\\Sent"
    r = ms("mailbox", "list", "nobody@example.test", *c)
    assert r.returncode == 1 and "no such account: nobody@example.test" in r.stderr

    r = ms("user", "passwd", "al@example.test", *c, stdin="second secret\n")
    assert r.returncode == 0 and "password of alice@example.test changed" in r.stdout
    acct = await stored_account(conf, "alice@example.test")
    assert make_context().verify("second secret", acct.password_hash)
    assert not make_context().verify("first secret", acct.password_hash)
    r = ms("user", "passwd", "zed@example.test", *c, stdin="x\n")
    assert r.returncode == 1 and "no such account" in r.stderr

    r = ms("user", "del", "alice@example.test", *c)
    assert r.returncode == 1 and "--yes" in r.stderr
    assert await stored_account(conf, "alice@example.test") is not None
    r = ms("user", "del", "alice@example.test", "--yes", *c)
    assert r.returncode == 0 and "deleted alice@example.test" in r.stdout
    assert await stored_account(conf, "alice@example.test") is None
    r = ms("user", "list", *c)
    assert r.stdout.splitlines()[1:] == []


@pytest_twisted.ensureDeferred
async def test_gc_removes_unreferenced_bodies(conf):
    storage = await open_storage(
        {"backend": "embedded", "embedded": {"path": str(conf.parent / "var" / "store")}}
    )
    try:
        key = await storage.blobs.put(b"Subject: orphan\r\n\r\nnobody references me\r\n")
    finally:
        await storage.close()
    r = ms("gc", "-c", str(conf))  # default grace: the body is too young
    assert r.returncode == 0 and r.stdout.strip() == "removed 0 unreferenced message bodies"
    r = ms("gc", "--grace", "0", "-c", str(conf))
    assert r.returncode == 0 and r.stdout.strip() == "removed 1 unreferenced message bodies"
    storage = await open_storage(
        {"backend": "embedded", "embedded": {"path": str(conf.parent / "var" / "store")}}
    )
    try:
        assert key not in await storage.blobs.keys()
    finally:
        await storage.close()


def test_password_is_not_accepted_on_the_command_line(conf):
    r = ms("user", "add", "dan@example.test", "--password", "x", "-c", str(conf))
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr


def test_parse_size():
    assert parse_size("0") == 0
    assert parse_size("1500") == 1500
    assert parse_size("10M") == 10 * 1024**2
    assert parse_size("2g") == 2 * 1024**3
    assert parse_size("5KiB") == 5 * 1024
    with pytest.raises(Exception, match="not a size"):
        parse_size("ten")


# -- make run, equivalently --------------------------------------------------


def run_dev_until_login(conf: Path, timeout: float = 60) -> tuple[str, str, str]:
    """Start ``mailserver run-dev``, wait for the demo line, SIGTERM it, and
    return (address, password, stderr).  Asserts a clean exit."""
    proc = subprocess.Popen(
        [*BASE, "run-dev", "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in out:
            left = deadline - time.monotonic()
            assert left > 0, f"no demo line within {timeout}s; stdout so far {out!r}"
            if sel.select(left):
                chunk = os.read(proc.stdout.fileno(), 4096)
                assert chunk, f"run-dev exited early: {proc.wait()} {proc.stderr.read()!r}"
                out += chunk
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = (out + rest).decode().splitlines()
    assert proc.returncode == 0, err.decode()
    assert len(lines) == 1, lines
    m = re.fullmatch(r"demo login: (\S+@\S+) (\S+)", lines[0])
    assert m, lines
    return m.group(1), m.group(2), err.decode()


@pytest_twisted.ensureDeferred
async def test_run_dev_prints_demo_login_and_stops_cleanly_on_sigterm(conf):
    address, password, err = run_dev_until_login(conf)
    assert address == "demo@example.test"
    assert "Received SIGTERM" in err and "storage closed" in err
    assert (conf.parent / "var" / "tls" / "cert.pem").is_file()
    acct = await stored_account(conf, address)
    assert make_context().verify(password, acct.password_hash)

    # a second run resets the demo password; this time with JSON log lines
    conf.write_text(conf.read_text().replace('log_format = "text"', 'log_format = "json"'))
    address2, password2, err = run_dev_until_login(conf)
    assert address2 == address and password2 != password
    records = [json.loads(line) for line in err.splitlines()]
    assert {"time", "level", "namespace", "msg"} <= set(records[0])
    assert any(r["msg"] == "storage closed; stopped" for r in records)
    acct = await stored_account(conf, address)
    assert make_context().verify(password2, acct.password_hash)
    assert not make_context().verify(password, acct.password_hash)
