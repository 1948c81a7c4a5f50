"""Frames: round trips, compression, limits, and a fuzz of the decoder."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rgpu.wire import (
    HEADER_SIZE,
    Flags,
    FrameDecoder,
    Limits,
    MessageKind,
    ProtocolError,
    encode_frame_bytes,
)
from rgpu.wire.frames import HEADER, MAGIC, PROTOCOL_VERSION

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=50) | st.binary(max_size=200),
    lambda children: st.lists(children, max_size=8)
    | st.dictionaries(st.text(max_size=10), children, max_size=8),
    max_leaves=30,
)


def decode_all(data: bytes, limits: Limits | None = None, step: int | None = None):
    dec = FrameDecoder(limits or Limits())
    out = []
    if step is None:
        dec.feed(data)
        out.extend(dec.frames())
    else:
        for i in range(0, len(data), step):
            dec.feed(data[i:i + step])
            out.extend(dec.frames())
    return out, dec


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(list(MessageKind)), body=msgpack_values,
       session=st.integers(0, 2**32 - 1), request=st.integers(0, 2**32 - 1),
       bulk=st.binary(max_size=3000), step=st.none() | st.integers(1, 64))
def test_round_trip(kind, body, session, request, bulk, step) -> None:
    data = encode_frame_bytes(kind, body, session=session, request=request, bulk=bulk)
    frames, dec = decode_all(data, step=step)
    assert len(frames) == 1
    f = frames[0]
    assert (f.kind, f.session, f.request) == (kind, session, request)
    assert f.body == body
    assert bytes(f.bulk) == bulk
    assert bool(f.flags & Flags.BULK) == bool(bulk)
    assert dec.buffered == 0


def test_large_body_is_compressed_only_when_smaller() -> None:
    compressible = {"x": "a" * 5000}
    data = encode_frame_bytes(MessageKind.CALL, compressible)
    assert HEADER.unpack_from(data)[3] & Flags.COMPRESSED
    assert len(data) < 1000
    random_body = random.Random(1).randbytes(5000)
    data = encode_frame_bytes(MessageKind.CALL, random_body)
    assert not HEADER.unpack_from(data)[3] & Flags.COMPRESSED
    small = encode_frame_bytes(MessageKind.CALL, "a" * 400)
    assert not HEADER.unpack_from(small)[3] & Flags.COMPRESSED
    for d, body in ((encode_frame_bytes(MessageKind.CALL, compressible), compressible),):
        frames, _ = decode_all(d)
        assert frames[0].body == body


def test_several_frames_in_one_buffer() -> None:
    data = b"".join(encode_frame_bytes(MessageKind.CALL, [i], request=i, bulk=bytes([i]) * i)
                    for i in range(20))
    frames, _ = decode_all(data, step=7)
    assert [f.body for f in frames] == [[i] for i in range(20)]
    assert [bytes(f.bulk) for f in frames] == [bytes([i]) * i for i in range(20)]


def _header(**over: int) -> bytes:
    fields = {"magic": MAGIC, "version": PROTOCOL_VERSION, "kind": int(MessageKind.CALL),
              "flags": 0, "reserved": 0, "session": 0, "request": 0, "body": 1, "bulk": 0}
    fields.update(over)
    return HEADER.pack(*fields.values())


@pytest.mark.parametrize("header, rule", [
    (_header(magic=0x1234), "bad magic"),
    (_header(version=99), "unsupported protocol version 99"),
    (_header(kind=77), "unknown message kind 77"),
    (_header(flags=0x4000), "unknown flags"),
    (_header(body=(8 << 20) + 1), "exceeds the limit"),
    (_header(bulk=(8 << 20) + 1, flags=int(Flags.BULK)), "exceeds the limit"),
    (_header(bulk=5), "BULK flag and bulk length disagree"),
])
def test_bad_headers_name_the_rule(header: bytes, rule: str) -> None:
    dec = FrameDecoder()
    with pytest.raises(ProtocolError, match=rule):
        dec.feed(header)
        list(dec.frames())
    with pytest.raises(ProtocolError):  # a failed stream stays failed
        dec.feed(b"\x00")


def test_oversized_length_refused_before_payload_arrives() -> None:
    dec = FrameDecoder(Limits(max_body=1024, max_bulk=1024))
    with pytest.raises(ProtocolError, match="exceeds the limit of 1024") as exc:
        dec.feed(_header(body=1025))
    assert exc.value.code == "too_large"
    assert dec.buffered == HEADER_SIZE  # nothing beyond the header was taken in


def test_compressed_body_expanding_past_limit_is_refused() -> None:
    big = encode_frame_bytes(MessageKind.CALL, "z" * 100_000)
    with pytest.raises(ProtocolError, match="expands to"):
        decode_all(big, Limits(max_body=10_000))


def test_corrupt_compressed_body() -> None:
    data = bytearray(encode_frame_bytes(MessageKind.CALL, "z" * 5000))
    data[HEADER_SIZE + 8:HEADER_SIZE + 12] = b"\xff\xff\xff\xff"
    with pytest.raises(ProtocolError):
        decode_all(bytes(data))


def test_bad_msgpack_body() -> None:
    payload = b"\xc1"  # never-used msgpack byte
    data = _header(body=len(payload)) + payload
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        decode_all(data)


_SEED_FRAMES = [
    encode_frame_bytes(MessageKind.HELLO, {"versions": [1], "nonce": b"n" * 32}),
    encode_frame_bytes(MessageKind.CALL, ["cuMemAlloc_v2", [1 << 20]], session=3, request=9),
    encode_frame_bytes(MessageKind.REPLY, {"x": "y" * 2000}, flags=int(Flags.RESPONSE)),
    encode_frame_bytes(MessageKind.CALL, ["rgpu.echo", []], bulk=b"b" * 300),
]


def _check_fuzz(data: bytes) -> None:
    limits = Limits(max_body=4096, max_bulk=4096)
    dec = FrameDecoder(limits)
    try:
        dec.feed(data)
        for f in dec.frames():
            assert isinstance(f.kind, MessageKind)
            assert len(f.bulk) <= limits.max_bulk
    except ProtocolError:
        pass
    assert dec.buffered <= len(data)


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    _check_fuzz(data)
    _check_fuzz(struct.pack("!H", MAGIC) + data)


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(_SEED_FRAMES), flips=st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.integers(0, 10_000))
def test_fuzz_mutated_frames(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, val in flips:
        data[pos % len(data)] = val
    _check_fuzz(bytes(data[: max(1, cut % (len(data) + 1))]))
    _check_fuzz(bytes(data))


def _decode_buffered(data: bytes, steps: list[int]) -> tuple[list, FrameDecoder, int]:
    """Decode as a BufferedProtocol transport does: write into get_buffer() (at most the
    step, at most what it offers), then buffer_updated(). Returns the frames, the decoder
    and how many writes went straight into a frame's own bulk buffer."""
    from rgpu.wire.frames import DIRECT_BULK  # noqa: F401  (documents what is tested)

    dec = FrameDecoder(Limits())
    out: list = []
    pos = i = direct_writes = 0
    while pos < len(data):
        buf = dec.get_buffer()
        direct = dec._direct is not None
        n = min(len(buf), steps[i % len(steps)], len(data) - pos)
        i += 1
        buf[:n] = data[pos:pos + n]
        del buf
        dec.buffer_updated(n)
        direct_writes += direct
        pos += n
        out.extend(dec.frames())
    return out, dec, direct_writes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.sampled_from([0, 5, 700, 65535, 65536, 200_001, 1 << 20]),
                      min_size=1, max_size=5),
       steps=st.lists(st.integers(1, 300_000), min_size=1, max_size=4),
       compress=st.booleans())
