"""QUIC transport (TLS 1.3, ALPN ``rgpu/1``) over aioquic or the drop-in engine qh3.

Each application session gets its own bidirectional stream so that one application's bulk
copy never blocks another's calls; the handshake and control messages use stream 0.

Engines (research/quic-engines.md and benchmarks/transport.py, docs/BENCHMARKS.md): qh3 has
about half aioquic's round trip and several times its bulk rate with large datagrams; aioquic
cannot send datagrams over 16 KiB (its STREAM frame lengths are 2-byte varints) and its pacer
slows down under uvloop, so it gets datagrams <= 16 KiB and should run on the stock asyncio loop.

Tuning (:class:`QuicTuning`): loopback paths use 16 KiB datagrams (``LOOPBACK_DATAGRAM``:
per-datagram CPU cost is what limits Python QUIC), other paths 1350 bytes, safe under a 1500
MTU. Operators with jumbo frames, or measuring, override per process with environment
variables: ``RGPU_QUIC_MAX_DATAGRAM`` (bytes), ``RGPU_QUIC_MAX_DATA`` and
``RGPU_QUIC_MAX_STREAM_DATA`` (flow-control windows, e.g. ``64MiB``) and
``RGPU_QUIC_LIFT_PAYLOAD_LIMIT=0`` (see :func:`_lift_qh3_payload_limit`).
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import os
import re
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ConnectError, RgpuError
from ..wire import Connection
from .peer import Peer
from .tls import CertPair

log = logging.getLogger("rgpu.net.quic")

ALPN = "rgpu/1"
ENGINES = ("qh3", "aioquic")
# Datagram size on loopback paths. aioquic writes STREAM frame lengths as 2-byte varints, so
# it cannot fill a datagram over 16 KiB (larger ones stall). qh3 takes 64 KB datagrams, but it
# paces in whole datagrams while its initial window is two of them, so a small reply can wait
# for pacing tokens and the event loop's 1 ms timer resolution: with 65000-byte datagrams a
# small call's round trip was ~1.4 ms against ~0.37 ms at 16384, where bulk runs about as fast
# (docs/BENCHMARKS.md, "Transport").
LOOPBACK_DATAGRAM = {"qh3": 16384, "aioquic": 16384}
MakeQuicConnection = Callable[[bytes], Connection]  # gets the server certificate's DER
OnPeer = Callable[[Peer], None]


@dataclass(frozen=True)
class QuicTuning:
    """Datagram size and flow-control windows; larger datagrams cut per-packet CPU cost."""

    max_datagram_size: int = 1350
    max_data: int = 64 << 20
    max_stream_data: int = 32 << 20
    idle_timeout: float = 60.0
    # A qh3 client advertises max_udp_payload_size=1472 whatever its max_datagram_size, so
    # the server's datagrams stay small; advertise max_datagram_size instead.
    lift_payload_limit: bool = True

    def with_env(self, environ: Mapping[str, str] | None = None) -> QuicTuning:
        """This tuning with the ``RGPU_QUIC_*`` overrides of ``environ`` (os.environ) applied."""
        env = os.environ if environ is None else environ
        changes: dict[str, Any] = {}
        for name, var in (("max_datagram_size", "RGPU_QUIC_MAX_DATAGRAM"),
                          ("max_data", "RGPU_QUIC_MAX_DATA"),
                          ("max_stream_data", "RGPU_QUIC_MAX_STREAM_DATA")):
            text = env.get(var, "").strip()
            if text:
                changes[name] = _parse_bytes(var, text)
        lift = env.get("RGPU_QUIC_LIFT_PAYLOAD_LIMIT", "").strip().lower()
        if lift:
            if lift not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
                raise RgpuError(f"RGPU_QUIC_LIFT_PAYLOAD_LIMIT={lift!r}: use 1 or 0")
            changes["lift_payload_limit"] = lift in ("1", "true", "yes", "on")
        size = changes.get("max_datagram_size", self.max_datagram_size)
        if not 1200 <= size <= 65527:
            raise RgpuError(f"RGPU_QUIC_MAX_DATAGRAM={size}: QUIC datagrams are 1200-65527 "
                            "bytes")
        return replace(self, **changes) if changes else self


def _parse_bytes(var: str, text: str) -> int:
    units = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
             "g": 1 << 30, "gib": 1 << 30}
    t = text.lower()
    digits = t.rstrip("kmgib")
    unit = t[len(digits):]
    if not digits.isdigit() or unit not in units or int(digits) <= 0:
        raise RgpuError(f"{var}={text!r}: expected a byte count such as 9000 or 64MiB")
    return int(digits) * units[unit]


@dataclass(frozen=True)
class Engine:
    name: str
    asyncio_mod: Any
    configuration_cls: Any
    events: Any
    max_loopback_datagram: int
    max_datagram: int = 65527  # the largest this engine can use (aioquic: 16384)

    def tuning_for(self, host: str, environ: Mapping[str, str] | None = None) -> QuicTuning:
        """Loopback paths get large datagrams (``LOOPBACK_DATAGRAM``), others 1350 bytes.

        ``RGPU_QUIC_*`` variables in ``environ`` (default os.environ) override the result.
        """
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        base = QuicTuning(max_datagram_size=self.max_loopback_datagram if loopback else 1350)
        tuning = base.with_env(environ)
        if tuning.max_datagram_size > self.max_datagram:
            log.warning("%s cannot use %d-byte datagrams; using %d", self.name,
                        tuning.max_datagram_size, self.max_datagram)
            tuning = replace(tuning, max_datagram_size=self.max_datagram)
        return tuning


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
        return Engine(n, mod, conf, events, LOOPBACK_DATAGRAM[n],
                      16384 if n == "aioquic" else 65527)
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


CLOSE_GRACE = 0.1  # seconds between a local close's ERROR frame and CONNECTION_CLOSE


def _split_phrase(phrase: str | None, default: str) -> tuple[str, str]:
    """A CONNECTION_CLOSE phrase "code: reason" back into its parts."""
    m = re.match(r"^([a-z_]+): (.+)$", phrase or "", re.S)
    if m:
        return m.group(1), m.group(2)
    return "connection_lost", phrase or default


def _format_addr(addr: Any) -> str:
    if not addr:
        return ""
    host = str(addr[0])
    if host.startswith("::ffff:"):
        host = host[7:]
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


class _ConnectedTransport:
    """The client's datagram transport: its socket is connected, and uvloop refuses (EISCONN)
    a datagram sent to an explicit address on a connected socket."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._transport.sendto(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


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
            self._peer_addr: Any = None
            self._closing = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(_ConnectedTransport(transport) if self._is_client
                                    else transport)

        def datagram_received(self, data: bytes | str, addr: Any) -> None:
            if addr is None:  # a connected socket (the client's) may not say who sent it
                addr = self._peer_addr
            if self._peer_addr is None:
                self._peer_addr = addr
            super().datagram_received(data, addr)

        def error_received(self, exc: Exception) -> None:
            if isinstance(exc, ConnectionRefusedError) and self.peer is not None \
                    and not self.peer.is_closed:
                log.info("QUIC peer %s: port unreachable; the server is gone", self._peer_addr)
                self.peer.connection_lost("the server's port is closed (server gone)",
                                          "connection_lost")

        def connect(self, addr: Any, *args: Any, **kwargs: Any) -> None:
            self._peer_addr = addr
            super().connect(addr, *args, **kwargs)

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
                code, reason = _split_phrase(event.reason_phrase,
                                             f"QUIC error {event.error_code}")
                if not self.ready.done():
                    self.ready.set_exception(ConnectError(f"QUIC connection refused: {reason}"))
                    self.ready.exception()
                if self.peer is not None:
                    self.peer.connection_lost(reason, code)

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
            address = _format_addr(self._peer_addr)
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
            try:
                for sid, bufs in out.items():
                    data = bufs[0] if len(bufs) == 1 else b"".join(bufs)
                    self._quic.send_stream_data(sid, bytes(data))
                self.transmit()
            except Exception as exc:  # the QUIC connection is closing: it is lost for us
                peer = self.peer
                if peer is not None and not peer.is_closed:
                    asyncio.get_running_loop().call_soon(
                        peer.connection_lost, f"QUIC connection closing ({exc})")

        def _new_session_stream(self, session: int) -> None:
            assert self.peer is not None
            sid = self._quic.get_next_available_stream_id()
            # The id is only peeked at; sending (nothing) claims it, so a second session opened
            # before this one's first call gets a stream of its own.
            self._quic.send_stream_data(sid, b"")
            self.peer.conn.assign_stream(session, sid)

        def _close_quic(self) -> None:
            """Close after a short grace, so the ERROR frame saying why arrives first.

            The reason also travels as the CONNECTION_CLOSE phrase ("code: reason"), which the
            peer reads if the stream data was overtaken after all.
            """
            if self._closing:
                return
            self._closing = True
            phrase = ""
            peer = self.peer
            if peer is not None and peer.closed.done():
                closed = peer.closed.result()
                if closed.local:
                    phrase = f"{closed.code}: {closed.reason}"[:400]

            def close() -> None:
                try:
                    self._quic.close(reason_phrase=phrase)
                    self.transmit()
                except Exception:  # the connection may already be gone
                    pass

            asyncio.get_running_loop().call_later(CLOSE_GRACE, close)

    return QuicAdapter


