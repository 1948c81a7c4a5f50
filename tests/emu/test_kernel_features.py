"""CUDA features of real programs, built by nvcc, run on the PTX machine against numpy.

programs/features.cu holds one kernel per feature whose PTX the emulated device once rejected or
got wrong (cooperative-groups tiles, libdevice's double trig reduction, cuda_fp16/cuda_bf16
header code, ...). Each is built as PTX three ways, because the PTX nvcc emits depends on the
target: nvcc's default (compute_75), ``-arch=sm_80`` (native bf16 arithmetic, ``redux.sync``) and
``-arch=sm_90`` (bf16 conversions from integers and doubles). Results are compared exactly
wherever PTX defines them exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from rgpu.server.cuda.emu.ptx import DeviceMemory, EmuFault, LoadedModule, parse_ptx

FLAVOURS = {"default": (), "sm_80": ("-arch=sm_80",), "sm_90": ("-arch=sm_90",)}


@pytest.fixture(scope="module", params=sorted(FLAVOURS))
def flavour(request):
    return request.param


@pytest.fixture(scope="module")
def ptx_text(nvcc_build, flavour) -> str:
    return nvcc_build("features.cu", "-ptx", *FLAVOURS[flavour]).read_text()


class Kernels:
    """features.cu loaded into a fresh device memory; launches pack arguments by ParamInfo."""

    def __init__(self, text: str) -> None:
        self.mem = DeviceMemory(64 << 20)
        self.module = parse_ptx(text)
        self.loaded = LoadedModule(self.module, self.mem)
        self.printed: list[str] = []

    def put(self, a: np.ndarray) -> int:
        a = np.ascontiguousarray(a)
        p = self.mem.alloc(max(a.nbytes, 1))
        self.mem.write(p, a.tobytes())
        return p

    def zeros(self, n: int, dtype) -> int:
        nbytes = n * np.dtype(dtype).itemsize
        p = self.mem.alloc(nbytes)
        self.mem.memset(p, 0, 1, nbytes)
        return p

    def get(self, p: int, n: int, dtype) -> np.ndarray:
        return np.frombuffer(self.mem.read(p, n * np.dtype(dtype).itemsize), dtype).copy()

    def launch(self, name: str, grid, block, *args, shared: int = 0) -> None:
        info = self.module.kernels[name]
        buf = bytearray(info.param_size)
        for p, a in zip(info.params, args, strict=True):
            raw = a.tobytes() if isinstance(a, np.generic) else bytes(a) if isinstance(
                a, bytes) else int(a).to_bytes(p.size, "little", signed=int(a) < 0)
            buf[p.offset : p.offset + p.size] = raw
        grid = (grid, 1, 1) if isinstance(grid, int) else tuple(grid) + (1,) * (3 - len(grid))
        block = (block, 1, 1) if isinstance(block, int) else tuple(block) + (1,) * (3 - len(block))
        self.loaded.launch(name, grid, block, shared, bytes(buf), self.printed.append)


@pytest.fixture
def k(ptx_text) -> Kernels:
    return Kernels(ptx_text)


@pytest.fixture
def k80(nvcc_build) -> Kernels:
    """The sm_80 build alone, for kernels whose feature exists only there."""
    return Kernels(nvcc_build("features.cu", "-ptx", *FLAVOURS["sm_80"]).read_text())


def bf16(x) -> np.ndarray:
    """float32 -> nearest-even bfloat16, returned as float32."""
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32)


def test_tile_collectives_see_only_their_tile(k):
    """A tile's vote/redux/match carry its own 16- or 4-lane membermask."""
    rng = np.random.default_rng(0)
    n = 128
    v = rng.integers(-50, 50, n).astype(np.int32)
    v[3] = 3
    out = k.zeros(6 * n, np.int32)
    k.launch("tiles", 2, 64, k.put(v), out)
    o = k.get(out, 6 * n, np.int32).reshape(n, 6)
    w16, w4 = v.reshape(-1, 16), v.reshape(-1, 4)
    np.testing.assert_array_equal(o[:, 0], np.repeat(w16.max(1), 16))
    np.testing.assert_array_equal(o[:, 1], np.repeat(w4.sum(1), 4))
    np.testing.assert_array_equal(o[:, 2], np.repeat((w16 == 3).any(1), 16))
    np.testing.assert_array_equal(o[:, 3], np.repeat((w16 > -40).all(1), 16))
    ballots = ((w4 > 0) << np.arange(4)).sum(1)  # tile.ballot: bits of the tile's own lanes
    np.testing.assert_array_equal(o[:, 4], np.repeat(ballots, 4))
    same = (w16[:, :, None] & 1) == (w16[:, None, :] & 1)
    match = (same << np.arange(16)).sum(2).ravel()
    np.testing.assert_array_equal(o[:, 5], match)  # cg shifts it to the tile's own lanes


