"""DeviceMemory: the allocator, checked host access, memset, thread safety."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rgpu.server.cuda.emu.ptx import DeviceMemory, EmuFault


def test_alloc_free_and_accounting():
    m = DeviceMemory(1 << 20)
    assert m.base != 0 and m.total == 1 << 20 and m.used == 0
    a = m.alloc(100)
    b = m.alloc(1000, align=4096)
    assert a % 256 == 0 and b % 4096 == 0 and a != b
    assert m.allocation_of(a + 99) == (a, 100)
    assert m.allocation_of(a + 100) is None
    assert m.allocation_of(b) == (b, 1000)
    assert m.used >= 1100
    m.free(a)
    assert m.allocation_of(a) is None
    with pytest.raises(EmuFault) as ei:
        m.free(a)
    assert ei.value.kind == "invalid_value"
    with pytest.raises(EmuFault) as ei:
        m.free(b + 4)
    assert ei.value.kind == "invalid_value"
    c = m.alloc(64)  # reuses the freed hole
    assert c == a


def test_out_of_memory():
    m = DeviceMemory(1 << 16)
    m.alloc(1 << 15)
    with pytest.raises(EmuFault) as ei:
        m.alloc(1 << 16)
    assert ei.value.kind == "out_of_memory"
    assert "exhausted" in ei.value.message


def test_read_write_view_and_bounds():
    m = DeviceMemory(1 << 16)
    a = m.alloc(16)
    m.write(a, b"0123456789abcdef")
    assert m.read(a + 4, 4) == b"4567"
    v = m.view(a, 16)
    v[:2] = [65, 66]
    assert m.read(a, 3) == b"AB2"
    for bad in [(a + 10, 7), (a - 1, 2), (m.base, 1), (a + 16, 1)]:
        with pytest.raises(EmuFault) as ei:
            m.read(*bad)
        assert ei.value.kind == "illegal_address"
    b = m.alloc(16)
    with pytest.raises(EmuFault):  # spans two allocations
        m.read(a + 8, 16 + (b - a - 16) + 8)
    with pytest.raises(EmuFault):
        m.write(a + 15, b"xy")


@pytest.mark.parametrize(
    ("elem", "value", "expect"),
    [
        (1, 0x1AB, b"\xab" * 8),
        (2, 0xBEEF, b"\xef\xbe" * 4),
        (4, 0x01020304, b"\x04\x03\x02\x01" * 2),
    ],
)
def test_memset(elem, value, expect):
    m = DeviceMemory(1 << 16)
    a = m.alloc(9)
    m.memset(a, value, elem, 8 // elem)
    assert m.read(a, 8) == expect
    assert m.read(a + 8, 1) == b"\0"
    with pytest.raises(EmuFault) as ei:
        m.memset(a, 0, 3, 1)
    assert ei.value.kind == "invalid_value"
    with pytest.raises(EmuFault):
        m.memset(a, 0, 4, 3)


def test_freed_memory_is_zeroed():
    m = DeviceMemory(1 << 16)
    a = m.alloc(64)
    m.write(a, b"\xff" * 64)
    m.free(a)
    b = m.alloc(64)
    assert m.read(b, 64) == bytes(64)


def test_concurrent_alloc_free():
    m = DeviceMemory(1 << 24)
    errors = []

    def worker():
        try:
            mine = [m.alloc(1000) for _ in range(200)]
            assert len(set(mine)) == 200
            for p in mine:
                m.free(p)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert m.used == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5000)), max_size=40))
def test_allocations_never_overlap(ops):
    m = DeviceMemory(1 << 20)
    live: dict[int, int] = {}
    for do_alloc, size in ops:
        if do_alloc or not live:
            try:
                p = m.alloc(size)
            except EmuFault:
                continue
            live[p] = size
        else:
            p = sorted(live)[size % len(live)]
            m.free(p)
            del live[p]
        spans = sorted(live.items())
        for (p1, s1), (p2, _) in itertools.pairwise(spans):
            assert p1 + s1 <= p2
        for p, s in live.items():
            assert m.allocation_of(p + s - 1) == (p, s)


def test_kernel_side_check_reports_first_bad_lane():
    m = DeviceMemory(1 << 16)
    a = m.alloc(64)

    def fault(kind, detail):
        return EmuFault(kind, detail)

    offs = m.check(np.array([a, a + 4, a + 60], np.uint64), 4, fault)
    assert (np.asarray(offs) + m.base).tolist() == [a, a + 4, a + 60]
    with pytest.raises(EmuFault) as ei:
        m.check(np.array([a, a + 64], np.uint64), 4, fault)
    assert ei.value.kind == "illegal_address" and f"{a + 64:#x}" in ei.value.message
    with pytest.raises(EmuFault) as ei:
        m.check(np.array([a, a + 6], np.uint64), 4, fault)
    assert ei.value.kind == "misaligned_address"


def test_large_free_returns_zeroed_pages():
    m = DeviceMemory(64 << 20)
    a = m.alloc(8 << 20)
    m.view(a, 8 << 20)[::1000] = 9
    m.free(a)
    b = m.alloc(8 << 20)
    assert b == a
    assert not m.view(b, 8 << 20).any()


def test_kernel_side_check_accepts_lanes_in_different_allocations():
    m = DeviceMemory(1 << 16)
    a, b = m.alloc(24), m.alloc(24)

    def fault(kind, detail):
        return EmuFault(kind, detail)

    offs = m.check(np.array([a + 16, b + 16, a], np.uint64), 8, fault)
    assert (np.asarray(offs) + m.base).tolist() == [a + 16, b + 16, a]
    with pytest.raises(EmuFault):
        m.check(np.array([a + 16, b + 24], np.uint64), 8, fault)
