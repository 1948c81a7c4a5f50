"""Frame encoding and incremental decoding: bytes in, frames out, no I/O.

A frame is a fixed 24-byte header, a msgpack body (LZ4-compressed when it is over 512 bytes
and that makes it smaller) and an optional raw bulk segment that is never re-encoded::

    offset size field
    0      2    magic 0x5247 ("RG")
    2      1    protocol version
    3      1    kind (MessageKind)
    4      2    flags (Flags)
    6      2    reserved, must be 0
    8      4    session id
    12     4    request id
    16     4    body length on the wire
    20     4    bulk length

All integers are big-endian. Every length is checked against :class:`Limits` before a byte of
the frame is buffered beyond the header, so a peer cannot make us allocate past the limits.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Any

import lz4.block
import msgpack

MAGIC = 0x5247
PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
HEADER = struct.Struct("!HBBHHIIII")
HEADER_SIZE = HEADER.size
COMPRESS_THRESHOLD = 512
_LZ4_SIZE = struct.Struct("<I")


class MessageKind(IntEnum):
    """What a frame is; the state machines in :mod:`rgpu.wire.connection` allow each per state."""

    HELLO = 1
    CHALLENGE = 2
    AUTH = 3
    AUTH_OK = 4
    CALL = 5
    REPLY = 6
    BATCH = 7
    FENCE = 8
    ERROR = 9
    PING = 10
    PONG = 11
    CONTROL = 12


class Flags(IntFlag):
    NONE = 0
    COMPRESSED = 0x01
    BULK = 0x02
    RESPONSE = 0x04
    ERROR = 0x08
    BATCH = 0x10
    MORE = 0x20  # the bulk continues in the next frame of the same session and request


KNOWN_FLAGS = int(
    Flags.COMPRESSED | Flags.BULK | Flags.RESPONSE | Flags.ERROR | Flags.BATCH | Flags.MORE
)

# Plain ints for the per-frame paths: IntFlag arithmetic builds enum objects (microseconds a
# frame in CPython 3.11).
F_COMPRESSED = int(Flags.COMPRESSED)
F_BULK = int(Flags.BULK)
F_RESPONSE = int(Flags.RESPONSE)
F_ERROR = int(Flags.ERROR)
F_MORE = int(Flags.MORE)


class ProtocolError(Exception):
    """The peer broke a rule of the protocol; the message names the rule."""

    def __init__(self, message: str, code: str = "protocol_error") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Limits:
    """Largest sizes a peer may send; checked from the header before anything is buffered."""

    max_body: int = 8 << 20
    max_bulk: int = 8 << 20
    max_message_bulk: int = 1 << 30


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class Frame:
    """One decoded frame: header fields, the decoded msgpack body and the raw bulk bytes."""

    kind: MessageKind
    flags: int
    session: int
    request: int
    body: Any
    bulk: bytes | bytearray | memoryview = b""

    @property
    def more(self) -> bool:
        return bool(self.flags & F_MORE)


def pack_body(body: Any) -> bytes:
    """msgpack with bin types, so bytes stay bytes and str stays str across the wire."""
    return msgpack.packb(body, use_bin_type=True)


def unpack_body(data: bytes | memoryview, limits: Limits = DEFAULT_LIMITS) -> Any:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            max_bin_len=limits.max_body,
            max_str_len=limits.max_body,
            max_array_len=limits.max_body,
            max_map_len=limits.max_body // 2,
            max_ext_len=0,
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            TypeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"frame body is not valid msgpack: {exc}") from None


def encode_frame(
    kind: MessageKind,
    body: Any = None,
    *,
    session: int = 0,
    request: int = 0,
    flags: int = 0,
    bulk: bytes | bytearray | memoryview = b"",
    compress: bool = True,
) -> list[bytes | bytearray | memoryview]:
    """Encode one frame as buffers for ``writelines`` (the bulk segment is not copied)."""
    payload = pack_body(body)
    flags = int(flags) & ~(F_COMPRESSED | F_BULK)
    if compress and len(payload) > COMPRESS_THRESHOLD:
        packed = lz4.block.compress(payload, store_size=False)
        if len(packed) + _LZ4_SIZE.size < len(payload):
            payload = _LZ4_SIZE.pack(len(payload)) + packed
            flags |= F_COMPRESSED
    bulk_len = len(bulk) if not isinstance(bulk, memoryview) else bulk.nbytes
    if bulk_len:
        flags |= F_BULK
    header = HEADER.pack(
        MAGIC, PROTOCOL_VERSION, int(kind), int(flags), 0,
        session & 0xFFFFFFFF, request & 0xFFFFFFFF, len(payload), bulk_len,
    )
    if bulk_len:
        return [header + payload, bulk]
    return [header + payload]


def encode_frame_bytes(kind: MessageKind, body: Any = None, **kwargs: Any) -> bytes:
    return b"".join(bytes(b) for b in encode_frame(kind, body, **kwargs))


#: A bulk segment at least this large is received straight into a buffer of its own (see
#: :meth:`FrameDecoder.get_buffer`), not through the decoder's staging buffer.
DIRECT_BULK = 1 << 16
_SCRATCH = 256 << 10


class FrameDecoder:
    """Incremental decoder for one byte stream.

    ``feed()`` buffers bytes; iterating ``frames()`` yields each complete frame. The first
    violation raises :class:`ProtocolError` and the decoder refuses further input, because a
    byte stream cannot be resynchronised once a length is wrong.

    A transport that reads into memory it is given (``asyncio.BufferedProtocol``, TLS included)
    uses ``get_buffer()`` / ``buffer_updated()`` instead of ``feed()``: once the header and body
    of a frame with a large bulk segment are in, the rest of that segment is read straight into
    the bytearray that becomes ``Frame.bulk``, with no staging copy.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buf = bytearray()
        self._failed: ProtocolError | None = None
        self._ready: list[Frame] = []
        # the frame whose bulk is being received directly: its header fields and body
        self._direct: bytearray | None = None
        self._direct_pos = 0
        self._direct_head: tuple[MessageKind, int, int, int, Any] | None = None
        self._scratch: bytearray | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf) + (1 if self._direct is not None else 0)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._failed is not None:
            raise self._failed
        if self._direct is not None:
            view = memoryview(data).cast("B")
            n = min(len(view), len(self._direct) - self._direct_pos)
            self._direct[self._direct_pos:self._direct_pos + n] = view[:n]
            self._advance_direct(n)
            if n == len(view):
                return
            data = view[n:]
        self._buf += data
        if len(self._buf) >= HEADER_SIZE:
            # Validate the header of the frame at the front as soon as it is complete, so that
            # an oversized length is refused before its payload is accumulated.
            self._check_header(self._buf)

    def get_buffer(self) -> memoryview:
        """Where the next bytes of the stream may be written; then call :meth:`buffer_updated`."""
        if self._direct is not None:
            return memoryview(self._direct)[self._direct_pos:]
        if self._scratch is None:
            self._scratch = bytearray(_SCRATCH)
        return memoryview(self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` bytes were written at the start of the last :meth:`get_buffer`."""
        if self._failed is not None:
            raise self._failed
        if self._direct is not None:
            self._advance_direct(nbytes)
        else:
            assert self._scratch is not None
            with memoryview(self._scratch) as view:
                self.feed(view[:nbytes])

    def _advance_direct(self, n: int) -> None:
        assert self._direct is not None and self._direct_head is not None
        self._direct_pos += n
        if self._direct_pos == len(self._direct):
            kind, flags, session, request, body = self._direct_head
            self._ready.append(Frame(kind, flags, session, request, body, self._direct))
            self._direct = None
            self._direct_head = None
            self._direct_pos = 0

    def _check_header(self, buf: bytearray) -> tuple[int, int, int, int, int, int]:
        magic, version, kind, flags, reserved, session, request, body_len, bulk_len = (
            HEADER.unpack_from(buf, 0)
        )
        try:
            if magic != MAGIC:
                raise ProtocolError(f"bad magic 0x{magic:04x} (expected 0x{MAGIC:04x})")
            if version not in SUPPORTED_VERSIONS:
                raise ProtocolError(
                    f"unsupported protocol version {version} (this side speaks "
                    f"{', '.join(map(str, SUPPORTED_VERSIONS))})", code="version")
            if kind not in _KINDS:
                raise ProtocolError(f"unknown message kind {kind}")
            if flags & ~KNOWN_FLAGS or reserved:
                raise ProtocolError(f"unknown flags 0x{flags:04x}/reserved 0x{reserved:04x}")
            if body_len > self.limits.max_body:
                raise ProtocolError(
                    f"frame body of {body_len} bytes exceeds the limit of "
                    f"{self.limits.max_body}", code="too_large")
            if bulk_len > self.limits.max_bulk:
                raise ProtocolError(
                    f"bulk segment of {bulk_len} bytes exceeds the limit of "
                    f"{self.limits.max_bulk}", code="too_large")
            if bool(flags & F_BULK) != (bulk_len > 0):
                raise ProtocolError("BULK flag and bulk length disagree")
        except ProtocolError as exc:
            self._failed = exc
            raise
        return kind, flags, session, request, body_len, bulk_len

    def frames(self) -> Iterator[Frame]:
        while self._ready:
            yield self._ready.pop(0)
        buf = self._buf
        pos = 0
        try:
            while self._direct is None and len(buf) - pos >= HEADER_SIZE:
                if pos:
                    del buf[:pos]
                    pos = 0
                kind, flags, session, request, body_len, bulk_len = self._check_header(buf)
                end = HEADER_SIZE + body_len + bulk_len
                if len(buf) < end:
                    if bulk_len >= DIRECT_BULK and len(buf) >= HEADER_SIZE + body_len:
                        self._start_direct(buf, kind, flags, session, request, body_len,
                                           bulk_len)
                        pos = len(buf)
                    return
                # one copy each (slicing the bytearray itself would copy twice); the view is
                # released before the buffer is resized
                with memoryview(buf) as view:
                    body_raw = bytes(view[HEADER_SIZE:HEADER_SIZE + body_len])
                    bulk = bytes(view[HEADER_SIZE + body_len:end]) if bulk_len else b""
                pos = end
                yield Frame(_KIND_OF[kind], flags, session, request,
                            self._body(body_raw, flags), bulk)
        except ProtocolError as exc:
            self._failed = exc
            raise
        finally:
            if pos:
                del buf[:pos]

    def _start_direct(self, buf: bytearray, kind: int, flags: int, session: int, request: int,
                      body_len: int, bulk_len: int) -> None:
        """The header and body are in, most of a large bulk segment is not: give the segment
        a buffer of its own (its size was checked against the limits with the header)."""
        with memoryview(buf) as view:
            body_raw = bytes(view[HEADER_SIZE:HEADER_SIZE + body_len])
            have = view[HEADER_SIZE + body_len:]
            bulk = bytearray(bulk_len)
            bulk[:len(have)] = have
            got = len(have)
        body = self._body(body_raw, flags)
        self._direct = bulk
        self._direct_pos = got
        self._direct_head = (_KIND_OF[kind], flags, session, request, body)

    def _body(self, raw: bytes, flags: int) -> Any:
        if flags & F_COMPRESSED:
            raw = self._decompress(raw)
        return unpack_body(raw, self.limits)

    def _decompress(self, data: bytes) -> bytes:
        if len(data) < _LZ4_SIZE.size:
            raise ProtocolError("compressed body shorter than its size prefix")
        (size,) = _LZ4_SIZE.unpack_from(data, 0)
        if size > self.limits.max_body:
            raise ProtocolError(
                f"compressed body expands to {size} bytes, over the limit of "
                f"{self.limits.max_body}", code="too_large")
        try:
            out = lz4.block.decompress(data[_LZ4_SIZE.size:], uncompressed_size=size)
        except lz4.block.LZ4BlockError as exc:
            raise ProtocolError(f"compressed body is corrupt: {exc}") from None
        if len(out) != size:
            raise ProtocolError("compressed body has the wrong decompressed size")
        return out


_KINDS = frozenset(int(k) for k in MessageKind)
_KIND_OF = {int(k): k for k in MessageKind}
