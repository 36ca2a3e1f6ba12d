"""Drive Debian's Thunderbird against our server without any dialog.

A profile is built non-interactively: ``user.js`` with one IMAP account, one
SMTP server and every first-run wizard, telemetry and update check off; our
self-signed certificate trusted in the profile's NSS database (``certutil``);
the password stored in ``logins.json``, encrypted with the profile's own NSS
key through ``PK11SDR_Encrypt`` (what Thunderbird's login manager does), so
Thunderbird never prompts.  ``MOZ_LOG=IMAP:5`` makes it log every line it
sends and receives; :func:`parse_imap_log` turns that log into per-connection
(command, tagged response) pairs so a test can assert on what was said.

Also usable by hand (see docs/clients/thunderbird.md).
"""

from __future__ import annotations

import base64
import ctypes
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

#: Debian packages this module needs (also listed in scripts/test-deps.txt)
PACKAGES = {"thunderbird": "thunderbird", "certutil": "libnss3-tools"}


def need(binary: str) -> str:
    """Path of ``binary``; fails (never skips) naming the Debian package."""
    path = shutil.which(binary)
    assert path, (
        f"{binary} not installed: apt-get install {PACKAGES.get(binary, binary)} "
        "(see scripts/test-deps.txt)"
    )
    return path


# -- profile ---------------------------------------------------------------------------


def _pref(key: str, value: object) -> str:
    return f"user_pref({json.dumps(key)}, {json.dumps(value)});"


def account_prefs(
    user: str,
    imap_port: int,
    imap_socket_type: int = 3,
    smtp_port: int | None = None,
    smtp_socket_type: int = 3,
) -> dict[str, object]:
    """Prefs for one IMAP account on 127.0.0.1 (socket type 2 = STARTTLS,
    3 = implicit TLS; auth method 3 = normal password) plus Local Folders,
    an identity and, when ``smtp_port`` is given, an SMTP server."""
    folder_uri = "imap://" + user.replace("@", "%40") + "@127.0.0.1/"
    prefs: dict[str, object] = {
        "mail.accountmanager.accounts": "account1,account2",
        "mail.accountmanager.defaultaccount": "account1",
        "mail.accountmanager.localfoldersserver": "server2",
        "mail.account.account1.server": "server1",
        "mail.account.account1.identities": "id1",
        "mail.account.account2.server": "server2",
        "mail.server.server1.type": "imap",
        "mail.server.server1.hostname": "127.0.0.1",
        "mail.server.server1.realhostname": "127.0.0.1",
        "mail.server.server1.port": imap_port,
        "mail.server.server1.socketType": imap_socket_type,
        "mail.server.server1.userName": user,
        "mail.server.server1.realuserName": user,
        "mail.server.server1.authMethod": 3,
        "mail.server.server1.name": user,
        "mail.server.server1.directory-rel": "[ProfD]ImapMail/127.0.0.1",
        "mail.server.server1.login_at_startup": True,
        "mail.server.server1.check_new_mail": True,
        "mail.server.server1.check_time": 1,
        "mail.server.server2.type": "none",
        "mail.server.server2.hostname": "Local Folders",
        "mail.server.server2.userName": "nobody",
        "mail.server.server2.name": "Local Folders",
        "mail.server.server2.directory-rel": "[ProfD]Mail/Local Folders",
        "mail.identity.id1.fullName": "Demo User",
        "mail.identity.id1.useremail": user,
        "mail.identity.id1.valid": True,
        "mail.identity.id1.fcc_folder": folder_uri + "Sent",
        "mail.identity.id1.draft_folder": folder_uri + "Drafts",
    }
    if smtp_port is not None:
        prefs.update(
            {
                "mail.identity.id1.smtpServer": "smtp1",
                "mail.smtpservers": "smtp1",
                "mail.smtp.defaultserver": "smtp1",
                "mail.smtpserver.smtp1.type": "smtp",
                "mail.smtpserver.smtp1.hostname": "127.0.0.1",
                "mail.smtpserver.smtp1.port": smtp_port,
                "mail.smtpserver.smtp1.try_ssl": smtp_socket_type,
                "mail.smtpserver.smtp1.authMethod": 3,
                "mail.smtpserver.smtp1.username": user,
                "mail.smtpserver.smtp1.description": "mailserver",
            }
        )
    return prefs


