"""The rgpu wire protocol, sans-IO: frames, the handshake state machine, token proofs.

Nothing here opens a socket or touches asyncio; :mod:`rgpu.net` adapts it to transports.
"""

from .connection import (
    AuthFailed,
    Connection,
    ConnectionClosed,
    ConnectionConfig,
    Event,
    HandshakeComplete,
    MessageReceived,
    PongReceived,
    Role,
    State,
)
from .frames import (
    DEFAULT_LIMITS,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    Flags,
    Frame,
    FrameDecoder,
    Limits,
    MessageKind,
    ProtocolError,
    encode_frame,
    encode_frame_bytes,
)

__all__ = [
    "DEFAULT_LIMITS", "HEADER_SIZE", "PROTOCOL_VERSION", "AuthFailed", "Connection",
    "ConnectionClosed", "ConnectionConfig", "Event", "Flags", "Frame", "FrameDecoder",
    "HandshakeComplete", "Limits", "MessageKind", "MessageReceived", "PongReceived",
    "ProtocolError", "Role", "State", "encode_frame", "encode_frame_bytes",
]