def test_double_trig_of_huge_arguments(k):
    x = np.array([0.5, 1e6, -3e8, 123456.789, 1e22, -5e300, 2.0**60, 7.0], np.float64)
    out = k.zeros(2 * x.size, np.float64)
    k.launch("dtrig", 1, 32, k.put(x), out, x.size)
    got = k.get(out, 2 * x.size, np.float64).reshape(-1, 2)
    # libdevice sin/cos are within 2 ulp; numpy's are correctly rounded or nearly so
    np.testing.assert_allclose(got[:, 0], np.sin(x), rtol=0, atol=4e-16)
    np.testing.assert_allclose(got[:, 1], np.cos(x), rtol=0, atol=4e-16)


def test_half_and_bfloat16_header_code(k, flavour):
    rng = np.random.default_rng(1)
    n = 200
    x = rng.uniform(-4, 4, n).astype(np.float32)
    y = rng.uniform(-3, 3, n).astype(np.float32)
    x[:2] = [1.0, -0.0]
    y[:2] = [1.0, 0.0]
    out = k.zeros(16 * n, np.float32)
    k.launch("halves", 2, 128, k.put(x), k.put(y), out, n)
    o = k.get(out, 16 * n, np.float32).reshape(n, 16)
    a, b = x.astype(np.float16), y.astype(np.float16)
    f32 = np.float32
    np.testing.assert_array_equal(o[:, 0], np.maximum(a, b).astype(f32))
    np.testing.assert_array_equal(o[:, 1], np.minimum(a, b).astype(f32))
    fma16 = (a.astype(np.float64) * b + a).astype(np.float16)  # exact product, one rounding
    np.testing.assert_array_equal(o[:, 2], fma16.astype(f32))
    v = x * f32(3.3)
    hz = v.astype(np.float16)
    hz = np.where(np.abs(hz.astype(f32)) > np.abs(v), np.nextafter(hz, np.float16(0)), hz)
    np.testing.assert_array_equal(o[:, 3], hz.astype(f32))
    c, d = bf16(x), bf16(y)
    np.testing.assert_array_equal(o[:, 4], np.maximum(c, d))
    np.testing.assert_array_equal(o[:, 5], np.minimum(c, d))
    # bf16 fma natively (sm_80+: one rounding) or through an f32 fmaf (compute_75: two)
    fma = (lambda a, b, c: bf16(a.astype(np.float64) * b + c)) if flavour != "default" else (
        lambda a, b, c: bf16((a.astype(np.float64) * b + c).astype(f32)))
    np.testing.assert_array_equal(o[:, 6], fma(c, d, c if flavour != "default" else x))
    np.testing.assert_array_equal(o[:, 7], bf16(c.astype(np.float64) + d))
    np.testing.assert_array_equal(o[:, 8], bf16(c * d))
    np.testing.assert_array_equal(o[:, 9], bf16(c.astype(np.float64) - d))
    np.testing.assert_array_equal(o[:, 10], bf16((x.astype(np.float64) * 1.1).astype(f32)))
    ints = np.arange(n) * 1001 - 70000
    np.testing.assert_array_equal(o[:, 11], bf16(ints.astype(f32)))
    np.testing.assert_array_equal(o[:, 12], np.trunc(bf16(c * bf16(f32(100)))))
    np.testing.assert_array_equal(o[:, 13], fma(c, c, c))
    np.testing.assert_array_equal(o[:, 14], fma(d, d, d))
    np.testing.assert_array_equal(o[:, 15], (c < d).astype(f32))


