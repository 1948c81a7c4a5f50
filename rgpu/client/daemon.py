"""`rgpu client`: the workstation daemon that pools servers for local applications.

It keeps one authenticated connection per server (reconnecting with backoff), builds the GPU
pool in the configured order, and listens on a Unix socket. An application (through a shim)
or the CLI connects there; each application session is opened on the server that owns the
GPU it picked, and its frames are routed by session id in both directions. Tokens stay in
the daemon: applications never see them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import mmap
import os
import random
import re
import secrets
import socket
import stat
import struct
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from ..config import Config, ConfigError, ServerEntry, TokenConfig, parse_address
from ..errors import RemoteError, RgpuError
from ..net import Peer, PeerClosed, connect_server
from ..net.stream import start_unix_server
from ..net.tls import KnownServers
from ..wire import Connection, ConnectionConfig, Flags, Frame, MessageKind, Role
from .pool import PoolGpu, ServerGpus, build_pool

log = logging.getLogger("rgpu.client")

KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_TIMEOUT = 10.0
# A forwarded request that hears nothing for this long makes the daemon ping the server at
# once, so a hung server or a lost network is noticed in seconds, not at the next keepalive.
# (A server process that died is noticed at once: TCP gets a reset, and the QUIC client's
# connected socket an ICMP port unreachable.) The server's event loop answers pings even while
# its workers run kernels, but a loaded machine can hold it up for a few seconds: one slow
# ping must not take every application's sessions on that server down.
STALL_PROBE = 1.0
PROBE_TIMEOUT = 8.0


def _norm_address(address: str) -> str:
    host, port = parse_address(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ServerLink:
    """One configured server: connect, authenticate, fetch its GPUs, reconnect on loss."""

    def __init__(self, daemon: Daemon, entry: ServerEntry, *, local: bool = False) -> None:
        self.daemon = daemon
        self.entry = entry
        self.key = _norm_address(entry.address)
        self.local = local
        self.state = "connecting"
        self.error = ""
        self.peer: Peer | None = None
        self.server_id: int | None = None
        self.gpus: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {}
        self.cuda_facts: list[dict[str, Any]] | None = None  # immutable per connection
        # Replies to physical-device queries, for every app (see _cacheable_query)
        self.query_cache: dict[bytes, Any] = {}
        self.connects = 0
        self._task: asyncio.Task[None] | None = None
        self._removed = False
        self._probe_scheduled = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"link {self.key}")

    async def stop(self) -> None:
        self._removed = True
        self.state = "removed"
        if self.peer is not None:
            with contextlib.suppress(Exception):
                self.peer.close("bye", "server removed from the pool")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.key, "transport": self.entry.transport, "state": self.state,
                "server_id": self.server_id, "error": self.error, "gpus": len(self.gpus),
                "local": self.local, "connects": self.connects,
                "hostname": self.info.get("hostname")}

    async def _run(self) -> None:
        failures = 0
        cfg = self.daemon.config.client
        while not self._removed:
            self.state = "connecting"
            try:
                await self._connect_once()
                failures = 0
                assert self.peer is not None
                await self._keepalive(self.peer)
                reason = self.peer.closed.result().reason if self.peer.closed.done() else "?"
                self.error = f"connection lost: {reason}"
                log.warning("lost server %s: %s", self.key, reason)
            except asyncio.CancelledError:
                raise
            except RgpuError as exc:
                self.error = str(exc)
                log.warning("server %s: %s", self.key, exc)
            except Exception as exc:  # a bug must not end the link for good
                self.error = f"unexpected {type(exc).__name__}: {exc}"
                log.exception("server %s", self.key)
            self._lost()
            if self._removed:
                return
            failures += 1
            delay = min(0.5 * 2 ** min(failures - 1, 10), cfg.reconnect_max_delay)
            delay *= 0.8 + 0.4 * random.random()
            self.state = "backoff"
            log.info("reconnecting to %s in %.1f s", self.key, delay)
            await asyncio.sleep(delay)

    async def _connect_once(self) -> None:
        host, port = parse_address(self.entry.address)
        token = self.entry.token or self.daemon.config.client.token
        peer = await connect_server(
            host, port, token=token, transport=self.entry.transport,
            fingerprint=self.entry.fingerprint, insecure=self.entry.insecure,
            known_servers=self.daemon.known, quic_engine=self.daemon.quic_engine,
            name="rgpu-daemon")
        try:
            reply = await peer.request(MessageKind.CONTROL, {"op": "info"}, timeout=30)
        except BaseException:
            peer.close("bye", "daemon gave up")
            raise
        info = reply.body
        server_id = int(info.get("server_id", 0))
        clash = self.daemon.server_id_owner(server_id, self)
        if clash is not None:
            peer.close("bye", "server_id clash")
            raise RgpuError(f"server {self.key} has server_id {server_id}, the same as "
                            f"{clash.key}; give each server a distinct [server] server_id")
        peer.on_message = self._on_unsolicited
        peer.on_close = self._on_peer_closed
        self.peer = peer
        self.query_cache = {}  # another server process (or driver) may answer differently
        self.info = info
        self.server_id = server_id
        self.gpus = list(info.get("gpus", []))
        self.state = "connected"
        self.error = ""
        self.connects += 1
        log.info("connected to %s (server_id %d, %d GPU(s), %s)", self.key, server_id,
                 len(self.gpus), peer.transport_name)
        self.daemon.rebuild_pool()

    async def _keepalive(self, peer: Peer) -> None:
        while not peer.is_closed:
            try:
                await asyncio.wait_for(asyncio.shield(peer.closed), KEEPALIVE_INTERVAL)
                return
            except TimeoutError:
                pass
            try:
                await peer.ping(KEEPALIVE_TIMEOUT)
            except (TimeoutError, PeerClosed):
                peer.close("timeout", "no answer to keepalive")
                return

    def _on_peer_closed(self, peer: Peer, ev: Any) -> None:
        """Take the server out of the pool at once, before any app can ask for it again."""
        if self.peer is not peer or self.state != "connected":
            return
        self.state = "connecting"
        self.error = f"connection lost: {ev.reason}"
        self.gpus = []
        self.daemon.link_lost(self)
        self.daemon.rebuild_pool()

    def _on_unsolicited(self, peer: Peer, frame: Frame, stream: int) -> None:
        # Server-initiated messages for a session (a sticky batch error, say) go to its app.
        self.daemon.route_from_server(self, frame)

    def _lost(self) -> None:
        if self.peer is not None and not self.peer.is_closed:
            self.peer.close("bye", "reconnecting")
        self.peer = None
        self.gpus = []
        self.cuda_facts = None
        self.daemon.link_lost(self)
        self.daemon.rebuild_pool()

    def watch(self, delay: float = STALL_PROBE) -> None:
        """Probe the server soon if requests are outstanding and it stays silent."""
        if self._probe_scheduled:
            return
        self._probe_scheduled = True
        loop = asyncio.get_running_loop()
        loop.call_later(delay, lambda: loop.create_task(self._probe()))

    async def _probe(self) -> None:
        self._probe_scheduled = False
        peer = self.peer
        if peer is None or peer.is_closed or not peer.outstanding:
            return
        loop = asyncio.get_running_loop()
        quiet = loop.time() - peer.last_heard
        if quiet < STALL_PROBE:
            self.watch(STALL_PROBE - quiet + 0.01)
            return
        try:
            await peer.ping(PROBE_TIMEOUT)
        except TimeoutError:
            if loop.time() - peer.last_heard < PROBE_TIMEOUT and not peer.is_closed:
                self.watch()  # no pong yet, but the server is still sending: busy, not gone
                return
            log.warning("server %s stopped answering for %.0f s; closing the link", self.key,
                        loop.time() - peer.last_heard)
            peer.close("timeout", "the server stopped answering")
            return
        except PeerClosed:
            log.warning("server %s stopped answering; closing the link", self.key)
            peer.close("timeout", "the server stopped answering")
            return
        if peer.outstanding:
            self.watch()


@dataclass(eq=False)
class AppSession:
    local_id: int
    app: AppClient
    link: ServerLink
    server_session: int
    gpu: int
    dead: str = ""


@dataclass(eq=False)
class AppClient:
    peer: Peer
    name: str = ""
    pid: int = 0
    sessions: dict[int, AppSession] = field(default_factory=dict)
    shm: SharedRegion | None = None
    cred_pid: int = 0  # SO_PEERCRED: the kernel's word, unlike HELLO's pid


class Daemon:
    def __init__(self, config: Config, *, quic_engine: str = "auto") -> None:
        self.config = config
        self.quic_engine = quic_engine
        self.known = KnownServers(config.client.known_servers_path)
        self.links: dict[str, ServerLink] = {}
        # False while start() still adds servers (the local GPUs' embedded server takes a
        # while): `rgpu run` waits for a ready pool before it starts a program
        self.ready = False
        self.pool: list[PoolGpu] = []
        self.apps: set[AppClient] = set()
        self.unsupported: collections.Counter[str] = collections.Counter()
        self._by_server_session: dict[tuple[ServerLink, int], AppSession] = {}
        self._next_local = 1
        self._peer_pids: dict[Connection, int] = {}
        self._unix: asyncio.Server | None = None
        self._local_server: Any = None
        self.pool_changed = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config.client
        self._unix = await start_unix_server(cfg.socket_path, self._make_app_conn, self._on_app)
        for entry in cfg.servers:
            self.add_link(entry)
        if cfg.include_local_gpus:
            await self._start_local_gpus()
        self.ready = True
        log.info("daemon listening on %s with %d server(s), ordering %s", cfg.socket_path,
                 len(self.links), cfg.gpu_ordering)

    async def _start_local_gpus(self) -> None:
        """Serve this machine's hardware GPUs through an embedded server on loopback.

        Software devices (lavapipe, the emulated CUDA device) are not offered as local GPUs:
        a workstation without a GPU gets its GPUs from servers.
        """
        from ..server.discovery import discover_gpus
        from ..server.server import RgpuServer

        try:
            gpus = await asyncio.get_running_loop().run_in_executor(None, discover_gpus)
        except Exception as exc:
            log.warning("local GPU discovery failed: %s", exc)
            return
        hw = [g.index for g in gpus if g.device_type != "cpu"]
        if not hw:
            log.info("no local hardware GPUs; the pool holds remote GPUs only")
            return
        token = secrets.token_hex(32)
        state_dir = self.config.client.socket_path.parent / "local-server"
        scfg = replace(self.config.server, bind="127.0.0.1", port=0, transport="tcp",
                       expose_gpus=tuple(hw), state_dir=state_dir, insecure=False,
                       cert_path=None, key_path=None, server_id=None)
        cfg = replace(self.config, server=scfg,
                      security=replace(self.config.security,
                                       tokens=(TokenConfig(token=token, name="local"),)))
        srv = RgpuServer(cfg)
        await srv.start()
        self._local_server = srv
        assert srv.cert is not None
        entry = ServerEntry(address=f"127.0.0.1:{srv.port}", token=token, transport="tcp",
                            fingerprint=srv.cert.fingerprint)
        self.add_link(entry, local=True)

    async def stop(self) -> None:
        for app in list(self.apps):
            with contextlib.suppress(Exception):
                app.peer.close("daemon_shutdown", "the rgpu daemon is shutting down")
        for link in list(self.links.values()):
            await link.stop()
        if self._unix is not None:
            self._unix.close()
            with contextlib.suppress(OSError):
                self.config.client.socket_path.unlink()
        if self._local_server is not None:
            await self._local_server.stop()

    def add_link(self, entry: ServerEntry, *, local: bool = False) -> ServerLink:
        link = ServerLink(self, entry, local=local)
        if link.key in self.links:
            raise RgpuError(f"server {link.key} is already in the pool")
        self.links[link.key] = link
        link.start()
        return link

    async def remove_link(self, address: str) -> ServerLink:
        key = _norm_address(address)
        link = self.links.pop(key, None)
        if link is None:
            raise RgpuError(f"server {key} is not in the pool (see `rgpu status`)")
        await link.stop()
        self.link_lost(link)
        self.rebuild_pool()
        return link

    def server_id_owner(self, server_id: int, asking: ServerLink) -> ServerLink | None:
        for link in self.links.values():
            if link is not asking and link.state == "connected" and link.server_id == server_id:
                return link
        return None

    def rebuild_pool(self) -> None:
        servers = [ServerGpus(link.key, link.server_id or 0, link.local, link.gpus)
                   for link in self.links.values() if link.state == "connected"]
        self.pool = build_pool(servers, self.config.client.gpu_ordering)
        self.pool_changed.set()
        self.pool_changed = asyncio.Event()

    def link_lost(self, link: ServerLink) -> None:
        for (lnk, _sid), session in list(self._by_server_session.items()):
            if lnk is link:
                session.dead = (f"server {link.key} was lost ({link.error or 'disconnected'});"
                                " the session's GPU state is gone")
                del self._by_server_session[(lnk, _sid)]

    def status(self) -> dict[str, Any]:
        return {
            "servers": [link.to_dict() for link in self.links.values()],
            "gpus": [g.to_dict() for g in self.pool],
            "ordering": self.config.client.gpu_ordering,
            "apps": sum(1 for a in self.apps if a.name != "rgpu cli"),
            "sessions": sum(len(a.sessions) for a in self.apps),
            "unsupported_calls": dict(self.unsupported),
            "socket": str(self.config.client.socket_path),
            "ready": self.ready,
        }

    # --- applications --------------------------------------------------------------------

    def _make_app_conn(self, _transport: object) -> Connection:
        # Frames to applications are never compressed: the C shims do not carry LZ4.
        conn = Connection(ConnectionConfig(Role.SERVER, require_auth=False, compress=False,
                                           name="rgpu-daemon",
                                           server_info={"daemon": True, "ordering":
                                                        self.config.client.gpu_ordering}))
        self._peer_pids[conn] = _peer_pid(_transport)
        return conn

    def _on_app(self, peer: Peer) -> None:
        app = AppClient(peer, cred_pid=self._peer_pids.pop(peer.conn, 0))
        peer.state = app

        def on_handshake(p: Peer, ev: Any) -> None:
            app.name = str(ev.peer.get("name", ""))[:64]
            app.pid = int(ev.peer.get("pid", 0) or 0)
            self.apps.add(app)

        peer.on_handshake = on_handshake
        peer.on_message = self._on_app_message
        peer.on_close = lambda p, ev: self._app_closed(app)

    def _app_closed(self, app: AppClient) -> None:
        self.apps.discard(app)
        _shm_detach(app)
        for session in list(app.sessions.values()):
            self._close_session(session)
        app.sessions.clear()

    def _close_session(self, session: AppSession) -> None:
        link = session.link
        self._by_server_session.pop((link, session.server_session), None)
        peer = link.peer
        if peer is not None and not peer.is_closed and not session.dead:
            fut = peer.request_nowait(MessageKind.CONTROL, {"op": "close_session",
                                                            "session": session.server_session})
            fut.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            peer.conn.release_session(session.server_session)

    def _on_app_message(self, peer: Peer, frame: Frame, stream: int) -> None:
        app = peer.state
        assert isinstance(app, AppClient)
        if frame.kind is MessageKind.CONTROL:
            asyncio.get_running_loop().create_task(self._app_control(app, frame))
            return
        if frame.kind not in (MessageKind.CALL, MessageKind.BATCH, MessageKind.FENCE):
            peer.reply_error(frame, "unexpected", f"unexpected {frame.kind.name}")
            return
        session = app.sessions.get(frame.session)
        if session is None:
            peer.reply_error(frame, "unknown_session",
                             f"session {frame.session} is not open; open one first")
            return
        link_peer = session.link.peer
        if session.dead or link_peer is None or link_peer.is_closed:
            if frame.kind is not MessageKind.BATCH:
                peer.reply_error(frame, "server_lost", session.dead or
                                 f"server {session.link.key} is not connected")
            return
        try:
            body, bulk, shm_reply = _shm_unwrap(app, frame)
        except ShmError as exc:
            if frame.kind is not MessageKind.BATCH:
                peer.reply_error(frame, "bad_call", str(exc))
            return
        cache_key = None
        if frame.kind is MessageKind.CALL and not bulk and shm_reply is None \
                and _cacheable_query(body):
            cache_key = msgpack.packb(body)
            hit = session.link.query_cache.get(cache_key)
            if hit is not None:
                peer.send(MessageKind.REPLY, hit, session=frame.session, request=frame.request,
                          flags=Flags.RESPONSE)
                return
        try:
            if frame.kind is MessageKind.BATCH:
                link_peer.send(frame.kind, body, session=session.server_session, bulk=bulk)
                return
            fut = link_peer.request_nowait(frame.kind, body,
                                           session=session.server_session, bulk=bulk)
        except (PeerClosed, ConnectionError) as exc:
            if frame.kind is not MessageKind.BATCH:
                peer.reply_error(frame, "server_lost",
                                 f"server {session.link.key} was lost: {exc}")
            return
        fut.add_done_callback(
            lambda f: self._forward_reply(peer, frame, session, f, shm_reply, cache_key))
        session.link.watch()

    def _forward_reply(self, app_peer: Peer, request: Frame, session: AppSession,
                       fut: asyncio.Future[Frame],
                       shm_reply: tuple[int, int] | None = None,
                       cache_key: bytes | None = None) -> None:
        if fut.cancelled():
            if not app_peer.is_closed:
                app_peer.reply_error(request, "cancelled", "request cancelled")
            return
        exc = fut.exception()
        if app_peer.is_closed:
            return
        if exc is not None:
            app_peer.reply_error(request, "server_lost",
                                 f"server {session.link.key} was lost during the call: {exc}")
            return
        reply = fut.result()
        if cache_key is not None and reply.kind is MessageKind.REPLY and not reply.bulk \
                and session.link.peer is not None and not session.link.peer.is_closed:
            cache = session.link.query_cache
            if len(cache) >= QUERY_CACHE_ENTRIES:
                cache.clear()
            cache[cache_key] = reply.body
        if reply.kind is MessageKind.ERROR:
            body = reply.body if isinstance(reply.body, dict) else {}
            if body.get("code") == "unsupported":
                self.unsupported[str(request.body[0]) if isinstance(request.body, list)
                                 and request.body else "?"] += 1
            app_peer.conn.send_error(str(body.get("code", "error")),
                                     str(body.get("message", "")), session=request.session,
                                     request=request.request,
                                     extra={k: v for k, v in body.items()
                                            if k not in ("code", "message")})
            app_peer.pump()
            return
        region = session.app.shm
        if shm_reply is not None and region is not None and reply.bulk \
                and len(reply.bulk) <= shm_reply[1]:
            region.write(shm_reply[0], reply.bulk)
            app_peer.send(MessageKind.REPLY, {"shm": len(reply.bulk)}, session=request.session,
                          request=request.request, flags=Flags.RESPONSE)
            return
        app_peer.send(MessageKind.REPLY, reply.body, session=request.session,
                      request=request.request, flags=Flags.RESPONSE, bulk=reply.bulk)

    def route_from_server(self, link: ServerLink, frame: Frame) -> None:
        session = self._by_server_session.get((link, frame.session))
        if session is None or session.app.peer.is_closed:
            return
        session.app.peer.send(frame.kind, frame.body, session=session.local_id,
                              request=frame.request, flags=frame.flags, bulk=frame.bulk)

    async def _app_control(self, app: AppClient, frame: Frame) -> None:
        peer = app.peer
        body = frame.body if isinstance(frame.body, dict) else {}
        op = body.get("op")
        try:
            if op == "status":
                peer.reply(frame, self.status())
            elif op == "list_gpus":
                peer.reply(frame, [g.to_dict() for g in self.pool])
            elif op == "list_servers":
                peer.reply(frame, [link.to_dict() for link in self.links.values()])
            elif op == "add_server":
                entry = self._entry_from(body)
                link = self.add_link(entry)
                peer.reply(frame, {"address": link.key})
            elif op == "remove_server":
                link = await self.remove_link(str(body.get("address", "")))
                peer.reply(frame, {"address": link.key})
            elif op == "open_session":
                session = await self._open_session(app, body)
                asked = self._pool_gpu(body.get("gpu", 0))
                peer.reply(frame, {"session": session.local_id, "gpu": asked.index,
                                   "server_id": session.link.server_id,
                                   "cuda_index": asked.info.get("cuda_index"),
                                   "vulkan_index": asked.info.get("vulkan_index")})
            elif op == "close_session":
                sid = int(body.get("session", 0))
                session = app.sessions.pop(sid, None)
                if session is None:
                    raise RgpuError(f"session {sid} is not open")
                self._close_session(session)
                peer.reply(frame, {"closed": sid})
            elif op == "report_unsupported":
                self.unsupported[str(body.get("name", "?"))] += int(body.get("count", 1))
                peer.reply(frame, None)
            elif op == "cuda_facts":
                peer.reply(frame, await self._cuda_facts(body.get("gpu")))
            elif op == "server_control":
                peer.reply(frame, await self._server_control(body))
            elif op == "shm_attach":
                peer.reply(frame, _shm_attach(app, body, self.apps))
            else:
                raise RgpuError(f"unknown CONTROL op {op!r}")
        except RemoteError as exc:
            peer.reply_error(frame, exc.code, str(exc))
        except ShmError as exc:
            peer.reply_error(frame, "refused", str(exc))
        except (RgpuError, ConfigError) as exc:
            peer.reply_error(frame, "error", str(exc))
        except Exception as exc:
            log.exception("CONTROL %s failed", op)
            peer.reply_error(frame, "internal", f"{op} failed: {exc}")

    def _entry_from(self, body: dict[str, Any]) -> ServerEntry:
        try:
            return ServerEntry(address=str(body.get("address", "")),
                               token=body.get("token") or None,
                               transport=str(body.get("transport") or "quic"),
                               fingerprint=body.get("fingerprint") or None,
                               insecure=bool(body.get("insecure", False)))
        except ConfigError as exc:
            raise RgpuError(f"add_server: {exc}") from None

    def _pool_gpu(self, index: Any) -> PoolGpu:
        if not isinstance(index, int) or not 0 <= index < len(self.pool):
            raise RgpuError(f"GPU {index} is not in the pool ({len(self.pool)} GPU(s); see "
                            "`rgpu status`)")
        return self.pool[index]

    async def _server_control(self, body: dict[str, Any]) -> Any:
        gpu = self._pool_gpu(body.get("gpu"))
        link = self.links[gpu.server_key]
        if link.peer is None:
            raise RgpuError(f"server {link.key} is not connected")
        reply = await link.peer.request(MessageKind.CONTROL, body.get("body"), timeout=60)
        return reply.body

    async def _cuda_facts(self, index: Any) -> dict[str, Any]:
        """The device facts of one pool GPU's CUDA device, fetched once per server link."""
        gpu = self._pool_gpu(index)
        cuda_index = gpu.info.get("cuda_index")
        if not gpu.info.get("cuda") or cuda_index is None:
            raise RgpuError(f"GPU {gpu.index} ({gpu.info.get('name')}) has no CUDA support")
        link = self.links.get(gpu.server_key)
        if link is None or link.peer is None:
            raise RgpuError(f"server {gpu.server_key} is not connected")
        facts = link.cuda_facts
        if facts is None:
            reply = await link.peer.request(MessageKind.CONTROL, {"op": "cuda_facts"},
                                            timeout=60)
            facts = link.cuda_facts = list(reply.body)
        if not 0 <= int(cuda_index) < len(facts):
            raise RgpuError(f"server {link.key} reports no CUDA device {cuda_index}")
        return dict(facts[int(cuda_index)])

    async def _open_session(self, app: AppClient, body: dict[str, Any]) -> AppSession:
        gpu = self._pool_gpu(body.get("gpu", 0))
        link = self.links.get(gpu.server_key)
        if link is None or link.peer is None or link.peer.is_closed:
            raise RgpuError(f"server {gpu.server_key} is not connected")
        for s in app.sessions.values():  # one session per application and server
            if s.link is link and not s.dead:
                return s
        peer = link.peer
        reply = await peer.request(MessageKind.CONTROL, {
            "op": "open_session", "gpu": gpu.server_gpu, "name": app.name, "pid": app.pid},
            timeout=30)
        server_sid = int(reply.body["session"])
        peer.open_session_stream(server_sid)
        local = self._next_local
        self._next_local = (self._next_local % 0xFFFFFFFE) + 1
        session = AppSession(local, app, link, server_sid, gpu.index)
        app.sessions[local] = session
        self._by_server_session[(link, server_sid)] = session
        return session


