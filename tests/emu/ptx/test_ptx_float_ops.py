"""Floating-point arithmetic and conversions: IEEE rounding, ftz, sat, special values.

The property tests compare against exact rational arithmetic (``fractions.Fraction``) rounded
to float32/float64 in each PTX rounding mode, so they check the emulator, not numpy.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ptxkit import bits_as, run_body

from rgpu.server.cuda.emu.ptx import fp

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

F32 = np.float32


def round_exact(x: Fraction, dt, mode: str):
    """Correctly round the rational ``x`` to ``dt`` in ``mode`` (reference implementation)."""
    dt = np.dtype(dt)
    approx = (
        dt.type(float(x))
        if abs(float(x)) < float(np.finfo(dt).max) * 2
        else dt.type(math.copysign(np.inf, float(x)))
    )
    cands = {approx, np.nextafter(approx, dt.type(np.inf)), np.nextafter(approx, dt.type(-np.inf))}
    finite = sorted((c for c in cands if np.isfinite(c)), key=lambda c: Fraction(float(c)))
    lo = [c for c in finite if Fraction(float(c)) <= x]
    hi = [c for c in finite if Fraction(float(c)) >= x]
    down = lo[-1] if lo else dt.type(-np.inf)
    up = hi[0] if hi else dt.type(np.inf)
    if down == up:
        return down
    if mode == "rm":
        return down
    if mode == "rp":
        return up
    if mode == "rz":
        return down if x > 0 else up
    if not np.isfinite(up) or not np.isfinite(down):
        big = np.finfo(dt).max
        # beyond max + half ulp rounds to infinity
        half = (
            Fraction(float(big))
            + (Fraction(float(big)) - Fraction(float(np.nextafter(big, dt.type(0))))) / 2
        )
        if abs(x) >= half:
            return dt.type(math.copysign(np.inf, x))
        return down if np.isfinite(down) else up
    dd, du = x - Fraction(float(down)), Fraction(float(up)) - x
    if dd < du:
        return down
    if du < dd:
        return up
    return (
        down
        if int(np.array(down).view(np.uint32 if dt.itemsize == 4 else np.uint64)) % 2 == 0
        else up
    )


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
finite64 = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)
modes = st.sampled_from(["rn", "rz", "rm", "rp"])


def _same(a, b) -> bool:
    """Bit-identical, except that the sign of an exact zero result is not checked (the
    reference works on rationals, which have no signed zero)."""
    a, b = np.asarray(a), np.asarray(b)
    if a == 0 and b == 0:
        return True
    return a.tobytes() == b.tobytes() or bool(np.isnan(a) and np.isnan(b))


@settings(max_examples=300, deadline=None)
@given(finite32, finite32, finite32, modes)
def test_fma_f32_all_modes(a, b, c, mode):
    a, b, c = F32(a), F32(b), F32(c)
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    ref = round_exact(exact, F32, mode)
    got = fp.fma(np.array([a]), np.array([b]), np.array([c]), np.dtype(F32), mode)
    assert _same(np.asarray(got, F32)[0], ref), (a, b, c, mode, got, ref)


@settings(max_examples=300, deadline=None)
@given(finite32, finite32, modes, st.sampled_from(["add", "mul", "div"]))
def test_f32_add_mul_div_all_modes(a, b, mode, opname):
    a, b = F32(a), F32(b)
    fa, fb = Fraction(float(a)), Fraction(float(b))
    if opname == "div" and fb == 0:
        return
    exact = {"add": fa + fb, "mul": fa * fb, "div": fa / fb if fb else None}[opname]
    ref = round_exact(exact, F32, mode)
    fn = {"add": fp.add, "mul": fp.mul, "div": fp.div}[opname]
    got = fn(np.array([a]), np.array([b]), np.dtype(F32), mode)
    assert _same(np.asarray(got, F32)[0], ref), (a, b, mode, opname)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(finite64, finite64, finite64)
def test_fma_f64_round_to_nearest(a, b, c):
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    if abs(a) > 1e150 or abs(b) > 1e150 or (a * b != 0 and abs(a * b) < 1e-290):
        return  # outside the documented exact range of the splitting algorithm
    ref = round_exact(exact, np.float64, "rn")
    got = fp.fma(np.array([a]), np.array([b]), np.array([c]), np.dtype(np.float64), "rn")
    assert _same(np.asarray(got)[0], ref), (a, b, c)


def test_fma_f32_double_rounding_case():
    """a*b + c lands exactly between two float32 values in float64 rounding only."""
    a, b = F32(1.5), F32(1 + 2**-23)  # a*b = 1.5 + 2^-23 + 2^-24: a float32 tie
    c = F32(-(2**-60))  # the exact sum is just below the tie; float64 rounding loses that
    got = fp.fma(np.array([a]), np.array([b]), np.array([c]), np.dtype(F32), "rn")
    naive = (np.float64(a) * np.float64(b) + np.float64(c)).astype(F32)
    exact = round_exact(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)), F32, "rn")
    assert exact == F32(1.5 + 2**-23)
    assert got[0] == exact
    assert naive != exact  # the trap this test is about


def _f32(dev, body, a, b=0.0, c=0.0, threads=1):
    pre = "ld.global.f32 %f1, [%rd4]; ld.global.f32 %f2, [%rd4+8]; ld.global.f32 %f3, [%rd4+16];\n"
    raw = run_body(
        dev,
        pre + body + "\nst.global.f32 [%rd3], %f10;",
        [np.asarray(a, F32), np.asarray(b, F32), np.asarray(c, F32)],
        threads=threads,
    )
    return bits_as(raw, F32)[:, 0]


SUB = float(np.float32(1e-40))  # a float32 subnormal


@pytest.mark.parametrize(
    ("body", "a", "b", "c", "expected"),
    [
        ("add.rn.f32 %f10, %f1, %f2;", 1.0, 2.0**-30, 0, 1.0),
        ("add.rp.f32 %f10, %f1, %f2;", 1.0, 2.0**-30, 0, 1.0 + 2.0**-23),
        ("add.rm.f32 %f10, %f1, %f2;", 1.0, -(2.0**-30), 0, 1.0 - 2.0**-24),
        ("add.rz.f32 %f10, %f1, %f2;", -1.0, -(2.0**-30), 0, -1.0),
        ("sub.f32 %f10, %f1, %f2;", 1.0, 0.25, 0, 0.75),
        ("mul.rz.f32 %f10, %f1, %f2;", 1.0 + 2.0**-23, 1.0 + 2.0**-23, 0, 1.0 + 2.0**-22),
        ("mul.rp.f32 %f10, %f1, %f2;", 1.0 + 2.0**-23, 1.0 + 2.0**-23, 0,
         1.0 + 2.0**-22 + 2.0**-23),
        ("add.ftz.f32 %f10, %f1, %f2;", SUB, 0.0, 0, 0.0),
        ("add.f32 %f10, %f1, %f2;", SUB, 0.0, 0, SUB),
        ("mul.ftz.f32 %f10, %f1, %f2;", 2.0**-100, 2.0**-30, 0, 0.0),
        ("add.sat.f32 %f10, %f1, %f2;", 0.75, 0.5, 0, 1.0),
        ("add.sat.f32 %f10, %f1, %f2;", -0.75, 0.5, 0, 0.0),
        ("add.sat.f32 %f10, %f1, %f2;", np.nan, 0.5, 0, 0.0),
        ("fma.rn.f32 %f10, %f1, %f2, %f3;", 3.0, 4.0, 5.0, 17.0),
        ("fma.rn.sat.f32 %f10, %f1, %f2, %f3;", 3.0, 4.0, 5.0, 1.0),
        ("mad.f32 %f10, %f1, %f2, %f3;", 1.5, 1.0 + 2.0**-23, -(2.0**-60), 1.5 + 2.0**-23),
        ("fma.rn.f32 %f10, %f1, %f2, %f3;", 1.5, 1.0 + 2.0**-23, -(2.0**-60), 1.5 + 2.0**-23),
        ("div.rn.f32 %f10, %f1, %f2;", 1.0, 3.0, 0, float(np.float32(1 / 3))),
        ("div.rz.f32 %f10, %f1, %f2;", 2.0, 3.0, 0, float(np.nextafter(np.float32(2 / 3), 0))),
        ("div.approx.f32 %f10, %f1, %f2;", 1.0, 4.0, 0, 0.25),
        ("div.full.f32 %f10, %f1, %f2;", 1.0, 4.0, 0, 0.25),
        ("sqrt.rn.f32 %f10, %f1;", 2.0, 0, 0, float(np.sqrt(np.float32(2)))),
        ("sqrt.rn.f32 %f10, %f1;", -1.0, 0, 0, np.nan),
        ("rcp.rn.f32 %f10, %f1;", 4.0, 0, 0, 0.25),
        ("rcp.approx.ftz.f32 %f10, %f1;", 0.0, 0, 0, np.inf),
        ("min.f32 %f10, %f1, %f2;", np.nan, 2.0, 0, 2.0),
        ("max.f32 %f10, %f1, %f2;", -1.0, np.nan, 0, -1.0),
        ("min.NaN.f32 %f10, %f1, %f2;", np.nan, 2.0, 0, np.nan),
        ("abs.f32 %f10, %f1;", -0.0, 0, 0, 0.0),
        ("neg.f32 %f10, %f1;", 2.5, 0, 0, -2.5),
        ("mov.f32 %f10, 0f3F800000;", 0, 0, 0, 1.0),
        ("mov.f32 %f10, 0fBF000000;", 0, 0, 0, -0.5),
        ("add.f32 %f10, %f1, 0f7F800000;", 1.0, 0, 0, np.inf),
        ("ex2.approx.f32 %f10, %f1;", 3.0, 0, 0, 8.0),
        ("lg2.approx.f32 %f10, %f1;", 8.0, 0, 0, 3.0),
        ("lg2.approx.f32 %f10, %f1;", 0.0, 0, 0, -np.inf),
        ("rsqrt.approx.f32 %f10, %f1;", 4.0, 0, 0, 0.5),
        ("sin.approx.f32 %f10, %f1;", 0.0, 0, 0, 0.0),
        ("cos.approx.f32 %f10, %f1;", 0.0, 0, 0, 1.0),
        ("tanh.approx.f32 %f10, %f1;", 0.0, 0, 0, 0.0),
        ("copysign.f32 %f10, %f1, %f2;", -1.0, 3.0, 0, -3.0),
    ],
)  # fmt: skip
def test_f32_cases(dev, body, a, b, c, expected):
    got = _f32(dev, body, a, b, c)[0]
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == F32(expected) and np.signbit(got) == np.signbit(F32(expected)), (
            got,
            expected,
        )


def test_approx_tolerance(dev):
    x = np.linspace(-3, 3, 64).astype(F32)
    sins = _f32(dev, "sin.approx.f32 %f10, %f1;", x, threads=64)
    assert np.max(np.abs(sins - np.sin(x.astype(np.float64)))) < 2**-20.5
    ex = _f32(dev, "ex2.approx.ftz.f32 %f10, %f1;", x, threads=64)
    np.testing.assert_allclose(ex, np.exp2(x.astype(np.float64)), rtol=2**-22)


def test_setp_float_unordered_and_ne(dev):
    body = """
    setp.ne.f32 %p1, %f1, %f2; setp.neu.f32 %p2, %f1, %f2; setp.ltu.f32 %p3, %f1, %f2;
    setp.nan.f32 %p4, %f1, %f2; setp.num.f32 %p5, %f1, %f2; setp.lt.f32 %p6, %f1, %f2;
    selp.f32 %f11, 0f3F800000, 0f00000000, %p1;
    selp.f32 %f12, 0f40000000, 0f00000000, %p2;
    selp.f32 %f13, 0f40800000, 0f00000000, %p3;
    selp.f32 %f14, 0f41000000, 0f00000000, %p4;
    selp.f32 %f15, 0f41800000, 0f00000000, %p5;
    selp.f32 %f16, 0f42000000, 0f00000000, %p6;
    add.f32 %f10, %f11, %f12; add.f32 %f10, %f10, %f13; add.f32 %f10, %f10, %f14;
    add.f32 %f10, %f10, %f15; add.f32 %f10, %f10, %f16;
    """
    got = _f32(dev, body, np.array([np.nan, 1.0], F32), np.array([1.0, 2.0], F32), threads=2)
    assert got.tolist() == [2 + 4 + 8, 1 + 2 + 4 + 16 + 32]


def test_f64_ops_and_hex_immediates(dev):
    body = """
    ld.global.f64 %fd1, [%rd4]; ld.global.f64 %fd2, [%rd4+8];
    fma.rn.f64 %fd3, %fd1, %fd1, %fd2; st.global.f64 [%rd3], %fd3;
    add.f64 %fd4, %fd1, 0d3FF0000000000000; st.global.f64 [%rd3+8], %fd4;
    div.rn.f64 %fd5, %fd1, 0d4008000000000000; st.global.f64 [%rd3+16], %fd5;
    sqrt.rn.f64 %fd6, %fd1; st.global.f64 [%rd3+24], %fd6;
    add.rp.f64 %fd7, %fd1, 0d3C00000000000000; st.global.f64 [%rd3+32], %fd7;
    rcp.rn.f64 %fd8, %fd1; st.global.f64 [%rd3+40], %fd8;
    """
    x = 1.0 + 2.0**-30
    y = -(1.0 + 2.0**-29)
    raw = run_body(dev, body, [np.float64(x), np.float64(y)], nout=6)
    out = bits_as(raw, np.float64)[0]
    assert out[0] == float(round_exact(Fraction(x) ** 2 + Fraction(y), np.float64, "rn"))
    assert out[0] == 2.0**-60  # the exact answer; a*b+c in two roundings gives 0
    assert out[1] == x + 1
    assert out[2] == x / 3
    assert out[3] == math.sqrt(x)
    assert out[4] == np.nextafter(x, 2)
    assert out[5] == 1 / x


@pytest.mark.parametrize(
    ("body", "src", "expected", "out"),
    [
        ("cvt.rni.s32.f32 %r10, %f1;", 2.5, 2, np.int32),
        ("cvt.rni.s32.f32 %r10, %f1;", -2.5, -2, np.int32),
        ("cvt.rzi.s32.f32 %r10, %f1;", -2.7, -2, np.int32),
        ("cvt.rmi.s32.f32 %r10, %f1;", -2.2, -3, np.int32),
        ("cvt.rpi.s32.f32 %r10, %f1;", 2.2, 3, np.int32),
        ("cvt.rzi.s32.f32 %r10, %f1;", 1e10, 2**31 - 1, np.int32),
        ("cvt.rzi.s32.f32 %r10, %f1;", np.nan, 0, np.int32),
        ("cvt.rzi.u32.f32 %r10, %f1;", -5.0, 0, np.uint32),
        ("cvt.rni.u8.f32 %r10, %f1;", 300.0, 255, np.uint32),
        ("cvt.rzi.s64.f32 %rd10, %f1;", 1e30, 2**63 - 1, np.int64),
        ("cvt.rzi.u64.f32 %rd10, %f1;", 1.5e19, int(F32(1.5e19)), np.uint64),
        ("cvt.rn.f32.s32 %f10, %r1;", 16777217, 16777216.0, F32),
        ("cvt.rp.f32.s32 %f10, %r1;", 16777217, 16777218.0, F32),
        ("cvt.rn.f32.u64 %f10, %rd1;", 2**64 - 1, 2.0**64, F32),
        ("cvt.rz.f32.u64 %f10, %rd1;", 2**64 - 1, float(np.nextafter(F32(2.0**64), 0)), F32),
        ("cvt.rn.f32.s64 %f10, %rd1;", -(2**62) - 1, -(2.0**62), F32),
        ("cvt.rn.f64.s64 %fd10, %rd1;", 2**53 + 1, 2.0**53, np.float64),
        ("cvt.rp.f64.s64 %fd10, %rd1;", 2**53 + 1, 2.0**53 + 2, np.float64),
        ("cvt.rn.f32.f64 %f10, %fd1;", 1.0 + 2.0**-40, 1.0, F32),
        ("cvt.rp.f32.f64 %f10, %fd1;", 1.0 + 2.0**-40, 1.0 + 2.0**-23, F32),
        ("cvt.rz.f32.f64 %f10, %fd1;", 1e300, float(np.finfo(F32).max), F32),
        ("cvt.rn.f32.f64 %f10, %fd1;", 1e300, np.inf, F32),
        ("cvt.f64.f32 %fd10, %f1;", 0.1, float(F32(0.1)), np.float64),
        ("cvt.ftz.f32.f32 %f10, %f1;", SUB, 0.0, F32),
        ("cvt.sat.f32.f32 %f10, %f1;", 7.0, 1.0, F32),
        ("cvt.rni.f32.f32 %f10, %f1;", 3.5, 4.0, F32),
        ("cvt.rzi.f32.f32 %f10, %f1;", -3.5, -3.0, F32),
        ("cvt.s64.s32 %rd10, %r1;", -1, -1, np.int64),
        ("cvt.u64.u32 %rd10, %r1;", -1, 2**32 - 1, np.uint64),
        ("cvt.u32.u64 %r10, %rd1;", 2**40 + 7, 7, np.uint32),
        ("cvt.s8.s32 %r10, %r1;", 200, -56, np.int32),
        ("cvt.sat.s8.s32 %r10, %r1;", 200, 127, np.int32),
        ("cvt.sat.u16.s32 %r10, %r1;", -5, 0, np.uint32),
        ("cvt.u16.u32 %h10, %r1; cvt.u32.u16 %r10, %h10;", 0x12345, 0x2345, np.uint32),
        ("cvt.rn.f16.f32 %h10, %f1; cvt.f32.f16 %f10, %h10;", 1.0 / 3.0,
         float(np.float16(1 / 3)), F32),
        ("cvt.rn.f16.f32 %h10, %f1; cvt.f32.f16 %f10, %h10;", 70000.0, np.inf, F32),
    ],
)  # fmt: skip
def test_cvt(dev, body, src, expected, out):
    # the source goes to %r1 / %rd1 / %f1 / %fd1 from one 8-byte slot of the right type
    kind = body.split()[0].split(".")[-1]
    loads = {"f32": ("ld.global.f32 %f1, [%rd4];", F32), "f64": ("ld.global.f64 %fd1, [%rd4];",
             np.float64), "s32": ("ld.global.s32 %r1, [%rd4];", np.int32),
             "u32": ("ld.global.u32 %r1, [%rd4];", np.uint32),
             "s64": ("ld.global.s64 %rd1, [%rd4];", np.int64),
             "u64": ("ld.global.u64 %rd1, [%rd4];", np.uint64)}  # fmt: skip
    load, sdt = loads[kind if kind in loads else "f32"]
    if "%h10" in body and "%r1;" in body:
        load, sdt = loads["u32"]
    dst = body.rstrip(" ;").split(";")[-1].split()[1].rstrip(",")
    od = np.dtype(out)
    store = {"%r10": f"st.global.{'s' if od.kind == 'i' else 'u'}32 [%rd3], %r10;",
             "%rd10": "st.global.u64 [%rd3], %rd10;", "%f10": "st.global.f32 [%rd3], %f10;",
             "%fd10": "st.global.f64 [%rd3], %fd10;"}[dst.split(",")[0]]  # fmt: skip
    s = (
        np.asarray(src).astype(np.float64).astype(sdt)
        if sdt in (F32, np.float64)
        else np.array(src, dtype=object)
        .astype(np.int64 if sdt in (np.int32, np.int64) or src < 0 else np.uint64)
        .astype(sdt)
    )
    raw = run_body(dev, load + body + store, [s])
    got = bits_as(raw, od)[0, 0]
    if od.kind == "f" and np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == od.type(expected), (got, expected)


def test_f16_arithmetic_inline_asm_style(dev):
    body = """
    ld.global.u16 %h1, [%rd4]; ld.global.u16 %h2, [%rd4+8];
    { .reg .b16 tmp;
      add.f16 tmp, %h1, %h2; mov.b16 %h3, tmp; }
    mul.rn.f16 %h4, %h1, %h2;
    fma.rn.f16 %h5, %h1, %h2, %h1;
    st.global.u16 [%rd3], %h3; st.global.u16 [%rd3+8], %h4; st.global.u16 [%rd3+16], %h5;
    mov.b32 %r1, {%h1, %h2};
    add.f16x2 %r2, %r1, %r1;
    st.global.u32 [%rd3+24], %r2;
    """
    a, b = np.float16(1.5), np.float16(0.333)
    raw = run_body(dev, body, [a.view(np.uint16), b.view(np.uint16)], nout=4)
    h = bits_as(raw, np.float16)[0]
    assert h[0] == np.float16(a + b)
    assert h[1] == np.float16(np.float32(a) * np.float32(b))
    assert h[2] == np.float16(np.float64(a) * np.float64(b) + np.float64(a))
    pair = np.array([int(raw[0, 3]) & 0xFFFFFFFF], np.uint32).view(np.float16)
    assert pair.tolist() == [float(a + a), float(b + b)]


def test_testp(dev):
    body = """
    testp.finite.f32 %p1, %f1; testp.subnormal.f32 %p2, %f1; testp.notanumber.f32 %p3, %f1;
    selp.f32 %f11, 0f3F800000, 0f00000000, %p1; selp.f32 %f12, 0f40000000, 0f00000000, %p2;
    selp.f32 %f13, 0f40800000, 0f00000000, %p3;
    add.f32 %f10, %f11, %f12; add.f32 %f10, %f10, %f13;
    """
    got = _f32(dev, body, np.array([1.0, SUB, np.nan, np.inf], F32), threads=4)
    assert got.tolist() == [1.0, 3.0, 4.0, 0.0]


def test_fma_rn_f32_fast_path_on_many_lanes(dev):
    """The interpreter's vector fma.rn.f32 (tie detection + exact fallback) against rationals,
    on random lanes plus constructed double-rounding traps and subnormal results."""
    rng = np.random.default_rng(5)
    n = 600
    a = (rng.standard_normal(n) * 10.0 ** rng.integers(-5, 5, n)).astype(F32)
    b = (rng.standard_normal(n) * 10.0 ** rng.integers(-5, 5, n)).astype(F32)
    c = (rng.standard_normal(n) * 10.0 ** rng.integers(-5, 5, n)).astype(F32)
    for k in range(0, 60, 3):  # a*b = 1.5 + 2^-23 + 2^-24 is a float32 tie; c tips it
        a[k], b[k], c[k] = 1.5, 1 + 2.0**-23, (-1) ** k * 2.0 ** -(40 + k)
    a[100:110], b[100:110], c[100:110] = 2.0**-70, 2.0**-70, 2.0**-149  # subnormal results
    body = (
        "ld.global.f32 %f1, [%rd4]; ld.global.f32 %f2, [%rd4+8]; ld.global.f32 %f3, [%rd4+16];"
        "fma.rn.f32 %f4, %f1, %f2, %f3; st.global.f32 [%rd3], %f4;"
    )
    got = bits_as(run_body(dev, body, [a, b, c], threads=n), F32)[:, 0]
    for i in range(n):
        exact = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        ref = round_exact(exact, F32, "rn")
        assert _same(got[i], ref), (i, a[i], b[i], c[i], got[i], ref)


finite64_mid = st.floats(
    allow_nan=False, allow_infinity=False, min_value=-1e150, max_value=1e150
).filter(lambda x: x == 0 or abs(x) > 1e-150)


@settings(max_examples=300, deadline=None)
@given(finite64_mid, finite64_mid, modes, st.sampled_from(["add", "mul", "div"]))
def test_f64_directed_modes(a, b, mode, opname):
    fa, fb = Fraction(a), Fraction(b)
    if opname == "div" and b == 0:
        return
    exact = {"add": fa + fb, "mul": fa * fb, "div": fa / fb if b else None}[opname]
    ref = round_exact(exact, np.float64, mode)
    fn = {"add": fp.add, "mul": fp.mul, "div": fp.div}[opname]
    got = fn(np.array([a]), np.array([b]), np.dtype(np.float64), mode)
    assert _same(np.asarray(got)[0], ref), (a, b, mode, opname)


def _sqrt_exact(x: Fraction, dt, mode: str):
    """Correctly rounded square root of a non-negative rational."""
    dt = np.dtype(dt)
    r = dt.type(math.sqrt(float(x)))
    cands = [np.nextafter(r, dt.type(-1)), r, np.nextafter(r, dt.type(np.inf))]
    down = max(c for c in cands if c >= 0 and Fraction(float(c)) ** 2 <= x)
    up = np.nextafter(down, dt.type(np.inf))
    if Fraction(float(down)) ** 2 == x:
        return down
    if mode in ("rz", "rm"):
        return down
    if mode == "rp":
        return up
    mid = (Fraction(float(down)) + Fraction(float(up))) / 2
    return down if x < mid * mid else up


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=2.0**127, width=32), modes)
def test_sqrt_f32_all_modes(x, mode):
    x = F32(x)
    ref = _sqrt_exact(Fraction(float(x)), F32, mode)
    got = fp.sqrt(np.array([x]), np.dtype(F32), mode)
    assert _same(np.asarray(got, F32)[0], ref), (x, mode)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-300, max_value=1e300), modes)
def test_sqrt_f64_all_modes(x, mode):
    ref = _sqrt_exact(Fraction(x), np.float64, mode)
    got = fp.sqrt(np.array([x]), np.dtype(np.float64), mode)
    assert _same(np.asarray(got)[0], ref), (x, mode)


def test_cvt_pack_half2_and_bf16(dev):
    body = """
    ld.global.f32 %f1, [%rd4]; ld.global.f32 %f2, [%rd4+8];
    cvt.rn.f16x2.f32 %r1, %f1, %f2;
    cvt.rn.bf16.f32 %h1, %f1;
    cvt.f32.bf16 %f3, %h1;
    cvt.rz.bf16.f32 %h2, %f2;
    cvt.u32.u16 %r2, %h2;
    st.global.u32 [%rd3], %r1; st.global.f32 [%rd3+8], %f3; st.global.u32 [%rd3+16], %r2;
    """
    a, b = F32(1.0 + 2.0**-8 + 2.0**-9), F32(-3.3)
    raw = run_body(dev, body, [a, b], nout=3)
    packed = np.array([int(raw[0, 0]) & 0xFFFFFFFF], np.uint32).view(np.float16)
    assert packed.tolist() == [float(np.float16(b)), float(np.float16(a))]  # low half is b
    # bf16 keeps 8 significant bits: 1 + 2^-8 + 2^-9 rounds (nearest, above the tie) up
    assert bits_as(raw, F32)[0, 1] == F32(1.0 + 2.0**-7)
    assert int(raw[0, 2]) & 0xFFFF == int(np.array([b], F32).view(np.uint32)[0]) >> 16
