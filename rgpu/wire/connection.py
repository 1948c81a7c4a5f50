"""The rgpu connection state machine: bytes in, events out, bytes to send; no I/O.

Shaped like aioquic's ``QuicConnection``: an adapter in :mod:`rgpu.net` feeds received bytes
with :meth:`Connection.receive_data`, drains :meth:`Connection.next_event` and writes what
:meth:`Connection.data_to_send` returns. The same machine serves network links (token
authentication) and the local Unix socket (no authentication: the socket's permissions are
the gate).

Handshake (network)::

    client                                   server
    HELLO {versions, nonce_c, name}   ──>
                                      <──    CHALLENGE {version, nonce_s}
    AUTH {proof_c}                    ──>
                                      <──    AUTH_OK {proof_s, server facts}   or ERROR + close

Until AUTH_OK nothing but HELLO/CHALLENGE/AUTH is processed; anything else closes the
connection with a ``not_authenticated`` error.

Several byte streams may carry one connection (QUIC gives each session its own stream so one
application never blocks another); a frame's session is bound to the stream it arrived on and
replies go back on it.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

from . import auth
from .frames import (
    DEFAULT_LIMITS,
    F_MORE,
    SUPPORTED_VERSIONS,
    Flags,
    Frame,
    FrameDecoder,
    Limits,
    MessageKind,
    ProtocolError,
    encode_frame,
)


class Role(Enum):
    CLIENT = auto()
    SERVER = auto()


class State(Enum):
    START = auto()
    AWAIT_HELLO = auto()
    AWAIT_CHALLENGE = auto()
    AWAIT_AUTH = auto()
    AWAIT_AUTH_OK = auto()
    ESTABLISHED = auto()
    CLOSED = auto()


@dataclass(frozen=True)
class ConnectionConfig:
    """Everything a connection needs to know; one dataclass, as aioquic's QuicConfiguration."""

    role: Role
    require_auth: bool = True
    token_key: bytes | None = None  # client: the HMAC key of its token
    tokens: Sequence[tuple[object, bytes]] = ()  # server: (identity, key) pairs accepted
    channel_binding: bytes = b""
    name: str = "rgpu"
    features: tuple[str, ...] = ()
    server_info: dict[str, Any] = field(default_factory=dict)  # server: sent in AUTH_OK
    limits: Limits = DEFAULT_LIMITS
    compress: bool = True
    # server: called with the token identity once the proof checks out; returns None to admit
    # or (code, reason) to refuse before AUTH_OK (a full server, say).
    admit: Callable[[object], tuple[str, str] | None] | None = None


# --- events -------------------------------------------------------------------------------

@dataclass(slots=True)
class HandshakeComplete:
    """Authentication finished. ``peer`` is the other side's HELLO/AUTH_OK facts."""

    peer: dict[str, Any]
    identity: object | None = None  # server: the token identity that authenticated


@dataclass(slots=True)
class MessageReceived:
    frame: Frame
    stream: int = 0


@dataclass(slots=True)
class PongReceived:
    request: int


@dataclass(slots=True)
class AuthFailed:
    """Server side: a client failed to authenticate (the adapter slows repeat offenders)."""

    reason: str


@dataclass(slots=True)
class ConnectionClosed:
    """The connection is over. ``local`` is True when this side found the fault."""

    code: str
    reason: str
    local: bool


Event = HandshakeComplete | MessageReceived | PongReceived | AuthFailed | ConnectionClosed

_HANDSHAKE_KINDS = frozenset(
    (MessageKind.HELLO, MessageKind.CHALLENGE, MessageKind.AUTH, MessageKind.AUTH_OK)
)


