"""nvcc-built kernels (default and fast-math) run on the PTX machine against numpy."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from ptxkit import pack

RNG = np.random.default_rng(1234)


def fma32(a, b, c):
    """Reference fma.rn.f32: exact product in float64, then one rounding (exact for these)."""
    return (a.astype(np.float64) * b + c).astype(np.float32)


def test_vector_add(loaded):
    _, lm, dev = loaded
    n = 5000  # not a multiple of the block: tail lanes diverge and exit
    a, b = RNG.random(n, np.float32), RNG.random(n, np.float32)
    pa, pb, pc = dev.put(a), dev.put(b), dev.zeros(n, np.float32)
    lm.launch(
        "vectorAdd", ((n + 255) // 256, 1, 1), (256, 1, 1), 0, pack("QQQi", pa, pb, pc, n), print
    )
    assert np.array_equal(dev.get(pc, n, np.float32), a + b)


def test_saxpy_grid_stride(loaded):
    _, lm, dev = loaded
    n = 10000
    x, y = RNG.random(n, np.float32), RNG.random(n, np.float32)
    px, py = dev.put(x), dev.put(y)
    lm.launch("saxpy", (8, 1, 1), (128, 1, 1), 0, pack("ifQQ", n, 1.75, px, py), print)
    assert np.array_equal(dev.get(py, n, np.float32), fma32(np.float32(1.75), x, y))


def test_shared_reduction(loaded):
    _, lm, dev = loaded
    n, bs = 256 * 40 + 17, 256
    nb = (n + bs - 1) // bs
    x = RNG.random(n, np.float32)
    px, po = dev.put(x), dev.zeros(nb, np.float32)
    lm.launch("reduceSum", (nb, 1, 1), (bs, 1, 1), bs * 4, pack("QQi", px, po, n), print)
    xs = np.zeros(nb * bs, np.float32)
    xs[:n] = x
    s = xs.reshape(nb, bs)
    k = bs // 2
    while k:  # same tree order as the kernel: bit-exact
        s = s[:, :k] + s[:, k : 2 * k]
        k //= 2
    assert np.array_equal(dev.get(po, nb, np.float32), s[:, 0])


def test_tiled_matmul(loaded):
    _, lm, dev = loaded
    M, N, K = 48, 40, 35
    A, B = RNG.random((M, K), np.float32), RNG.random((K, N), np.float32)
    pA, pB, pC = dev.put(A), dev.put(B), dev.zeros(M * N, np.float32)
    lm.launch(
        "matmul",
        ((N + 15) // 16, (M + 15) // 16, 1),
        (16, 16, 1),
        0,
        pack("QQQiii", pA, pB, pC, M, N, K),
        print,
    )
    C = dev.get(pC, M * N, np.float32).reshape(M, N)
    np.testing.assert_allclose(C, A @ B, rtol=1e-5)


def test_histogram_atomics(loaded):
    _, lm, dev = loaded
    n = 20000
    data = RNG.integers(0, 256, n, dtype=np.uint8)
    pd = dev.put(data)
    ph, pf = dev.zeros(256, np.uint32), dev.zeros(1, np.float32)
    pm, pcas = dev.zeros(1, np.uint64), dev.zeros(1, np.int32)
    lm.launch(
        "histogram", (4, 1, 1), (256, 1, 1), 0, pack("Qi4xQQQQ", pd, n, ph, pf, pm, pcas), print
    )
    assert np.array_equal(dev.get(ph, 256, np.uint32), np.bincount(data, minlength=256))
    assert dev.get(pf, 1, np.float32)[0] == pytest.approx(float(data.sum()), rel=1e-5)
    assert dev.get(pm, 1, np.uint64)[0] == int(data.max()) * 1000003
    assert 1 <= dev.get(pcas, 1, np.int32)[0] <= n


def _collatz_ref(starts):
    out = []
    for x in starts:
        x, s = int(x), 0
        while x != 1:
            x = 3 * x + 1 if x & 1 else x >> 1
            s += 1
        k = s % 4
        s = [s + 1000, s + 2000, s * 2, ~s & 0xFFFFFFFF][k]
        out.append(s & 0xFFFFFFFF)
    return np.array(out, np.uint32)


def test_divergent_collatz(loaded):
    _, lm, dev = loaded
    n = 700
    starts = RNG.integers(1, 5000, n, dtype=np.uint32)
    ps, po = dev.put(starts), dev.zeros(n, np.uint32)
    lm.launch("collatz", (3, 1, 1), (256, 1, 1), 0, pack("QQi", ps, po, n), print)
    assert np.array_equal(dev.get(po, n, np.uint32), _collatz_ref(starts))


def test_struct_params_and_int64(loaded):
    _, lm, dev = loaded
    n = 300
    base = RNG.integers(-1000, 1000, n, dtype=np.int32)
    pbase, pout = dev.put(base), dev.zeros(n, np.int64)
    scale = np.array([0.5, 1.25, -2.0], np.float32)
    # struct Params { u8 tag; u16 id; float scale[3]; double offset; i64 stride; int* base; }
    s = struct.pack("<BxH3fdqQ", 7, 300, *scale, 12.75, 3, pbase)
    lm.launch("structs", (2, 1, 1), (256, 1, 1), 0, s + pack("Qi", pout, n), print)
    i = np.arange(n, dtype=np.int64)
    local = np.stack([base[(i * 3 + k) % n] for k in range(4)], 1)
    ref = (
        i * 3
        + 300
        + local[i, i % 4]
        + 7
        + (scale[i % 3] * np.float32(10)).astype(np.int64)
        + 12
        + (i << 33)
    )
    assert np.array_equal(dev.get(pout, n, np.int64), ref)


def test_double_precision(loaded):
    _, lm, dev = loaded
    n = 500
    x = RNG.random(n) * 100
    px, py = dev.put(x), dev.zeros(n, np.float64)
    lm.launch("dmath", (2, 1, 1), (256, 1, 1), 0, pack("QQi", px, py, n), print)
    ref = np.sqrt(x) * 1.5 + x / 3.0 - (x * x + 0.25) + np.exp(x * 0.01)
    np.testing.assert_allclose(dev.get(py, n, np.float64), ref, rtol=1e-13, atol=1e-10)


def test_constant_and_device_variable(loaded):
    _, lm, dev = loaded
    n = 100
    x = RNG.random(n, np.float32)
    px, py = dev.put(x), dev.zeros(n, np.float32)
    lm.launch("poly", (1, 1, 1), (128, 1, 1), 0, pack("QQi", px, py, n), print)
    ref = ((3 * x.astype(np.float64) + 0.5) * x - 2) * x + 1
    np.testing.assert_allclose(dev.get(py, n, np.float32), ref, rtol=1e-5)
    addr, size = lm.global_address("counter")
    assert size == 4
    assert struct.unpack("<I", dev.mem.read(addr, 4))[0] == n
    caddr, csize = lm.global_address("coeffs")
    assert np.array_equal(np.frombuffer(dev.mem.read(caddr, csize), np.float32), [1, -2, 0.5, 3])


def test_math_functions(loaded):
    flavour, lm, dev = loaded
    x = np.concatenate([RNG.uniform(-10, 10, 200), [0.0, 1.0, -1.0, 3.14159265]]).astype(np.float32)
    if flavour != "fast":  # precise sinf must survive Payne-Hanek reduction of huge arguments
        x = np.concatenate([x, np.float32([1e30, -3.5e22, 123456.789, 1e9])])
    n = x.size
    px, po = dev.put(x), dev.zeros(5 * n, np.float32)
    lm.launch("mathfn", ((n + 127) // 128, 1, 1), (128, 1, 1), 0, pack("QQi", px, po, n), print)
    out = dev.get(po, 5 * n, np.float32).reshape(n, 5)
    x64 = x.astype(np.float64)
    rtol = 2e-6 if flavour != "fast" else 2e-5
    np.testing.assert_allclose(out[:, 1], np.sin(x64), rtol=rtol, atol=2e-6)
    small = slice(0, 204)  # the huge arguments overflow exp/pow in float32
    np.testing.assert_allclose(out[small, 0], np.exp(x64[small]), rtol=rtol)
    np.testing.assert_allclose(out[:, 2], np.log(np.abs(x64) + 1), rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(out[small, 3], (np.abs(x64[small]) + 0.5) ** 1.7, rtol=rtol * 4)
    np.testing.assert_allclose(out[:, 4], np.sqrt(np.abs(x64)), rtol=rtol)


def test_warp_shuffle_and_vote(loaded):
    _, lm, dev = loaded
    nblocks, bs = 3, 64
    n = nblocks * bs
    v = RNG.integers(-1000, 1000, n, dtype=np.int32)
    pv, po, pb = dev.put(v), dev.zeros(n // 32, np.int32), dev.zeros(1000 + n // 32, np.uint32)
    lm.launch("warpReduce", (nblocks, 1, 1), (bs, 1, 1), 0, pack("QQQ", pv, po, pb), print)
    w = v.reshape(-1, 32)
    assert np.array_equal(dev.get(po, n // 32, np.int32), w.sum(1))
    bits = ((w & 1) != 0).astype(np.uint64) << np.arange(32, dtype=np.uint64)
    ballot = bits.sum(1).astype(np.uint32)
    popc = np.array([bin(int(b)).count("1") for b in ballot], np.uint32)
    got = dev.get(pb, 1000 + n // 32, np.uint32)
    assert np.array_equal(got[: n // 32], ballot + popc + 2)
    # lane 3: xor 1 -> 2, up 2 -> lane 1, idx 7 -> 7
    assert np.all(got[1000:] == 2 + 1 + 7)


def test_printf_and_noinline_call(loaded):
    _, lm, dev = loaded
    vals = np.array([255, 16, 4096, 7, 1, 2], np.int32)
    pv = dev.put(vals)
    out: list[str] = []
    lm.launch("printer", (1, 1, 1), (6, 1, 1), 0, pack("i4xQ", 42, pv), out.append)
    expect = []
    for t in (0, 2, 4):
        helper = t * 3 + 42
        expect.append(
            f"t={t} x={42:5d} v={vals[t]:x} f={vals[t] * 0.5:.3f} s=ok c={chr(65 + t)} "
            f"{helper << 33}|{t:<4d}|\n"
        )
    assert out == expect


def _brev32(x: int) -> int:
    return int(f"{x:032b}"[::-1], 2)


def _byte_perm(x: int, y: int, s: int) -> int:
    src = x | (y << 32)
    out = 0
    for k in range(4):
        sel = (s >> (4 * k)) & 7
        out |= ((src >> (8 * sel)) & 0xFF) << (8 * k)
    return out


def test_integer_and_half_intrinsics(loaded):
    _, lm, dev = loaded
    n = 64
    a = RNG.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    a[:3] = [0, 1, 0x80000000]
    b = RNG.integers(-(2**62), 2**62, n, dtype=np.int64)
    pa, pb = dev.put(a), dev.put(b)
    po, p64, pf = (
        dev.zeros(8 * n, np.uint32),
        dev.zeros(3 * n, np.int64),
        dev.zeros(4 * n, np.float32),
    )
    lm.launch("intrinsics", (1, 1, 1), (n, 1, 1), 0, pack("QQQQQi", pa, pb, po, p64, pf, n), print)
    o = dev.get(po, 8 * n, np.uint32).reshape(n, 8)
    o64 = dev.get(p64, 3 * n, np.int64).reshape(n, 3)
    of = dev.get(pf, 4 * n, np.float32).reshape(n, 4)
    for i in range(n):
        x, y = int(a[i]), int(b[i])
        assert o[i, 0] == _brev32(x)
        assert o[i, 1] == (x & -x).bit_length()
        assert o[i, 2] == 32 - x.bit_length() + bin(y & (2**64 - 1)).count("1")
        assert o[i, 3] == (x * 0x9E3779B9) >> 32
        assert o[i, 4] == _byte_perm(x, 0x11223344, 0x5140)
        sh = i & 31
        assert o[i, 5] == ((((0xDEADBEEF << 32) | x) << sh) >> 32) & 0xFFFFFFFF
        assert o[i, 6] == (x >> (i % 7)) & ((1 << (i % 13)) - 1)
        sx = x - 2**32 if x >= 2**31 else x
        assert o[i, 7] == (abs(sx - i * 1000) + 7) & 0xFFFFFFFF
        d = i - n // 2 if i != n // 2 else 3
        q = abs(y) // abs(d) * (1 if (y < 0) == (d < 0) else -1)
        assert o64[i, 0] == q
        assert o64[i, 1] == (abs(y) % 1000003) * (1 if y >= 0 else -1)
        assert o64[i, 2] == (y * 0x123456789ABCDEF) >> 64
        h = np.float16(np.float32(x % 1000) / np.float32(7))
        h2 = np.float16(np.float32(h) + np.float32(0.5))
        assert of[i, 0] == np.float32(np.float16(np.float32(h2) * np.float32(h)))
        assert of[i, 1] == pytest.approx(np.float32(x) / 3, rel=2**-21)
        assert of[i, 2] == min(max(float(x % 5) - 2, 0.0), 1.0)
        assert of[i, 3] == np.rint(np.float32(int(np.fmod(y, 1000))) / np.float32(8))


def test_cooperative_groups_sync_reductions_and_match(loaded):
    _, lm, dev = loaded
    nb, bs = 2, 64
    v = RNG.integers(-50, 1000, nb * bs, dtype=np.int32)
    v[:bs] = np.abs(v[:bs])  # block 0 has no negatives
    pv, po = dev.put(v), dev.zeros(nb * bs // 16, np.int32)
    pc = dev.zeros(2002, np.uint32)
    lm.launch("groups", (nb, 1, 1), (bs, 1, 1), 0, pack("QQQ", pv, po, pc), print)
    assert np.array_equal(dev.get(po, nb * bs // 16, np.int32), v.reshape(-1, 16).sum(1))
    c = dev.get(pc, 2002, np.uint32)
    for blk in range(nb):
        w = v[blk * bs : (blk + 1) * bs]
        assert c[3 * blk : 3 * blk + 3].tolist() == [int((w < 0).any()), int((w > 0).sum()), 1]
        warp = v[blk * bs : blk * bs + 32] & 3
        peers = sum(1 << k for k in range(32) if warp[k] == warp[5])
        assert c[1000 + blk] == peers
    total = nb * bs
    assert c[2000] == total % 11
    dec = 0
    for _ in range(total):
        dec = 7 if dec == 0 or dec > 7 else dec - 1
    assert c[2001] == dec


def test_half2_and_bfloat16(loaded):
    _, lm, dev = loaded
    n = 50
    x = RNG.uniform(-4, 4, n).astype(np.float32)
    px, po = dev.put(x), dev.zeros(4 * n, np.float32)
    lm.launch("halves", (1, 1, 1), (64, 1, 1), 0, pack("QQi", px, po, n), print)
    o = dev.get(po, 4 * n, np.float32).reshape(n, 4)
    f16 = np.float16
    for i in range(n):
        lo, hi = f16(x[i]), f16(np.float32(2) * x[i])

        def hf(v):
            return f16(np.float32(v))

        g = [f16(np.float64(v) * np.float64(v) + 0.25) for v in (lo, hi)]
        k = []
        for gg, v in zip(g, (lo, hi), strict=True):
            s_, d_ = hf(np.float32(gg) + np.float32(v)), hf(np.float32(gg) - np.float32(v))
            k.append(hf(np.float32(s_) * np.float32(d_)))
        assert o[i, 0] == np.float32(k[0]) and o[i, 1] == np.float32(k[1])
        assert o[i, 2] == float(lo < hi)
        bits = int(np.array([x[i]], np.float32).view(np.uint32)[0])
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16  # round to nearest even
        assert o[i, 3] == np.array([rounded], np.uint32).view(np.float32)[0] * 2


def test_misc_libm_lists_locals_and_mixed_shared(loaded):
    _, lm, dev = loaded
    n, bs = 50, 32
    v = RNG.uniform(0.1, 2.0, (n, 4)).astype(np.float32)
    pv, po = dev.put(v), dev.zeros(4 * n, np.float32)
    # four linked lists whose nodes live in separate allocations
    heads = []
    sums = []
    for k in range(4):
        nxt = 0
        total = 0
        for j in range(k + 2):
            val = 10 * k + j
            total += val
            nxt = dev.put(np.frombuffer(pack("i4xQ", val, nxt), np.uint8))
        heads.append(nxt)
        sums.append(total)
    ph = dev.put(np.array(heads, np.uint64))
    pl, pd, pf = dev.zeros(n, np.int32), dev.zeros(1, np.float64), dev.zeros(n, np.float32)
    nb = (n + bs - 1) // bs
    lm.launch("misc", (nb, 1, 1), (bs, 1, 1), 4 * bs, pack("QQQQQQi", pv, po, ph, pl, pd, pf, n),
              print)  # fmt: skip
    o = dev.get(po, 4 * n, np.float32).reshape(n, 4)
    f = np.float32
    for i in range(n):
        a = v[i]
        assert o[i, 0] == min(a[0], a[1]) + max(a[2], a[3])
        rounded = np.floor(float(a[1] * f(2.5)) + 0.5)  # roundf: half away from zero (>0 here)
        expect_y = f(f(f(np.trunc(a[0] * f(3.7))) + f(rounded)) + f(np.floor(-a[2]))) + f(
            np.ceil(a[3])
        )
        assert o[i, 1] == expect_y
        x10, y10 = a[0] * f(10), a[1] * f(10)
        rem = f(float(y10) - 3.0 * np.round(float(y10) / 3.0))
        expect_z = f(f(np.fmod(x10, f(3))) + rem) + np.copysign(a[2], -a[3])
        assert o[i, 2] == pytest.approx(float(expect_z), abs=1e-6)
        mant, ex = np.frexp(a[0] * f(100) + f(1))
        t = i % bs
        expect_w = f(f(np.ldexp(mant, ex + 1)) + f((t + 1) % bs)) + f(3 * (i % 8))
        assert o[i, 3] == expect_w
    listsum = dev.get(pl, n, np.int32)
    for i in range(n):
        as_char = (i * 37 + 128) % 256 - 128
        as_short = (i * 3001 + 32768) % 65536 - 32768
        extra = ((i * 7) % 16) * i + as_char + as_short
        assert listsum[i] == sums[i % 4] + extra
    assert dev.get(pd, 1, np.float64)[0] == pytest.approx(float(v[:, 0].astype(np.float64).sum()))
    fx = dev.get(pf, n, np.float32)
    for i in range(n):
        d2i = int(np.rint(2.5 + i))
        assert fx[i] == f(f(-v[i, 3]) + f(d2i)) + f(int(v[i, 2] * f(100)))
