"""`rgpu server`: accepts authenticated clients and runs their sessions on local GPUs.

The server listens on QUIC (UDP) and TCP+TLS on the same port number by default, so a
client may use either. Before AUTH_OK nothing but the handshake is processed (the wire state
machine enforces it); after it, CONTROL messages manage sessions and CALLs run on them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import __version__
from ..config import Config, TokenConfig
from ..errors import RgpuError
from ..net.peer import Peer
from ..net.quic import load_engine, start_quic_server
from ..net.stream import start_tcp_server
from ..net.tls import CertPair, ensure_server_cert, format_fingerprint, server_ssl_context
from ..wire import Connection, ConnectionConfig, Flags, Frame, MessageKind, Role
from ..wire.auth import token_key
from .cuda.errors import CudaError
from .discovery import CudaDeviceSummary, GpuInfo, discover_gpus
from .session import CallError, Session

log = logging.getLogger("rgpu.server")

EXAMPLE_TOKEN = "0123456789abcdef" * 4  # the placeholder in rgpu.toml.example
HANDSHAKE_TIMEOUT = 10.0


@dataclass(eq=False)
class ClientState:
    """What the server knows about one authenticated connection."""

    peer: Peer
    token: TokenConfig | None
    connected: float = field(default_factory=time.time)
    sessions: dict[int, Session] = field(default_factory=dict)


class MemoryQuota:
    """Device memory held by all sessions of one token, against its `max_memory`.

    Checked on every allocation call before it reaches the backend; sessions run on their own
    worker threads, hence the lock.
    """

    ALLOCATORS: ClassVar[dict[str, Callable[[list[Any]], int]]] = {
        "cuMemAlloc_v2": lambda a: int(a[0]),
        "cuMemAllocPitch_v2": lambda a: int(a[0]) * int(a[1]),
        "cuArrayCreate_v2": lambda a: _array_bytes({**a[1], "Depth": 0, "Flags": 0}),
        "cuArray3DCreate_v2": lambda a: _array_bytes(a[1]),
        "cuMipmappedArrayCreate": lambda a: _mipmap_bytes(a[1], int(a[2])),
    }
    # Allocations named by the id the application chose (the first argument), and their frees.
    BY_ID = frozenset({"cuArrayCreate_v2", "cuArray3DCreate_v2", "cuMipmappedArrayCreate"})
    FREE_BY_ID = frozenset({"cuArrayDestroy", "cuMipmappedArrayDestroy"})

    def __init__(self, token: TokenConfig) -> None:
        self.token = token
        self.limit = token.max_memory
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, nbytes: int) -> None:
        with self._lock:
            if self.limit is not None and self.used + nbytes > self.limit:
                raise CallError(
                    "quota", f"max_memory of token {self.token.name or '(unnamed)'} would be "
                    f"exceeded: {self.used} bytes in use, {nbytes} requested, limit "
                    f"{self.limit}; free memory or raise max_memory on the server", cuda=2)
            self.used += nbytes

    def release(self, nbytes: int) -> None:
        with self._lock:
            self.used = max(0, self.used - nbytes)


def _array_bytes(desc: dict[str, Any]) -> int:
    """Bytes a CUDA array of this CUDA_ARRAY3D_DESCRIPTOR holds; 0 for a descriptor the
    backend will refuse anyway."""
    from .cuda.emu.arrays import array_layout

    try:
        return array_layout(desc)[2]
    except Exception:  # CudaError: the backend names the problem
        return 0


def _mipmap_bytes(desc: dict[str, Any], levels: int) -> int:
    from .cuda.emu.arrays import mipmap_level_descs

    try:
        return sum(_array_bytes(d) for d in mipmap_level_descs(desc, levels))
    except Exception:
        return 0


class AuthThrottle:
    """Slows repeated authentication failures from one address (exponential, capped)."""

    def __init__(self, base_delay: float, max_delay: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base = base_delay
        self.max = max_delay
        self.clock = clock
        self._failures: dict[str, tuple[int, float]] = {}

    def failure(self, host: str) -> float:
        """Record a failure and return how long to hold the refusal back."""
        count, last = self._failures.get(host, (0, 0.0))
        now = self.clock()
        if now - last > 600:
            count = 0
        count += 1
        self._failures[host] = (count, now)
        if len(self._failures) > 10000:  # bound memory under a spray of addresses
            oldest = sorted(self._failures.items(), key=lambda kv: kv[1][1])[:5000]
            for k, _ in oldest:
                del self._failures[k]
        if count <= 1:
            return 0.0
        return min(self.base * (2 ** (count - 2)), self.max)

    def success(self, host: str) -> None:
        self._failures.pop(host, None)


def _host_of(address: str) -> str:
    if address.startswith("["):
        return address[1:address.index("]")]
    return address.rsplit(":", 1)[0]


class RgpuServer:
    def __init__(self, config: Config, *, cuda_backend: Any = None,
                 gpus: list[GpuInfo] | None = None) -> None:
        self.config = config
        self.scfg = config.server
        self._cuda_backend = cuda_backend
        self.gpus: list[GpuInfo] = gpus or []
        self._gpus_given = gpus is not None
        self._cuda_failed = False
        self.cert: CertPair | None = None
        self.server_id = 0
        self.clients: set[ClientState] = set()
        self._next_session = 1
        self._servers: list[Any] = []
        self.ports: dict[str, int] = {}
        self.throttle = AuthThrottle(self.scfg.auth_failure_delay)
        self._tokens = [(t, token_key(t.token)) for t in config.security.tokens]
        self.started = time.time()
        self.stats = {"auth_failures": 0, "sessions_opened": 0, "calls": 0,
                      "refused_full": 0}
        self.hostname = socket.gethostname()
        self._quotas: dict[int, MemoryQuota] = {}
        self._vulkan_backend: Any = None
        self._vulkan_opened = False
        self._vulkan_lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if not self._tokens:
            raise RgpuError("no tokens configured: the server would refuse everyone; create "
                            "one with `rgpu token` and add it under [[security.tokens]] or "
                            "pass --token")
        for t in self.config.security.tokens:
            if t.token == EXAMPLE_TOKEN:
                raise RgpuError("the example token from rgpu.toml.example is configured; "
                                "replace it with one made by `rgpu token`")
        self.cert, created = ensure_server_cert(self.scfg.cert_path, self.scfg.key_path,
                                                self.scfg.state_dir)
        if created:
            log.info("generated a self-signed certificate in %s", self.scfg.state_dir)
        fp = self.cert.fingerprint
        self.server_id = (self.scfg.server_id if self.scfg.server_id is not None
                          else int(fp[:4], 16))
        if not self._gpus_given:
            self.gpus = await asyncio.get_running_loop().run_in_executor(None, self._discover)
        await self._listen()
        log.info("rgpu server %s (server_id %d) listening on %s; certificate %s",
                 __version__, self.server_id,
                 ", ".join(f"{k} {self.scfg.bind}:{v}" for k, v in self.ports.items()),
                 format_fingerprint(fp))
        for g in self.gpus:
            log.info("GPU %d: %s (Vulkan: %s, CUDA: %s)", g.index, g.name,
                     str(g.vulkan).lower(), str(g.cuda).lower())

    def _discover(self) -> list[GpuInfo]:
        summaries: list[CudaDeviceSummary] = []
        backend = self.cuda_backend
        if backend is not None:
            for i in range(backend.cuDeviceGetCount()):
                f = backend.device_facts(i)
                summaries.append(CudaDeviceSummary(
                    name=f.name, uuid=f.uuid, total_memory=f.total_memory,
                    compute_capability=f.compute_capability,
                    emulated=f.backend != "nvidia", pci_bus_id=f.pci_bus_id))
        return discover_gpus(summaries, vulkan=True, expose=self.scfg.expose_gpus)

    @property
    def cuda_backend(self) -> Any:
        if self._cuda_backend is None and self.scfg.cuda != "none" and not self._cuda_failed:
            try:
                from .cuda import open_cuda_backend

                self._cuda_backend = open_cuda_backend(self.scfg.cuda,
                                                       emu_memory=self.scfg.emu_memory,
                                                       identity=self.server_id)
            except RgpuError:
                raise
            except Exception as exc:
                self._cuda_failed = True
                if self.scfg.cuda != "auto":
                    raise RgpuError(f"cannot start the {self.scfg.cuda} CUDA backend: {exc}; "
                                    "use --cuda auto or --cuda none") from None
                log.warning("no CUDA backend: %s", exc)
        return self._cuda_backend

    @property
    def vulkan_backend(self) -> Any:
        """The host's Vulkan backend (each session in its own worker process), made once."""
        with self._vulkan_lock:
            if not self._vulkan_opened:
                self._vulkan_opened = True
                from .vulkan import open_vulkan_backend

                try:
                    self._vulkan_backend = open_vulkan_backend(isolate=True)
                except Exception as exc:
                    log.warning("no Vulkan backend: %s", exc)
            return self._vulkan_backend

    async def _listen(self) -> None:
        assert self.cert is not None
        bind, port = self.scfg.bind, self.scfg.port
        transport = self.scfg.transport
        want_quic = transport in ("quic", "both")
        want_tcp = transport in ("tcp", "both")
        if want_quic:
            engine = load_engine(self.scfg.quic_engine)
            srv = await start_quic_server(bind, port, self.cert, engine, self._make_conn,
                                          self._on_peer)
            self._servers.append(srv)
            sock = srv._transport.get_extra_info("socket")
            port = sock.getsockname()[1] if port == 0 else port
            self.ports[f"quic/{engine.name}"] = port
        if want_tcp:
            ctx = None if self.scfg.insecure else server_ssl_context(self.cert)
            if self.scfg.insecure:
                log.warning("plain TCP without TLS (--insecure): tokens are still never sent, "
                            "but all GPU traffic is readable on the network")
            srv = await start_tcp_server(
                bind, port, ctx,
                lambda _t: self._make_conn(b"" if self.scfg.insecure else self.cert_der),
                self._on_peer)
            self._servers.append(srv)
            if port == 0:
                port = srv.sockets[0].getsockname()[1]
            self.ports["tcp+tls" if ctx else "tcp"] = port

    @property
    def cert_der(self) -> bytes:
        assert self.cert is not None
        return self.cert.der

    @property
    def port(self) -> int:
        return next(iter(self.ports.values()))

    async def stop(self) -> None:
        for c in list(self.clients):
            c.peer.close("server_shutdown", "the server is shutting down")
            await self._close_client(c)
        for srv in self._servers:
            srv.close()
        self._servers.clear()
        for name, backend in (("CUDA", self._cuda_backend), ("Vulkan", self._vulkan_backend)):
            close = getattr(backend, "close", None)
            if close is None:
                continue
            try:
                await asyncio.get_running_loop().run_in_executor(None, close)
            except Exception:
                log.exception("closing the %s backend failed", name)

    # --- connections ---------------------------------------------------------------------

    def _make_conn(self, der: bytes) -> Connection:
        binding = hashlib.sha256(der).digest() if der else b""
        return Connection(ConnectionConfig(
            Role.SERVER, tokens=self._tokens, channel_binding=binding,
            name=f"rgpu-server/{__version__}",
            server_info={"server_id": self.server_id, "hostname": self.hostname,
                         "rgpu_version": __version__},
            admit=self._admit))

    def _admit(self, token: object) -> tuple[str, str] | None:
        """Refuse before AUTH_OK when the server or the token has no client slot left."""
        limit = self.scfg.max_clients
        if len(self.clients) >= limit:
            self.stats["refused_full"] += 1
            log.warning("refusing a client: max_clients=%d reached", limit)
            return ("server_full", f"server is full: max_clients={limit} clients are "
                    "connected; try later or raise max_clients on the server")
        if isinstance(token, TokenConfig) and token.max_clients is not None:
            same = sum(1 for c in self.clients if c.token is token)
            if same >= token.max_clients:
                return ("server_full", f"token {token.name or '(unnamed)'} already has "
                        f"max_clients={token.max_clients} connections")
        return None

    def _on_peer(self, peer: Peer) -> None:
        # A connection that never completes the handshake must not hold a slot forever.
        asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT, self._handshake_deadline, peer)
        peer.on_auth_failed = self._on_auth_failed
        peer.on_handshake = self._on_handshake
        peer.on_message = self._on_message
        peer.on_close = self._on_close

    def _handshake_deadline(self, peer: Peer) -> None:
        if not peer.conn.established and not peer.is_closed and not peer.hold_close:
            log.info("closing %s: no handshake within %g s", peer.address, HANDSHAKE_TIMEOUT)
            peer.close("timeout", f"authentication did not complete within "
                       f"{HANDSHAKE_TIMEOUT:g} s")

    def _on_auth_failed(self, peer: Peer, reason: str) -> None:
        self.stats["auth_failures"] += 1
        host = _host_of(peer.address)
        delay = self.throttle.failure(host)
        log.warning("authentication failed from %s: %s", peer.address, reason)
        if delay > 0:
            peer.hold_close = True
            asyncio.get_running_loop().call_later(delay, peer.release)

    def _on_handshake(self, peer: Peer, _ev: Any) -> None:
        token = peer.conn.identity
        assert token is None or isinstance(token, TokenConfig)
        self.throttle.success(_host_of(peer.address))
        state = ClientState(peer, token)
        peer.state = state
        self.clients.add(state)
        log.info("client %s authenticated (token %s, %s)", peer.address,
                 token.name if token and token.name else "unnamed", peer.transport_name)

    def _on_close(self, peer: Peer, ev: Any) -> None:
        state = peer.state
        if isinstance(state, ClientState):
            log.info("client %s disconnected (%s)", peer.address, ev.reason)
            asyncio.get_running_loop().create_task(self._close_client(state))

    async def _close_client(self, state: ClientState) -> None:
        self.clients.discard(state)
        for s in list(state.sessions.values()):
            await s.close()
        state.sessions.clear()

    # --- messages ------------------------------------------------------------------------

    def visible_gpus(self, token: TokenConfig | None) -> list[GpuInfo]:
        if token is None or token.allowed_gpus is None:
            return list(self.gpus)
        allowed = set(token.allowed_gpus)
        return [g for g in self.gpus if g.index in allowed]

    def _on_message(self, peer: Peer, frame: Frame, stream: int) -> None:
        state = peer.state
        if not isinstance(state, ClientState):
            peer.reply_error(frame, "not_ready", "connection is not accepted")
            return
        kind = frame.kind
        if kind is MessageKind.CONTROL:
            asyncio.get_running_loop().create_task(self._control(state, frame))
        elif kind in (MessageKind.CALL, MessageKind.BATCH, MessageKind.FENCE):
            session = state.sessions.get(frame.session)
            if session is None:
                peer.reply_error(frame, "unknown_session",
                                 f"session {frame.session} is not open on this connection")
                return
            self._submit(state, session, frame)
        elif kind is MessageKind.ERROR:
            log.info("client %s reported: %s", peer.address, frame.body)
        else:
            peer.reply_error(frame, "unexpected", f"unexpected {kind.name} from a client")

    async def _control(self, state: ClientState, frame: Frame) -> None:
        peer = state.peer
        body = frame.body if isinstance(frame.body, dict) else {}
        op = body.get("op")
        try:
            if op == "info":
                peer.reply(frame, self.info(state.token))
            elif op == "gpus":
                peer.reply(frame, [g.to_dict() for g in self.visible_gpus(state.token)])
            elif op == "open_session":
                sid = self._open_session(state, body)
                peer.reply(frame, {"session": sid})
            elif op == "close_session":
                sid = int(body.get("session", 0))
                s = state.sessions.pop(sid, None)
                if s is None:
                    raise CallError("unknown_session", f"session {sid} is not open")
                await s.close()
                peer.reply(frame, {"closed": sid})
            elif op == "vulkan_facts":
                from .vulkan import collect_facts

                vk = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: self.vulkan_backend)
                if vk is None:
                    raise CallError("unsupported", "this server has no Vulkan backend")
                peer.reply(frame, await asyncio.get_running_loop().run_in_executor(
                    None, collect_facts, vk))
            elif op == "cuda_facts":
                backend = self.cuda_backend
                if backend is None:
                    raise CallError("unsupported", "this server has no CUDA backend")
                facts = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: [backend.device_facts(i).to_wire()
                                   for i in range(backend.cuDeviceGetCount())])
                peer.reply(frame, facts)
            else:
                raise CallError("unknown_op", f"unknown CONTROL op {op!r}")
        except CallError as exc:
            peer.reply_error(frame, exc.code, str(exc), exc.extra)
        except Exception as exc:  # a bug must not take the server down
            log.exception("CONTROL %s failed", op)
            peer.reply_error(frame, "internal", f"{op} failed: {exc}")

    def info(self, token: TokenConfig | None) -> dict[str, Any]:
        return {
            "server_id": self.server_id,
            "hostname": self.hostname,
            "rgpu_version": __version__,
            "gpus": [g.to_dict() for g in self.visible_gpus(token)],
            "clients": len(self.clients),
            "sessions": sum(len(c.sessions) for c in self.clients),
            "max_clients": self.scfg.max_clients,
            "uptime": time.time() - self.started,
            "transports": dict(self.ports),
            "fingerprint": self.cert.fingerprint if self.cert else "",
        }

    def _open_session(self, state: ClientState, body: dict[str, Any]) -> int:
        gpu = body.get("gpu")
        if gpu is not None:
            if not isinstance(gpu, int) or gpu not in {
                    g.index for g in self.visible_gpus(state.token)}:
                raise CallError("gpu_not_allowed", f"GPU {gpu} does not exist on this server "
                                "or the token may not use it (allowed_gpus)")
        sid = self._next_session
        self._next_session = (self._next_session % 0xFFFFFFFE) + 1
        session = Session(sid, state.token, gpu, name=str(body.get("name", ""))[:64],
                          pid=int(body.get("pid", 0) or 0))
        state.sessions[sid] = session
        self.stats["sessions_opened"] += 1
        log.info("%s opened from %s", session.label, state.peer.address)
        return sid

    def _submit(self, state: ClientState, session: Session, frame: Frame) -> None:
        """Queue a CALL/BATCH/FENCE on the session's worker thread, in arrival order.

        Everything that touches a backend runs on that one thread, so calls keep their order
        without any await between arrival and submission. A BATCH call has no reply; if it
        fails, an unsolicited ERROR (request 0, ``deferred``) tells the application, which
        reports it at its next synchronizing call, as CUDA reports asynchronous errors.
        """
        session.calls += 1
        self.stats["calls"] += 1
        if frame.kind is MessageKind.FENCE:
            self._enqueue(state, session, frame, None, [])
            return
        body = frame.body
        if frame.kind is MessageKind.BATCH and isinstance(body, list) and body \
                and isinstance(body[0], list) and not frame.bulk:
            self._submit_many(state, session, frame, body)
            return
        if not (isinstance(body, list) and 2 <= len(body) <= 3 and isinstance(body[0], str)
                and isinstance(body[1], list)):
            self._fail(state, frame, CallError("bad_call", "CALL body must be "
                                               "[function, [args]] or [function, [args], "
                                               "bulk_index]"))
            return
        fn, args = body[0], body[1]
        if frame.bulk:
            index = body[2] if len(body) == 3 and isinstance(body[2], int) else len(args)
            args = list(args)
            args.insert(max(0, min(index, len(args))), frame.bulk)
        if fn == "rgpu.echo":  # no backend: answered at once (round-trip benchmarks)
            self._succeed(state, frame, bytes(frame.bulk) if frame.bulk else body[1])
            return
        if fn == "rgpu.session":
            self._succeed(state, frame, {"session": session.id, "gpu": session.gpu,
                                         "calls": session.calls})
            return
        self._enqueue(state, session, frame, fn, args)

    def _submit_many(self, state: ClientState, session: Session, frame: Frame,
                     calls: list[Any]) -> None:
        """A coalesced BATCH: ``[[function, [args]], ...]``, queued as one unit of work.

        Each call runs, in order, as if it had come in a BATCH frame of its own: a failing
        call gets its own deferred ERROR and the calls after it still run.
        """
        if session.closed:
            self._fail(state, frame, CallError("unknown_session", "the session is closed"))
            return
        items: list[tuple[Frame, str | None, list[Any]]] = []
        for call in calls:
            if not (isinstance(call, list) and len(call) == 2 and isinstance(call[0], str)
                    and isinstance(call[1], list)):
                self._fail(state, frame, CallError(
                    "bad_call", "a coalesced BATCH holds [function, [args]] calls"),
                    fn=str(call[0]) if isinstance(call, list) and call else "?")
                continue
            items.append((frame, call[0], call[1]))
        extra = len(items) - 1
        if extra > 0:
            session.calls += extra
            self.stats["calls"] += extra
        self._enqueue_items(state, session, items)

    def _enqueue(self, state: ClientState, session: Session, frame: Frame, fn: str | None,
                 args: list[Any]) -> None:
        if session.closed:
            self._fail(state, frame, CallError("unknown_session", "the session is closed"))
            return
        if fn is not None and session.draining and self._busy_for(session, fn, args):
            # The worker is still running this session's earlier work: a query gets "not
            # ready" now, as from a GPU that is busy, instead of waiting behind that work.
            self._fail(state, frame, CallError(
                "CUresult", f"{fn}: this session's earlier work is still running", cuda=600))
            return
        if fn is not None and not session.draining and self._inline_ok(session, fn):
            # The worker is idle and the backend says this call neither blocks nor runs device
            # work: answer it here and save the two thread hand-offs of a round trip.
            result, error = self._run_call(session, frame, fn, args)
            self._complete(state, frame, result, error, fn)
            return
        self._enqueue_items(state, session, [(frame, fn, args)])

    def _busy_for(self, session: Session, fn: str, args: list[Any]) -> bool:
        """Is a query (one the CUDA backend lists in ``busy_queries``) to be answered "not
        ready" now? A stream query is while the worker runs anything (the emulated device runs
        one kernel at a time, whatever its stream); an event query only while a record of that
        event is queued or running; a query of an event recorded earlier, or never, waits
        for the worker as any call does."""
        if fn not in getattr(self._cuda_backend, "busy_queries", ()):
            return False
        if fn != "cuEventQuery":
            return True
        with session.work_lock:
            items = list(session.work)
            if session.running is not None:
                items.append(session.running)
        event = args[0] if args else None
        return any(f in ("cuEventRecord", "cuEventRecordWithFlags") and a and a[0] == event
                   for _frame, f, a in items)

    def _inline_ok(self, session: Session, fn: str) -> bool:
        """May ``fn`` run on the event loop? Only a call the CUDA backend lists in
        ``inline_calls`` (cheap, non-blocking, thread-agnostic), in a session whose backend
        state already exists and whose worker has nothing queued."""
        backend = self._cuda_backend
        return (backend is not None and fn in getattr(backend, "inline_calls", ())
                and "cuda" in session.backends and not session.work)

    def _enqueue_items(self, state: ClientState, session: Session,
                       items: list[tuple[Frame, str | None, list[Any]]]) -> None:
        if not items:
            return
        with session.work_lock:
            session.work.extend(items)
            if session.draining:
                return
            session.draining = True
        session.worker.submit(self._drain, state, session, asyncio.get_running_loop())

    def _drain(self, state: ClientState, session: Session,
               loop: asyncio.AbstractEventLoop) -> None:
        """On the session's worker thread: run queued calls in order until none is left.

        Only CALL/FENCE replies and BATCH failures go back to the event loop; a successful
        BATCH call (a launch, a memset) needs no reply at all.
        """
        while True:
            with session.work_lock:
                if not session.work:
                    session.draining = False
                    session.running = None
                    return
                frame, fn, args = session.running = session.work.popleft()
            result, error = self._run_call(session, frame, fn, args)
            if error is None and frame.kind is MessageKind.BATCH:
                continue
            try:
                loop.call_soon_threadsafe(self._complete, state, frame, result, error, fn)
            except RuntimeError:  # the loop is closed: the server is shutting down
                return

    def _run_call(self, session: Session, frame: Frame, fn: str | None,
                  args: list[Any]) -> tuple[Any, CallError | None]:
        """Execute one call; its result, or the error to report."""
        if fn is None:  # a FENCE: everything before it has run
            return None, None
        try:
            return self._execute(session, fn, args), None
        except CallError as exc:
            return None, exc
        except Exception as exc:  # a bug must not stop the session's queue
            log.error("%s failed", frame.body, exc_info=exc)
            return None, CallError("internal", f"the server failed: {exc}")

    def _complete(self, state: ClientState, frame: Frame, result: Any,
                  error: CallError | None, fn: str | None = None) -> None:
        if error is None:
            self._succeed(state, frame, result)
        else:
            self._fail(state, frame, error, fn=fn)

    def _succeed(self, state: ClientState, frame: Frame, result: Any) -> None:
        if frame.kind is MessageKind.BATCH or state.peer.is_closed:
            return
        if isinstance(result, (bytes, bytearray, memoryview)) and len(result):
            state.peer.send(MessageKind.REPLY, None, session=frame.session,
                            request=frame.request, flags=Flags.RESPONSE, bulk=result)
        else:
            state.peer.reply(frame, result)

    def _fail(self, state: ClientState, frame: Frame, exc: CallError,
              fn: str | None = None) -> None:
        peer = state.peer
        if peer.is_closed:
            return
        if frame.kind is MessageKind.BATCH:
            if fn is None:
                head = frame.body[0] if isinstance(frame.body, list) and frame.body else "?"
                fn = head if isinstance(head, str) else "?"
            peer.conn.send_error(exc.code, str(exc), session=frame.session,
                                 extra={**exc.extra, "fn": fn, "deferred": True})
            peer.pump()
        else:
            peer.reply_error(frame, exc.code, str(exc), exc.extra)

    def _execute(self, session: Session, fn: str, args: list[Any]) -> Any:
        """Run one call on the session's worker thread."""
        if fn == "rgpu.sleep":
            time.sleep(min(float(args[0]) if args else 0.0, 30.0))
            return None
        if fn.startswith("cu"):
            return self._cuda_call(session, fn, args)
        if fn.startswith("vk"):
            from .vulkan import vulkan_call

            backend = self.vulkan_backend
            if backend is None:
                raise CallError("unsupported", "this server has no Vulkan backend", vk=-9)
            token = session.token
            indexes = None if token is None or token.allowed_gpus is None else [
                g.vulkan_index for g in self.visible_gpus(token) if g.vulkan_index is not None]
            return vulkan_call(backend, session, fn, args, vulkan_indexes=indexes,
                               quota=self._quota(session))
        raise CallError("unsupported", f"{fn} is not supported by this server")

    def _cuda_call(self, session: Session, fn: str, args: list[Any]) -> Any:
        backend = self.cuda_backend
        if backend is None:
            raise CallError("unsupported", "this server has no CUDA backend", cuda=100)
        cs = session.backends.get("cuda")
        if cs is None:
            cs = backend.open_session(session.label)
            session.backends["cuda"] = cs
            session.add_cleanup("CUDA", cs.close)
        method = getattr(cs, fn, None) if not fn.startswith("_") else None
        if method is None:
            raise CallError("unsupported", f"{fn} is not supported by this server's CUDA "
                            "backend", cuda=801)
        quota = self._quota(session)
        size = 0
        if quota is not None and fn in MemoryQuota.ALLOCATORS:
            try:
                size = MemoryQuota.ALLOCATORS[fn](args)
            except (IndexError, TypeError, ValueError):
                raise CallError("bad_call", f"{fn}: bad arguments", cuda=1) from None
            quota.reserve(size)
        try:
            result = method(*args)
        except CudaError as exc:
            if size:
                quota.release(size)  # type: ignore[union-attr]
            raise CallError("CUresult", str(exc), cuda=int(exc.code)) from None
        except TypeError as exc:
            if size:
                quota.release(size)  # type: ignore[union-attr]
            raise CallError("bad_call", f"{fn}: {exc}", cuda=1) from None
        if quota is not None:
            self._account(session, quota, fn, args, result, size)
        return result

    def _quota(self, session: Session) -> MemoryQuota | None:
        token = session.token
        if token is None or token.max_memory is None:
            return None
        quota = self._quotas.get(id(token))
        if quota is None:
            quota = self._quotas[id(token)] = MemoryQuota(token)
        return quota

    @staticmethod
    def _account(session: Session, quota: MemoryQuota, fn: str, args: list[Any], result: Any,
                 size: int) -> None:
        """Track what each allocation holds, so frees and session ends give it back."""
        held: dict[Any, int] | None = session.backends.get("quota_held")
        if held is None:
            held = session.backends["quota_held"] = {}

            def give_back() -> None:
                quota.release(sum(held.values()))
                held.clear()

            session.add_cleanup("memory quota", give_back)
        if size and fn in MemoryQuota.BY_ID:
            held[("id", int(args[0]))] = size
        elif size:
            dptr = int(result[0] if isinstance(result, list) else result)
            held[dptr] = size
        elif fn == "cuMemFree_v2" and args:
            freed = held.pop(int(args[0]), 0)
            quota.release(freed)
        elif fn in MemoryQuota.FREE_BY_ID and args:
            quota.release(held.pop(("id", int(args[0])), 0))
        elif fn == "cuMemGetInfo_v2" and isinstance(result, list) and quota.limit is not None:
            free, total = int(result[0]), int(result[1])
            result[:] = [max(0, min(free, quota.limit - quota.used)), min(total, quota.limit)]


def pid_file(path: str | None) -> Callable[[], None]:
    """Write the pid file; return the function that removes it."""
    if not path:
        return lambda: None
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")

    def remove() -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

    return remove
