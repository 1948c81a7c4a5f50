"""The asyncio face of one wire connection, whatever carries its bytes.

A transport adapter (:mod:`rgpu.net.stream` for TCP/TLS/Unix sockets, :mod:`rgpu.net.quic`
for QUIC) owns the socket and calls :meth:`Peer.pump` after feeding bytes into
``peer.conn``; the peer turns wire events into awaited replies and callbacks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..errors import AuthError, ConnectError, RemoteError
from ..wire import (
    AuthFailed,
    Connection,
    ConnectionClosed,
    Flags,
    Frame,
    HandshakeComplete,
    MessageKind,
    MessageReceived,
    PongReceived,
)
from ..wire.frames import F_RESPONSE

log = logging.getLogger("rgpu.net")

Transmit = Callable[[dict[int, list[Any]]], None]


class PeerClosed(ConnectError):
    """The connection ended while a request was outstanding."""

    def __init__(self, message: str, code: str = "connection_lost") -> None:
        super().__init__(message)
        self.code = code


class Peer:
    """One connection: request/reply futures, unsolicited-message and close callbacks."""

    def __init__(self, conn: Connection, transmit: Transmit, close_transport: Callable[[], None],
                 *, address: str = "", transport_name: str = "") -> None:
        self.conn = conn
        self._transmit = transmit
        self._loop = asyncio.get_running_loop()
        self.last_heard = self._loop.time()
        self._close_transport = close_transport
        self.address = address
        self.transport_name = transport_name
        self.fingerprint = ""
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._pings: dict[int, asyncio.Future[None]] = {}
        self.handshake: asyncio.Future[HandshakeComplete] = (
            asyncio.get_running_loop().create_future())
        self.closed: asyncio.Future[ConnectionClosed] = asyncio.get_running_loop().create_future()
        self.on_message: Callable[[Peer, Frame, int], None] | None = None
        self.on_close: Callable[[Peer, ConnectionClosed], None] | None = None
        self.on_auth_failed: Callable[[Peer, str], None] | None = None
        self.on_handshake: Callable[[Peer, HandshakeComplete], None] | None = None
        self.new_session_stream: Callable[[int], None] | None = None
        # Set by on_auth_failed: the refusal and the close wait for release() (slow-down).
        self.hold_close = False
        self.state: Any = None  # owner's per-connection state
        self._pumping = False

    # --- called by adapters --------------------------------------------------------------

    def pump(self) -> None:
        """Handle every queued event, then send what the connection produced.

        Not re-entrant: a handler that pumps (to send an error at once) while its own frame is
        being handled only sends; the outer pump handles the frames after it, so they keep
        their order (a call must never overtake the batch before it).
        """
        if self._pumping:
            self._flush()
            return
        self._pumping = True
        try:
            self._pump()
        finally:
            self._pumping = False

    def _pump(self) -> None:
        conn = self.conn
        self.last_heard = self._loop.time()
        while (ev := conn.next_event()) is not None:
            if isinstance(ev, MessageReceived):
                self._on_frame(ev.frame, ev.stream)
            elif isinstance(ev, HandshakeComplete):
                if self.on_handshake is not None:
                    self.on_handshake(self, ev)  # before any message that follows it
                if not self.handshake.done():
                    self.handshake.set_result(ev)
            elif isinstance(ev, PongReceived):
                fut = self._pings.pop(ev.request, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif isinstance(ev, AuthFailed):
                if self.on_auth_failed is not None:
                    self.on_auth_failed(self, ev.reason)
            elif isinstance(ev, ConnectionClosed):
                if not self.hold_close:
                    self._flush()
                self._finish(ev)
                return
        self._flush()

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self._transmit(out)

    def _finish(self, ev: ConnectionClosed) -> None:
        if not self.handshake.done():
            if ev.code == "auth_failed":
                self.handshake.set_exception(AuthError(ev.reason))
            else:
                self.handshake.set_exception(PeerClosed(ev.reason, ev.code))
            self.handshake.exception()  # mark retrieved
        err = PeerClosed(f"{self.address}: {ev.reason}", ev.code)
        for fut in list(self._pending.values()) + list(self._pings.values()):
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        self._pings.clear()
        if not self.closed.done():
            self.closed.set_result(ev)
        if self.on_close is not None:
            try:
                self.on_close(self, ev)
            except Exception:
                log.exception("close handler failed")
        if not self.hold_close:
            self._close_transport()

    def _on_frame(self, frame: Frame, stream: int) -> None:
        if frame.flags & F_RESPONSE:
            fut = self._pending.pop(frame.request, None)
            if fut is None:
                log.debug("reply to unknown request %d from %s", frame.request, self.address)
                return
            if not fut.done():
                fut.set_result(frame)
            return
        if self.on_message is not None:
            self.on_message(self, frame, stream)
        else:
            log.debug("unsolicited %s from %s dropped", frame.kind.name, self.address)

    # --- API for owners ------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._pending)

    @property
    def is_closed(self) -> bool:
        return self.closed.done()

    def send(self, kind: MessageKind, body: Any = None, *, session: int = 0, request: int = 0,
             flags: int = 0, bulk: bytes | bytearray | memoryview = b"") -> None:
        if self.closed.done():
            raise PeerClosed(f"{self.address}: connection closed")
        self.conn.send(kind, body, session=session, request=request, flags=flags, bulk=bulk)
        self._flush()

    def reply(self, request: Frame, body: Any = None, *,
              bulk: bytes | bytearray | memoryview = b"") -> None:
        if self.closed.done():
            return
        self.send(MessageKind.REPLY, body, session=request.session, request=request.request,
                  flags=Flags.RESPONSE, bulk=bulk)

    def reply_error(self, request: Frame, code: str, message: str,
                    extra: dict[str, Any] | None = None) -> None:
        if self.closed.done():
            return
        self.conn.send_error(code, message, session=request.session, request=request.request,
                             extra=extra)
        self._flush()

    async def request(self, kind: MessageKind, body: Any = None, *, session: int = 0,
                      bulk: bytes | bytearray | memoryview = b"",
                      timeout: float | None = None) -> Frame:
        """Send and wait for the matching REPLY; an ERROR reply raises RemoteError."""
        fut = self.request_nowait(kind, body, session=session, bulk=bulk)
        frame = await (asyncio.wait_for(fut, timeout) if timeout else fut)
        return check_reply(frame)

    def request_nowait(self, kind: MessageKind, body: Any = None, *, session: int = 0,
                       bulk: bytes | bytearray | memoryview = b"") -> asyncio.Future[Frame]:
        rid = self.conn.next_request_id()
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self.send(kind, body, session=session, request=rid, bulk=bulk)
        except BaseException:
            self._pending.pop(rid, None)
            raise
        return fut

    async def ping(self, timeout: float = 5.0) -> float:
        loop = asyncio.get_running_loop()
        rid = self.conn.next_request_id()
        fut: asyncio.Future[None] = loop.create_future()
        self._pings[rid] = fut
        t0 = loop.time()
        self.conn.ping(rid)
        self._flush()
        await asyncio.wait_for(fut, timeout)
        return loop.time() - t0

    def open_session_stream(self, session: int) -> None:
        if self.new_session_stream is not None:
            self.new_session_stream(session)

    def close(self, code: str = "closed", reason: str = "connection closed") -> None:
        if self.closed.done():
            return
        self.conn.close(code, reason)
        self.pump()

    def release(self) -> None:
        """Send what a held close kept back (the refusal of a slowed client), then close."""
        self.hold_close = False
        self._flush()
        self._close_transport()

    def connection_lost(self, reason: str, code: str = "connection_lost") -> None:
        self.conn.connection_lost(reason, code)
        self.hold_close = False
        self.pump()


def check_reply(frame: Frame) -> Frame:
    if frame.kind is MessageKind.ERROR:
        body = frame.body if isinstance(frame.body, dict) else {}
        raise RemoteError(str(body.get("code", "error")), str(body.get("message", "error")),
                          body)
    return frame