# --- shared-memory copies (docs/PROTOCOL.md, "Shared-memory copies") ---------------------------
#
# An application's shim may hand the daemon one POSIX shared-memory region per connection;
# large copies then move through it instead of as bulk on the Unix socket. The daemon puts the
# region's bytes on the wire as the frame's bulk segment, so servers see no difference.

SHM_DIR = "/dev/shm"
SHM_MAX_SIZE = 1 << 30
_SHM_NAME = re.compile(r"rgpu-(\d+)-[0-9a-f]{1,32}")


class ShmError(RgpuError):
    """A shared-memory request the daemon refuses."""


class SharedRegion:
    """The daemon's mapping of one application's region."""

    def __init__(self, name: str, mapping: mmap.mmap, ident: tuple[int, int]) -> None:
        self.name = name
        self.map = mapping
        self.ident = ident  # (st_dev, st_ino): one region is never attached twice
        self.size = len(mapping)

    def check(self, offset: Any, length: Any) -> tuple[int, int]:
        if not (isinstance(offset, int) and isinstance(length, int) and 0 <= offset
                and 0 <= length and offset + length <= self.size):
            raise ShmError(f"shared-memory range [{offset!r}, +{length!r}] is outside the "
                           f"{self.size}-byte region")
        return offset, length

    def read(self, offset: Any, length: Any) -> memoryview:
        """A view of the range, not a copy: the call that carries it is written to the server
        link before control returns to the event loop, and the application does not touch the
        range until that call's reply."""
        offset, length = self.check(offset, length)
        return memoryview(self.map)[offset:offset + length]

    def write(self, offset: int, data: bytes | memoryview) -> None:
        offset, _ = self.check(offset, len(data))
        self.map[offset:offset + len(data)] = data

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.map.close()


