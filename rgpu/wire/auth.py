"""Token generation and the mutual HMAC-SHA256 challenge-response proofs.

Each side sends a fresh 32-byte nonce; each proves it knows the token with
HMAC-SHA256(token, label || role || client_nonce || server_nonce || channel_binding).
The token never crosses the wire. The role keeps a client proof from being reflected back as a
server proof; the nonces make every proof single-use; the channel binding (the SHA-256 of the
server's TLS certificate, RFC 5929 "tls-server-end-point") ties the proof to this TLS channel so
a man in the middle holding another certificate cannot relay it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

TOKEN_BYTES = 32
NONCE_BYTES = 32
_LABEL = b"rgpu-auth-v1\x00"


def generate_token() -> str:
    """32 random bytes, hex-encoded: the form `rgpu token` prints and config files hold."""
    return secrets.token_hex(TOKEN_BYTES)


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def token_key(token: str) -> bytes:
    """The HMAC key for a token: its 32 raw bytes when it is hex, else its UTF-8 bytes."""
    token = token.strip()
    try:
        raw = bytes.fromhex(token)
    except ValueError:
        return token.encode()
    return raw if len(raw) == TOKEN_BYTES else token.encode()


def proof(key: bytes, role: str, client_nonce: bytes, server_nonce: bytes,
          channel_binding: bytes) -> bytes:
    if role not in ("client", "server"):
        raise ValueError(f"unknown role {role!r}")
    msg = b"".join((
        _LABEL, role.encode(), b"\x00",
        len(client_nonce).to_bytes(2, "big"), client_nonce,
        len(server_nonce).to_bytes(2, "big"), server_nonce,
        len(channel_binding).to_bytes(2, "big"), channel_binding,
    ))
    return hmac.new(key, msg, hashlib.sha256).digest()


def verify(key: bytes, role: str, client_nonce: bytes, server_nonce: bytes,
           channel_binding: bytes, candidate: bytes) -> bool:
    expected = proof(key, role, client_nonce, server_nonce, channel_binding)
    return hmac.compare_digest(expected, candidate)


def find_token(keys: Iterable[tuple[object, bytes]], client_nonce: bytes, server_nonce: bytes,
               channel_binding: bytes, candidate: bytes) -> object | None:
    """Return the identity whose key produced ``candidate`` as a client proof, else None.

    Every key is tried, with constant-time comparisons, so timing does not reveal which
    configured token came close.
    """
    found: object | None = None
    for ident, key in keys:
        if verify(key, "client", client_nonce, server_nonce, channel_binding, candidate):
            found = ident if found is None else found
    return found
