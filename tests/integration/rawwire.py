"""Hand-driven wire clients for protocol-violation tests: bytes we choose, over TLS or QUIC.

They speak through the sans-IO :class:`rgpu.wire.Connection` only where a test wants a valid
handshake first; everything else is frames built by hand, so a test can send what no
well-behaved client would (a CALL before AUTH, a header announcing an oversized body).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from rgpu.wire import Connection, ConnectionConfig, Frame, FrameDecoder, Limits, Role
from rgpu.wire.auth import token_key
from rgpu.wire.frames import HEADER, MAGIC, PROTOCOL_VERSION

ALPN = "rgpu/1"
_GENEROUS = Limits(max_body=1 << 30, max_bulk=1 << 30, max_message_bulk=1 << 31)


def raw_header(kind: int, *, flags: int = 0, session: int = 0, request: int = 0,
               body_len: int = 0, bulk_len: int = 0) -> bytes:
    """A 24-byte frame header with whatever lengths a test wants to announce."""
    assert HEADER.size == 24
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, kind, flags, 0, session, request, body_len,
                       bulk_len)


class RawClient:
    """Byte chunks in, frames out; the transport subclasses fill ``_chunks``."""

    transport = ""

    def __init__(self) -> None:
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._decoder = FrameDecoder(_GENEROUS)
        self.frames: list[Frame] = []
        self._taken = 0
        self.closed = False
        self.close_detail = ""

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def _next_chunk(self, timeout: float) -> bytes | None:
        if self.closed:
            return None
        chunk = await asyncio.wait_for(self._chunks.get(), timeout)
        if chunk is None:
            self.closed = True
        return chunk

    async def handshake(self, token: str, channel_binding: bytes) -> Connection:
        """Authenticate properly (HELLO, CHALLENGE, AUTH, AUTH_OK) through the wire machine."""
        conn = Connection(ConnectionConfig(Role.CLIENT, token_key=token_key(token),
                                           channel_binding=channel_binding, name="raw test"))
        conn.initiate()
        await self._flush(conn)
        while not conn.established:
            chunk = await self._next_chunk(10.0)
            if chunk is None:
                raise AssertionError(f"server closed during the handshake: {self.close_detail}")
            conn.receive_data(chunk)
            await self._flush(conn)
            if conn.closed:
                raise AssertionError(f"handshake failed: {conn.close_reason}")
        return conn

    async def _flush(self, conn: Connection) -> None:
        for bufs in conn.data_to_send().values():
            await self.send(b"".join(bytes(b) for b in bufs))

    async def read_frame(self, timeout: float = 10.0) -> Frame:
        """The next frame from the server (fails if the connection closes first)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.frames[self._taken:]:
            chunk = await self._next_chunk(max(deadline - loop.time(), 0.001))
            if chunk is None:
                raise AssertionError(f"server closed the connection: {self.close_detail}")
            self._decoder.feed(chunk)
            self.frames.extend(self._decoder.frames())
        self._taken += 1
        return self.frames[self._taken - 1]

    async def read_until_closed(self, timeout: float) -> bool:
        """Collect frames until the server closes the connection; False if it stays open."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.closed:
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                chunk = await self._next_chunk(left)
            except TimeoutError:
                return False
            if chunk:
                self._decoder.feed(chunk)
                self.frames.extend(self._decoder.frames())
        return True


class RawTls(RawClient):
    transport = "tcp"

    def __init__(self) -> None:
        super().__init__()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> RawTls:
        self = cls()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols([ALPN])
        reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname="localhost"), 10)
        self._reader_task = asyncio.get_running_loop().create_task(self._pump(reader))
        return self

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(1 << 16):
                self._chunks.put_nowait(data)
            self.close_detail = "EOF"
        except (OSError, ssl.SSLError) as exc:
            self.close_detail = f"{type(exc).__name__}: {exc}"
        self._chunks.put_nowait(None)

    async def send(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        with contextlib.suppress(OSError, ssl.SSLError):
            await self._writer.drain()

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await asyncio.wait_for(self._writer.wait_closed(), 5)
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task


class RawQuic(RawClient):
    """aioquic directly (not rgpu's adapter), one bidirectional stream: the control stream 0."""

    transport = "quic"

    def __init__(self) -> None:
        super().__init__()
        self._stack = contextlib.AsyncExitStack()
        self._proto: Any = None
        self.stream_id = 0
        self.terminated: Any = None

    @classmethod
    async def open(cls, host: str, port: int) -> RawQuic:
        from aioquic.asyncio.client import connect
        from aioquic.asyncio.protocol import QuicConnectionProtocol
        from aioquic.quic.configuration import QuicConfiguration
        from aioquic.quic.events import ConnectionTerminated, StreamDataReceived

        self = cls()

        class Proto(QuicConnectionProtocol):  # type: ignore[misc]
            def quic_event_received(self_p, event: Any) -> None:
                if isinstance(event, StreamDataReceived):
                    if event.data:
                        self._chunks.put_nowait(event.data)
                elif isinstance(event, ConnectionTerminated):
                    self.terminated = event
                    self.close_detail = (f"QUIC close {event.error_code} "
                                         f"{event.reason_phrase!r}")
                    self._chunks.put_nowait(None)

        conf = QuicConfiguration(is_client=True, alpn_protocols=[ALPN],
                                 verify_mode=ssl.CERT_NONE, server_name="localhost",
                                 idle_timeout=30)
        self._proto = await asyncio.wait_for(self._stack.enter_async_context(
            connect(host, port, configuration=conf, create_protocol=Proto)), 10)
        self.stream_id = self._proto._quic.get_next_available_stream_id()
        return self

    async def send(self, data: bytes) -> None:
        if self.closed:
            return
        self._proto._quic.send_stream_data(self.stream_id, data)
        self._proto.transmit()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._stack.aclose(), 5)


async def open_raw(transport: str, host: str, port: int) -> RawClient:
    if transport == "quic":
        return await RawQuic.open(host, port)
    return await RawTls.open(host, port)


def error_frames(frames: list[Frame]) -> list[dict[str, Any]]:
    from rgpu.wire import MessageKind

    return [f.body for f in frames if f.kind is MessageKind.ERROR and isinstance(f.body, dict)]

