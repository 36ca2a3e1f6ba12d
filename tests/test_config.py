"""Configuration loading and validation."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mailserver.config import (
    SCHEMA,
    ConfigError,
    ListenAddress,
    config_from_dict,
    load_config,
    make_test_config,
    parse_listen,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONF = REPO / "conf" / "mailserver.toml"


def write(tmp_path: Path, text: str, name: str = "mail.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.errors


def test_default_file_loads_with_dev_values():
    c = load_config(DEFAULT_CONF)
    assert c.server.hostname == "mail.example.test"
    assert c.server.local_domains == ("example.test",)
    assert c.server.state_dir == str(REPO / "var")
    assert c.storage.backend == "embedded"
    assert c.storage.embedded.path == str(REPO / "var" / "store")
    assert c.tls.certificate == str(REPO / "var" / "tls" / "cert.pem")
    assert [str(a) for a in c.smtp.mx_listen] == ["127.0.0.1:2525"]
    assert [a.port for a in c.smtp.submission_listen + c.smtp.submissions_listen] == [2587, 2465]
    assert [a.port for a in c.imap.listen + c.imap.tls_listen] == [1143, 1993]
    assert [a.port for a in c.pop3.listen + c.pop3.tls_listen] == [1110, 1995]
    assert c.limits.max_message_size == 36700160
    assert c.accounts.password_scheme == "argon2"
    assert c.storage.cassandra.replication == {"datacenter1": 3}


def test_default_file_states_every_key_with_its_schema_default():
    """conf/mailserver.toml documents every key, with the schema default."""
    data = tomllib.loads(DEFAULT_CONF.read_text())
    for section, fields in SCHEMA.items():
        table = data
        for part in section.split("."):
            assert part in table, f"[{section}] missing from conf/mailserver.toml"
            table = table[part]
        for key, field in fields.items():
            assert key in table, f"{section}.{key} missing from conf/mailserver.toml"
            assert table[key] == field.default, f"{section}.{key} differs from the default"


def test_empty_file_gives_defaults(tmp_path):
    c = load_config(write(tmp_path, ""))
    assert c.server.state_dir == str((tmp_path / "../var").resolve())
    assert c.smtp.max_errors == 10
    assert c.relay.retry_intervals[0] == 300


def test_typo_key_names_file_and_key(tmp_path):
    p = write(tmp_path, '[server]\nhostnmae = "x.example.test"\n')
    [err] = errors_of(p)
    assert err.startswith(f"{p}:server.hostnmae: unknown key")
    assert "did you mean 'hostname'" in err


def test_typo_in_subsection_key(tmp_path):
    p = write(tmp_path, "[storage.cassandra]\nprot = 9042\n")
    [err] = errors_of(p)
    assert err.startswith(f"{p}:storage.cassandra.prot: unknown key")


def test_unknown_section(tmp_path):
    p = write(tmp_path, "[imap4]\nlisten = []\n")
    [err] = errors_of(p)
    assert err == f"{p}:imap4: unknown section (did you mean 'imap'?)"


def test_unknown_subsection(tmp_path):
    p = write(tmp_path, '[storage.mysql]\nhost = "x"\n')
    [err] = errors_of(p)
    assert err.startswith(f"{p}:storage.mysql: unknown key")


def test_all_errors_reported_at_once(tmp_path):
    p = write(
        tmp_path,
        """