def _shm_attach(app: AppClient, body: dict[str, Any], apps: set[AppClient]) -> dict[str, Any]:
    """Map the region the app named, if it is plainly the app's own: a regular file directly
    in /dev/shm named rgpu-<its pid>-<hex>, owned by the daemon's user, mode 0600, of the size
    it said (at most 1 GiB), and not attached to anyone yet."""
    if app.shm is not None:
        raise ShmError("this connection has a shared-memory region already")
    name, size = body.get("name"), body.get("size")
    if not isinstance(name, str) or not (m := _SHM_NAME.fullmatch(name)):
        raise ShmError(f"bad shared-memory name {name!r}")
    if not app.cred_pid or int(m.group(1)) != app.cred_pid:
        raise ShmError(f"shared-memory name {name!r} is not this application's "
                       f"(pid {app.cred_pid})")
    if not isinstance(size, int) or not 0 < size <= SHM_MAX_SIZE:
        raise ShmError(f"bad shared-memory size {size!r} (at most {SHM_MAX_SIZE})")
    try:
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
                     | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise ShmError(f"cannot open shared-memory region {name!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ShmError(f"{name!r} is not a regular file")
        if st.st_uid != os.getuid():
            raise ShmError(f"{name!r} is not owned by the daemon's user")
        if stat.S_IMODE(st.st_mode) != 0o600:
            raise ShmError(f"{name!r} has mode {stat.S_IMODE(st.st_mode):o}, not 600")
        if st.st_size != size:
            raise ShmError(f"{name!r} has {st.st_size} bytes, not {size}")
        ident = (st.st_dev, st.st_ino)
        if any(a.shm is not None and a.shm.ident == ident for a in apps):
            raise ShmError(f"{name!r} is attached to another application")
        mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    app.shm = SharedRegion(name, mapping, ident)
    log.info("app %s (pid %d) attached shared-memory region %s (%d MiB)", app.name, app.pid,
             name, size >> 20)
    return {"attached": name, "size": size}


def _peer_pid(transport: object) -> int:
    """The pid of the process at the other end of a Unix socket (0 if unknown)."""
    get = getattr(transport, "get_extra_info", None)
    sock = get("socket") if get is not None else None
    try:
        cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return 0
    return int(struct.unpack("3i", cred)[0])


QUERY_CACHE_ENTRIES = 4096


def _cacheable_query(body: Any) -> bool:
    """A Vulkan physical-device query whose reply depends only on its arguments.

    ``vkGetPhysicalDeviceImageFormatProperties`` and its kin answer the same for the same
    physical device and inputs, and a physical device's id is the same in every session of a
    server connection (``VulkanSession.physical_devices``), so the daemon answers a repeated
    query for any application from its cache. Surface and display queries name objects of one
    application and are never cached.
    """
    if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], str)):
        return False
    fn = body[0]
    return fn.startswith("vkGetPhysicalDevice") and not any(
        w in fn for w in ("Surface", "Display", "Presentation", "Present", "ToolProperties"))