def test_half_and_bfloat16_atomic_add(k):
    h, h2, b, b2 = (k.zeros(2, np.uint16) for _ in range(4))
    k.launch("halfatomics", 2, 50, h, h2, b, b2)
    assert k.get(h, 1, np.float16)[0] == 100
    assert k.get(h2, 2, np.float16).tolist() == [100, 200]
    as_f32 = lambda p: (k.get(p, 2, np.uint16).astype(np.uint32) << 16).view(np.float32)  # noqa: E731
    assert as_f32(b)[0] == 100
    assert as_f32(b2).tolist() == [100, 50]


@pytest.mark.parametrize(
    "text, name",
    [
        ("tex.2dms.v4.f32.s32 {%r0,%r0,%r0,%r0}, [%rd0, {%r1,%r1,%r1,%r1}];", "tex.2dms"),
        ("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%r0,%r0,%r0,%r0}, {%r0,%r0}, {%r0}, "
         "{%r0,%r0,%r0,%r0};", "mma.sync"),
        ("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r0,%r0,%r0,%r0}, [%rd0];", "ldmatrix"),
    ],
)
def test_unsupported_instruction_names_itself(text, name):
    """Instructions the machine lacks fail when executed, naming themselves, never silently."""
    with pytest.raises(EmuFault) as info:
        Kernels(".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry t() { "
                ".reg .b32 %r<2>; .reg .b64 %rd<1>; " + text + " ret; }").launch("t", 1, 32)
    assert info.value.kind == "not_supported" and name in str(info.value)


def test_half_shuffle_relu_and_unordered_compares(k):
    x = np.array([1.5, -2.0, np.nan, 0.25, 3.0, -0.5, 1.5, 2.0] * 4, np.float16)
    out, cmp = k.zeros(64, np.float16), k.zeros(32, np.int32)
    k.launch("halfwarp", 1, 32, k.put(x), out, cmp)
    o = k.get(out, 64, np.float16)
    t = np.arange(32)
    np.testing.assert_array_equal(o[:32], x[t ^ 1])
    w = x[t ^ 3].astype(np.float64)
    relu = (w * w - 2 * w).astype(np.float16)  # exact in float64, one rounding
    relu = np.where(np.isnan(relu), relu, np.where(relu <= 0, np.float16(0), relu))
    np.testing.assert_array_equal(o[32:], relu)
    b, c = x.astype(np.float64), w
    nan = np.isnan(b) | np.isnan(c)
    want = ((b == c) | nan) | ((b >= c) | nan) << 1 | np.isnan(b) << 2 | (b < c) << 3 | (
        (b != c) & ~nan) << 4
    np.testing.assert_array_equal(k.get(cmp, 32, np.int32), want)


def test_int128_division(k):
    a = np.random.default_rng(2).integers(-(2**62), 2**62, 33, dtype=np.int64)
    out = k.zeros(64, np.int64)
    k.launch("int128", 1, 32, k.put(a), out)
    got = k.get(out, 64, np.int64).reshape(32, 2)
    for t in range(32):
        x = int(a[t]) * int(a[t + 1])
        q = abs(x) // 1000003 * (1 if x >= 0 else -1)
        want = [(q >> 64) & (2**64 - 1), q & (2**64 - 1)]
        assert [int(v) & (2**64 - 1) for v in got[t]] == want, t