#: no wizard, start page, telemetry, update check, sound or popup
QUIET_PREFS: dict[str, object] = {
    "mail.provider.enabled": False,
    "mail.shell.checkDefaultClient": False,
    "mailnews.start_page.enabled": False,
    "mailnews.start_page_override.mstone": "ignore",
    "mail.rights.version": 1,
    "mail.rights.override": True,
    "mail.spotlight.firstRunDone": True,
    "mail.winsearch.firstRunDone": True,
    "mail.biff.play_sound": False,
    "mail.biff.show_alert": False,
    "mail.inappnotifications.enabled": False,
    "mail.accounthub.thundermail.enabled": False,
    "mail.warn_on_send_accel_key": False,
    "mailnews.auto_config.fetchFromISP.enabled": False,
    "mailnews.auto_config.guess.enabled": False,
    "mailnews.message_display.disable_remote_image": True,
    "app.update.auto": False,
    "app.update.checkInstallTime": False,
    "app.update.disabledForTesting": True,
    "app.donation.eoy.version.viewed": 999,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionPolicyBypassNotification": True,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.startup.max_resumed_crashes": -1,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "network.dns.disableIPv6": True,
    "network.proxy.type": 0,
    "calendar.integration.notify": False,
    "messenger.startup.action": 0,
}


def write_user_js(profile: Path, prefs: dict[str, object]) -> None:
    profile.mkdir(parents=True, exist_ok=True)
    lines = [_pref(k, v) for k, v in {**prefs, **QUIET_PREFS}.items()]
    (profile / "user.js").write_text("\n".join(lines) + "\n")


def trust_certificate(profile: Path, cert_pem: str | Path) -> None:
    """Create the profile's NSS database and trust our self-signed server
    certificate as its own CA (CT,C,C), so TLS verifies with no override
    dialog.  The certificate must name 127.0.0.1 (ours do)."""
    certutil = need("certutil")
    db = f"sql:{profile}"
    if not (profile / "cert9.db").exists():
        subprocess.run([certutil, "-N", "-d", db, "--empty-password"], check=True, timeout=60)
    subprocess.run(
        [certutil, "-A", "-d", db, "-n", "mailserver", "-t", "CT,C,C", "-i", str(cert_pem)],
        check=True,
        timeout=60,
    )


class _SECItem(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint),
        ("data", ctypes.POINTER(ctypes.c_ubyte)),
        ("len", ctypes.c_uint),
    ]


def _sdr_encrypt_all(profile: Path, values: list[str]) -> list[str]:
    """Encrypt each value with the profile's SDR key (created on first use in
    key4.db), base64 as in logins.json.  Uses the system libnss3 (a
    dependency of libnss3-tools); Thunderbird's NSS reads the same sql DB."""
    nss = ctypes.CDLL("libnss3.so")
    nss.NSS_InitReadWrite.argtypes = [ctypes.c_char_p]
    nss.PK11_GetInternalKeySlot.restype = ctypes.c_void_p
    nss.PK11_NeedUserInit.argtypes = [ctypes.c_void_p]
    nss.PK11_InitPin.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    nss.PK11_FreeSlot.argtypes = [ctypes.c_void_p]
    nss.PK11SDR_Encrypt.argtypes = [
        ctypes.POINTER(_SECItem),
        ctypes.POINTER(_SECItem),
        ctypes.POINTER(_SECItem),
        ctypes.c_void_p,
    ]
    nss.SECITEM_ZfreeItem.argtypes = [ctypes.POINTER(_SECItem), ctypes.c_int]
    if nss.NSS_InitReadWrite(f"sql:{profile}".encode()) != 0:
        raise RuntimeError(f"NSS_InitReadWrite({profile}) failed")
    try:
        slot = nss.PK11_GetInternalKeySlot()
        if nss.PK11_NeedUserInit(slot):
            nss.PK11_InitPin(slot, b"", b"")
        nss.PK11_FreeSlot(slot)
        out = []
        for value in values:
            raw = value.encode()
            buf = (ctypes.c_ubyte * len(raw)).from_buffer_copy(raw)
            data = _SECItem(0, buf, len(raw))
            keyid = _SECItem(0, None, 0)
            result = _SECItem(0, None, 0)
            if nss.PK11SDR_Encrypt(
                ctypes.byref(keyid), ctypes.byref(data), ctypes.byref(result), None
            ):
                raise RuntimeError("PK11SDR_Encrypt failed")
            out.append(base64.b64encode(ctypes.string_at(result.data, result.len)).decode())
            nss.SECITEM_ZfreeItem(ctypes.byref(result), 0)
        return out
    finally:
        nss.NSS_Shutdown()