[server]
shutdown_timeout = "soon"
log_format = "xml"
[smtp]
max_errors = 0
mx_listen = "127.0.0.1:25"
[accounts]
allow_plaintext_auth = "yes"
[storage]
backend = "postgres"
[storage.cassandra]
replication = { dc1 = 0 }
""",
    )
    errs = errors_of(p)
    assert len(errs) == 7
    joined = "\n".join(errs)
    assert f"{p}:server.shutdown_timeout: must be an integer, not a string" in joined
    assert f"{p}:server.log_format: must be one of 'text', 'json'; got 'xml'" in joined
    assert f"{p}:smtp.max_errors: must be >= 1, got 0" in joined
    assert f"{p}:smtp.mx_listen: must be a list" in joined
    assert f"{p}:accounts.allow_plaintext_auth: must be true or false" in joined
    assert f"{p}:storage.backend: must be one of" in joined
    assert f"{p}:storage.cassandra.replication: 'dc1' must be an integer >= 1" in joined


def test_bool_is_not_an_integer(tmp_path):
    [err] = errors_of(write(tmp_path, "[limits]\nmax_recipients = true\n"))
    assert "limits.max_recipients: must be an integer, not a boolean" in err


@pytest.mark.parametrize(
    "value, reason",
    [
        ("127.0.0.1", "is not 'host:port'"),
        ("127.0.0.1:", "is not a number"),
        ("127.0.0.1:65536", "is not a number 0..65535"),
        (":25", "is not 'host:port'"),
        ("::1:25", "write IPv6 addresses as '[addr]:port'"),
        ("[zz]:25", "is not an IPv6 address"),
        ("bad_host!:25", "not a valid host name"),
    ],
)
def test_bad_listen_strings(tmp_path, value, reason):
    [err] = errors_of(write(tmp_path, f'[imap]\nlisten = ["{value}"]\n'))
    assert err.startswith(f"{tmp_path / 'mail.toml'}:imap.listen: ")
    assert reason in err


def test_listen_parsing():
    assert parse_listen("0.0.0.0:25") == ListenAddress("0.0.0.0", 25)
    assert parse_listen("[::1]:993") == ListenAddress("::1", 993)
    assert str(parse_listen("[::1]:993")) == "[::1]:993"
    assert parse_listen("mail.example.test:0").port == 0


def test_empty_listen_list_disables(tmp_path):
    c = load_config(write(tmp_path, "[pop3]\nlisten = []\ntls_listen = []\n"))
    assert c.pop3.listen == () and c.pop3.tls_listen == ()


def test_same_address_twice_is_an_error(tmp_path):
    p = write(
        tmp_path, '[smtp]\nmx_listen = ["127.0.0.1:2525"]\n[imap]\nlisten = ["127.0.0.1:2525"]\n'
    )
    [err] = errors_of(p)
    assert err == f"{p}:imap.listen: 127.0.0.1:2525 is also used by smtp.mx_listen"


def test_section_must_be_a_table(tmp_path):
    [err] = errors_of(write(tmp_path, 'smtp = "on"\n'))
    assert err.endswith("smtp: must be a table [smtp], not a string")
    [err] = errors_of(write(tmp_path, '[storage]\nembedded = "x"\n'))
    assert "storage.embedded: must be a table" in err


def test_relative_paths_resolve_against_config_dir(tmp_path):
    sub = tmp_path / "etc"
    sub.mkdir()
    p = write(
        sub,
        '[server]\nstate_dir = "state"\n[tls]\ncertificate = "certs/c.pem"\n'
        '[storage.embedded]\npath = "/abs/store"\n',
    )
    c = load_config(p)
    assert c.server.state_dir == str(sub / "state")
    assert c.tls.certificate == str(sub / "certs" / "c.pem")
    assert c.tls.private_key == str(sub / "state" / "tls" / "key.pem")
    assert c.storage.embedded.path == "/abs/store"


def test_raw_section_is_plain_dict_for_open_storage(tmp_path):
    c = make_test_config(tmp_path)
    raw = c.raw_section("storage")
    assert raw["backend"] == "embedded"
    assert raw["embedded"] == {"path": str(tmp_path / "store")}
    assert raw["cassandra"]["contact_points"] == ["127.0.0.1"]
    assert raw["s3"]["endpoint"] == "127.0.0.1:8333"
    raw["backend"] = "changed"  # a copy: the config is not affected
    assert c.storage.backend == "embedded"


def test_config_is_read_only_and_unknown_attribute_is_clear(tmp_path):
    c = make_test_config(tmp_path)
    with pytest.raises(AttributeError):
        c.server.hostname = "x"
    with pytest.raises(AttributeError, match="no key 'nope'"):
        _ = c.smtp.nope


def test_make_test_config_listens_on_port_zero(tmp_path):
    c = make_test_config(tmp_path, smtp={"max_errors": 3})
    assert c.smtp.max_errors == 3
    assert all(a.port == 0 for a in c.smtp.mx_listen + c.imap.listen + c.pop3.tls_listen)


def test_bad_toml_and_missing_file(tmp_path):
    [err] = errors_of(write(tmp_path, "[server\n"))
    assert err.startswith(f"{tmp_path / 'mail.toml'}: not valid TOML")
    [err] = errors_of(tmp_path / "nope.toml")
    assert err == f"{tmp_path / 'nope.toml'}: file not found"


def test_group_without_user(tmp_path):
    [err] = errors_of(write(tmp_path, '[server]\ngroup = "mail"\n'))
    assert "server.group: set server.user too" in err


def test_config_from_dict_label():
    with pytest.raises(ConfigError, match=r"^<config>:relay.max_age: must be >= 60"):
        config_from_dict({"relay": {"max_age": 1}})
