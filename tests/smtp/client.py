"""A tiny blocking raw-socket SMTP client for tests that need exact bytes
(pipelining, BDAT, smuggling, garbage).  Run it in a thread
(``deferToThread``) while the reactor serves."""

from __future__ import annotations

import socket
import ssl


def tls_client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class RawClient:
    def __init__(self, port: int, implicit_tls: bool = False, timeout: float = 20) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if implicit_tls:
            self.sock = tls_client_context().wrap_socket(self.sock)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by server; pending {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self) -> str:
        """One whole (multi-line) reply, lines joined with newlines."""
        lines = []
        while True:
            line = self._line().decode()
            lines.append(line)
            if line[3:4] != "-":
                return "\n".join(lines)

    def replies(self, n: int) -> list[str]:
        return [self.reply() for _ in range(n)]

    def code(self) -> int:
        return int(self.reply()[:3])

    def cmd(self, line: str | bytes) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def starttls(self) -> None:
        self.sock = tls_client_context().wrap_socket(self.sock)

    def closed_by_server(self) -> bool:
        """True once the server has closed (reads to EOF)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()