class Connection:
    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self.state = State.START
        self._decoders: dict[int, FrameDecoder] = {}
        self._events: deque[Event] = deque()
        self._out: dict[int, list[bytes | bytearray | memoryview]] = {}
        self._session_stream: dict[int, int] = {}
        self._partial: dict[tuple[int, int, int],
                            tuple[Frame, list[bytes | bytearray | memoryview], int]] = {}
        self._request_ids = itertools.count(1)
        self._nonce_c = b""
        self._nonce_s = b""
        self.version = 0
        self.peer: dict[str, Any] = {}
        self.identity: object | None = None
        self.close_reason: ConnectionClosed | None = None
        if config.role is Role.SERVER:
            self.state = State.AWAIT_HELLO

    # --- public API -----------------------------------------------------------------------

    @property
    def established(self) -> bool:
        return self.state is State.ESTABLISHED

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def initiate(self) -> None:
        """Client: send HELLO."""
        if self.config.role is not Role.CLIENT or self.state is not State.START:
            raise RuntimeError("initiate() is for a new client connection")
        self._nonce_c = auth.new_nonce()
        self._queue(0, MessageKind.HELLO, {
            "versions": list(SUPPORTED_VERSIONS),
            "nonce": self._nonce_c,
            "name": self.config.name,
            "features": list(self.config.features),
            "auth": self.config.require_auth,
        })
        self.state = State.AWAIT_CHALLENGE

    def next_request_id(self) -> int:
        rid = next(self._request_ids) & 0xFFFFFFFF
        return rid or self.next_request_id()

    def assign_stream(self, session: int, stream: int) -> None:
        """Bind a session to a byte stream (QUIC: one stream per session)."""
        self._session_stream[session] = stream

    def release_session(self, session: int) -> None:
        self._session_stream.pop(session, None)

    def stream_for(self, session: int) -> int:
        return self._session_stream.get(session, 0)

    def send(self, kind: MessageKind, body: Any = None, *, session: int = 0, request: int = 0,
             flags: int = 0, bulk: bytes | bytearray | memoryview = b"") -> None:
        """Queue a message; bulk larger than one frame is split into MORE-flagged frames."""
        if self.state is State.CLOSED:
            raise ConnectionError("connection is closed")
        if self.state is not State.ESTABLISHED and kind not in (
                MessageKind.ERROR, MessageKind.PING, MessageKind.PONG):
            raise RuntimeError(f"cannot send {kind.name} before the handshake completes")
        stream = self._session_stream.get(session, 0)
        view = memoryview(bulk).cast("B") if bulk else memoryview(b"")
        chunk = self.config.limits.max_bulk
        if len(view) <= chunk:
            self._queue(stream, kind, body, session=session, request=request, flags=flags,
                        bulk=view)
            return
        total = len(view)
        pos = 0
        first = True
        while pos < total:
            end = min(pos + chunk, total)
            more = Flags.MORE if end < total else 0
            self._queue(stream, kind, body if first else None, session=session,
                        request=request, flags=flags | more, bulk=view[pos:end])
            first = False
            pos = end

    def send_error(self, code: str, message: str, *, session: int = 0, request: int = 0,
                   extra: dict[str, Any] | None = None) -> None:
        body = {"code": code, "message": message}
        if extra:
            body.update(extra)
        self._queue(self._session_stream.get(session, 0), MessageKind.ERROR,
                    body, session=session, request=request,
                    flags=Flags.ERROR | (Flags.RESPONSE if request else 0))

    def ping(self, request: int) -> None:
        self._queue(0, MessageKind.PING, None, request=request)

    def close(self, code: str = "closed", reason: str = "connection closed", *,
              notify_peer: bool = True) -> None:
        """Close locally; queues an ERROR frame telling the peer why when asked to."""
        if self.state is State.CLOSED:
            return
        if notify_peer:
            self.send_error(code, reason)
        self._closed(code, reason, local=True)

    def receive_data(self, data: bytes | bytearray | memoryview, stream: int = 0) -> None:
        if self.state is State.CLOSED:
            return
        decoder = self._decoder(stream)
        try:
            decoder.feed(data)
        except ProtocolError as exc:
            self.close(exc.code, str(exc))
            return
        self._decode(decoder, stream)

    def receive_buffer(self, stream: int = 0) -> memoryview:
        """Memory the transport may read the stream's next bytes into (zero-copy receive);
        report how many it wrote with :meth:`received_into`."""
        return self._decoder(stream).get_buffer()

    def received_into(self, nbytes: int, stream: int = 0) -> None:
        if self.state is State.CLOSED:
            return
        decoder = self._decoder(stream)
        try:
            decoder.buffer_updated(nbytes)
        except ProtocolError as exc:
            self.close(exc.code, str(exc))
            return
        self._decode(decoder, stream)

    def _decoder(self, stream: int) -> FrameDecoder:
        decoder = self._decoders.get(stream)
        if decoder is None:
            decoder = self._decoders[stream] = FrameDecoder(self.config.limits)
        return decoder

    def _decode(self, decoder: FrameDecoder, stream: int) -> None:
        try:
            for frame in decoder.frames():
                self._handle(frame, stream)
                if self.state is State.CLOSED:
                    return
        except ProtocolError as exc:
            code = "not_authenticated" if exc.code == "not_authenticated" else exc.code
            self.close(code, str(exc))

    def stream_ended(self, stream: int) -> None:
        """The peer finished a byte stream (QUIC FIN); its decoder must hold no partial frame."""
        decoder = self._decoders.pop(stream, None)
        if decoder is not None and decoder.buffered and self.state is not State.CLOSED:
            self.close("protocol_error", "stream ended inside a frame")

    def connection_lost(self, reason: str = "connection lost",
                        code: str = "connection_lost") -> None:
        if self.state is not State.CLOSED:
            self._closed(code, reason, local=False)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> dict[int, list[bytes | bytearray | memoryview]]:
        out, self._out = self._out, {}
        return out

    # --- internals ------------------------------------------------------------------------

    def _queue(self, stream: int, kind: MessageKind, body: Any, *, session: int = 0,
               request: int = 0, flags: int = 0,
               bulk: bytes | bytearray | memoryview = b"") -> None:
        bufs = encode_frame(kind, body, session=session, request=request, flags=flags,
                            bulk=bulk, compress=self.config.compress)
        q = self._out.get(stream)
        if q is None:
            self._out[stream] = bufs
        else:
            q.extend(bufs)

    def _closed(self, code: str, reason: str, local: bool) -> None:
        self.state = State.CLOSED
        self._partial.clear()
        ev = ConnectionClosed(code, reason, local)
        self.close_reason = ev
        self._events.append(ev)

    def _handle(self, frame: Frame, stream: int) -> None:
        kind = frame.kind
        if self.state is State.ESTABLISHED:
            if kind in _HANDSHAKE_KINDS:
                raise ProtocolError(f"{kind.name} after the handshake")
            if kind is MessageKind.PING:
                self._queue(stream, MessageKind.PONG, None, request=frame.request)
                return
            if kind is MessageKind.PONG:
                self._events.append(PongReceived(frame.request))
                return
            if kind is MessageKind.ERROR and frame.session == 0 and frame.request == 0:
                # A connection-level ERROR: the peer is closing (shutdown, server full).
                body = frame.body if isinstance(frame.body, dict) else {}
                self._closed(str(body.get("code", "error")),
                             str(body.get("message", "peer closed the connection")),
                             local=False)
                return
            if frame.session and self._session_stream.get(frame.session) != stream:
                self._session_stream[frame.session] = stream
            if frame.flags & F_MORE or self._partial:
                frame = self._assemble(frame, stream)
                if frame is None:
                    return
            self._events.append(MessageReceived(frame, stream))
            return
        if kind is MessageKind.ERROR:
            body = frame.body if isinstance(frame.body, dict) else {}
            self._closed(str(body.get("code", "error")),
                         str(body.get("message", "peer reported an error")), local=False)
            return
        if kind is MessageKind.PING:
            self._queue(stream, MessageKind.PONG, None, request=frame.request)
            return
        handler = _HANDSHAKE_HANDLERS.get((self.state, kind))
        if handler is None:
            if kind in _HANDSHAKE_KINDS:
                raise ProtocolError(f"unexpected {kind.name} in state {self.state.name}")
            raise ProtocolError(
                f"{kind.name} before authentication completed (only HELLO/AUTH are accepted "
                "until AUTH_OK)", code="not_authenticated")
        handler(self, _expect_map(frame))

    def _assemble(self, frame: Frame, stream: int) -> Frame | None:
        key = (stream, frame.session, frame.request)
        entry = self._partial.get(key)
        if entry is None:
            if not frame.flags & F_MORE:
                return frame
            self._partial[key] = (frame, [frame.bulk], len(frame.bulk))
            return None
        head, parts, size = entry
        size += len(frame.bulk)
        if size > self.config.limits.max_message_bulk:
            raise ProtocolError(
                f"message bulk exceeds the limit of {self.config.limits.max_message_bulk} "
                "bytes", code="too_large")
        parts.append(frame.bulk)
        if frame.flags & F_MORE:
            self._partial[key] = (head, parts, size)
            return None
        del self._partial[key]
        head.bulk = b"".join(parts)
        head.flags &= ~F_MORE
        return head

    # handshake steps

    def _on_hello(self, body: dict[str, Any]) -> None:
        versions = body.get("versions")
        if not isinstance(versions, list):
            raise ProtocolError("HELLO without a versions list")
        common = set(SUPPORTED_VERSIONS) & {v for v in versions if isinstance(v, int)}
        if not common:
            raise ProtocolError(
                f"no common protocol version: peer speaks {versions}, this server speaks "
                f"{list(SUPPORTED_VERSIONS)}; upgrade the older side", code="version")
        self.version = max(common)
        nonce = body.get("nonce")
        if not isinstance(nonce, bytes) or len(nonce) != auth.NONCE_BYTES:
            raise ProtocolError("HELLO nonce must be 32 bytes")
        self._nonce_c = nonce
        self.peer = {k: v for k, v in body.items() if k != "nonce"}
        if not self.config.require_auth:
            self._queue(0, MessageKind.AUTH_OK, {"version": self.version,
                                                 **self.config.server_info})
            self.state = State.ESTABLISHED
            self._events.append(HandshakeComplete(self.peer))
            return
        self._nonce_s = auth.new_nonce()
        self._queue(0, MessageKind.CHALLENGE, {"version": self.version, "nonce": self._nonce_s})
        self.state = State.AWAIT_AUTH

    def _on_challenge(self, body: dict[str, Any]) -> None:
        nonce = body.get("nonce")
        if not isinstance(nonce, bytes) or len(nonce) != auth.NONCE_BYTES:
            raise ProtocolError("CHALLENGE nonce must be 32 bytes")
        if self.config.token_key is None:
            self._queue(0, MessageKind.ERROR, {"code": "auth_failed",
                                               "message": "client has no token"})
            self._closed("auth_failed", "the server requires a token: pass -t TOKEN or set "
                         "token in [[client.servers]]", local=True)
            return
        self.version = int(body.get("version", 0))
        self._nonce_s = nonce
        p = auth.proof(self.config.token_key, "client", self._nonce_c, nonce,
                       self.config.channel_binding)
        self._queue(0, MessageKind.AUTH, {"proof": p})
        self.state = State.AWAIT_AUTH_OK

    def _on_auth(self, body: dict[str, Any]) -> None:
        candidate = body.get("proof")
        ident = None
        key = b""
        if isinstance(candidate, bytes):
            keys = list(self.config.tokens)
            ident = auth.find_token(keys, self._nonce_c, self._nonce_s,
                                    self.config.channel_binding, candidate)
            key = next((k for i, k in keys if i is ident), b"") if ident is not None else b""
        if ident is None:
            reason = ("token refused by the server: check that the token matches one in the "
                      "server's [[security.tokens]]")
            self._events.append(AuthFailed(reason))
            self.close("auth_failed", reason)
            return
        if self.config.admit is not None:
            refusal = self.config.admit(ident)
            if refusal is not None:
                self.close(*refusal)
                return
        self.identity = ident
        p = auth.proof(key, "server", self._nonce_c, self._nonce_s, self.config.channel_binding)
        self._queue(0, MessageKind.AUTH_OK, {"version": self.version, "proof": p,
                                             **self.config.server_info})
        self.state = State.ESTABLISHED
        self._events.append(HandshakeComplete(self.peer, ident))

    def _on_auth_ok(self, body: dict[str, Any]) -> None:
        if self.config.require_auth:
            p = body.get("proof")
            if self.config.token_key is None or not isinstance(p, bytes) or not auth.verify(
                    self.config.token_key, "server", self._nonce_c, self._nonce_s,
                    self.config.channel_binding, p):
                self.close("auth_failed", "the server could not prove it holds the token "
                           "(wrong server, or a man in the middle); check the address and token")
                return
        self.version = int(body.get("version", self.version or 1))
        self.peer = {k: v for k, v in body.items() if k != "proof"}
        self.state = State.ESTABLISHED
        self._events.append(HandshakeComplete(self.peer))

    def _on_auth_ok_unauthenticated(self, body: dict[str, Any]) -> None:
        if self.config.require_auth:
            self.close("auth_failed", "the server accepted the connection without a "
                       "challenge, so it cannot be trusted; check the address")
            return
        self._on_auth_ok(body)


def _expect_map(frame: Frame) -> dict[str, Any]:
    if not isinstance(frame.body, dict):
        raise ProtocolError(f"{frame.kind.name} body must be a map")
    return frame.body


_HANDSHAKE_HANDLERS = {
    (State.AWAIT_HELLO, MessageKind.HELLO): Connection._on_hello,
    (State.AWAIT_CHALLENGE, MessageKind.CHALLENGE): Connection._on_challenge,
    (State.AWAIT_CHALLENGE, MessageKind.AUTH_OK): Connection._on_auth_ok_unauthenticated,
    (State.AWAIT_AUTH, MessageKind.AUTH): Connection._on_auth,
    (State.AWAIT_AUTH_OK, MessageKind.AUTH_OK): Connection._on_auth_ok,
}
