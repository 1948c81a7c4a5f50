"""Byte-stream transports: TCP + TLS 1.3, plain TCP (``--insecure``) and the Unix socket.

A thin asyncio BufferedProtocol feeds the sans-IO connection: the transport (TLS included)
writes received bytes into memory the connection hands out, so a large bulk segment lands in
its final buffer without a staging copy. TCP_NODELAY is asyncio's default.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from ..errors import ConnectError, RgpuError
from ..wire import Connection
from .peer import Peer

# Build a Connection for a transport that has just connected (TLS handshake done); may raise
# to refuse the connection (a client whose pinned fingerprint does not match, say).
MakeConnection = Callable[[asyncio.BaseTransport], Connection]
OnPeer = Callable[[Peer], None]

_SOCKET_BUFFER = 4 << 20


class StreamAdapter(asyncio.BufferedProtocol):
    def __init__(self, make_conn: MakeConnection, on_peer: OnPeer, transport_name: str,
                 initiate: bool) -> None:
        self._make_conn = make_conn
        self._on_peer = on_peer
        self._transport_name = transport_name
        self._initiate = initiate
        self.peer: Peer | None = None
        self.error: BaseException | None = None
        self.transport: asyncio.Transport | None = None
        self._write_ready = asyncio.Event()
        self._write_ready.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
                except OSError:
                    pass
        try:
            conn = self._make_conn(transport)
        except BaseException as exc:  # refused before any byte was exchanged
            self.error = exc
            transport.abort()
            return
        peername = transport.get_extra_info("peername")
        address = _format_address(peername)
        self.peer = Peer(conn, self._transmit, transport.close, address=address,
                         transport_name=self._transport_name)
        self.peer.drain = self.drain  # type: ignore[attr-defined]
        self._on_peer(self.peer)
        if self._initiate:
            conn.initiate()
            self.peer.pump()

    def _transmit(self, out: dict[int, list[Any]]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for bufs in out.values():
            self.transport.writelines(bufs)

    def get_buffer(self, sizehint: int) -> memoryview:
        peer = self.peer
        if peer is None:  # refused in connection_made: whatever arrives is dropped
            return memoryview(bytearray(4096))
        return peer.conn.receive_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        peer = self.peer
        if peer is None:
            return
        peer.conn.received_into(nbytes)
        peer.pump()

    def data_received(self, data: bytes) -> None:  # transports without buffered reads
        peer = self.peer
        if peer is None:
            return
        peer.conn.receive_data(data)
        peer.pump()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._write_ready.set()
        if self.peer is not None:
            self.peer.connection_lost(str(exc) if exc else "peer closed the connection")

    def pause_writing(self) -> None:
        self._write_ready.clear()

    def resume_writing(self) -> None:
        self._write_ready.set()

    async def drain(self) -> None:
        await self._write_ready.wait()


def _format_address(peername: Any) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host = peername[0]
        return f"[{host}]:{peername[1]}" if ":" in str(host) else f"{host}:{peername[1]}"
    return str(peername or "local")


def peer_cert_der(transport: asyncio.BaseTransport) -> bytes:
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return b""
    der = sslobj.getpeercert(binary_form=True)
    return der or b""


async def start_tcp_server(host: str, port: int, ssl_ctx: ssl.SSLContext | None,
                           make_conn: MakeConnection, on_peer: OnPeer) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    name = "tcp+tls" if ssl_ctx else "tcp"
    try:
        return await loop.create_server(
            lambda: StreamAdapter(make_conn, on_peer, name, initiate=False),
            host, port, ssl=ssl_ctx, reuse_address=True, backlog=128)
    except OSError as exc:
        raise RgpuError(f"cannot listen on {host}:{port} (TCP): {exc.strerror}; choose another "
                        "--port or --bind, or stop what uses it") from None


async def connect_tcp(host: str, port: int, ssl_ctx: ssl.SSLContext | None,
                      make_conn: MakeConnection, on_peer: OnPeer,
                      timeout: float = 10.0) -> Peer:
    loop = asyncio.get_running_loop()
    name = "tcp+tls" if ssl_ctx else "tcp"
    try:
        _, proto = await asyncio.wait_for(loop.create_connection(
            lambda: StreamAdapter(make_conn, on_peer, name, initiate=True),
            host, port, ssl=ssl_ctx, server_hostname="" if ssl_ctx else None), timeout)
    except TimeoutError:
        raise ConnectError(f"{host}:{port}: no answer within {timeout:g} s over {name}; check "
                           "the address, the server, and --transport") from None
    except ssl.SSLError as exc:
        raise ConnectError(f"{host}:{port}: TLS handshake failed ({exc.reason}); is the "
                           "server running with the same --transport (and without "
                           "--insecure)?") from None
    except OSError as exc:
        raise ConnectError(f"{host}:{port}: {exc.strerror or exc} over {name}; is "
                           "`rgpu server` running there with this transport?") from None
    if proto.error is not None:
        raise proto.error
    assert proto.peer is not None
    return proto.peer


async def start_unix_server(path: Path, make_conn: MakeConnection,
                            on_peer: OnPeer) -> asyncio.Server:
    """Listen on a Unix socket in a 0700 directory owned by this user."""
    loop = asyncio.get_running_loop()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    if path.exists() or path.is_symlink():
        if await _socket_alive(path):
            raise RgpuError(f"a daemon is already listening on {path}; stop it or use "
                            "--socket")
        path.unlink()
    server = await loop.create_unix_server(
        lambda: StreamAdapter(make_conn, on_peer, "unix", initiate=False), str(path))
    os.chmod(path, 0o600)
    return server


async def _socket_alive(path: Path) -> bool:
    try:
        _, w = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1.0)
    except (OSError, TimeoutError):
        return False
    w.close()
    return True


async def connect_unix(path: Path, make_conn: MakeConnection, on_peer: OnPeer,
                       timeout: float = 5.0) -> Peer:
    loop = asyncio.get_running_loop()
    try:
        _, proto = await asyncio.wait_for(loop.create_unix_connection(
            lambda: StreamAdapter(make_conn, on_peer, "unix", initiate=True), str(path)),
            timeout)
    except (OSError, TimeoutError) as exc:
        raise ConnectError(f"no rgpu daemon at {path} ({getattr(exc, 'strerror', None) or exc})"
                           "; start one with `rgpu client -s HOST:PORT -t TOKEN`") from None
    if proto.error is not None:
        raise proto.error
    assert proto.peer is not None
    return proto.peer
