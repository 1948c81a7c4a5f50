"""Conversions (``cvt``), transcendental approximations and float classification.

``.approx`` instructions are computed in float64 and rounded once to the destination type, so
they are within 1 ulp of the exact result — inside the bounds the PTX ISA documents for the
hardware (``rcp``/``sqrt``/``rsqrt``/``ex2``/``lg2``.approx.f32: 1 to 2 ulp or 2^-22 relative;
``sin``/``cos``.approx.f32: 2^-20.5 absolute in [-pi, pi]; ``tanh``.approx.f32: 2^-10.987
relative). Programs that depend on the exact hardware approximation bits are not reproduced.
"""

from __future__ import annotations

import numpy as np

from . import fp, half
from .compiler import (
    BOOL,
    F16,
    F32,
    F64,
    S64,
    U32,
    U64,
    CompileContext,
    Exec,
    last_type,
    op,
    reader,
    rounding,
    unsupported,
    writer,
)
from .ir import DTYPES, Instruction

_TWO32 = np.float64(2.0**32)


def _out(v):
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v[()]
    return v


def _arr(v):
    return v if isinstance(v, np.ndarray) else np.asarray(v)


def _cast(v, dt: np.dtype):
    return _out(_arr(v).astype(dt))


# --- cvt -----------------------------------------------------------------------------------------
_INT_ROUND = {"rni": np.rint, "rzi": np.trunc, "rmi": np.floor, "rpi": np.ceil}


def _float_to_int(x64, dt: np.dtype, rnd):
    """Round, saturate to ``dt``'s range, NaN -> 0 (PTX float-to-int semantics)."""
    r = rnd(x64)
    info = np.iinfo(dt)
    lo, hi = float(info.min), float(info.max)
    nan = np.isnan(r)
    if dt.itemsize < 8:
        c = np.clip(np.where(nan, 0.0, r), lo, hi)
        return _cast(c, dt)
    big = r >= 2.0 ** (63 if dt.kind == "i" else 64)
    small = r < lo
    safe = np.where(nan | big | small, 0.0, r)
    if dt.kind == "u":
        high = (safe - 2.0**63).astype(np.int64).view(U64) + np.uint64(2**63)
        v = np.where(safe >= 2.0**63, high, safe.astype(np.int64).view(U64))
    else:
        v = safe.astype(np.int64)
    v = np.where(big, dt.type(info.max), np.where(small, dt.type(info.min), v.astype(dt)))
    return _out(v.astype(dt))


def _int_to_float(a, dt: np.dtype, mode: str):
    a = _arr(a)
    if a.dtype.itemsize <= 4:
        x = a.astype(F64)  # exact
        if dt == F64:
            return _out(x)
        return fp.round_from_f64(x, dt, mode)
    # 64-bit integers: split so the float64 sum and its error are exact
    if a.dtype.kind == "i":
        hi = (a >> np.int64(32)).astype(F64) * _TWO32
        lo = (a & np.int64(0xFFFFFFFF)).astype(F64)
    else:
        hi = (a >> np.uint64(32)).astype(F64) * _TWO32
        lo = (a & np.uint64(0xFFFFFFFF)).astype(F64)
    s, e = fp.two_sum(hi, lo)
    if dt == F64:
        return _out(fp.adjust_directed(s, e, mode))
    return fp.round_from_f64(fp.round_to_odd(s, e), dt, mode)


def _int_to_int(a, src: np.dtype, dst: np.dtype, sat: bool):
    a = _arr(a)
    if sat:
        di = np.iinfo(dst)
        if src.kind == "u" and src.itemsize == 8:
            a = np.minimum(a, np.uint64(di.max))
        elif src.kind == "i" and src.itemsize == 8 and dst.kind == "u" and dst.itemsize == 8:
            a = np.maximum(a, 0)
        else:
            a = np.clip(a.astype(S64), max(di.min, -(2**63)), min(di.max, 2**63 - 1))
    return _cast(a, dst)


