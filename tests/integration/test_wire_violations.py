"""Protocol violations against a real server, over QUIC and TCP+TLS, with hand-built frames.

Each test checks three things: the offending connection is answered with an ERROR frame that
names the rule and is then closed; an authenticated client connected beforehand keeps working;
and a new client still gets `rgpu info` answered.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import lz4.block
import pytest

from rgpu.net import connect_server
from rgpu.wire import Flags, MessageKind, encode_frame_bytes

from .procs import HOST, Rig, ServerProc, run_async, server_info_async
from .rawwire import RawClient, error_frames, open_raw, raw_header

pytestmark = pytest.mark.timeout(90)

LIMIT = 8 << 20  # rgpu.wire.frames.Limits: max_body and max_bulk


async def _hello(raw: RawClient) -> None:
    """Send a valid HELLO and take the CHALLENGE, leaving the AUTH step undone."""
    await raw.send(encode_frame_bytes(MessageKind.HELLO, {
        "versions": [1], "nonce": os.urandom(32), "name": "raw test", "features": [],
        "auth": True}))
    challenge = await raw.read_frame()
    assert challenge.kind is MessageKind.CHALLENGE, challenge


async def _other_clients(server: ServerProc) -> int:
    """The server's client count, not counting the connection that asks."""
    return int((await server_info_async(server, "tcp"))["clients"]) - 1


async def _violate(server: ServerProc, transport: str, offend: Any,
                   authenticate: bool) -> tuple[RawClient, bool, dict[str, Any], int, int]:
    """Run ``offend(raw)`` on a fresh raw connection while a bystander client stays connected.

    Returns the raw client, whether the server closed it, the bystander's CONTROL info after
    the violation, and the server's client count before and after the violation.
    """
    bystander = await connect_server(HOST, server.port, token=server.token,
                                     transport=transport, fingerprint=server.fingerprint,
                                     name="bystander")
    raw = await open_raw(transport, HOST, server.port)
    try:
        if authenticate:
            await raw.handshake(server.token, server.channel_binding)
        before = await _other_clients(server)
        await offend(raw)
        closed = await raw.read_until_closed(10.0)
        info = (await bystander.request(MessageKind.CONTROL, {"op": "info"}, timeout=10)).body
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        after = await _other_clients(server)
        while after >= before and authenticate and loop.time() < deadline:
            await asyncio.sleep(0.1)
            after = await _other_clients(server)
    finally:
        await raw.aclose()
        bystander.close("bye", "done")
    return raw, closed, info, before, after


async def _violate_delivered(server: ServerProc, transport: str, offend: Any,
                             authenticate: bool) -> tuple[RawClient, bool, dict[str, Any], int,
                                                          int]:
    """_violate, retried while QUIC loses the ERROR frame that precedes the close (a known bug
    with its own test, test_quic_refusal_reaches_the_client), so the frame can be checked."""
    for _ in range(6):
        result = await _violate(server, transport, offend, authenticate)
        raw, closed = result[0], result[1]
        if transport != "quic" or not closed or error_frames(raw.frames):
            break
    return result


def _assert_refused(raw: RawClient, closed: bool, code: str, *words: str) -> dict[str, Any]:
    assert closed, f"the server left the offending connection open; frames: {raw.frames}"
    errors = error_frames(raw.frames)
    assert errors, (f"connection closed ({raw.close_detail}) without an ERROR frame saying why; "
                    f"frames: {raw.frames}")
    last = errors[-1]
    assert last.get("code") == code, last
    for word in words:
        assert word in str(last.get("message")), last
    assert not [f for f in raw.frames if f.kind is MessageKind.REPLY], raw.frames
    return last


def _assert_still_serving(rig: Rig, server: ServerProc, transport: str, cli: bool) -> None:
    """A new client is served: `rgpu info` as a process, or the same request in-process."""
    if not cli:
        info = run_async(server_info_async(server, transport))
        assert any("llvmpipe" in g["name"] for g in info["gpus"]), info
        return
    result = rig.cli("info", "-s", server.address, "-t", server.token, "--transport", transport,
                     "--fingerprint", server.fingerprint)
    assert result.returncode == 0, str(result)
    assert "llvmpipe" in result.stdout, str(result)


@pytest.mark.parametrize(("kind", "stage"), [
    pytest.param(MessageKind.CALL, "before_hello", id="CALL-before-HELLO"),
    pytest.param(MessageKind.CALL, "after_challenge", id="CALL-instead-of-AUTH"),
    pytest.param(MessageKind.CONTROL, "after_challenge", id="CONTROL-instead-of-AUTH"),
])
def test_message_before_auth_is_refused(shared_server: ServerProc, module_rig: Rig,
                                        transport: str, kind: MessageKind, stage: str) -> None:
    body: Any = (["rgpu.echo", ["leak"]] if kind is MessageKind.CALL else {"op": "info"})

    async def offend(raw: RawClient) -> None:
        if stage == "after_challenge":
            await _hello(raw)
        await raw.send(encode_frame_bytes(kind, body, session=1, request=7))

    raw, closed, info, _, _ = run_async(_violate_delivered(shared_server, transport, offend, False))
    err = _assert_refused(raw, closed, "not_authenticated", kind.name, "before authentication")
    assert "AUTH" in err["message"]
    assert info["server_id"] == shared_server.server_id
    _assert_still_serving(module_rig, shared_server, transport, cli=stage == "before_hello")


async def _oversized_body(raw: RawClient) -> None:
    # Only the header: a server that waited for the body before refusing would hang here.
    await raw.send(raw_header(int(MessageKind.HELLO), body_len=LIMIT + 1))


async def _oversized_bulk(raw: RawClient) -> None:
    body = encode_frame_bytes(MessageKind.CALL, ["rgpu.echo", []])[24:]
    await raw.send(raw_header(int(MessageKind.CALL), flags=int(Flags.BULK), request=3,
                              body_len=len(body), bulk_len=LIMIT + 1) + body)


async def _compressed_bomb(raw: RawClient) -> None:
    # A small compressed body whose size prefix claims more than the body limit.
    packed = lz4.block.compress(b"\x90" * 64, store_size=False)
    body = (LIMIT + 1).to_bytes(4, "little") + packed
    await raw.send(raw_header(int(MessageKind.CONTROL), flags=int(Flags.COMPRESSED), request=4,
                              body_len=len(body)) + body)


@pytest.mark.parametrize(("what", "authenticate"), [
    ("body", False),
    ("bulk", True),
    ("compressed", True),
])
def test_oversized_frame_is_refused_and_server_keeps_serving(
        shared_server: ServerProc, module_rig: Rig, transport: str, what: str,
        authenticate: bool) -> None:
    offend = {"body": _oversized_body, "bulk": _oversized_bulk,
              "compressed": _compressed_bomb}[what]
    raw, closed, info, before, after = run_async(
        _violate_delivered(shared_server, transport, offend, authenticate))
    _assert_refused(raw, closed, "too_large", str(LIMIT))
    assert info["server_id"] == shared_server.server_id
    if authenticate:
        # The refused client is forgotten; the bystander is still connected.
        assert after == before - 1, (before, after)
    _assert_still_serving(module_rig, shared_server, transport, cli=what == "body")
