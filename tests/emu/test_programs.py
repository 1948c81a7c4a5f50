"""Real nvcc-built CUDA programs run on the emulated device, checked against numpy.

Each kernel of programs/kernels.cu runs from two builds: nvcc's defaults (fatbin taken out of the
linked executable's `.nv_fatbin`, loaded with cuLibraryLoadData as cudart does) and
`-O3 -use_fast_math` (`nvcc -fatbin`, loaded with cuModuleLoadData). Results are compared exactly
wherever PTX semantics are exact (integer ops, IEEE-rounded add/mul/div/sqrt, fma in a fixed
order). Tolerances, where used, are documented at the comparison: `.approx` forms (fast math)
are specified by PTX only to an error bound, libdevice's precise transcendental functions are
within a few ulp of the correctly rounded result, and `fma.rn.f64` has no exact numpy form.
"""

from __future__ import annotations

import logging
import struct

import numpy as np
import pytest

from rgpu.server.cuda.fatbin import nv_fatbin_section

FLAVOURS = ["default", "fast"]


@pytest.fixture(scope="module", params=FLAVOURS)
def flavour(request):
    return request.param


@pytest.fixture(scope="module")
def images(nvcc_build):
    return {
        "default": nv_fatbin_section(nvcc_build("kernels.cu").read_bytes()),
        "fast": nvcc_build("kernels.cu", "-fatbin", "-O3", "-use_fast_math").read_bytes(),
    }


class Program:
    """One loaded build of kernels.cu in a session."""

    def __init__(self, gpu, image: bytes, flavour: str) -> None:
        self.gpu = gpu
        self.flavour = flavour
        self.handle = gpu.new_id()
        if flavour == "default":
            gpu.s.cuLibraryLoadData(self.handle, image)
        else:
            gpu.s.cuModuleLoadData(self.handle, image)

    def kernel(self, name: str) -> int:
        if self.flavour == "default":
            return self.gpu.kernel(self.handle, name)
        f = self.gpu.new_id()
        self.gpu.s.cuModuleGetFunction(f, self.handle, name)
        return f

    def global_(self, name: str) -> tuple[int, int]:
        if self.flavour == "default":
            return tuple(self.gpu.s.cuLibraryGetGlobal(self.handle, name))
        return tuple(self.gpu.s.cuModuleGetGlobal_v2(self.handle, name))


@pytest.fixture
def prog(gpu, images, flavour):
    return Program(gpu, images[flavour], flavour)


