"""An isolated Postfix instance (Debian's ``postfix`` package) for interop
tests and the benchmark: its own config_directory, queue_directory and
data_directory in a temporary directory, smtpd on 127.0.0.1 at a free port,
every service unchrooted, logging to a file.  The system instance is never
touched.

Two modes: ``relayhost`` (everything relays to ``[127.0.0.1]:port``, our
MX) and ``maildir`` (every recipient in ``domain`` is delivered by
virtual(8) into one Maildir, for the benchmark).

Must run as root (Postfix's master drops to the ``postfix`` user itself).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time


class PostfixError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _master_cf(smtpd_port: int) -> str:
    """Debian's master.cf with every service unchrooted and smtpd on our
    port only."""
    try:
        with open("/etc/postfix/master.cf") as f:
            src = f.read()
    except OSError as e:
        raise PostfixError(f"postfix not installed? cannot read /etc/postfix/master.cf: {e}") from e
    out = []
    for line in src.splitlines():
        if not line or line[0] in "# \t":
            out.append(line)
            continue
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "inet":
            # Drop every network listener of the default file ...
            continue
        if len(fields) >= 8:
            fields[4] = "n"  # chroot off
            line = "  ".join(fields[:8]) + ((" " + " ".join(fields[8:])) if fields[8:] else "")
        out.append(line)
    # ... and add ours.
    out.append(f"127.0.0.1:{smtpd_port} inet n - n - - smtpd")
    return "\n".join(out) + "\n"


class PostfixInstance:
    def __init__(
        self,
        *,
        relay_port: int | None = None,
        maildir_domain: str | None = None,
    ) -> None:
        if os.geteuid() != 0:
            raise PostfixError("the Postfix instance must be started as root")
        if shutil.which("postfix") is None:
            raise PostfixError("postfix is not installed (apt-get install postfix)")
        self.dir = tempfile.mkdtemp(prefix="mailserver-postfix-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.config_dir = os.path.join(self.dir, "etc")
        self.queue_dir = os.path.join(self.dir, "queue")
        self.data_dir = os.path.join(self.dir, "data")
        self.maildir = os.path.join(self.dir, "maildir")
        self.log = os.path.join(self.dir, "maillog")
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            os.makedirs(d, mode=0o755)
        pw = pwd.getpwnam("postfix")
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "maillog_file": self.log,
            "maillog_file_prefixes": "/tmp",
            "myhostname": "relay.postfix.test",
            "mydomain": "postfix.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "local_header_rewrite_clients": "",
            "biff": "no",
            "smtpd_banner": "$myhostname ESMTP",
            "smtp_tls_security_level": "may",
            "smtpd_tls_security_level": "none",
            "message_size_limit": str(64 * 1024 * 1024),
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "default_destination_concurrency_limit": "20",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "default_process_limit": "200",
            "smtp_connection_cache_on_demand": "yes",
            "in_flow_delay": "0",
            "shlib_directory": "/usr/lib/postfix",
        }
        if relay_port is not None:
            main["relayhost"] = f"[127.0.0.1]:{relay_port}"
            main["relay_domains"] = ""
        if maildir_domain is not None:
            os.makedirs(self.maildir)
            os.chown(self.maildir, pw.pw_uid, pw.pw_gid)
            main.update(
                {
                    "virtual_mailbox_domains": maildir_domain,
                    "virtual_mailbox_base": self.maildir,
                    "virtual_mailbox_maps": "static:box/",
                    "virtual_uid_maps": f"static:{pw.pw_uid}",
                    "virtual_gid_maps": f"static:{pw.pw_gid}",
                    "virtual_minimum_uid": "1",
                    "virtual_destination_concurrency_limit": "20",
                    "virtual_mailbox_limit": "0",
                }
            )
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            for k, v in main.items():
                f.write(f"{k} = {v}\n")
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write(_master_cf(self.port))
        for name in ("dynamicmaps.cf",):
            src = os.path.join("/etc/postfix", name)
            if os.path.exists(src):
                shutil.copy(src, self.config_dir)
        if os.path.isdir("/etc/postfix/dynamicmaps.cf.d"):
            shutil.copytree(
                "/etc/postfix/dynamicmaps.cf.d", os.path.join(self.config_dir, "dynamicmaps.cf.d")
            )
        self.started = False

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            ["postfix", "-c", self.config_dir, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and p.returncode != 0:
            raise PostfixError(
                f"postfix {' '.join(args)} failed ({p.returncode}): {p.stdout}{p.stderr}"
                f"\n--- maillog ---\n{self.read_log()}"
            )
        return p

    def read_log(self) -> str:
        try:
            with open(self.log) as f:
                return f.read()[-4000:]
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 30) -> None:
        self._postfix("check")
        self._postfix("start")
        self.started = True
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(100).startswith(b"220"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise PostfixError(
                    f"postfix smtpd did not answer on {self.port}:\n{self.read_log()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.started:
            self._postfix("stop", check=False)
            # Wait for the master to be gone so the directory can go.
            pidfile = os.path.join(self.queue_dir, "pid", "master.pid")
            deadline = time.monotonic() + 15
            while os.path.exists(pidfile) and time.monotonic() < deadline:
                try:
                    with open(pidfile) as f:
                        pid = int(f.read().strip() or 0)
                    os.kill(pid, 0)
                except (OSError, ValueError):
                    break
                time.sleep(0.05)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def maildir_count(self) -> int:
        new = os.path.join(self.maildir, "box", "new")
        try:
            return len(os.listdir(new))
        except FileNotFoundError:
            return 0

    def queue_ids(self) -> list[str]:
        return re.findall(r"postfix/\w+\[\d+\]: ([0-9A-F]{6,}):", self.read_log())

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