def _shm_detach(app: AppClient) -> None:
    if app.shm is not None:
        log.debug("app %s (pid %d) detached shared-memory region %s", app.name, app.pid,
                  app.shm.name)
        app.shm.close()
        app.shm = None


def _shm_unwrap(app: AppClient, frame: Frame) -> tuple[Any, bytes | memoryview,
                                                       tuple[int, int] | None]:
    """A CALL/BATCH body ``[fn, args, bulk_index, {"shm": [offset, length]}]`` becomes
    ``[fn, args, bulk_index]`` with the region's bytes as bulk; ``{"shm_reply": [offset,
    capacity]}`` asks for the reply's bulk in the region. Other bodies pass unchanged."""
    body = frame.body
    if not (isinstance(body, list) and len(body) == 4 and isinstance(body[3], dict)):
        return body, frame.bulk, None
    region = app.shm
    if region is None:
        raise ShmError("no shared-memory region is attached to this connection")
    extra = body[3]
    head = body[:3] if body[2] is not None else body[:2]
    if set(extra) == {"shm"} and not frame.bulk:
        rng = extra["shm"]
        if isinstance(rng, list) and len(rng) == 2:
            return head, region.read(rng[0], rng[1]), None
    elif set(extra) == {"shm_reply"}:
        rng = extra["shm_reply"]
        if isinstance(rng, list) and len(rng) == 2:
            return head, frame.bulk, region.check(rng[0], rng[1])
    raise ShmError(f"bad shared-memory element {extra!r}")