def test_vector_add(prog):
    gpu = prog.gpu
    n = 100_003
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    da, db, dc = gpu.put(a), gpu.put(b), gpu.zeros(4 * n)
    k = prog.kernel("vectorAdd")
    gpu.launch(k, (n + 255) // 256, 256, da, db, dc, np.int32(n))
    np.testing.assert_array_equal(gpu.get(dc, np.float32, n), a + b)


def test_saxpy_grid_stride(prog):
    gpu = prog.gpu
    n = 50_000
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    dx, dy = gpu.put(x), gpu.put(y)
    gpu.launch(prog.kernel("saxpy"), 32, 128, np.int32(n), np.float32(2.5), dx, dy)
    # nvcc contracts a*x+y into fma.rn.f32: the f64 product is exact, the sum rounds once in
    # f64 and again to f32, so the reference may be 1 ulp off in rare double-rounding cases.
    ref = (np.float64(2.5) * x.astype(np.float64) + y).astype(np.float32)
    np.testing.assert_array_max_ulp(gpu.get(dy, np.float32, n), ref, maxulp=1)


def test_shared_memory_reduction(prog):
    gpu = prog.gpu
    n, block = 100_000, 256
    data = np.random.default_rng(2).standard_normal(n, dtype=np.float32)
    blocks = (n + block - 1) // block
    din, dout = gpu.put(data), gpu.zeros(4 * blocks)
    gpu.launch(prog.kernel("reduceSum"), blocks, block, din, dout, np.int32(n), shared=4 * block)
    tree = np.zeros(blocks * block, np.float32)
    tree[:n] = data
    tree = tree.reshape(blocks, block)
    s = block // 2
    while s:
        tree[:, :s] += tree[:, s : 2 * s]
        s //= 2
    np.testing.assert_array_equal(gpu.get(dout, np.float32, blocks), tree[:, 0])


def test_tiled_matrix_multiply(prog):
    gpu = prog.gpu
    m, n, k = 70, 50, 40
    rng = np.random.default_rng(3)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    da, db, dc = gpu.put(a), gpu.put(b), gpu.zeros(4 * m * n)
    gpu.launch(prog.kernel("matmul"), ((n + 15) // 16, (m + 15) // 16), (16, 16),
               da, db, dc, np.int32(m), np.int32(n), np.int32(k))
    # Summation order and fma contraction differ from numpy's BLAS: compare to the f64 product.
    ref = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(gpu.get(dc, np.float32, m * n).reshape(m, n), ref,
                               rtol=1e-4, atol=1e-4)


def test_histogram_with_atomics(prog):
    gpu = prog.gpu
    n = 100_000
    data = np.random.default_rng(4).integers(0, 256, n, dtype=np.uint8)
    data[:5000] = 7  # contention on one bin
    dd, bins = gpu.put(data), gpu.zeros(256 * 4)
    gpu.launch(prog.kernel("histogram"), 16, 256, dd, np.int32(n), bins)
    np.testing.assert_array_equal(gpu.get(bins, np.uint32, 256), np.bincount(data, minlength=256))


def test_divergent_data_dependent_loops(prog):
    gpu = prog.gpu
    n = 3000
    start = np.random.default_rng(5).integers(1, 100_000, n, dtype=np.uint32)
    ds, dsteps, dkind = gpu.put(start), gpu.zeros(4 * n), gpu.zeros(4 * n)
    gpu.launch(prog.kernel("collatz"), (n + 127) // 128, 128, ds, dsteps, dkind, np.int32(n))
    steps = np.zeros(n, np.int32)
    x = start.astype(np.uint64)
    live = x != 1
    while live.any():
        odd = (x & 1) == 1
        x = np.where(live, np.where(odd, 3 * x + 1, x >> 1), x)
        steps += live
        live = (x != 1) & (steps < 1000)
    kind = np.select([start % 4 == 0, start % 4 == 1, start % 4 == 2],
                     [np.full(n, 10), steps * 2, -steps], steps ^ 0x55).astype(np.int32)
    np.testing.assert_array_equal(gpu.get(dsteps, np.int32, n), steps)
    np.testing.assert_array_equal(gpu.get(dkind, np.int32, n), kind)


def test_struct_and_64_bit_parameters(prog):
    gpu = prog.gpu
    tag, offset, scale, bias, stride = 3, -5, (1.5, 2.5, -0.5), 0.25, 1 << 33
    params = struct.pack("<Bxh3fdq", tag, offset, *scale, bias, stride)
    base, mask = -(1 << 40), 0xF0F0_F0F0_F0F0_F0F1
    threads = 64
    dout, dout64 = gpu.zeros(8 * threads), gpu.zeros(8 * threads)
    gpu.launch(prog.kernel("structParams"), 1, threads, params, base, mask, dout, dout64)
    i = np.arange(threads)
    ref = np.array(scale)[i % 3] * (i + offset) + bias + tag
    np.testing.assert_array_equal(gpu.get(dout, np.float64, threads), ref)
    ref64 = [base + stride * int(t) + (mask >> (int(t) % 64)) for t in i]
    ref64 = np.array([((v + (1 << 63)) % (1 << 64)) - (1 << 63) for v in ref64], np.int64)
    np.testing.assert_array_equal(gpu.get(dout64, np.int64, threads), ref64)


def test_double_precision(prog):
    gpu = prog.gpu
    n = 5000
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal(n) * 10, rng.uniform(0.5, 4.0, n)
    dx, dy, dout = gpu.put(x), gpu.put(y), gpu.zeros(8 * n)
    gpu.launch(prog.kernel("dmath"), (n + 255) // 256, 256, dx, dy, dout, np.int32(n))
    # x*y+x is contracted to fma.rn.f64, which numpy cannot evaluate exactly: 1e-14 relative.
    ref = (x * y + x) / (y + 3.0) - np.sqrt(np.abs(x))
    np.testing.assert_allclose(gpu.get(dout, np.float64, n), ref, rtol=1e-14, atol=1e-14)


def test_constant_memory_and_device_variable(prog):
    gpu = prog.gpu
    coeffs = np.array([0.5, -1.0, 0.25, 2.0, -0.125, 0.0625, 1.0, -0.5], np.float32)
    addr, size = prog.global_("coeffs")
    assert size == 32
    gpu.s.cuMemcpyHtoD_v2(addr, coeffs.tobytes())
    counter, csize = prog.global_("counter")
    assert csize == 4
    gpu.s.cuMemsetD32_v2(counter, 0, 1)
    n = 1000
    x = np.linspace(-1.5, 1.5, n, dtype=np.float32)
    dx, dout = gpu.put(x), gpu.zeros(4 * n)
    gpu.launch(prog.kernel("poly"), (n + 255) // 256, 256, dx, dout, np.int32(n))
    ref = np.zeros(n)
    for c in coeffs[::-1]:
        ref = ref * x + c
    # Horner steps are fma.rn.f32 here and f64 in the reference: a few f32 ulp apart.
    np.testing.assert_allclose(gpu.get(dout, np.float32, n), ref, rtol=1e-5, atol=1e-6)
    assert gpu.get(counter, np.int32, 1)[0] == n


def test_math_functions(prog):
    gpu = prog.gpu
    x = np.linspace(0.5, 8.0, 250, dtype=np.float32)
    if prog.flavour == "default":
        x = np.concatenate([x, np.float32([123456.7, 1.0e6, 3.0e7])])  # Payne-Hanek sinf/cosf
    n = x.size
    dx, dout = gpu.put(x), gpu.zeros(4 * 6 * n)
    gpu.launch(prog.kernel("mathfn"), (n + 127) // 128, 128, dx, dout, np.int32(n))
    got = gpu.get(dout, np.float32, 6 * n).reshape(n, 6).astype(np.float64)
    xd = x.astype(np.float64)
    with np.errstate(over="ignore"):  # expf of the huge arguments is inf on both sides
        ref = np.stack([np.exp(xd), np.log(xd), np.sin(xd), np.cos(xd), np.sqrt(xd), xd**1.5], 1)
    if prog.flavour == "default":
        # libdevice: expf/logf/sinf/cosf/powf within 2 ulp (rtol 1e-6 ~ 8 ulp leaves margin);
        # sinf/cosf near zero crossings are compared absolutely. sqrt.rn is exact.
        np.testing.assert_allclose(got[:, [0, 1, 5]], ref[:, [0, 1, 5]], rtol=1e-6)
        np.testing.assert_allclose(got[:, 2:4], ref[:, 2:4], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(got[:, 4], np.sqrt(x).astype(np.float64))
    else:
        # .approx.ftz forms (ex2, lg2, sin, cos, sqrt, rcp): PTX bounds their error at about
        # 2^-21 relative (ex2/lg2/sqrt) or absolute (sin/cos on this range).
        np.testing.assert_allclose(got[:, [0, 5]], ref[:, [0, 5]], rtol=2e-5)
        np.testing.assert_allclose(got[:, [1, 2, 3]], ref[:, [1, 2, 3]], rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(got[:, 4], ref[:, 4], rtol=2e-6)


def test_warp_shuffle_reduction(prog):
    gpu = prog.gpu
    blocks, block = 4, 128
    data = np.random.default_rng(7).integers(-1000, 1000, blocks * block, dtype=np.int32)
    din, dout = gpu.put(data), gpu.zeros(4 * blocks * block // 32)
    gpu.launch(prog.kernel("warpReduce"), blocks, block, din, dout)
    np.testing.assert_array_equal(gpu.get(dout, np.int32, blocks * block // 32),
                                  data.reshape(-1, 32).sum(1))


def test_printf_reaches_the_log_tagged_with_the_session(prog, caplog):
    gpu = prog.gpu
    with caplog.at_level(logging.INFO, logger="rgpu.server.cuda"):
        gpu.launch(prog.kernel("hello"), 1, 4, np.int32(7))
    lines = "".join(gpu.s.printf_output).splitlines()
    assert sorted(lines) == ["hello from thread 0 value 7", "hello from thread 1 value 7"]
    logged = [r.getMessage() for r in caplog.records]
    assert f"[session {gpu.s.name}] hello from thread 0 value 7" in logged


def test_out_of_bounds_write_is_illegal_address(prog, make_gpu, images):
    from rgpu.server.cuda.errors import CudaError, CUresult

    gpu = prog.gpu
    p = gpu.s.cuMemAlloc_v2(256)
    with pytest.raises(CudaError) as info:
        gpu.launch(prog.kernel("writeAt"), 1, 32, p, 1 << 22)
    assert info.value.code == CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
    with pytest.raises(CudaError) as again:
        gpu.s.cuCtxSynchronize()
    assert again.value.code == CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
    other = make_gpu("bystander")
    other_prog = Program(other, images[prog.flavour], prog.flavour)
    q = other.zeros(16)
    other.launch(other_prog.kernel("writeAt"), 1, 32, q, 1)
    assert other.get(q, np.int32, 4).tolist() == [0, 42, 0, 0]


def test_empty_kernel(prog):
    prog.gpu.launch(prog.kernel("empty"), 64, 128)
    prog.gpu.s.cuCtxSynchronize()