def store_passwords(profile: Path, user: str, password: str, schemes=("imap", "smtp")) -> None:
    """Write logins.json with ``user``/``password`` for imap:// and smtp://
    127.0.0.1, as Thunderbird's login manager stores them.  NSS is a
    process-wide singleton: tests call this in a child process
    (:func:`store_passwords_in_child`)."""
    now = int(time.time() * 1000)
    encrypted = _sdr_encrypt_all(profile, [user, password] * len(schemes))
    logins = []
    for i, scheme in enumerate(schemes):
        origin = f"{scheme}://127.0.0.1"
        logins.append(
            {
                "id": i + 1,
                "hostname": origin,
                "httpRealm": origin,
                "formSubmitURL": None,
                "usernameField": "",
                "passwordField": "",
                "encryptedUsername": encrypted[2 * i],
                "encryptedPassword": encrypted[2 * i + 1],
                "guid": "{" + str(uuid.uuid4()) + "}",
                "encType": 1,
                "timeCreated": now,
                "timeLastUsed": now,
                "timePasswordChanged": now,
                "timesUsed": 1,
            }
        )
    (profile / "logins.json").write_text(
        json.dumps(
            {
                "nextId": len(logins) + 1,
                "logins": logins,
                "potentiallyVulnerablePasswords": [],
                "dismissedBreachAlertsByLoginGUID": {},
                "version": 3,
            }
        )
    )


def store_passwords_in_child(profile: Path, user: str, password: str) -> None:
    """:func:`store_passwords` in a fresh interpreter (keeps NSS out of the
    test process); the password travels on stdin, not the command line."""
    code = (
        "import sys, pathlib; from tests.clients.thunderbird import store_passwords; "
        "store_passwords(pathlib.Path(sys.argv[1]), sys.argv[2], sys.stdin.read())"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(profile), user],
        input=password,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )


# -- IMAP log --------------------------------------------------------------------------

_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) UTC - \[[^\]]*\]: \w/IMAP "
    r"(?P<conn>[0-9a-f]+):[^:]*:(?P<state>[^:]*):"
    r"(?P<kind>SendData|CreateNewLineFromSocket): ?(?P<data>.*)$"
)
_TAGGED = re.compile(r"^(?P<tag>[A-Za-z0-9.]+) (?P<status>OK|NO|BAD)\b ?(?P<text>.*)$")


@dataclass
class Exchange:
    """One tagged command of one connection and the server's tagged answer."""

    conn: str
    tag: str
    command: str
    status: str | None = None  # OK / NO / BAD; None: no answer seen
    response: str = ""
    untagged: list[str] = field(default_factory=list)


@dataclass
class ImapLog:
    exchanges: list[Exchange]
    #: untagged "* BAD", "* NO" and "* BYE" lines, with their connection
    untagged_errors: list[tuple[str, str]]
    #: lines Thunderbird logged at error or warning level
    client_errors: list[str]

    def problems(self) -> list[str]:
        """Every BAD or NO answer, untagged BAD/NO, and client-side error."""
        out = [
            f"[{e.conn}] C: {e.tag} {e.command}\n          S: {e.tag} {e.status} {e.response}"
            for e in self.exchanges
            if e.status in ("NO", "BAD")
        ]
        out += [f"[{c}] S: {line}" for c, line in self.untagged_errors]
        out += self.client_errors
        return out

    def find(self, pattern: str) -> list[Exchange]:
        rx = re.compile(pattern, re.I)
        return [e for e in self.exchanges if rx.search(e.command)]


def parse_imap_log(text: str) -> ImapLog:
    """Pair Thunderbird's ``SendData`` commands with the tagged responses
    (``CreateNewLineFromSocket``) per connection.  Literal data is logged line
    by line as well; a line only counts as a tagged answer when its tag is
    one the client sent on that connection and is still open."""
    open_: dict[tuple[str, str], Exchange] = {}
    current: dict[str, Exchange] = {}
    exchanges: list[Exchange] = []
    untagged_errors: list[tuple[str, str]] = []
    client_errors: list[str] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            if re.search(r"\]: [EW]/IMAP ", line):  # Thunderbird's own errors/warnings
                client_errors.append(line.strip())
            continue
        conn, kind, data = m["conn"], m["kind"], m["data"].rstrip("\r\n")
        if kind == "SendData":
            parts = data.split(" ", 1)
            if (
                len(parts) == 2
                and re.fullmatch(r"[A-Za-z0-9.]+", parts[0])
                and parts[0] != "Logging"
            ):
                ex = Exchange(conn, parts[0], parts[1])
                open_[(conn, parts[0])] = ex
                current[conn] = ex
                exchanges.append(ex)
            continue
        t = _TAGGED.match(data)
        if t and (conn, t["tag"]) in open_:
            ex = open_.pop((conn, t["tag"]))
            ex.status, ex.response = t["status"], t["text"]
            continue
        if re.match(r"^\* (BAD|NO|BYE)\b", data):
            untagged_errors.append((conn, data))
        if data.startswith("* ") and conn in current:
            current[conn].untagged.append(data)
    return ImapLog(exchanges, untagged_errors, client_errors)