def test_dp4a_dp2a(k):
    rng = np.random.default_rng(3)
    a = rng.integers(-(2**31), 2**31, 32).astype(np.int32)
    b = rng.integers(-(2**31), 2**31, 32).astype(np.int32)
    out = k.zeros(128, np.int32)
    k.launch("dots", 1, 32, k.put(a), k.put(b), out)
    o = k.get(out, 128, np.int32).reshape(32, 4).astype(np.int64)
    s8, u8 = (b.view(t).reshape(32, 4).astype(np.int64) for t in (np.int8, np.uint8))
    a8, au8 = (a.view(t).reshape(32, 4).astype(np.int64) for t in (np.int8, np.uint8))
    s16, u16 = (a.view(t).reshape(32, 2).astype(np.int64) for t in (np.int16, np.uint16))
    wrap = lambda v: (v + 2**31) % 2**32 - 2**31  # noqa: E731
    np.testing.assert_array_equal(o[:, 0], wrap((a8 * s8).sum(1) + 5))
    np.testing.assert_array_equal(o[:, 1], wrap((au8 * u8).sum(1) + 7))
    np.testing.assert_array_equal(o[:, 2], wrap((s16 * s8[:, :2]).sum(1) + 3))
    np.testing.assert_array_equal(o[:, 3], wrap((u16 * u8[:, 2:]).sum(1) + 1))


def test_device_malloc_free_new_delete(k):
    out = k.zeros(64, np.int32)
    used = k.mem.used
    k.launch("heap", 2, 64, out)
    t = np.arange(64)
    np.testing.assert_array_equal(k.get(out, 64, np.int32), t * 120 + t)
    assert k.mem.used == used  # everything the kernel allocated it freed


def test_recursion_with_local_frames(k):
    depth = np.random.default_rng(4).integers(0, 40, 96).astype(np.int32)
    depth[5] = 100
    out = k.zeros(96, np.int32)
    k.launch("recurse", 3, 32, k.put(depth), out)

    def walk(parent, d):
        mine = [d, parent[0] + parent[1] if parent else 1, parent[2] * 2 % 1000 if parent else 3]
        return mine[1] + mine[2] if d == 0 else walk(mine, d - 1) + mine[0]

    np.testing.assert_array_equal(k.get(out, 96, np.int32), [walk(None, int(d)) for d in depth])


def test_signed_atomic_add_returns_distinct_tickets(k):
    counter, out = k.zeros(1, np.int32), k.zeros(256, np.int32)
    k.mem.write(counter, np.int32(2**31 - 100).tobytes())  # and wraps past INT_MAX
    k.launch("tickets", 2, 128, counter, out)
    want = (np.arange(256) + 2**31 - 100 + 2**31) % 2**32 - 2**31
    np.testing.assert_array_equal(np.sort(k.get(out, 256, np.int32)), np.sort(want))


def test_wide_tile_scratch_in_reserved_shared_memory(k80):
    v = (np.arange(256) % 17).astype(np.int32)
    out = k80.zeros(256, np.int32)
    k80.launch("widetile", 2, 128, k80.put(v), out)
    want = np.repeat(v.reshape(-1, 64).sum(1), 64) + 1000 * (np.arange(256) % 128 // 64)
    np.testing.assert_array_equal(k80.get(out, 256, np.int32), want)


def test_simd_video_intrinsics(k):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2**32, 32, dtype=np.uint64).astype(np.uint32)
    y = rng.integers(0, 2**32, 32, dtype=np.uint64).astype(np.uint32)
    x[:2], y[:2] = [0x7FFF8000, 0x80FF7F00], [0x00017FFF, 0x7F0180FF]
    out = k.zeros(6 * 32, np.uint32)
    k.launch("simd", 1, 32, k.put(x), k.put(y), out)
    o = k.get(out, 6 * 32, np.uint32).reshape(32, 6)
    b8 = lambda v: v.view(np.uint8).reshape(-1, 4).astype(np.int64)  # noqa: E731
    u16 = lambda v: v.view(np.uint16).reshape(-1, 2).astype(np.int64)  # noqa: E731
    s16 = lambda v: v.view(np.int16).reshape(-1, 2).astype(np.int64)  # noqa: E731
    pack8 = lambda a: (a & 0xFF).astype(np.uint8).reshape(-1).view(np.uint32)  # noqa: E731
    pack16 = lambda a: (a & 0xFFFF).astype(np.uint16).reshape(-1).view(np.uint32)  # noqa: E731
    np.testing.assert_array_equal(o[:, 0], pack8(np.abs(b8(x) - b8(y))))
    np.testing.assert_array_equal(o[:, 1], np.abs(u16(x) - u16(y)).sum(1))
    np.testing.assert_array_equal(o[:, 2], pack16(np.clip(s16(x) + s16(y), -32768, 32767)))
    np.testing.assert_array_equal(o[:, 3], pack16(np.minimum(s16(x), s16(y))))
    np.testing.assert_array_equal(o[:, 4], pack16(u16(x) + u16(y)))
    np.testing.assert_array_equal(o[:, 5], np.abs(b8(x) - b8(y)).sum(1))