@op("cvt")
def _cvt(ins: Instruction, cx: CompileContext) -> Exec:
    ts = ins.types
    if "tf32" in ins.mods and ts == ["f32"]:
        return _cvt_tf32(ins, cx)
    small = next((m for m in ins.mods if m.endswith("x2") and m[0] in "eu"), None)
    if small is not None:  # 8-bit (and smaller) float pairs
        if small not in ("e4m3x2", "e5m2x2"):
            return unsupported(ins, cx, f"cvt to or from .{small}")
        return half.convert_fp8(ins, cx, small)
    if len(ts) != 2:
        raise cx.fault(ins, "invalid_ptx", "cvt needs a destination and a source type")
    if ts[0] in ("f16x2", "bf16x2") and ts[1] == "f32" and len(ins.operands) == 3:
        return _cvt_pack2(ins, cx, ts[0] == "bf16x2")
    if "bf16" in ts and "bf16x2" not in ts:
        return half.convert(ins, cx, ts[0], ts[1], _INT_ROUND)
    if "bf16x2" in ts or "f16x2" in ts or "tf32" in ins.mods:
        return unsupported(ins, cx)
    dst, src = DTYPES[ts[0]], DTYPES[ts[1]]
    mods = ins.mods
    irnd = next((m for m in mods if m in _INT_ROUND), None)
    mode = rounding(ins)
    sat = "sat" in mods
    ftz = "ftz" in mods
    o = ins.operands
    ra = reader(o[1], src, cx, ins)
    w = writer(o[0], dst, cx, ins)
    if src == BOOL or dst == BOOL:
        return unsupported(ins, cx)

    if dst.kind in "iu" and src.kind in "iu":
        if src == dst and not sat:
            return lambda fr, m: w(fr, ra(fr), m)
        return lambda fr, m: w(fr, _int_to_int(ra(fr), src, dst, sat), m)

    if dst.kind in "iu":  # float -> int
        rnd = _INT_ROUND[irnd or "rzi"]

        def f2i(fr, m):
            x = ra(fr)
            if ftz and src == F32:
                x = fp.ftz(x)
            w(fr, _float_to_int(_arr(x).astype(F64), dst, rnd), m)

        return f2i

    post_ftz = ftz and dst == F32

    def finish(v):
        if post_ftz:
            v = fp.ftz(v)
        if sat:
            v = fp.saturate(_arr(v))
        return v

    if src.kind in "iu":  # int -> float
        return lambda fr, m: w(fr, finish(_int_to_float(ra(fr), dst, mode)), m)

    # float -> float
    if irnd is not None:
        rfn = _INT_ROUND[irnd]

        def f2f_int(fr, m):
            x = ra(fr)
            if ftz and src == F32:
                x = fp.ftz(x)
            r = rfn(_arr(x).astype(F64))
            w(fr, finish(fp.round_from_f64(r, dst, "rn") if dst != F64 else _out(r)), m)

        return f2f_int

    # NaN to or from .f16 is the canonical NaN of the destination, as on NVIDIA GPUs (and in
    # cuda_fp16.hpp's host model): 0x7fff, 0x7fffffff; numpy would keep a quieted payload.
    nan_bits = {F16: 0x7FFF, F32: 0x7FFF_FFFF}.get(dst) if F16 in (src, dst) else None

    def f2f(fr, m):
        x = ra(fr)
        if ftz and src == F32:
            x = fp.ftz(x)
        if dst.itemsize >= src.itemsize:
            r = _cast(x, dst)
        else:
            r = fp.round_from_f64(_arr(x).astype(F64), dst, mode)
        if nan_bits is not None:
            nan = np.isnan(x)
            if np.any(nan):
                ut = np.dtype(f"u{dst.itemsize}")
                r = np.where(nan, ut.type(nan_bits).view(dst), r)
                r = r[()] if np.ndim(r) == 0 else r
        w(fr, finish(r), m)

    return f2f


def _cvt_tf32(ins: Instruction, cx: CompileContext) -> Exec:
    """cvt.{rna,rn,rz}[.satfinite][.relu].tf32.f32: a float32 rounded to tf32's 10 mantissa bits,
    kept as a float32 bit pattern whose low 13 bits are zero (``wmma::__float_to_tf32``)."""
    mode = next((m for m in ins.mods if m in ("rna", "rn", "rz")), "rna")
    satfinite, relu = "satfinite" in ins.mods, "relu" in ins.mods
    o = ins.operands
    ra = reader(o[1], F32, cx, ins)
    w = writer(o[0], U32, cx, ins)
    low = np.uint64(0x1FFF)

    def f(fr, m):
        x = _arr(ra(fr)).astype(F32)
        if relu:
            x = np.where(x < 0, F32.type(0), x)
        bits = x.view(U32).astype(U64)
        if mode == "rna":  # ties away from zero: add half an ulp to the magnitude
            r = bits + np.uint64(0x1000)
        elif mode == "rn":
            r = bits + np.uint64(0xFFF) + ((bits >> np.uint64(13)) & np.uint64(1))
        else:
            r = bits
        r = (r & ~low).astype(U32)
        nan = np.isnan(x)
        r = np.where(nan | np.isinf(x), bits.astype(U32) & ~U32.type(0x1FFF) | nan, r)
        if satfinite:  # overflow and infinities clamp to the largest tf32, NaN stays NaN
            big = U32.type(0x7F7F_E000)
            over = ~nan & ((r & U32.type(0x7FFF_FFFF)) > big)
            r = np.where(over, (r & U32.type(0x8000_0000)) | big, r)
        w(fr, _out(r), m)

    return f


