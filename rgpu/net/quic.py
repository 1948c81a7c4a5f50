"""QUIC transport (TLS 1.3, ALPN ``rgpu/1``) over aioquic or the drop-in engine qh3.

Each application session gets its own bidirectional stream so that one application's bulk
copy never blocks another's calls; the handshake and control messages use stream 0.

Engines (research/quic-engines.md, measured on loopback): qh3 has about half aioquic's round
trip and several times its bulk rate; aioquic cannot send datagrams over 16 KiB and collapses
under uvloop, so it is always run on the stock asyncio loop with datagrams <= 16 KiB.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConnectError, RgpuError
from ..wire import Connection
from .peer import Peer
from .tls import CertPair

log = logging.getLogger("rgpu.net.quic")

ALPN = "rgpu/1"
ENGINES = ("qh3", "aioquic")
MakeQuicConnection = Callable[[bytes], Connection]  # gets the server certificate's DER
OnPeer = Callable[[Peer], None]


@dataclass(frozen=True)
class QuicTuning:
    """Datagram size and flow-control windows; larger datagrams cut per-packet CPU cost."""

    max_datagram_size: int = 1350
    max_data: int = 64 << 20
    max_stream_data: int = 32 << 20
    idle_timeout: float = 60.0


@dataclass(frozen=True)
class Engine:
    name: str
    asyncio_mod: Any
    configuration_cls: Any
    events: Any
    max_loopback_datagram: int

    def tuning_for(self, host: str) -> QuicTuning:
        """Loopback paths carry 64 KiB datagrams; real networks get a size safe under 1500."""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        return QuicTuning(max_datagram_size=self.max_loopback_datagram if loopback else 1350)


def load_engine(name: str = "auto") -> Engine:
    """The requested engine, or for ``auto`` the fastest one installed."""
    names = ENGINES if name == "auto" else (name,)
    if name not in ("auto", *ENGINES):
        raise RgpuError(f"unknown QUIC engine {name!r}; use one of auto, {', '.join(ENGINES)}")
    for n in names:
        try:
            mod = importlib.import_module(f"{n}.asyncio")
            conf = importlib.import_module(f"{n}.quic.configuration").QuicConfiguration
            events = importlib.import_module(f"{n}.quic.events")
        except ImportError:
            continue
        # aioquic writes frame lengths as 2-byte varints (< 16384); qh3 handles 64 KB.
        max_dgram = 16384 if n == "aioquic" else 65000
        return Engine(n, mod, conf, events, max_dgram)
    raise RgpuError(f"QUIC engine {name!r} is not installed; `pip install {names[0]}` or use "
                    "--transport tcp")


def _peer_der(quic: Any) -> bytes:
    tls = getattr(quic, "tls", None) or getattr(quic, "_tls", None)
    cert = None
    if tls is not None:
        cert = getattr(tls, "peer_certificate", None)
        if cert is None:
            cert = getattr(tls, "_peer_certificate", None)
    if cert is None:
        return b""
    try:
        from cryptography.hazmat.primitives.serialization import Encoding
        return bytes(cert.public_bytes(Encoding.DER))
    except TypeError:
        return bytes(cert.public_bytes())


def _make_protocol_class(engine: Engine) -> type:
    base = engine.asyncio_mod.QuicConnectionProtocol
    ev = engine.events

    class QuicAdapter(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, make_conn: Callable[[Any], Connection],
                     on_peer: OnPeer, is_client: bool, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._make_conn = make_conn
            self._on_peer = on_peer
            self._is_client = is_client
            self.peer: Peer | None = None
            self.error: BaseException | None = None
            self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def quic_event_received(self, event: Any) -> None:
            if isinstance(event, ev.HandshakeCompleted):
                self._start()
            elif isinstance(event, ev.StreamDataReceived):
                peer = self.peer
                if peer is None:
                    return
                if event.data:
                    peer.conn.receive_data(event.data, event.stream_id)
                if event.end_stream:
                    peer.conn.stream_ended(event.stream_id)
                peer.pump()
            elif isinstance(event, ev.ConnectionTerminated):
                reason = event.reason_phrase or f"QUIC error {event.error_code}"
                if not self.ready.done():
                    self.ready.set_exception(ConnectError(f"QUIC connection refused: {reason}"))
                    self.ready.exception()
                if self.peer is not None:
                    self.peer.connection_lost(reason)

        def _start(self) -> None:
            try:
                conn = self._make_conn(self._quic)
            except BaseException as exc:
                self.error = exc
                if not self.ready.done():
                    self.ready.set_exception(exc)
                    self.ready.exception()
                self._quic.close(error_code=0x100, reason_phrase="refused")
                self.transmit()
                return
            addr = getattr(self._quic, "_network_paths", None)
            address = ""
            if addr:
                a = addr[0].addr
                address = f"{a[0]}:{a[1]}"
            self.peer = Peer(conn, self._send_out, self._close_quic, address=address,
                             transport_name=f"quic/{engine.name}")
            self.peer.new_session_stream = self._new_session_stream
            self._on_peer(self.peer)
            if self._is_client:
                conn.initiate()
                self.peer.pump()
            if not self.ready.done():
                self.ready.set_result(None)

        def _send_out(self, out: dict[int, list[Any]]) -> None:
            for sid, bufs in out.items():
                data = bufs[0] if len(bufs) == 1 else b"".join(bufs)
                self._quic.send_stream_data(sid, bytes(data))
            self.transmit()

        def _new_session_stream(self, session: int) -> None:
            assert self.peer is not None
            sid = self._quic.get_next_available_stream_id()
            self.peer.conn.assign_stream(session, sid)

        def _close_quic(self) -> None:
            try:
                self._quic.close()
                self.transmit()
            except Exception:  # the connection may already be gone
                pass

    return QuicAdapter


def _configuration(engine: Engine, is_client: bool, tuning: QuicTuning) -> Any:
    conf = engine.configuration_cls(
        is_client=is_client, alpn_protocols=[ALPN], idle_timeout=tuning.idle_timeout,
        max_datagram_size=tuning.max_datagram_size)
    conf.max_data = tuning.max_data
    conf.max_stream_data = tuning.max_stream_data
    if is_client:
        conf.verify_mode = ssl.CERT_NONE  # trust is the pinned fingerprint, checked after
    return conf


async def start_quic_server(host: str, port: int, pair: CertPair, engine: Engine,
                            make_conn: MakeQuicConnection, on_peer: OnPeer) -> Any:
    tuning = engine.tuning_for(host)
    conf = _configuration(engine, False, tuning)
    conf.load_cert_chain(str(pair.cert_path), str(pair.key_path))
    cls = _make_protocol_class(engine)
    der = pair.der
    try:
        return await engine.asyncio_mod.serve(
            host, port, configuration=conf,
            create_protocol=lambda *a, **kw: cls(
                *a, make_conn=lambda _quic: make_conn(der), on_peer=on_peer,
                is_client=False, **kw))
    except OSError as exc:
        raise RgpuError(f"cannot listen on {host}:{port} (QUIC/UDP): {exc.strerror}; choose "
                        "another --port or --bind") from None


async def connect_quic(host: str, port: int, engine: Engine, make_conn: MakeQuicConnection,
                       on_peer: OnPeer, timeout: float = 10.0) -> Peer:
    loop = asyncio.get_running_loop()
    tuning = engine.tuning_for(host)
    conf = _configuration(engine, True, tuning)
    conf.server_name = host
    quic_conn_mod = importlib.import_module(f"{engine.name}.quic.connection")
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise ConnectError(f"{host}:{port}: cannot resolve ({exc.strerror})") from None
    addr = infos[0][4]
    if len(addr) == 2:
        addr = ("::ffff:" + addr[0], addr[1], 0, 0)
    quic = quic_conn_mod.QuicConnection(configuration=conf)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0, 0, 0))
    cls = _make_protocol_class(engine)
    transport, proto = await loop.create_datagram_endpoint(
        lambda: cls(quic, make_conn=lambda q: make_conn(_peer_der(q)), on_peer=on_peer,
                    is_client=True), sock=sock)
    try:
        proto.connect(addr)
        await asyncio.wait_for(asyncio.shield(proto.ready), timeout)
    except TimeoutError:
        transport.close()
        raise ConnectError(f"{host}:{port}: no QUIC answer within {timeout:g} s; is "
                           "`rgpu server` running there with --transport quic (UDP open)?"
                           ) from None
    except BaseException:
        transport.close()
        raise
    peer = proto.peer
    assert peer is not None
    peer.closed.add_done_callback(lambda _f: loop.call_later(0.5, transport.close))
    return peer