def test_wmma_half_gemm_and_int8(k):
    rng = np.random.default_rng(6)
    m, n, kk = 64, 48, 32
    a = rng.standard_normal((m, kk)).astype(np.float16)
    b = rng.standard_normal((kk, n)).astype(np.float16)
    c = k.zeros(m * n, np.float32)
    k.launch("wmmaGemm", (2, 2), (64, 2), k.put(a), k.put(b), c, m, n, kk)
    # f16 products are exact; the accumulation order inside a tensor core is unspecified
    want = a.astype(np.float64) @ b.astype(np.float64) * 0.5
    np.testing.assert_allclose(k.get(c, m * n, np.float32).reshape(m, n), want, rtol=1e-5,
                               atol=1e-5)
    a8 = rng.integers(-128, 128, (16, 16)).astype(np.int8)
    b8 = rng.integers(-128, 128, (16, 16)).astype(np.int8)
    c0 = rng.integers(-1000, 1000, (16, 16)).astype(np.int32)
    pc = k.put(c0)
    k.launch("wmmaInt8", 1, 32, k.put(a8), k.put(b8.T.copy()), pc)
    want8 = a8.astype(np.int64) @ b8.astype(np.int64) + c0
    np.testing.assert_array_equal(k.get(pc, 256, np.int32).reshape(16, 16).T, want8)


def test_grid_sync_in_cooperative_launch_and_trap_otherwise(k):
    n = 8 * 64
    p = k.zeros(n, np.int32)
    info = k.module.kernels["gridsync"]
    params = p.to_bytes(info.params[0].size, "little")
    k.loaded.launch("gridsync", (8, 1, 1), (64, 1, 1), 0, params, print, cooperative=True)
    i = np.arange(n)
    np.testing.assert_array_equal(k.get(p, n, np.int32), i + 1000 * ((i + 64) % n))
    with pytest.raises(EmuFault) as err:
        k.launch("gridsync", 8, 64, p)
    assert "grid.sync() in a launch that is not cooperative" in str(err.value)


def test_fns_struct_return_and_printf(k):
    s = k.put(np.frombuffer(b"hello\0", np.uint8))
    nth, sums = k.zeros(64, np.int32), k.zeros(64, np.float64)
    k.launch("assorted", 1, 64, nth, sums, s)
    mask = 0xF0F0F0F0

    def fns(base, offset):
        if offset == 0:
            return base if mask >> base & 1 else 0xFFFFFFFF
        step = 1 if offset > 0 else -1
        seen, pos = 0, base
        while 0 <= pos < 32:
            seen += mask >> pos & 1
            if mask >> pos & 1 and seen == abs(offset):
                return pos
            pos += step
        return 0xFFFFFFFF

    want = [fns(t % 32, t % 8 - 3) for t in range(64)]
    np.testing.assert_array_equal(k.get(nth, 64, np.int32).view(np.uint32), want)
    t = np.arange(64)
    np.testing.assert_array_equal(k.get(sums, 64, np.float64), t * 1.5 + t * t + t - 0.5)
    assert k.printed == [
        "[   3.142|42    |00042|+42|ff|FF|10|18446744073709551611|-77|1.23e+04|1e-10|z|hello|%|"
        "    ab|0x1234]\n"
    ]


