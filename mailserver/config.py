"""Configuration: one TOML file, validated against a schema before anything runs.

Every key of every section is declared in ``SCHEMA`` below (type, default,
allowed range or values).  Loading collects *all* problems and raises one
``ConfigError`` whose lines read ``FILE:section.key: what is wrong``, so an
operator fixes a broken file in one round.  Unknown sections and keys are
errors (a typo must not silently fall back to a default).

Relative paths are resolved against the directory of the config file.  Some
paths default to a place under ``server.state_dir`` (``""`` in the schema
means "derived", see ``_derive_paths``).

Protocol engineers add keys to their own section by adding one line to that
section's literal in ``SCHEMA``; the value is then available as
``config.<section>.<key>``.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "SCHEMA",
    "Config",
    "ConfigError",
    "ListenAddress",
    "Section",
    "default_config_path",
    "load_config",
    "parse_listen",
    "config_from_dict",
    "make_test_config",
]


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class ListenAddress(NamedTuple):
    """A ``host:port`` listen string, parsed.  ``str()`` gives it back."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME_RE.match(host))


def parse_listen(text: str) -> ListenAddress:
    """Parse ``host:port`` / ``[v6]:port`` (port 0..65535; 0 = any free port).

    Raises ValueError with a readable reason."""
    if not isinstance(text, str):
        raise ValueError("must be a string 'host:port'")
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"{text!r} is not '[ipv6]:port'")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r} is not 'host:port'")
        if ":" in host:
            raise ValueError(f"{text!r}: write IPv6 addresses as '[addr]:port'")
        if not _valid_host(host):
            raise ValueError(f"{host!r} in {text!r} is not a valid host name or address")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} in {text!r} is not a number 0..65535")
    return ListenAddress(host, int(port_text))


# --------------------------------------------------------------------------
# Field types.  Each one checks a TOML value and returns the typed value or
# raises ValueError(reason).


@dataclass(frozen=True)
class Field:
    """One key: its default and how a value is checked and converted."""

    default: Any
    check: Callable[[Any], Any]
    doc: str = ""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def Str(default: str, *, pattern: str | None = None, nonempty: bool = False) -> Field:
    def check(v: Any) -> str:
        if not isinstance(v, str):
            raise ValueError(f"must be a string, not {_tname(v)}")
        if nonempty and not v:
            raise ValueError("must not be empty")
        if pattern and v and not re.fullmatch(pattern, v):
            raise ValueError(f"{v!r} does not match {pattern}")
        return v

    return Field(default, check)


def Int(default: int, *, min: int | None = None, max: int | None = None) -> Field:
    def check(v: Any) -> int:
        if not _is_int(v):
            raise ValueError(f"must be an integer, not {_tname(v)}")
        if min is not None and v < min:
            raise ValueError(f"must be >= {min}, got {v}")
        if max is not None and v > max:
            raise ValueError(f"must be <= {max}, got {v}")
        return v

    return Field(default, check)


def Bool(default: bool) -> Field:
    def check(v: Any) -> bool:
        if not isinstance(v, bool):
            raise ValueError(f"must be true or false, not {_tname(v)}")
        return v

    return Field(default, check)


def Enum(default: str, choices: tuple[str, ...]) -> Field:
    def check(v: Any) -> str:
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}; got {v!r}")
        return v

    return Field(default, check)


def PathField(default: str) -> Field:
    """A file system path; relative ones are resolved later against the
    config file's directory.  ``""`` as default means derived."""

    def check(v: Any) -> str:
        if not isinstance(v, str):
            raise ValueError(f"must be a path string, not {_tname(v)}")
        if "\0" in v:
            raise ValueError("must not contain NUL")
        return v

    return Field(default, check)


def Listen(default: list[str]) -> Field:
    """A list of ``host:port`` strings; an empty list disables the listener."""

    def check(v: Any) -> tuple[ListenAddress, ...]:
        if not isinstance(v, list):
            raise ValueError(f"must be a list of 'host:port' strings, not {_tname(v)}")
        out = []
        for item in v:
            out.append(parse_listen(item))
        return tuple(out)

    return Field(default, check)


def HostPort(default: str) -> Field:
    def check(v: Any) -> str:
        parse_listen(v)
        return v

    return Field(default, check)


def StrList(default: list[str], *, item: Callable[[str], None] | None = None) -> Field:
    def check(v: Any) -> tuple[str, ...]:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ValueError("must be a list of strings")
        if item:
            for x in v:
                item(x)
        return tuple(v)

    return Field(default, check)


