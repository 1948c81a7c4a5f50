"""Thin asyncio adapters that carry the sans-IO wire protocol over real transports.

:func:`connect_server` is the one way a daemon or a CLI command reaches an rgpu server: it
picks the transport, checks the server certificate against the pinned or recorded
fingerprint, runs the handshake and returns an authenticated :class:`Peer`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING

from ..errors import AuthError, ConnectError, RgpuError
from ..wire import Connection, ConnectionConfig, Role
from ..wire.auth import token_key
from .peer import Peer, PeerClosed, check_reply
from .stream import connect_tcp, connect_unix, peer_cert_der

if TYPE_CHECKING:
    from .tls import KnownServers

__all__ = ["Peer", "PeerClosed", "check_reply", "connect_local", "connect_server"]

log = logging.getLogger("rgpu.net")

TRANSPORT_NAMES = ("quic", "tcp")


async def connect_server(
    host: str,
    port: int,
    *,
    token: str | None,
    transport: str = "quic",
    fingerprint: str | None = None,
    known_servers: KnownServers | None = None,
    insecure: bool = False,
    quic_engine: str = "auto",
    name: str = "rgpu",
    timeout: float = 10.0,
    features: tuple[str, ...] = (),
) -> Peer:
    """Connect, verify the certificate, authenticate; raise RgpuError with a one-line cause."""
    # TLS certificates and QUIC load on first use: `rgpu run` and the shims' daemon socket
    # (connect_local) need neither, and importing them costs about 100 ms
    from .quic import connect_quic, load_engine
    from .tls import check_fingerprint, client_ssl_context, fingerprint_of

    label = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    key = token_key(token) if token else None

    def make_conn(der: bytes) -> Connection:
        binding = b""
        if der:
            fp = fingerprint_of(der)
            check_fingerprint(label, fp, fingerprint, known_servers)
            binding = hashlib.sha256(der).digest()
        return Connection(ConnectionConfig(Role.CLIENT, token_key=key, channel_binding=binding,
                                           name=name, features=features))

    def on_peer(_peer: Peer) -> None:
        pass

    if transport == "quic":
        if insecure:
            raise RgpuError("--insecure applies to --transport tcp only; QUIC is always TLS 1.3")
        engine = load_engine(quic_engine)
        peer = await connect_quic(host, port, engine, make_conn, on_peer, timeout)
    elif transport == "tcp":
        if insecure:
            log.warning("connecting to %s over plain TCP (--insecure): traffic is NOT "
                        "encrypted", label)
            peer = await connect_tcp(host, port, None, lambda _t: make_conn(b""), on_peer,
                                     timeout)
        else:
            peer = await connect_tcp(host, port, client_ssl_context(),
                                     lambda t: make_conn(peer_cert_der(t)), on_peer, timeout)
    else:
        raise RgpuError(f"unknown transport {transport!r}; use quic or tcp")
    try:
        await asyncio.wait_for(asyncio.shield(peer.handshake), timeout)
    except TimeoutError:
        peer.release()
        raise ConnectError(f"{label}: the server did not complete the handshake within "
                           f"{timeout:g} s") from None
    except AuthError as exc:
        raise AuthError(f"{label}: {exc}") from None
    except PeerClosed as exc:
        raise ConnectError(f"{label}: {exc}") from None
    return peer


async def connect_local(path: object, name: str = "rgpu", timeout: float = 5.0) -> Peer:
    """Connect to the daemon's Unix socket (no token: the socket's permissions are the gate)."""
    from pathlib import Path

    def make_conn(_t: object) -> Connection:
        return Connection(ConnectionConfig(Role.CLIENT, require_auth=False, name=name))

    peer = await connect_unix(Path(str(path)), make_conn, lambda _p: None, timeout)
    await asyncio.wait_for(asyncio.shield(peer.handshake), timeout)
    return peer