def test_tf32_conversion_and_vector_atomics(k, flavour):
    x = np.random.default_rng(7).standard_normal(32).astype(np.float32)
    x[:3] = [1 + 2**-11, 1 + 3 * 2**-12, -(1 + 2**-11)]  # ties round away from zero
    tf, p2, p4 = k.zeros(32, np.uint32), k.zeros(2, np.float32), k.zeros(4, np.float32)
    k.launch("newer", 2, 32, k.put(x), tf, p2, p4)
    if flavour != "default":
        bits = x.view(np.uint32).astype(np.uint64)
        np.testing.assert_array_equal(k.get(tf, 32, np.uint32), ((bits + 0x1000) >> 13) << 13)
    if flavour == "sm_90":
        assert k.get(p2, 2, np.float32).tolist() == [64, 128]
        assert k.get(p4, 4, np.float32).tolist() == [64, 128, 192, 256]


def test_scan_with_negative_address_offsets(k):
    n = 512
    x = np.random.default_rng(8).integers(0, 10, n).astype(np.float32)
    out = k.zeros(n, np.float32)
    k.launch("scan", 1, n // 2, k.put(x), out, n, shared=(n + n // 32) * 4)
    np.testing.assert_array_equal(k.get(out, n, np.float32), np.cumsum(x) - x)


def test_bulk_copies_complete_mbarrier_transactions(k, flavour):
    x = np.random.default_rng(9).standard_normal(512).astype(np.float32)
    out = k.zeros(512, np.float32)
    k.launch("bulkcopy", 2, 256, k.put(x), out)
    if flavour == "sm_90":  # (the kernel is empty for older targets)
        blocks = x.reshape(2, 256)
        want = (blocks[:, ::-1].astype(np.float64) * 3 + blocks[::-1]).astype(np.float32)
        # tile*3 + tile2 is one fma.rn.f32; the f64 reference rounds twice in rare ties
        np.testing.assert_array_max_ulp(k.get(out, 512, np.float32), want.ravel(), maxulp=1)


def test_prmt_modes():
    """All byte-permute modes (the PTX ISA's table, selector 0..3 per thread)."""
    modes = ["f4e", "b4e", "rc8", "ecl", "ecr", "rc16"]
    body = "".join(
        f"prmt.b32.{m} %r3, %r1, %r2, %r0; st.global.u32 [%rd1+{4 * i}], %r3;"
        for i, m in enumerate(modes)
    )
    k = Kernels(
        ".version 8.0\n.target sm_75\n.address_size 64\n.visible .entry t(.param .u64 out) {"
        " .reg .b32 %r<4>; .reg .b64 %rd<3>; ld.param.u64 %rd0, [out];"
        " mov.u32 %r0, %tid.x; mul.wide.u32 %rd2, %r0, 24; add.s64 %rd1, %rd0, %rd2;"
        " mov.u32 %r1, 0x33221100; mov.u32 %r2, 0x77665544; " + body + " ret; }"
    )
    out = k.zeros(4 * 6, np.uint32)
    k.launch("t", 1, 4, out)
    got = k.get(out, 24, np.uint32).reshape(4, 6).T
    want = {
        "f4e": [0x33221100, 0x44332211, 0x55443322, 0x66554433],
        "b4e": [0x55667700, 0x66770011, 0x77001122, 0x00112233],
        "rc8": [0x00000000, 0x11111111, 0x22222222, 0x33333333],
        "ecl": [0x33221100, 0x33221111, 0x33222222, 0x33333333],
        "ecr": [0x00000000, 0x11111100, 0x22221100, 0x33221100],
        "rc16": [0x11001100, 0x33223322, 0x11001100, 0x33223322],
    }
    for i, m in enumerate(modes):
        assert got[i].tolist() == want[m], m


def test_shuffle_from_lanes_outside_the_mask_reads_zero(k):
    x = np.random.default_rng(10).integers(-100, 100, 4 * 256).astype(np.int32)
    out = k.zeros(4, np.int32)
    k.launch("lastwarp", 4, 256, k.put(x), out)
    np.testing.assert_array_equal(k.get(out, 4, np.int32), x.reshape(4, 256).sum(1))


def test_dynamic_shared_after_an_unaligned_static_variable(k):
    x = np.arange(128, dtype=np.float32)
    out = k.zeros(128, np.float32)
    k.launch("oddstatic", 1, 128, k.put(x), out, shared=128 * 4)
    np.testing.assert_array_equal(k.get(out, 128, np.float32), x[::-1] + 1)


def test_fp8_conversions_agree_with_the_headers_software_path(nvcc_build):
    """sm_90 converts with cvt.rn.satfinite.{e4m3x2,e5m2x2}.f32 and back through f16x2; the
    default build runs cuda_fp8.hpp's own integer emulation. Both must give the same bits."""
    rng = np.random.default_rng(11)
    special = [0, -0.0, np.inf, -np.inf, np.nan, 1.0, 448, 449, 464, 465, 57344, 61440, 2**-9,
               2**-10, 3 * 2**-11, 2**-16, 2**-17, 1.0625, 1.1875, -3.5]
    x = np.concatenate([special, rng.standard_normal(100) * 10, rng.standard_normal(50) * 1e-2,
                        rng.uniform(-7e4, 7e4, 86)]).astype(np.float32)
    n = x.size
    got = {}
    for flavour in ("default", "sm_90"):
        k = Kernels(nvcc_build("features.cu", "-ptx", *FLAVOURS[flavour]).read_text())
        back, raw = k.zeros(2 * n, np.float32), k.zeros(2 * n, np.uint8)
        k.launch("fp8", 1, n, k.put(x), back, raw)
        got[flavour] = k.get(raw, 2 * n, np.uint8), k.get(back, 2 * n, np.float32)
    np.testing.assert_array_equal(got["sm_90"][0], got["default"][0])
    np.testing.assert_array_equal(got["sm_90"][1], got["default"][1])
    e4m3, e5m2 = got["sm_90"][0][0::2], got["sm_90"][0][1::2]
    assert e4m3[[5, 6, 2, 4]].tolist() == [0x38, 0x7E, 0x7E, 0x7F]  # 1, max, inf saturates, NaN
    assert e5m2[[5, 10, 2, 4]].tolist() == [0x3C, 0x7B, 0x7B, 0x7F]


def test_managed_variables_and_pointer_tables(k):
    out = k.zeros(32, np.float32)
    k.launch("managed", 1, 32, out)
    t = np.arange(32)
    want = np.where(t % 2, 2.0 * 9 + ord("i"), 0.5 * 7 + ord("e")).astype(np.float32)
    np.testing.assert_array_equal(k.get(out, 32, np.float32), want)
    addr, size = k.loaded.global_address("managedCount")
    assert size == 4 and int.from_bytes(k.mem.read(addr, 4), "little") == 32


def test_blocks_spinning_on_their_predecessor_finish(k):
    nb = 96
    x = np.random.default_rng(12).integers(0, 5, nb * 64).astype(np.int32)
    out, flags, sums, ticket = (k.zeros(n, np.int32) for n in (nb * 64, nb, nb, 1))
    k.launch("chainscan", nb, 64, k.put(x), out, flags, sums, ticket)
    np.testing.assert_array_equal(k.get(out, nb * 64, np.int32), np.cumsum(x))


def test_device_assert_is_an_assert_fault_naming_the_expression(k):
    """A failed assert() faults with kind "assert" (CUDA_ERROR_ASSERT in the backend) and the
    message names the expression; a passing one does nothing."""
    fine = k.put(np.zeros(32, np.int32))
    k.launch("asserting", 1, 32, fine)
    bad = k.put(np.where(np.arange(32) == 5, -1, 0).astype(np.int32))
    with pytest.raises(EmuFault) as info:
        k.launch("asserting", 1, 32, bad)
    assert info.value.kind == "assert"
    assert "x[threadIdx.x] >= 0" in info.value.message
