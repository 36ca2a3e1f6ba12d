"""The ``mailserver`` command: run the daemon and administer accounts.

Every command reads the configuration first (``-c FILE``, else
``$MAILSERVER_CONFIG``, else ``conf/mailserver.toml`` if present, else
``/etc/mailserver/mailserver.toml``) and stops with its errors if it is
invalid.  Store commands run their coroutines on the reactor with
``twisted.internet.task.react``.  Passwords come from a prompt (asked twice)
or, with ``--password-stdin`` or when stdin is not a terminal, from the
first line of stdin: never from the command line, where other users could
read them in the process list.
"""

from __future__ import annotations

import argparse
import getpass
import re
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from mailserver import __version__
from mailserver.config import Config, ConfigError, default_config_path, load_config

__all__ = ["main", "CliError"]


class CliError(Exception):
    """A user-facing error: printed as ``mailserver: MESSAGE``, exit 1."""


# --------------------------------------------------------------------------
# helpers


def _load(args: argparse.Namespace) -> Config:
    path = Path(args.config) if getattr(args, "config", None) else default_config_path()
    if not path.exists():
        raise CliError(f"{path}: config file not found (use -c FILE or set MAILSERVER_CONFIG)")
    try:
        return load_config(path)
    except ConfigError as e:
        raise CliError("invalid configuration:\n" + "\n".join(e.errors)) from None


