"""The handshake state machine: mutual proof, wrong token, replay, relay, pre-auth rules."""

from __future__ import annotations

import pytest

from rgpu.wire import (
    AuthFailed,
    Connection,
    ConnectionClosed,
    ConnectionConfig,
    HandshakeComplete,
    MessageKind,
    MessageReceived,
    Role,
    State,
    auth,
    encode_frame_bytes,
)
from rgpu.wire.frames import FrameDecoder

TOKEN = auth.generate_token()
KEY = auth.token_key(TOKEN)


def client(key: bytes | None = KEY, binding: bytes = b"chan") -> Connection:
    return Connection(ConnectionConfig(Role.CLIENT, token_key=key, channel_binding=binding))


def server(keys: list[tuple[object, bytes]] | None = None, binding: bytes = b"chan") -> Connection:
    return Connection(ConnectionConfig(Role.SERVER, tokens=keys or [("alice", KEY)],
                                       channel_binding=binding, server_info={"server_id": 3}))


def wire_bytes(conn: Connection) -> bytes:
    return b"".join(bytes(b) for bufs in conn.data_to_send().values() for b in bufs)


def pump(a: Connection, b: Connection, rounds: int = 4) -> None:
    for _ in range(rounds):
        b.receive_data(wire_bytes(a))
        a.receive_data(wire_bytes(b))


def events(conn: Connection) -> list[object]:
    out = []
    while (ev := conn.next_event()) is not None:
        out.append(ev)
    return out


def frames_of(data: bytes) -> list:
    dec = FrameDecoder()
    dec.feed(data)
    return list(dec.frames())


def test_token_format() -> None:
    tok = auth.generate_token()
    assert len(tok) == 64 and int(tok, 16) >= 0
    assert auth.token_key(tok) == bytes.fromhex(tok)
    assert auth.generate_token() != tok


def test_mutual_authentication() -> None:
    c, s = client(), server()
    c.initiate()
    pump(c, s)
    assert c.state is s.state is State.ESTABLISHED
    (hs,) = [e for e in events(s) if isinstance(e, HandshakeComplete)]
    assert hs.identity == "alice"
    (hc,) = [e for e in events(c) if isinstance(e, HandshakeComplete)]
    assert hc.peer["server_id"] == 3


def test_token_never_crosses_the_wire() -> None:
    c, s = client(), server()
    c.initiate()
    seen = b""
    for _ in range(4):
        d = wire_bytes(c)
        seen += d
        s.receive_data(d)
        d = wire_bytes(s)
        seen += d
        c.receive_data(d)
    assert KEY not in seen and TOKEN.encode() not in seen


def test_wrong_token_refused_with_reason() -> None:
    c = client(auth.token_key(auth.generate_token()))
    s = server()
    c.initiate()
    pump(c, s)
    assert s.state is State.CLOSED and c.state is State.CLOSED
    sev = events(s)
    assert any(isinstance(e, AuthFailed) for e in sev)
    (closed,) = [e for e in events(c) if isinstance(e, ConnectionClosed)]
    assert closed.code == "auth_failed"
    assert "token refused" in closed.reason


def test_client_without_token() -> None:
    c, s = client(None), server()
    c.initiate()
    pump(c, s)
    (closed,) = [e for e in events(c) if isinstance(e, ConnectionClosed)]
    assert "requires a token" in closed.reason


def test_replayed_proof_is_refused() -> None:
    """An AUTH captured from one connection fails on another: the server nonce differs."""
    c1, s1 = client(), server()
    c1.initiate()
    hello = wire_bytes(c1)
    s1.receive_data(hello)
    c1.receive_data(wire_bytes(s1))
    captured_auth = wire_bytes(c1)
    s1.receive_data(captured_auth)
    assert s1.state is State.ESTABLISHED
    s2 = server()
    s2.receive_data(hello)  # replay the same HELLO (same client nonce) ...
    wire_bytes(s2)
    s2.receive_data(captured_auth)  # ... and the same proof
    assert s2.state is State.CLOSED
    assert any(isinstance(e, AuthFailed) for e in events(s2))


def test_relayed_proof_is_refused() -> None:
    """A man in the middle relaying between two TLS channels: the channel bindings differ."""
    victim = client(binding=b"cert-of-mitm")
    real_server = server(binding=b"cert-of-real-server")
    victim.initiate()
    pump(victim, real_server)
    assert real_server.state is State.CLOSED
    assert any(isinstance(e, AuthFailed) for e in events(real_server))