def IntList(default: list[int], *, min: int = 0) -> Field:
    def check(v: Any) -> tuple[int, ...]:
        if not isinstance(v, list) or not all(_is_int(x) for x in v):
            raise ValueError("must be a list of integers")
        if any(x < min for x in v):
            raise ValueError(f"every value must be >= {min}")
        return tuple(v)

    return Field(default, check)


def IntTable(default: dict[str, int], *, min: int = 0) -> Field:
    def check(v: Any) -> dict[str, int]:
        if not isinstance(v, dict):
            raise ValueError(f"must be a table of name = integer, not {_tname(v)}")
        for k, x in v.items():
            if not _is_int(x) or x < min:
                raise ValueError(f"{k!r} must be an integer >= {min}")
        return dict(v)

    return Field(default, check)


def _tname(v: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a float",
        bool: "a boolean",
        list: "a list",
        dict: "a table",
    }.get(type(v), type(v).__name__)


def _domain(x: str) -> None:
    if not _HOSTNAME_RE.match(x) or "." not in x:
        raise ValueError(f"{x!r} is not a domain name")


_LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
_CONSISTENCY = (
    "ONE",
    "TWO",
    "THREE",
    "QUORUM",
    "ALL",
    "LOCAL_QUORUM",
    "EACH_QUORUM",
    "LOCAL_ONE",
)

# --------------------------------------------------------------------------
# The schema: one literal per section, dotted names for sub-tables.

