"""TLS for every listener: load (or, in dev, generate) the certificate and
build one server-side ``CertificateOptions`` used both for STARTTLS
(``transport.startTLS(ctx.tls)``) and implicit TLS listeners
(``SSL4ServerEndpoint`` / ``listenSSL``).  TLS 1.2 is the minimum.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from pathlib import Path

from twisted.internet import ssl

__all__ = ["TLSError", "ensure_certificate", "generate_self_signed", "server_options"]


class TLSError(Exception):
    """The certificate or key is missing or unusable."""


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.S)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write a file atomically (tmp + fsync + rename) with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def generate_self_signed(
    cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str], hostname: str
) -> None:
    """Write a self-signed certificate for ``hostname`` (also valid for
    localhost and 127.0.0.1) and its key (mode 0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [
            x509.DNSName(hostname),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(Path(key_path), key_pem, 0o600)
    _write_private(Path(cert_path), cert.public_bytes(serialization.Encoding.PEM), 0o644)


def ensure_certificate(
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    hostname: str,
    self_signed: bool,
) -> bool:
    """Make sure both files exist: generate them when allowed.  Returns True
    if a certificate was generated.  Raises TLSError otherwise."""
    cert, key = Path(cert_path), Path(key_path)
    if cert.is_file() and key.is_file():
        return False
    if not self_signed:
        missing = [str(p) for p in (cert, key) if not p.is_file()]
        raise TLSError(
            f"TLS file(s) missing: {', '.join(missing)} (set tls.self_signed = true to "
            "generate a self-signed certificate)"
        )
    generate_self_signed(cert, key, hostname)
    return True


def server_options(
    cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
) -> ssl.CertificateOptions:
    """Server-side TLS options from a PEM chain (leaf first) and PEM key."""
    try:
        chain_pem = Path(cert_path).read_bytes()
        key_pem = Path(key_path).read_bytes()
    except OSError as e:
        raise TLSError(f"cannot read TLS file {e.filename}: {e.strerror}") from None
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    blocks = _PEM_CERT.findall(chain_pem)
    if not blocks:
        raise TLSError(f"{cert_path}: no PEM certificate found")
    try:
        certs = [x509.load_pem_x509_certificate(b) for b in blocks]
        key = load_pem_private_key(key_pem, password=None)
    except Exception as e:
        raise TLSError(f"{cert_path} / {key_path}: unusable certificate or key: {e}") from None
    try:
        options = ssl.CertificateOptions(
            privateKey=key,
            certificate=certs[0],
            extraCertChain=certs[1:],
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        )
        options.getContext()  # checks that key and certificate match
    except Exception as e:
        raise TLSError(f"{cert_path} / {key_path}: {e}") from None
    return options