def _lift_qh3_payload_limit(conn_mod: Any, payload_size: int) -> Any:
    """qh3's QuicConnection class, advertising ``payload_size`` as max_udp_payload_size.

    A qh3 client writes ``max_udp_payload_size = 1472`` into its transport parameters whatever
    its ``max_datagram_size``, which caps what the server may send it: server -> client bulk
    then runs in ~1.4 KB datagrams at a fraction of the client -> server rate. RFC 9000 lets
    an endpoint advertise any size it can receive up to 65527; this client reads with 64 KiB
    buffers, so it advertises its own ``max_datagram_size``. The server still sends no more
    than its own ``max_datagram_size`` (1350 unless it listens on loopback).

    This reaches into qh3 internals (``_create_tls``, the TLS bridge's
    ``serialize_transport_parameters``); the rewritten parameters are checked, and on any
    surprise the stock class is returned and the 1472 limit stays.
    """
    try:
        packet = importlib.import_module("qh3.quic.packet")
        tls_mod = importlib.import_module("qh3.tls")
        buffer_cls = importlib.import_module("qh3._hazmat").Buffer
        ext = tls_mod.ExtensionType.QUIC_TRANSPORT_PARAMETERS
        base = conn_mod.QuicConnection
        if not callable(getattr(base, "_create_tls", None)):
            raise AttributeError("QuicConnection._create_tls")
    except (ImportError, AttributeError) as exc:
        log.debug("qh3 payload limit kept: %s", exc)
        return conn_mod.QuicConnection

    def rewrite(data: bytes) -> bytes:
        params = packet.pull_quic_transport_parameters(buffer_cls(data=data))
        params.max_udp_payload_size = payload_size
        buf = buffer_cls(capacity=len(data) + 16)
        packet.push_quic_transport_parameters(buf, params)
        return bytes(buf.data)

    class LiftedQuicConnection(base):  # type: ignore[misc, valid-type]
        def _create_tls(self, remote_source_cid: bytes | None) -> Any:
            bridge = super()._create_tls(remote_source_cid)
            try:
                stock = bridge.serialize_transport_parameters
                lifted = rewrite(stock())
                check = packet.pull_quic_transport_parameters(buffer_cls(data=lifted))
                if check.max_udp_payload_size != payload_size:
                    raise ValueError("rewritten max_udp_payload_size did not stick")
                bridge.serialize_transport_parameters = lambda: rewrite(stock())
                bridge.tls.handshake_extensions = [
                    (e, lifted if e == ext else v) for e, v in bridge.tls.handshake_extensions]
            except Exception as exc:  # an internal that moved: keep qh3's own parameters
                log.debug("qh3 payload limit kept: %s", exc)
            return bridge

    return LiftedQuicConnection