def test_impostor_server_cannot_prove_token() -> None:
    """A server that does not know the token can't complete the client's handshake."""
    c = client()
    impostor = server(keys=[("x", KEY)])
    c.initiate()
    impostor.receive_data(wire_bytes(c))
    c.receive_data(wire_bytes(impostor))
    auth_frame = wire_bytes(c)
    # The impostor accepts anything and answers with a forged AUTH_OK.
    forged = encode_frame_bytes(MessageKind.AUTH_OK, {"version": 1, "proof": b"\x00" * 32})
    assert auth_frame
    c.receive_data(forged)
    assert c.state is State.CLOSED
    (closed,) = [e for e in events(c) if isinstance(e, ConnectionClosed)]
    assert "could not prove" in closed.reason


def test_server_skipping_challenge_is_refused() -> None:
    c = client()
    c.initiate()
    wire_bytes(c)
    c.receive_data(encode_frame_bytes(MessageKind.AUTH_OK, {"version": 1}))
    assert c.state is State.CLOSED


@pytest.mark.parametrize("kind", [MessageKind.CALL, MessageKind.CONTROL, MessageKind.BATCH,
                                  MessageKind.REPLY, MessageKind.FENCE])
@pytest.mark.parametrize("after_hello", [False, True])
def test_nothing_but_handshake_before_auth_ok(kind: MessageKind, after_hello: bool) -> None:
    s = server()
    if after_hello:
        c = client()
        c.initiate()
        s.receive_data(wire_bytes(c))
        wire_bytes(s)
    s.receive_data(encode_frame_bytes(kind, ["rgpu.echo", []], session=1, request=1))
    assert s.state is State.CLOSED
    assert not any(isinstance(e, MessageReceived) for e in events(s))
    (err,) = frames_of(wire_bytes(s))
    assert err.kind is MessageKind.ERROR
    assert err.body["code"] == "not_authenticated"


def test_version_negotiation() -> None:
    s = server()
    s.receive_data(encode_frame_bytes(MessageKind.HELLO, {"versions": [7, 8],
                                                          "nonce": b"n" * 32}))
    assert s.state is State.CLOSED
    (err,) = frames_of(wire_bytes(s))
    assert err.body["code"] == "version"
    assert "no common protocol version" in err.body["message"]
    s = server()
    s.receive_data(encode_frame_bytes(MessageKind.HELLO, {"versions": [1, 9],
                                                          "nonce": b"n" * 32}))
    assert s.state is State.AWAIT_AUTH and s.version == 1


def test_ipc_mode_needs_no_token() -> None:
    c = Connection(ConnectionConfig(Role.CLIENT, require_auth=False))
    s = Connection(ConnectionConfig(Role.SERVER, require_auth=False))
    c.initiate()
    pump(c, s)
    assert c.established and s.established


def test_established_messages_and_bulk_chunking() -> None:
    from rgpu.wire import Limits

    limits = Limits(max_bulk=1000, max_message_bulk=10_000)
    c = Connection(ConnectionConfig(Role.CLIENT, token_key=KEY, limits=limits))
    s = Connection(ConnectionConfig(Role.SERVER, tokens=[("a", KEY)], limits=limits))
    c.initiate()
    pump(c, s)
    events(s)
    payload = bytes(range(256)) * 20  # 5120 bytes -> 6 frames
    c.send(MessageKind.CALL, ["rgpu.echo", []], session=5, request=7, bulk=payload)
    s.receive_data(wire_bytes(c))
    (msg,) = [e for e in events(s) if isinstance(e, MessageReceived)]
    assert msg.frame.body == ["rgpu.echo", []]
    assert msg.frame.bulk == payload
    too_big = b"x" * 10_001
    c.send(MessageKind.CALL, ["rgpu.echo", []], session=5, request=8, bulk=too_big)
    s.receive_data(wire_bytes(c))
    assert s.state is State.CLOSED
    (closed,) = [e for e in events(s) if isinstance(e, ConnectionClosed)]
    assert closed.code == "too_large"


def test_ping_is_answered_in_any_state() -> None:
    c, s = client(), server()
    c.initiate()
    pump(c, s)
    c.ping(42)
    s.receive_data(wire_bytes(c))
    c.receive_data(wire_bytes(s))
    assert any(getattr(e, "request", None) == 42 for e in events(c))