def test_buffered_receive_puts_large_bulk_straight_into_its_frame(
        sizes: list[int], steps: list[int], compress: bool) -> None:
    """Frames with small and large bulk segments, read in arbitrary pieces through
    get_buffer/buffer_updated, come out whole, in order, and equal to what was sent; large
    segments are filled in place."""
    rng = random.Random(len(sizes) * 7919 + sum(steps))
    sent = []
    data = bytearray()
    for k, size in enumerate(sizes):
        bulk = rng.randbytes(size)
        body = ["fn", [k, "x" * (600 if compress else 3)]]
        sent.append((body, bulk))
        data += encode_frame_bytes(MessageKind.CALL, body, session=k + 1, request=k, bulk=bulk)
    frames, dec, direct_writes = _decode_buffered(bytes(data), steps)
    assert [(f.body, bytes(f.bulk)) for f in frames] == sent
    assert [f.session for f in frames] == list(range(1, len(sizes) + 1))
    assert dec.buffered == 0
    big = [s for s in sizes if s >= 1 << 16]
    if big and max(steps) < big[0] // 2:
        assert direct_writes > 0


def test_buffered_and_fed_bytes_mix() -> None:
    """feed() in the middle of a directly received segment continues it."""
    bulk = bytes(range(256)) * 1024  # 256 KiB
    data = encode_frame_bytes(MessageKind.REPLY, {"ok": 1}, request=9, bulk=bulk) + \
        encode_frame_bytes(MessageKind.PING, None, request=10)
    dec = FrameDecoder(Limits())
    dec.feed(data[:HEADER_SIZE + 200])
    assert list(dec.frames()) == []
    buf = dec.get_buffer()
    body_len = HEADER.unpack_from(data, 0)[7]
    assert len(buf) == len(bulk) - (200 - body_len)  # the rest of the segment, in place
    dec.feed(data[HEADER_SIZE + 200:HEADER_SIZE + 100_000])
    dec.feed(data[HEADER_SIZE + 100_000:])
    frames = list(dec.frames())
    assert [f.kind for f in frames] == [MessageKind.REPLY, MessageKind.PING]
    assert bytes(frames[0].bulk) == bulk and frames[0].body == {"ok": 1}
    assert dec.buffered == 0