_ADDR_RE = re.compile(r"^[^\s@\"()<>,;:\\\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def _address(text: str, config: Config, what: str = "address") -> str:
    addr = text.strip().lower()
    if not _ADDR_RE.match(addr) or ".." in addr.partition("@")[2]:
        raise CliError(f"{text!r} is not a valid {what} (user@domain)")
    domain = addr.partition("@")[2]
    if domain not in config.server.local_domains:
        raise CliError(
            f"{what} {addr}: domain {domain} is not in server.local_domains "
            f"({', '.join(config.server.local_domains) or 'none'}) of {config.path}"
        )
    return addr


_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """``0``, ``500000``, ``100M``, ``2G`` -> bytes (0 = unlimited)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 500M or 2G")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise CliError("no password on stdin (expected one line)")
        return password
    password = getpass.getpass("Password: ")
    if not password:
        raise CliError("empty password")
    if getpass.getpass("Password (again): ") != password:
        raise CliError("the passwords do not match")
    return password


def _fmt_size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def _react(fn: Callable[[Any], Awaitable[None]]) -> None:
    """Run ``fn(reactor)`` on the reactor and exit with its status."""
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    async def wrapper(reactor: Any) -> None:
        try:
            await fn(reactor)
        except CliError as e:
            print(f"mailserver: {e}", file=sys.stderr)
            raise SystemExit(1) from None

    react(lambda reactor: Deferred.fromCoroutine(wrapper(reactor)))


async def _hash(config: Config, password: str) -> str:
    """Hash with the configured scheme, off the reactor thread."""
    from mailserver.accounts import hash_password
    from mailserver.threads import run_blocking

    try:
        return await run_blocking(hash_password, password, config.accounts.password_scheme)
    except ValueError as e:
        raise CliError(f"cannot hash this password: {e}") from None


def _run_on_storage(config: Config, fn: Callable[[Any], Awaitable[None]]) -> None:
    """Run ``fn(storage)`` on the reactor with the configured storage open,
    then exit (a ``CliError`` becomes a message and exit status 1)."""
    _react(lambda reactor: _with_storage(config, fn))


async def _with_storage(config: Config, fn: Callable[[Any], Awaitable[None]]) -> None:
    from mailserver.service import StartupError, open_configured_storage

    try:
        storage = await open_configured_storage(config)
    except StartupError as e:
        raise CliError(str(e)) from None
    try:
        await fn(storage)
    finally:
        await storage.close()


def _quiet_logging(config: Config) -> None:
    from mailserver.logs import start_logging

    start_logging(config.server.log_format, "warn")


# --------------------------------------------------------------------------
# commands


def cmd_check_config(args: argparse.Namespace) -> int:
    path = Path(args.file or args.config or default_config_path())
    try:
        config = load_config(path)
    except ConfigError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        print(f"{path}: {len(e.errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{path}: OK (storage: {config.storage.backend}, state_dir: {config.server.state_dir})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from mailserver.logs import start_logging
    from mailserver.service import run

    config = _load(args)
    start_logging(config.server.log_format, config.server.log_level)
    return run(config)


def cmd_run_dev(args: argparse.Namespace) -> int:
    """Dev server: state dir, self-signed cert, storage, a demo account with
    a fresh password, then serve."""
    from mailserver.logs import start_logging
    from mailserver.service import run
    from mailserver.store.interfaces import AccountExists

    config = _load(args)
    Path(config.server.state_dir).mkdir(parents=True, exist_ok=True)
    start_logging(config.server.log_format, config.server.log_level)
    domain = config.server.local_domains[0] if config.server.local_domains else "example.test"
    address = f"demo@{domain}"
    password = secrets.token_urlsafe(12)

    async def on_started(svc: Any) -> None:
        storage = svc.ctx.storage
        password_hash = await svc.ctx.auth.hash(password)
        if await storage.accounts.get_account(address) is None:
            try:
                await storage.accounts.create_account(address, password_hash)
            except AccountExists:
                await storage.accounts.set_password_hash(address, password_hash)
        else:
            await storage.accounts.set_password_hash(address, password_hash)
        sys.stdout.write(f"demo login: {address} {password}\n")
        sys.stdout.flush()

    return run(config, on_started=on_started)


def cmd_init_storage(args: argparse.Namespace) -> int:
    config = _load(args)
    _quiet_logging(config)

    async def done(storage: Any) -> None:
        where = (
            config.storage.embedded.path
            if config.storage.backend == "embedded"
            else f"keyspace {config.storage.cassandra.keyspace}, bucket {config.storage.s3.bucket}"
        )
        print(f"storage ready: {config.storage.backend} ({where})")

    _run_on_storage(config, done)
    return 0  # pragma: no cover - react exits


def cmd_gc(args: argparse.Namespace) -> int:
    config = _load(args)
    _quiet_logging(config)
    grace = config.storage.gc_grace if args.grace is None else args.grace

    async def collect(storage: Any) -> None:
        removed = await storage.collect_garbage(grace)
        print(f"removed {removed} unreferenced message bodies")

    _run_on_storage(config, collect)
    return 0  # pragma: no cover


def cmd_user_add(args: argparse.Namespace) -> int:
    from mailserver.store.interfaces import AccountExists

    config = _load(args)
    address = _address(args.address, config)
    aliases = [_address(a, config, "alias") for a in args.alias]
    password = _read_password(args)
    _quiet_logging(config)

    async def add(storage: Any) -> None:
        password_hash = await _hash(config, password)
        for alias in aliases:
            other = await storage.accounts.get_account(alias)
            if other is not None:
                raise CliError(f"{alias} already belongs to {other.address}")
        try:
            await storage.accounts.create_account(
                address, password_hash, quota_bytes=args.quota, aliases=aliases
            )
        except AccountExists:
            raise CliError(f"account {address} already exists") from None
        print(f"created {address}")

    _run_on_storage(config, add)
    return 0  # pragma: no cover


def cmd_user_passwd(args: argparse.Namespace) -> int:
    from mailserver.store.interfaces import AccountNotFound

    config = _load(args)
    address = args.address.strip().lower()
    password = _read_password(args)
    _quiet_logging(config)

    async def change(storage: Any) -> None:
        password_hash = await _hash(config, password)
        account = await storage.accounts.get_account(address)
        if account is None:
            raise CliError(f"no such account: {address}")
        try:
            await storage.accounts.set_password_hash(account.address, password_hash)
        except AccountNotFound:
            raise CliError(f"no such account: {address}") from None
        print(f"password of {account.address} changed")

    _run_on_storage(config, change)
    return 0  # pragma: no cover


def cmd_user_del(args: argparse.Namespace) -> int:
    config = _load(args)
    address = args.address.strip().lower()
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("refusing to delete without --yes (stdin is not a terminal)")
        answer = input(f"Delete {address} and all its mail? Type the address to confirm: ")
        if answer.strip().lower() != address:
            raise CliError("not confirmed; nothing deleted")
    _quiet_logging(config)

    async def delete(storage: Any) -> None:
        account = await storage.accounts.get_account(address)
        if account is None or account.address != address:
            raise CliError(f"no such account: {address} (aliases are not deleted this way)")
        await storage.accounts.delete_account(address)
        print(f"deleted {address}")

    _run_on_storage(config, delete)
    return 0  # pragma: no cover


def cmd_user_list(args: argparse.Namespace) -> int:
    config = _load(args)
    _quiet_logging(config)

    async def show(storage: Any) -> None:
        rows = []
        for acct in await storage.accounts.list_accounts():
            usage = await storage.accounts.quota_usage(acct.address)
            rows.append(
                (
                    acct.address,
                    _fmt_size(acct.quota_bytes) if acct.quota_bytes else "unlimited",
                    _fmt_size(usage.bytes),
                    usage.messages,
                    ",".join(acct.aliases) or "-",
                    "disabled" if acct.disabled else "active",
                )
            )
        header = ("ADDRESS", "QUOTA", "USED", "MESSAGES", "ALIASES", "STATUS")
        print(_table(rows, header))

    _run_on_storage(config, show)
    return 0  # pragma: no cover


def cmd_mailbox_list(args: argparse.Namespace) -> int:
    config = _load(args)
    address = args.user.strip().lower()
    _quiet_logging(config)

    async def show(storage: Any) -> None:
        account = await storage.accounts.get_account(address)
        if account is None:
            raise CliError(f"no such account: {address}")
        rows = [
            (
                mb.name,
                mb.messages,
                mb.unseen,
                mb.uidvalidity,
                mb.uidnext,
                mb.special_use or "-",
            )
            for mb in await storage.mailboxes.list_mailboxes(account.address)
        ]
        header = ("NAME", "MESSAGES", "UNSEEN", "UIDVALIDITY", "UIDNEXT", "SPECIAL-USE")
        print(_table(rows, header))

    _run_on_storage(config, show)
    return 0  # pragma: no cover


# --------------------------------------------------------------------------
# argument parsing


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="configuration file (default: $MAILSERVER_CONFIG, else conf/mailserver.toml "
        "if present, else /etc/mailserver/mailserver.toml)",
    )
    pw = argparse.ArgumentParser(add_help=False)
    pw.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (implied when stdin is "
        "not a terminal); otherwise it is prompted for twice",
    )

    parser = argparse.ArgumentParser(
        prog="mailserver",
        description="IMAP4 / POP3 / SMTP mail server on Twisted.",
        parents=[common],
        epilog="Run 'mailserver COMMAND --help' for the options of a command.",
    )
    parser.set_defaults(config=None)
    parser.add_argument("--version", action="version", version=f"mailserver {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "serve",
        parents=[common],
        help="run the server until SIGTERM/SIGINT",
        description="Run every configured listener on one reactor.  SIGTERM or SIGINT "
        "stops listening, waits for in-flight writes (server.shutdown_timeout) and exits.",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "check-config",
        parents=[common],
        help="validate a configuration file",
        description="Validate FILE (default: the usual config path).  Prints OK, or one "
        "line per problem as FILE:section.key: reason, and exits 1.",
    )
    p.add_argument("file", nargs="?", metavar="FILE")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser(
        "init-storage",
        parents=[common],
        help="create or upgrade the storage schema",
        description="Open the configured storage backend, creating its files, tables or "
        "keyspace as needed, and exit.",
    )
    p.set_defaults(func=cmd_init_storage)

    p = sub.add_parser(
        "gc",
        parents=[common],
        help="delete message bodies no mailbox references",
        description="Collect garbage once: delete stored message bodies that no mailbox "
        "references (expunged, or left by an interrupted delivery) and that are older "
        "than the grace period.  The server also does this every storage.gc_interval "
        "seconds.",
    )
    p.add_argument(
        "--grace",
        type=int,
        default=None,
        metavar="SECONDS",
        help="only bodies older than this (default: storage.gc_grace)",
    )
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser(
        "run-dev",
        parents=[common],
        help="development server with a demo account (what 'make run' runs)",
        description="Create the state directory, a self-signed certificate and the "
        "storage if needed, create or reset the account demo@<first local domain> with a "
        "random password, print 'demo login: ADDRESS PASSWORD' and serve.",
    )
    p.set_defaults(func=cmd_run_dev)

    user = sub.add_parser("user", help="manage accounts", description="Manage accounts.")
    usub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    p = usub.add_parser(
        "add",
        parents=[common, pw],
        help="create an account",
        description="Create an account with INBOX and the special-use mailboxes.  The "
        "address and aliases must be in server.local_domains.",
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument(
        "--quota",
        type=parse_size,
        default=0,
        metavar="N",
        help="storage quota in bytes, or with K/M/G/T suffix; 0 = unlimited (default)",
    )
    p.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="A",
        help="another address delivered to this account (repeatable)",
    )
    p.set_defaults(func=cmd_user_add)
    p = usub.add_parser(
        "passwd",
        parents=[common, pw],
        help="set an account's password",
        description="Set a new password (hashed with accounts.password_scheme).",
    )
    p.add_argument("address", metavar="ADDRESS")
    p.set_defaults(func=cmd_user_passwd)
    p = usub.add_parser(
        "del",
        parents=[common],
        help="delete an account and all its mail",
        description="Delete an account, its mailboxes and messages.  Asks for "
        "confirmation unless --yes.",
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_user_del)
    p = usub.add_parser(
        "list",
        parents=[common],
        help="list accounts",
        description="List accounts with quota, usage, aliases and status.",
    )
    p.set_defaults(func=cmd_user_list)

    mbox = sub.add_parser("mailbox", help="inspect mailboxes", description="Inspect mailboxes.")
    msub = mbox.add_subparsers(dest="mailbox_command", metavar="ACTION", required=True)
    p = msub.add_parser(
        "list",
        parents=[common],
        help="list the mailboxes of an account",
        description="List USER's mailboxes: name, messages, unseen, UIDVALIDITY, "
        "UIDNEXT, special use.",
    )
    p.add_argument("user", metavar="USER")
    p.set_defaults(func=cmd_mailbox_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"mailserver: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mailserver: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
