"""Edge cases of the PTX machine, from nvcc-built kernels (programs/edges.cu) run on the emulated
device: float64 directed rounding where the result or a product overflows or underflows, exact
zero sums in round-toward-minus-infinity, NaN through half-precision conversions, recursion as
deep as the stack size limit, faulting accesses with no allocation at all.

The rounding oracle is the host's own FPU switched to each rounding mode (``fesetround``, libm's
``fma``), independent of the emulator's rational arithmetic.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import platform
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest

from rgpu.server.cuda.emu.ptx import fp
from rgpu.server.cuda.errors import CudaError, CUresult

_FE = {"rn": 0, "rm": 0x400, "rp": 0x800, "rz": 0xC00}  # x86-64 <fenv.h>
_F64 = np.dtype(np.float64)

# the fast paths overflow on purpose before the exact ones take over (launches ignore these)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _libm() -> ctypes.CDLL:
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the rounding oracle uses x86-64 fenv constants")
    lib = ctypes.CDLL(ctypes.util.find_library("m"))
    lib.fesetround.argtypes = [ctypes.c_int]
    lib.fma.restype = ctypes.c_double
    lib.fma.argtypes = [ctypes.c_double] * 3
    return lib


def _in_mode(mode: str, fn: Callable[[], float]) -> float:
    libm = _libm()
    libm.fesetround(_FE[mode])
    try:
        return fn()
    finally:
        libm.fesetround(0)


def _same(got: float, want: float) -> bool:
    if math.isnan(want):
        return math.isnan(got)
    return got == want and math.copysign(1.0, got) == math.copysign(1.0, want)


def _extreme_operands(n: int, seed: int) -> np.ndarray:
    """Doubles with exponents near the ends of the range, subnormals and moderate ones."""
    rng = np.random.default_rng(seed)
    exps = np.concatenate([rng.integers(-1074, -960, n // 4), rng.integers(960, 1024, n // 4),
                           rng.integers(-600, -450, n // 8), rng.integers(450, 600, n // 8),
                           rng.integers(-30, 30, n - n // 4 * 2 - n // 8 * 2)])
    x = np.ldexp(rng.uniform(1.0, 2.0, n), exps)
    x[x == np.inf] = np.finfo(np.float64).max
    x[x == 0] = 5e-324
    return np.where(rng.random(n) < 0.5, -x, x)


# --- the rounding functions themselves ----------------------------------------------------------
@pytest.mark.parametrize("mode", ["rn", "rz", "rm", "rp"])
def test_float64_operations_round_exactly_at_the_ends_of_the_range(mode):
    a, b, c = (_extreme_operands(600, s) for s in (1, 2, 3))
    results = {
        "add": (fp.add(a, b, _F64, mode), lambda x, y, z: x + y),
        "mul": (fp.mul(a, b, _F64, mode), lambda x, y, z: x * y),
        "div": (fp.div(a, b, _F64, mode), lambda x, y, z: x / y),
        "fma": (fp.fma(a, b, c, _F64, mode), lambda x, y, z: _libm().fma(x, y, z)),
        "sqrt": (fp.sqrt(np.abs(a), _F64, mode), lambda x, y, z: math.sqrt(abs(x))),
    }
    wrong = []
    for name, (got, op) in results.items():
        for i in range(a.size):
            x, y, z = float(a[i]), float(b[i]), float(c[i])
            want = _in_mode(mode, lambda op=op, x=x, y=y, z=z: op(x, y, z))
            if not _same(float(got[i]), want):
                wrong.append((name, x.hex(), y.hex(), z.hex(), float(got[i]).hex(), want.hex()))
    assert not wrong, f"{len(wrong)} wrong, e.g. {wrong[:3]}"


def test_scalar_operands_take_the_exact_path_too():
    tiny = np.float64(2.0**-600)
    assert fp.mul(tiny, tiny, _F64, "rp") == 5e-324
    big = np.float64(2.0**1000)
    assert fp.fma(big, big, np.float64(-1.0), _F64, "rz") == np.finfo(np.float64).max
    for mode in ("rn", "rz", "rm", "rp"):  # an overflowing product is still finite
        assert fp.fma(big, big, np.float64(-np.inf), _F64, mode) == -np.inf


def test_round_rational_directions():
    third = Fraction(1, 3)
    assert fp.round_rational(third, "rm") < fp.round_rational(third, "rp")
    assert fp.round_rational(Fraction(2) ** 1100, "rz") == np.finfo(np.float64).max
    assert fp.round_rational(Fraction(2) ** 1100, "rp") == math.inf
    assert fp.round_rational(-Fraction(1, 2**1100), "rm") == -5e-324
    assert math.copysign(1.0, fp.round_rational(-Fraction(1, 2**1100), "rp")) == -1.0


@pytest.mark.parametrize("dt", [np.float16, np.float32, np.float64])
def test_exact_zero_sums_are_negative_only_rounding_down(dt):
    dt = np.dtype(dt)
    x = np.array([2.5, -3.0, 0.0], dt)
    for mode in ("rn", "rz", "rp", "rm"):
        want = -1.0 if mode == "rm" else 1.0
        for r in (fp.add(x, -x, dt, mode), fp.fma(x, np.ones_like(x), -x, dt, mode)):
            assert r.dtype == dt
            np.testing.assert_array_equal(np.copysign(1.0, r[:2]), want)
    # two zeros of one sign keep it in every mode; +0 + -0 is -0 only in rm
    for mode in ("rn", "rz", "rp", "rm"):
        pz, nz = dt.type(0.0), dt.type(-0.0)
        assert not np.signbit(fp.add(pz, pz, dt, mode))
        assert np.signbit(fp.add(nz, nz, dt, mode))
        assert np.signbit(fp.add(pz, nz, dt, mode)) == (mode == "rm")


# --- kernels ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def edges_ptx(nvcc_build) -> bytes:
    return nvcc_build("edges.cu", "-ptx").read_bytes() + b"\0"


def test_directed_double_intrinsics_in_a_kernel(gpu, edges_ptx):
    """__dadd/__dmul/__ddiv/__fma/__drcp/__dsqrt _rd/_ru/_rz (and __fma_rn) on extreme operands
    give what the host's FPU gives in the same mode."""
    n = 256
    a, b, c = (_extreme_operands(n, s) for s in (7, 8, 9))
    lib = gpu.load(edges_ptx)
    f = gpu.kernel(lib, "_Z10directed64PKdS0_S0_Pdi")
    out = gpu.zeros(16 * 8 * n)
    gpu.launch(f, (n + 127) // 128, 128, gpu.put(a), gpu.put(b), gpu.put(c), out, n)
    got = gpu.get(out, np.float64, 16 * n).reshape(n, 16)
    libm = _libm()
    ops: list[tuple[str, Callable[[float, float, float], float]]] = [
        ("rm", lambda x, y, z: x + y), ("rp", lambda x, y, z: x + y),
        ("rz", lambda x, y, z: x + y), ("rm", lambda x, y, z: x * y),
        ("rp", lambda x, y, z: x * y), ("rz", lambda x, y, z: x * y),
        ("rm", lambda x, y, z: x / y), ("rp", lambda x, y, z: x / y),
        ("rz", lambda x, y, z: x / y), ("rm", libm.fma), ("rp", libm.fma), ("rz", libm.fma),
        ("rn", libm.fma), ("rz", lambda x, y, z: 1.0 / x),
        ("rm", lambda x, y, z: math.sqrt(abs(x))), ("rp", lambda x, y, z: math.sqrt(abs(x))),
    ]  # fmt: skip
    wrong = []
    for i in range(n):
        x, y, z = float(a[i]), float(b[i]), float(c[i])
        for k, (mode, op) in enumerate(ops):
            want = _in_mode(mode, lambda op=op, x=x, y=y, z=z: op(x, y, z))
            if not _same(float(got[i, k]), want):
                wrong.append((k, x.hex(), y.hex(), z.hex(), float(got[i, k]).hex(), want.hex()))
    assert not wrong, f"{len(wrong)} wrong, e.g. {wrong[:3]}"


def test_exact_zero_sums_round_down_to_minus_zero_in_a_kernel(gpu, edges_ptx):
    x = np.array([2.5, -7.25, 1e-30, 3e38], np.float32)
    d = np.array([2.5, -7.25, 1e-300, 1.7e308], np.float64)
    lib = gpu.load(edges_ptx)
    f = gpu.kernel(lib, "_Z9zero_sumsPKfPKdPfPdi")
    fo, do = gpu.zeros(3 * 4 * 4), gpu.zeros(3 * 8 * 4)
    gpu.launch(f, 1, 32, gpu.put(x), gpu.put(d), fo, do, 4)
    for r in (gpu.get(fo, np.float32, 12), gpu.get(do, np.float64, 12)):
        assert (r == 0).all() and np.signbit(r).all(), r


def test_half_conversions_of_nan_give_the_canonical_nan(gpu, edges_ptx):
    """float->half, double->half and packed float->half2 of any NaN give 0x7fff, half->float of
    any NaN 0x7fffffff, as NVIDIA GPUs (and cuda_fp16.hpp's host code) do."""
    f32 = np.array([np.nan, -np.nan, 1.5], np.float32)
    f32[1] = np.frombuffer(np.uint32(0xFFC12345).tobytes(), np.float32)[0]
    f64 = np.array([np.nan, -np.nan, 1.5])
    h = np.array([0xFFFF, 0x7E01, 0x3E00], np.uint16)
    lib = gpu.load(edges_ptx)
    f = gpu.kernel(lib, "_Z9half_nansPKfPKdPKtPji")
    out = gpu.zeros(4 * 4 * 3)
    gpu.launch(f, 1, 32, gpu.put(f32), gpu.put(f64), gpu.put(h), out, 3)
    o = gpu.get(out, np.uint32, 12).reshape(3, 4)
    np.testing.assert_array_equal(o[:2, 0], [0x7FFF, 0x7FFF])
    np.testing.assert_array_equal(o[:2, 1], [0x7FFF, 0x7FFF])
    np.testing.assert_array_equal(o[:2, 2], [0x7FFF_FFFF, 0x7FFF_FFFF])
    np.testing.assert_array_equal(o[:2, 3], [0x3C00_7FFF, 0x3C00_7FFF])  # (1.0, NaN)
    np.testing.assert_array_equal(o[2], [0x3E00, 0x3E00, 0x3FC00000, 0x3C00_3E00])


def test_recursion_depth_follows_the_stack_size_limit(gpu, edges_ptx):
    lib = gpu.load(edges_ptx)
    f = gpu.kernel(lib, "_Z4deepiPi")
    out = gpu.zeros(4 * 32)
    gpu.launch(f, 1, 32, 200, out)  # within the default 1 KiB stack's allowance
    assert (gpu.get(out, np.int32, 32) == 200 * 201 // 2).all()
    with pytest.raises(CudaError) as exc:  # beyond it: a stack overflow, as on a GPU
        gpu.launch(f, 1, 32, 1000, out)
    assert exc.value.code == CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
    assert "cudaLimitStackSize" in exc.value.message


def test_a_raised_stack_size_limit_allows_deeper_recursion(gpu, edges_ptx):
    gpu.s.cuCtxSetLimit(0, 64 << 10)  # CU_LIMIT_STACK_SIZE
    lib = gpu.load(edges_ptx)
    f = gpu.kernel(lib, "_Z4deepiPi")
    out = gpu.zeros(4 * 32)
    gpu.launch(f, 1, 32, 1000, out)
    assert (gpu.get(out, np.int32, 32) == 1000 * 1001 // 2).all()


@pytest.mark.parametrize("threads", [1, 2, 32])
def test_faulting_lanes_with_no_allocation_are_an_illegal_address(gpu, edges_ptx, threads):
    lib = gpu.load(edges_ptx)
    f = gpu.kernel(lib, "_Z5touchPi")
    with pytest.raises(CudaError) as exc:
        gpu.launch(f, 1, threads, 0x1000)
    assert exc.value.code == CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
    assert "outside every allocation" in exc.value.message


def test_device_malloc_keeps_to_the_heap_limit() -> None:
    """Device malloc() holds at most CU_LIMIT_MALLOC_HEAP_SIZE at once: lanes past the limit
    get NULL, as on a GPU, and free() gives the bytes back."""
    from rgpu.server.cuda.emu.ptx.memory import DeviceMemory

    mem = DeviceMemory(64 << 20)
    mem.heap_limit = 1 << 20
    a = mem.device_malloc(np.array([600 << 10, 300 << 10, 200 << 10]))
    assert a[0] and a[1] and a[2] == 0
    assert mem.device_malloc(np.array([200 << 10]))[0] == 0  # 124 KiB left
    mem.device_free(a[:2])
    assert mem.heap_used == 0
    assert mem.device_malloc(np.array([1 << 20]))[0] != 0


@pytest.mark.parametrize("nap", [0, 1])
def test_lanes_waiting_on_a_lane_of_their_own_warp(gpu, edges_ptx, nap):
    """A spin-wait whose loop has a branch inside it still yields to the lane it waits for:
    only leaving the loop counts as progress."""
    lib = gpu.load(edges_ptx)
    f = gpu.kernel(lib, "_Z14intrawarp_waitPii")
    out = gpu.zeros(4 * 32)
    gpu.launch(f, 1, 32, out, nap)
    assert (gpu.get(out, np.int32, 32) == 7).all()