SCHEMA: dict[str, dict[str, Field]] = {
    "server": {
        "hostname": Str("mail.example.test", pattern=_HOSTNAME_RE.pattern, nonempty=True),
        "local_domains": StrList(["example.test"], item=_domain),
        "state_dir": PathField("../var"),
        "user": Str(""),
        "group": Str(""),
        "log_format": Enum("text", ("text", "json")),
        "log_level": Enum("info", _LOG_LEVELS),
        "shutdown_timeout": Int(30, min=0, max=3600),
    },
    "tls": {
        "certificate": PathField(""),  # "": state_dir/tls/cert.pem
        "private_key": PathField(""),  # "": state_dir/tls/key.pem
        "self_signed": Bool(True),
    },
    "storage": {
        "backend": Enum("embedded", ("embedded", "cluster")),
        # unreferenced bodies are deleted every gc_interval seconds (0: never)
        # once older than gc_grace seconds (so deliveries in flight keep theirs)
        "gc_interval": Int(3600, min=0),
        "gc_grace": Int(3600, min=60),
    },
    "storage.embedded": {
        "path": PathField(""),  # "": state_dir/store
    },
    "storage.cassandra": {
        "contact_points": StrList(["127.0.0.1"]),
        "port": Int(9042, min=1, max=65535),
        "keyspace": Str("mailserver", pattern=r"[A-Za-z][A-Za-z0-9_]{0,47}", nonempty=True),
        "local_dc": Str("datacenter1", nonempty=True),
        "replication": IntTable({"datacenter1": 3}, min=1),
        "consistency": Enum("LOCAL_QUORUM", _CONSISTENCY),
        "serial_consistency": Enum("LOCAL_SERIAL", ("SERIAL", "LOCAL_SERIAL")),
        "bucket_size": Int(10000, min=100, max=1000000),  # UIDs per message-list partition
        "uid_batch": Int(1, min=1, max=10000),
    },
    "storage.s3": {
        "endpoint": HostPort("127.0.0.1:8333"),
        "access_key": Str(""),
        "secret_key": Str(""),
        "bucket": Str("mail", pattern=r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", nonempty=True),
        "secure": Bool(False),
        "region": Str("us-east-1"),
    },
    "storage.notify": {
        "url": Str(""),  # "": in-process notifier (one daemon)
    },
    "accounts": {
        "password_scheme": Enum("argon2", ("argon2", "bcrypt")),
        "allow_plaintext_auth": Bool(False),
        "max_failures_per_account": Int(10, min=1),
        "max_failures_per_ip": Int(30, min=1),
        "failure_window": Int(300, min=1, max=86400),
    },
    "limits": {
        "max_message_size": Int(36700160, min=1024),
        "max_recipients": Int(100, min=1),
        "max_connections": Int(1000, min=1),
        "max_connections_per_ip": Int(20, min=1),
        "max_line_length": Int(65536, min=1000),
    },
    "smtp": {
        "mx_listen": Listen(["127.0.0.1:2525"]),
        "submission_listen": Listen(["127.0.0.1:2587"]),
        "submissions_listen": Listen(["127.0.0.1:2465"]),
        "command_timeout": Int(300, min=1),
        "data_timeout": Int(600, min=1),
        "max_errors": Int(10, min=1),
    },
    "imap": {
        "listen": Listen(["127.0.0.1:1143"]),
        "tls_listen": Listen(["127.0.0.1:1993"]),
        "autologout": Int(1800, min=60),
    },
    "pop3": {
        "listen": Listen(["127.0.0.1:1110"]),
        "tls_listen": Listen(["127.0.0.1:1995"]),
    },
    "relay": {
        "enabled": Bool(True),
        "retry_intervals": IntList([300, 900, 1800, 3600, 7200, 14400], min=1),
        "max_age": Int(432000, min=60),
    },
}


# --------------------------------------------------------------------------
# The loaded configuration.


class Section:
    """A validated section: values as attributes (``cfg.smtp.mx_listen``),
    sub-tables as nested sections (``cfg.storage.cassandra.port``)."""

    def __init__(self, name: str, values: Mapping[str, Any]):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"config section [{self._name}] has no key {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("configuration is read-only")

    def __repr__(self) -> str:
        return f"Section({self._name!r}, {self._values!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Section) and self._values == other._values

    def as_dict(self) -> dict[str, Any]:
        """Plain nested dict (sub-sections as dicts, listen addresses as
        strings, tuples as lists)."""
        return {k: _plain(v) for k, v in self._values.items()}


def _plain(v: Any) -> Any:
    if isinstance(v, Section):
        return v.as_dict()
    if isinstance(v, ListenAddress):
        return str(v)
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


class Config:
    """The whole validated configuration.

    ``config.server.hostname``, ``config.storage.backend``, ...; ``path`` is
    the file it came from (None when built from a dict), ``base_dir`` the
    directory relative paths were resolved against.
    """

    server: Section
    tls: Section
    storage: Section
    accounts: Section
    limits: Section
    smtp: Section
    imap: Section
    pop3: Section
    relay: Section

    def __init__(self, sections: dict[str, Section], path: Path | None, base_dir: Path):
        self._sections = sections
        self.path = path
        self.base_dir = base_dir
        for name, section in sections.items():
            setattr(self, name, section)

    def raw_section(self, name: str) -> dict[str, Any]:
        """A top-level section as a plain dict with defaults filled in and
        paths resolved (what ``open_storage`` takes)."""
        return self._sections[name].as_dict()

    def as_dict(self) -> dict[str, Any]:
        return {k: s.as_dict() for k, s in self._sections.items()}

    @property
    def state_dir(self) -> Path:
        return Path(self.server.state_dir)

    def __repr__(self) -> str:
        return f"Config(path={self.path!r})"


def default_config_path() -> Path:
    """``$MAILSERVER_CONFIG``, else ``conf/mailserver.toml`` below the current
    directory if it exists, else ``/etc/mailserver/mailserver.toml``."""
    env = os.environ.get("MAILSERVER_CONFIG")
    if env:
        return Path(env)
    local = Path("conf/mailserver.toml")
    if local.is_file():
        return local
    return Path("/etc/mailserver/mailserver.toml")


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, validate and resolve a config file.  Raises ConfigError."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([f"{p}: file not found"]) from None
    except OSError as e:
        raise ConfigError([f"{p}: cannot read: {e.strerror or e}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{p}: not valid TOML: {e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{p}: not valid UTF-8: {e}"]) from None
    return config_from_dict(data, path=p)


def config_from_dict(
    data: Mapping[str, Any], path: Path | None = None, base_dir: Path | None = None
) -> Config:
    """Validate a parsed TOML document.  Raises ConfigError listing every
    problem as ``FILE:section.key: reason``."""
    label = str(path) if path is not None else "<config>"
    if base_dir is None:
        base_dir = path.resolve().parent if path is not None else Path.cwd()
    errors: list[str] = []
    values: dict[str, dict[str, Any]] = {}
    top = [n for n in SCHEMA if "." not in n]
    for name, value in data.items():
        if name not in SCHEMA:
            errors.append(f"{label}:{name}: unknown section{_hint(name, top)}")
        elif not isinstance(value, dict):
            errors.append(f"{label}:{name}: must be a table [{name}], not {_tname(value)}")
    for name in top:
        table = data.get(name, {})
        if isinstance(table, dict):
            values[name] = _check_table(name, table, label, errors)
    if errors:
        raise ConfigError(errors)
    _derive_paths(values, base_dir)
    _cross_checks(values, label, errors)
    if errors:
        raise ConfigError(errors)
    sections = {name: _to_section(name, v) for name, v in values.items()}
    return Config(sections, path, base_dir)


def _check_table(
    name: str, table: Mapping[str, Any], label: str, errors: list[str]
) -> dict[str, Any]:
    fields = SCHEMA[name]
    subs = {
        n[len(name) + 1 :]
        for n in SCHEMA
        if n.startswith(name + ".") and "." not in n[len(name) + 1 :]
    }
    out: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{label}:{name}.{key}"
        if key in subs:
            if not isinstance(value, dict):
                errors.append(f"{where}: must be a table [{name}.{key}], not {_tname(value)}")
            continue
        field = fields.get(key)
        if field is None:
            errors.append(f"{where}: unknown key{_hint(key, list(fields) + sorted(subs))}")
            continue
        try:
            out[key] = field.check(value)
        except ValueError as e:
            errors.append(f"{where}: {e}")
    for key, field in fields.items():
        if key not in out and key not in table:
            out[key] = field.check(field.default)
    for sub in sorted(subs):
        value = table.get(sub, {})
        if isinstance(value, dict):
            out[sub] = _check_table(f"{name}.{sub}", value, label, errors)
    return out


def _hint(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _resolve(base: Path, p: str) -> str:
    return str((base / os.path.expanduser(p)).resolve()) if p else p


def _derive_paths(values: dict[str, dict[str, Any]], base: Path) -> None:
    server = values["server"]
    state = Path(_resolve(base, server["state_dir"] or "."))
    server["state_dir"] = str(state)
    tls = values["tls"]
    tls["certificate"] = _resolve(base, tls["certificate"]) or str(state / "tls" / "cert.pem")
    tls["private_key"] = _resolve(base, tls["private_key"]) or str(state / "tls" / "key.pem")
    emb = values["storage"]["embedded"]
    emb["path"] = _resolve(base, emb["path"]) or str(state / "store")


def _cross_checks(values: dict[str, dict[str, Any]], label: str, errors: list[str]) -> None:
    seen: dict[ListenAddress, str] = {}
    for section, keys in (
        ("smtp", ("mx_listen", "submission_listen", "submissions_listen")),
        ("imap", ("listen", "tls_listen")),
        ("pop3", ("listen", "tls_listen")),
    ):
        for key in keys:
            for addr in values[section][key]:
                name = f"{section}.{key}"
                if addr.port != 0 and addr in seen:
                    errors.append(f"{label}:{name}: {addr} is also used by {seen[addr]}")
                seen.setdefault(addr, name)
    if values["server"]["group"] and not values["server"]["user"]:
        errors.append(f"{label}:server.group: set server.user too (group alone is not dropped to)")


def _to_section(name: str, values: dict[str, Any]) -> Section:
    return Section(
        name,
        {
            k: _to_section(f"{name}.{k}", v) if f"{name}.{k}" in SCHEMA else v
            for k, v in values.items()
        },
    )


def make_test_config(state_dir: str | os.PathLike[str], **overrides: Mapping[str, Any]) -> Config:
    """A valid config for tests: state under ``state_dir``, every listener on
    127.0.0.1 port 0, self-signed TLS.  ``overrides`` are section tables,
    e.g. ``make_test_config(tmp, smtp={"max_errors": 3})``; nested sections
    as dicts (``storage={"embedded": {...}}``)."""
    data: dict[str, Any] = {
        "server": {"state_dir": str(state_dir)},
        "smtp": {
            "mx_listen": ["127.0.0.1:0"],
            "submission_listen": ["127.0.0.1:0"],
            "submissions_listen": ["127.0.0.1:0"],
        },
        "imap": {"listen": ["127.0.0.1:0"], "tls_listen": ["127.0.0.1:0"]},
        "pop3": {"listen": ["127.0.0.1:0"], "tls_listen": ["127.0.0.1:0"]},
    }
    for section, table in overrides.items():
        data.setdefault(section, {}).update(table)
    return config_from_dict(data, base_dir=Path(state_dir))