def _cvt_pack2(ins: Instruction, cx: CompileContext, bf16: bool) -> Exec:
    """cvt.rn.f16x2.f32 d, a, b: d = {cvt(a) in the high half, cvt(b) in the low half}."""
    mode = rounding(ins)
    relu = "relu" in ins.mods
    o = ins.operands
    ra, rb = reader(o[1], F32, cx, ins), reader(o[2], F32, cx, ins)
    w = writer(o[0], U32, cx, ins)

    def one(x):
        if relu:
            x = np.where(np.asarray(x) < 0, F32.type(0), x)
        if bf16:
            return _arr(half.bf16_bits(x, mode)).astype(U32)
        h = fp.round_from_f64(_arr(x).astype(F64), F16, mode)
        bits = _arr(np.asarray(h, F16).view(np.uint16)).astype(U32)
        return np.where(np.isnan(_arr(x)), U32.type(half.CANONICAL_NAN), bits)

    def f(fr, m):
        w(fr, _out((one(ra(fr)) << np.uint32(16)) | one(rb(fr))), m)

    return f


# --- transcendental and reciprocal --------------------------------------------------------------
def _approx(ins: Instruction, cx: CompileContext, fn64) -> Exec:
    if (h := half.half_of(ins)) is not None:
        return half.approx(ins, cx, h, fn64)
    t = last_type(ins, cx)
    if t not in (F32, F64, F16):
        return unsupported(ins, cx)
    o = ins.operands
    ra = reader(o[1], t, cx, ins)
    w = writer(o[0], t, cx, ins)
    ftz = "ftz" in ins.mods and t == F32

    def f(fr, m):
        x = ra(fr)
        if ftz:
            x = fp.ftz(x)
        r = fn64(_arr(x).astype(F64))
        r = _cast(r, t) if t != F64 else _out(r)
        if ftz:
            r = fp.ftz(r)
        w(fr, r, m)

    return f


@op("rcp")
def _rcp(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    if "approx" in ins.mods or half.half_of(ins) is not None:
        return _approx(ins, cx, lambda x: 1.0 / x)
    mode = rounding(ins)
    o = ins.operands
    ra = reader(o[1], t, cx, ins)
    w = writer(o[0], t, cx, ins)
    ftz = "ftz" in ins.mods and t == F32
    one = t.type(1)

    def f(fr, m):
        x = ra(fr)
        if ftz:
            x = fp.ftz(x)
        r = fp.div(one, x, t, mode)
        w(fr, fp.ftz(r) if ftz else r, m)

    return f


@op("sqrt")
def _sqrt(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    if "approx" in ins.mods or half.half_of(ins) is not None:
        return _approx(ins, cx, np.sqrt)
    mode = rounding(ins)
    o = ins.operands
    ra = reader(o[1], t, cx, ins)
    w = writer(o[0], t, cx, ins)
    ftz = "ftz" in ins.mods and t == F32

    def f(fr, m):
        x = ra(fr)
        if ftz:
            x = fp.ftz(x)
        r = fp.sqrt(x, t, mode)
        w(fr, fp.ftz(r) if ftz else r, m)

    return f


@op("rsqrt")
def _rsqrt(ins: Instruction, cx: CompileContext) -> Exec:
    return _approx(ins, cx, lambda x: 1.0 / np.sqrt(x))


@op("ex2")
def _ex2(ins: Instruction, cx: CompileContext) -> Exec:
    return _approx(ins, cx, np.exp2)


@op("lg2")
def _lg2(ins: Instruction, cx: CompileContext) -> Exec:
    return _approx(ins, cx, np.log2)


@op("sin")
def _sin(ins: Instruction, cx: CompileContext) -> Exec:
    return _approx(ins, cx, np.sin)


@op("cos")
def _cos(ins: Instruction, cx: CompileContext) -> Exec:
    return _approx(ins, cx, np.cos)


@op("tanh")
def _tanh(ins: Instruction, cx: CompileContext) -> Exec:
    return _approx(ins, cx, np.tanh)


@op("testp")
def _testp(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    kind = next(m for m in ins.mods if m not in ("f32", "f64"))
    tiny = np.finfo(t).tiny
    fns = {
        "finite": np.isfinite,
        "infinite": np.isinf,
        "number": lambda x: ~np.isnan(x),
        "notanumber": np.isnan,
        "normal": lambda x: np.isfinite(x) & (np.abs(x) >= tiny),
        "subnormal": lambda x: (np.abs(x) < tiny) & (x != 0),
    }
    fn = fns[kind]
    o = ins.operands
    ra = reader(o[1], t, cx, ins)
    w = writer(o[0], BOOL, cx, ins)
    return lambda fr, m: w(fr, fn(ra(fr)), m)
