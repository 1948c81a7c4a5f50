"""Certificates, fingerprints and trust: what makes TLS work without a CA.

A server without a configured certificate makes a self-signed one in its state directory.
Clients do not use CA validation; they pin the SHA-256 fingerprint of the server certificate
(``fingerprint`` in config), or trust it on first use and record it in a known-servers file.
A fingerprint that differs from the pinned one is a hard error naming both.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..errors import FingerprintMismatch, RgpuError

log = logging.getLogger("rgpu.net.tls")


@dataclass(frozen=True)
class CertPair:
    cert_path: Path
    key_path: Path
    der: bytes  # the certificate, DER: what fingerprints and channel bindings hash

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.der)


def fingerprint_of(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def format_fingerprint(fp: str) -> str:
    """sha256:AB:CD:… — the form printed to users."""
    return "sha256:" + ":".join(fp[i:i + 2] for i in range(0, len(fp), 2)).upper()


def normalize_fingerprint(fp: str) -> str:
    s = fp.strip().lower()
    if s.startswith("sha256:"):
        s = s[7:]
    s = s.replace(":", "")
    if len(s) != 64 or any(c not in "0123456789abcdef" for c in s):
        raise RgpuError(f"bad fingerprint {fp!r}: expected sha256:<64 hex digits>")
    return s


def generate_self_signed(cert_path: Path, key_path: Path, hostname: str | None = None) -> CertPair:
    """Write a new ECDSA P-256 self-signed certificate valid for ten years."""
    hostname = hostname or socket.gethostname() or "rgpu-server"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"rgpu server {hostname}")])
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.DNSName(hostname), x509.DNSName("localhost"),
           x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
           x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write_private(key_path, key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertPair(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_cert(cert_path: Path, key_path: Path) -> CertPair:
    try:
        pem = cert_path.read_bytes()
        key_path.stat()
    except OSError as exc:
        raise RgpuError(f"cannot read certificate/key ({exc.strerror}: {exc.filename}); fix "
                        "--cert/--key or remove them to use a generated certificate") from None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise RgpuError(f"{cert_path} is not a PEM certificate; fix --cert") from None
    return CertPair(cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))


def ensure_server_cert(cert_path: Path | None, key_path: Path | None,
                       state_dir: Path) -> tuple[CertPair, bool]:
    """The configured pair, or the one in the state directory (made on first start)."""
    if cert_path or key_path:
        if not (cert_path and key_path):
            raise RgpuError("give both --cert and --key (or neither, for a generated "
                            "self-signed certificate)")
        return load_cert(cert_path, key_path), False
    cert = state_dir / "server-cert.pem"
    key = state_dir / "server-key.pem"
    if cert.exists() and key.exists():
        return load_cert(cert, key), False
    try:
        return generate_self_signed(cert, key), True
    except OSError as exc:
        raise RgpuError(f"cannot write a certificate in {state_dir} ({exc.strerror}); set "
                        "--state-dir to a writable directory") from None


def server_ssl_context(pair: CertPair) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(pair.cert_path, pair.key_path)
    ctx.set_alpn_protocols(["rgpu/1"])
    return ctx


def client_ssl_context() -> ssl.SSLContext:
    """TLS 1.3 without CA validation: trust comes from the pinned fingerprint instead."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["rgpu/1"])
    return ctx


class KnownServers:
    """Trust on first use: ``address fingerprint`` lines, one per server."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RgpuError(f"cannot read known servers file {self.path}: {exc.strerror}; "
                            "fix --known-servers") from None
        out = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and not line.startswith("#"):
                out[parts[0]] = parts[1]
        return out

    def get(self, address: str) -> str | None:
        return self._read().get(address)

    def remember(self, address: str, fp: str) -> None:
        entries = self._read()
        entries[address] = fp
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        body = "# rgpu known servers: address sha256-fingerprint (trust on first use)\n"
        body += "".join(f"{a} {f}\n" for a, f in sorted(entries.items()))
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".known_servers")
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.replace(tmp, self.path)


def check_fingerprint(address: str, presented: str, pinned: str | None,
                      known: KnownServers | None) -> None:
    """Raise FingerprintMismatch unless the presented certificate is the trusted one."""
    if pinned:
        expected = normalize_fingerprint(pinned)
        if presented != expected:
            raise FingerprintMismatch(
                f"server {address} presented certificate {format_fingerprint(presented)} but "
                f"{format_fingerprint(expected)} is pinned in config; if the server's "
                "certificate changed on purpose, update fingerprint")
        return
    if known is None:
        return
    recorded = known.get(address)
    if recorded is None:
        known.remember(address, presented)
        log.warning("trusting %s on first use: certificate %s (recorded in %s)", address,
                    format_fingerprint(presented), known.path)
        return
    if recorded != presented:
        raise FingerprintMismatch(
            f"server {address} presented certificate {format_fingerprint(presented)} but "
            f"{format_fingerprint(recorded)} is recorded in {known.path}; if the server's "
            "certificate changed on purpose, delete that line")