def _configuration(engine: Engine, is_client: bool, tuning: QuicTuning) -> Any:
    conf = engine.configuration_cls(
        is_client=is_client, alpn_protocols=[ALPN], idle_timeout=tuning.idle_timeout,
        max_datagram_size=tuning.max_datagram_size)
    conf.max_data = tuning.max_data
    conf.max_stream_data = tuning.max_stream_data
    if is_client:
        conf.verify_mode = ssl.CERT_NONE  # trust is the pinned fingerprint, checked after
    return conf


def _check_loop(engine: Engine) -> None:
    loop = asyncio.get_running_loop()
    if engine.name == "aioquic" and type(loop).__module__.startswith("uvloop"):
        log.warning("aioquic under uvloop: its pacer needs sub-millisecond timers, so round "
                    "trips take ~1.4x longer and bulk transfers may slow down several times; "
                    "use the asyncio loop or the qh3 engine")


async def start_quic_server(host: str, port: int, pair: CertPair, engine: Engine,
                            make_conn: MakeQuicConnection, on_peer: OnPeer) -> Any:
    _check_loop(engine)
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
    _check_loop(engine)
    tuning = engine.tuning_for(host)
    conf = _configuration(engine, True, tuning)
    conf.server_name = host
    quic_conn_mod = importlib.import_module(f"{engine.name}.quic.connection")
    conn_cls = quic_conn_mod.QuicConnection
    if engine.name == "qh3" and tuning.lift_payload_limit and tuning.max_datagram_size > 1472:
        conn_cls = _lift_qh3_payload_limit(quic_conn_mod, tuning.max_datagram_size)
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise ConnectError(f"{host}:{port}: cannot resolve ({exc.strerror})") from None
    addr = infos[0][4]
    if len(addr) == 2:
        addr = ("::ffff:" + addr[0], addr[1], 0, 0)
    quic = conn_cls(configuration=conf)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0, 0, 0))
    # Connected, so the kernel reports an ICMP "port unreachable" as ECONNREFUSED
    # (error_received): a server process that died is noticed at the next packet.
    sock.connect(addr)
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
