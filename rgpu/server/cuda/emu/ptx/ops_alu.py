"""Integer, bitwise, comparison and basic floating-point arithmetic.

Integer results wrap modulo 2**n exactly as the hardware does (numpy integer arrays wrap; numpy
scalar overflow warnings are silenced for the whole launch). Floating-point results are rounded
as IEEE requires for the instruction's rounding modifier (see ``fp.py``); ``.ftz`` flushes
subnormal inputs and results, ``.sat`` clamps to [0, 1] with NaN becoming 0.

Integer division by zero is undefined in PTX; like the hardware we return all ones for ``div``
(``-1`` for signed) and the dividend for ``rem`` rather than faulting.
"""

from __future__ import annotations

import numpy as np

from . import fp, half
from .compiler import (
    BOOL,
    F32,
    F64,
    S64,
    SINT,
    U32,
    U64,
    UINT,
    CompileContext,
    Exec,
    last_type,
    op,
    reader,
    rounding,
    unsupported,
    writer,
)
from .ir import DTYPES, Imm, Instruction, Pair, Reg, Vec

M32 = np.uint64(0xFFFF_FFFF)


def _arr(v):
    return v if isinstance(v, np.ndarray) else np.asarray(v)


def _out(v, like=None):
    """Turn 0-d arrays back into numpy scalars so uniform values stay cheap."""
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v[()]
    return v


def _ftz_in(ins: Instruction, t: np.dtype, rd):
    if "ftz" in ins.mods and t == F32:
        return lambda fr: fp.ftz(rd(fr))
    return rd


def _post(ins: Instruction, t: np.dtype):
    """Result post-processing for floats: ftz, then sat."""
    steps = []
    if t.kind == "f":
        if "ftz" in ins.mods and t == F32:
            steps.append(fp.ftz)
        if "sat" in ins.mods:
            steps.append(fp.saturate)
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]
    a, b = steps
    return lambda v: b(a(v))


def _binary(ins: Instruction, cx: CompileContext, t: np.dtype, fn, out=None) -> Exec:
    o = ins.operands
    ra = reader(o[1], t, cx, ins)
    rb = reader(o[2], t, cx, ins)
    if t.kind == "f":
        ra, rb = _ftz_in(ins, t, ra), _ftz_in(ins, t, rb)
    w = writer(o[0], out or t, cx, ins)
    post = _post(ins, t)
    if post is None:

        def f(fr, m):
            w(fr, fn(ra(fr), rb(fr)), m)

    else:

        def f(fr, m):
            w(fr, post(fn(ra(fr), rb(fr))), m)

    return f


def _unary(ins: Instruction, cx: CompileContext, t: np.dtype, fn, out=None) -> Exec:
    o = ins.operands
    ra = reader(o[1], t, cx, ins)
    if t.kind == "f":
        ra = _ftz_in(ins, t, ra)
    w = writer(o[0], out or t, cx, ins)
    post = _post(ins, t)
    if post is None:
        return lambda fr, m: w(fr, fn(ra(fr)), m)
    return lambda fr, m: w(fr, post(fn(ra(fr))), m)


def _sat_s32(v64):
    return _out(np.clip(v64, -(2**31), 2**31 - 1).astype(np.int32))


# --- add / sub ---------------------------------------------------------------------------------
@op("add", "sub")
def _add(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    sub = ins.opcode == "sub"
    if "cc" in ins.mods or ins.opcode in ("addc", "subc"):
        return _carry(ins, cx, t)
    if (h := half.half_of(ins)) is not None:
        return half.arithmetic(ins, cx, h, "sub" if sub else "add")
    if ins.types[-1] in _SIMD16:
        return _simd16(ins, cx, "sub" if sub else "add")
    if t.kind == "f":
        mode = rounding(ins)
        if mode == "rn":
            return _binary(ins, cx, t, np.subtract if sub else np.add)
        if sub:
            return _binary(ins, cx, t, lambda a, b: fp.add(a, -b, t, mode))
        return _binary(ins, cx, t, lambda a, b: fp.add(a, b, t, mode))
    if "sat" in ins.mods:
        if sub:
            return _binary(ins, cx, t, lambda a, b: _sat_s32(_arr(a).astype(S64) - b))
        return _binary(ins, cx, t, lambda a, b: _sat_s32(_arr(a).astype(S64) + b))
    return _binary(ins, cx, t, np.subtract if sub else np.add)


def _carry(ins: Instruction, cx: CompileContext, t: np.dtype) -> Exec:
    """add.cc / addc / sub.cc / subc: the carry flag lives in the frame (``fr.cc``).

    PTX writes subtraction as ``d = a - (b + CC.CF)`` with CF a borrow, but the flag itself is
    the carry of ``a + ~b + 1`` (1 when nothing was borrowed): nvcc's 128-bit division reads it
    with ``addc`` after a ``subc.cc`` chain and adds the divisor back when it is 0. Both views
    give the same differences in a pure ``sub.cc``/``subc`` chain."""
    bits = 8 * t.itemsize
    u = UINT[t.itemsize]
    o = ins.operands
    ra, rb = reader(o[1], u, cx, ins), reader(o[2], u, cx, ins)
    w = writer(o[0], u, cx, ins)
    use_in = ins.opcode in ("addc", "subc")
    set_out = "cc" in ins.mods
    sub = ins.opcode.startswith("sub")
    mask = (1 << bits) - 1

    def f(fr, m):
        a = _arr(ra(fr)).astype(object) if bits == 64 else _arr(ra(fr)).astype(np.int64)
        b = _arr(rb(fr)).astype(object) if bits == 64 else _arr(rb(fr)).astype(np.int64)
        if sub:  # as the hardware does it: a + ~b + 1, or + CF for subc (CF = not borrow)
            r = a + ((~b) & mask) + (fr.cc if use_in else 1)
        else:
            r = a + b + (fr.cc if use_in else 0)
        carry = (r >> bits).astype(np.int64) if isinstance(r, np.ndarray) else int(r >> bits)
        res = np.asarray(r & mask).astype(u)
        w(fr, _out(res), m)
        if set_out:
            fr.cc = carry if m is None else np.where(m, carry, fr.cc)

    return f


def _mad_carry(ins: Instruction, cx: CompileContext, t: np.dtype) -> Exec:
    """mad.lo.cc / mad.hi.cc / madc.lo[.cc] / madc.hi[.cc]: ``d = half(a*b) + c (+ carry in)``,
    the extended-precision multiply libdevice's trig reduction (``__internal_trig_reduction_
    slowpathd``) and 64-bit products are built from; the carry flag lives in ``fr.cc``."""
    if t.kind not in "iu" or "wide" in ins.mods:
        return unsupported(ins, cx)
    bits = 8 * t.itemsize
    hi = "hi" in ins.mods
    u = UINT[t.itemsize]
    o = ins.operands
    ra, rb, rc = (reader(o[k], t, cx, ins) for k in (1, 2, 3))
    w = writer(o[0], u, cx, ins)
    use_in = ins.opcode == "madc"
    set_out = "cc" in ins.mods
    mask = (1 << bits) - 1

    def f(fr, m):
        a, b, c = (_arr(r(fr)).astype(object) for r in (ra, rb, rc))
        p = a * b  # exact (Python ints), signed if the type is
        half = (p >> bits) & mask if hi else p & mask
        r = half + (c & mask) + (fr.cc if use_in else 0)
        res = np.asarray(r & mask).astype(u)
        w(fr, _out(res), m)
        if set_out:
            carry = np.asarray(r >> bits).astype(np.int64)
            carry = carry if carry.ndim else int(carry)
            fr.cc = carry if m is None else np.where(m, carry, fr.cc)

    return f


@op("madc")
def _madc(ins: Instruction, cx: CompileContext) -> Exec:
    return _mad_carry(ins, cx, last_type(ins, cx))


@op("addc", "subc")
def _addc(ins: Instruction, cx: CompileContext) -> Exec:
    return _carry(ins, cx, last_type(ins, cx))


# --- mul / mad ---------------------------------------------------------------------------------
def mulhi(a, b, t: np.dtype):
    """High half of the full product of two same-typed integers."""
    bits = 8 * t.itemsize
    if bits <= 32:
        w = SINT[2 * t.itemsize] if t.kind == "i" else UINT[2 * t.itemsize]
        p = _arr(a).astype(w) * _arr(b).astype(w)
        return _out((p >> w.type(bits)).astype(t))
    ua, ub = (
        _arr(a).view(U64) if t.kind == "i" else _arr(a),
        _arr(b).view(U64) if t.kind == "i" else _arr(b),
    )
    ua, ub = ua.astype(U64), ub.astype(U64)
    s32 = np.uint64(32)
    al, ah, bl, bh = ua & M32, ua >> s32, ub & M32, ub >> s32
    p0, p1, p2, p3 = al * bl, al * bh, ah * bl, ah * bh
    mid = (p0 >> s32) + (p1 & M32) + (p2 & M32)
    hi = p3 + (p1 >> s32) + (p2 >> s32) + (mid >> s32)
    if t.kind == "i":
        hi = hi - np.where(_arr(a) < 0, ub, np.uint64(0)) - np.where(_arr(b) < 0, ua, np.uint64(0))
        return _out(hi.view(S64))
    return _out(hi)


@op("mul", "mul24")
def _mul(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    mods = ins.mods
    if (h := half.half_of(ins)) is not None:
        return half.arithmetic(ins, cx, h, "mul")
    if t.kind == "f":
        mode = rounding(ins)
        if mode == "rn":
            return _binary(ins, cx, t, np.multiply)
        return _binary(ins, cx, t, lambda a, b: fp.mul(a, b, t, mode))
    if ins.opcode == "mul24":
        if "hi" in mods:
            return unsupported(ins, cx)
        w = SINT[8] if t.kind == "i" else UINT[8]
        sh = 40

        def mul24(a, b):
            a24 = _arr(a).astype(w) << sh >> sh
            b24 = _arr(b).astype(w) << sh >> sh
            return _out((a24 * b24).astype(t))

        return _binary(ins, cx, t, mul24)
    if "wide" in mods:
        w = (SINT if t.kind == "i" else UINT)[2 * t.itemsize]
        o = ins.operands
        ra, rb = reader(o[1], t, cx, ins), reader(o[2], t, cx, ins)
        wr = writer(o[0], w, cx, ins)
        wt = w.type

        def fwide(fr, m):
            a, b = ra(fr), rb(fr)
            a = a.astype(w) if isinstance(a, np.ndarray) else wt(a)
            b = b.astype(w) if isinstance(b, np.ndarray) else wt(b)
            wr(fr, a * b, m)

        return fwide
    if "hi" in mods:
        return _binary(ins, cx, t, lambda a, b: mulhi(a, b, t))
    return _binary(ins, cx, t, np.multiply)


@op("mad", "mad24", "fma")
def _mad(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    o = ins.operands
    mods = ins.mods
    if "cc" in mods or ins.opcode == "madc":
        return _mad_carry(ins, cx, t)
    if (h := half.half_of(ins)) is not None:
        return half.arithmetic(ins, cx, h, "fma")
    if t.kind == "f":
        mode = rounding(ins)
        ra, rb, rc = (_ftz_in(ins, t, reader(o[k], t, cx, ins)) for k in (1, 2, 3))
        w = writer(o[0], t, cx, ins)
        post = _post(ins, t)
        if t == F32 and mode == "rn":
            f64 = F64

            def fused(a, b, c):
                # The float32 product is exact in float64, so s = fl64(p + c) differs from the
                # exact sum only below float64 precision. Rounding s to float32 is then exact
                # unless s sits exactly on a float32 rounding tie (low 29 bits 0x10000000) or in
                # the float32 subnormal range; only those lanes take the exact slow path.
                if not isinstance(a, np.ndarray) and not isinstance(b, np.ndarray):
                    return fp.fma(a, b, c, F32, "rn")
                s = a.astype(f64) if isinstance(a, np.ndarray) else f64.type(a)
                s = s * b
                s += c
                if not isinstance(s, np.ndarray):
                    return fp.fma(a, b, c, F32, "rn")
                r = s.astype(F32)
                bits = s.view(np.int64)
                risky = ((bits & 0x1FFFFFFF) == 0x10000000) | (np.abs(s) < 2.0**-125)
                if risky.any():
                    k = np.flatnonzero(risky)
                    ak = a[k] if isinstance(a, np.ndarray) else a
                    bk = b[k] if isinstance(b, np.ndarray) else b
                    ck = c[k] if isinstance(c, np.ndarray) else c
                    r[k] = fp.fma(ak, bk, ck, F32, "rn")
                return r

        else:

            def fused(a, b, c):
                return fp.fma(a, b, c, t, mode)

        if post is None:
            return lambda fr, m: w(fr, fused(ra(fr), rb(fr), rc(fr)), m)
        return lambda fr, m: w(fr, post(fused(ra(fr), rb(fr), rc(fr))), m)
    if ins.opcode == "fma":
        return unsupported(ins, cx)
    if "wide" in mods:
        wt = (SINT if t.kind == "i" else UINT)[2 * t.itemsize]
        ra, rb = reader(o[1], t, cx, ins), reader(o[2], t, cx, ins)
        rc = reader(o[3], wt, cx, ins)
        w = writer(o[0], wt, cx, ins)

        def fw(fr, m):
            a, b = ra(fr), rb(fr)
            w(fr, _arr(a).astype(wt) * _arr(b).astype(wt) + rc(fr), m)

        return fw
    ra, rb, rc = (reader(o[k], t, cx, ins) for k in (1, 2, 3))
    w = writer(o[0], t, cx, ins)
    if ins.opcode == "mad24":  # only the low 24 bits of a and b take part in the product
        if "hi" in mods or "sat" in mods:
            return unsupported(ins, cx)
        wide = SINT[8] if t.kind == "i" else UINT[8]

        def mad24(fr, m):
            a24 = _arr(ra(fr)).astype(wide) << 40 >> 40
            b24 = _arr(rb(fr)).astype(wide) << 40 >> 40
            w(fr, _out((a24 * b24).astype(t) + rc(fr)), m)

        return mad24
    if "hi" in mods:
        if "sat" in mods:
            return unsupported(ins, cx)
        return lambda fr, m: w(fr, _out(mulhi(ra(fr), rb(fr), t) + rc(fr)), m)
    return lambda fr, m: w(fr, ra(fr) * rb(fr) + rc(fr), m)


@op("dp4a", "dp2a")
def _dot(ins: Instruction, cx: CompileContext) -> Exec:
    """dp4a: ``d = c + sum(a.byte[i] * b.byte[i])``; dp2a.lo/.hi: ``d = c + a.half[0] *
    b.byte[k] + a.half[1] * b.byte[k+1]`` with k = 0 or 2. Each type suffix says whether that
    operand's pieces are signed; the sum wraps to 32 bits (``__dp4a``/``__dp2a_lo``)."""
    ts = ins.types
    if len(ts) != 2:
        return unsupported(ins, cx)
    a_signed, b_signed = ts[0] == "s32", ts[1] == "s32"
    o = ins.operands
    ra, rb = reader(o[1], U32, cx, ins), reader(o[2], U32, cx, ins)
    rc = reader(o[3], U32, cx, ins)
    w = writer(o[0], U32, cx, ins)
    if ins.opcode == "dp4a":
        a_parts, a_width, b_first = 4, 8, 0
    else:
        a_parts, a_width, b_first = 2, 16, 2 if "hi" in ins.mods else 0

    def piece(v, k: int, width: int, signed: bool):
        x = (v >> np.int64(k * width)) & np.int64((1 << width) - 1)
        if signed:
            x = x - ((x >> np.int64(width - 1)) << np.int64(width))
        return x

    def f(fr, m):
        a = _arr(ra(fr)).astype(np.int64)
        b = _arr(rb(fr)).astype(np.int64)
        acc = _arr(rc(fr)).astype(np.int64)
        for k in range(a_parts):
            acc = acc + piece(a, k, a_width, a_signed) * piece(b, b_first + k, 8, b_signed)
        w(fr, _out((acc & np.int64(0xFFFF_FFFF)).astype(U32)), m)

    return f


# --- SIMD on packed halves and bytes ---------------------------------------------------------
_SIMD16 = ("u16x2", "s16x2")


def _lanes(v, width: int, signed: bool) -> list[np.ndarray]:
    """The ``32 // width`` fields of 32-bit values, sign- or zero-extended to int64."""
    v = _arr(v).astype(np.int64) & 0xFFFF_FFFF
    out = []
    for k in range(32 // width):
        x = (v >> (k * width)) & ((1 << width) - 1)
        if signed:
            x = x - ((x >> (width - 1)) << width)
        out.append(x)
    return out


def _pack(fields: list[np.ndarray], width: int) -> np.ndarray:
    r = np.zeros(np.shape(fields[0]), np.int64)
    for k, x in enumerate(fields):
        r = r | ((x & ((1 << width) - 1)) << (k * width))
    return _out(r.astype(U32))


_SIMD_FN = {
    "add": np.add, "sub": np.subtract, "min": np.minimum, "max": np.maximum,
    "absdiff": lambda a, b: np.abs(a - b), "avrg": lambda a, b: (a + b + 1) >> 1,
}  # fmt: skip


def _simd16(ins: Instruction, cx: CompileContext, what: str) -> Exec:
    """add/sub[.sat] and min/max[.relu] on .u16x2/.s16x2 (sm_90): each half on its own."""
    signed = ins.types[-1] == "s16x2"
    sat, relu = "sat" in ins.mods, "relu" in ins.mods
    lo, hi = (-(1 << 15), (1 << 15) - 1) if signed else (0, 0xFFFF)
    fn = _SIMD_FN[what]
    o = ins.operands
    ra, rb = reader(o[1], U32, cx, ins), reader(o[2], U32, cx, ins)
    w = writer(o[0], U32, cx, ins)

    def f(fr, m):
        rs = [fn(x, y) for x, y in zip(_lanes(ra(fr), 16, signed), _lanes(rb(fr), 16, signed),
                                        strict=True)]  # fmt: skip
        if sat:
            rs = [np.clip(r, lo, hi) for r in rs]
        if relu:
            rs = [np.maximum(r, 0) for r in rs]
        w(fr, _pack(rs, 16), m)

    return f


@op("vadd2", "vsub2", "vavrg2", "vabsdiff2", "vmin2", "vmax2",
    "vadd4", "vsub4", "vavrg4", "vabsdiff4", "vmin4", "vmax4")  # fmt: skip
def _video_simd(ins: Instruction, cx: CompileContext) -> Exec:
    """SIMD video instructions (``__vabsdiffu4``, ``__vsadu2`` ...) without operand selectors:
    ``vop4.dtype.atype.btype[.sat] d, a, b, c`` works on bytes (``vop2``: halves), each field
    of a and b signed as its type says; ``.add`` sums the fields' results into c instead."""
    ts = ins.types
    o = ins.operands
    if len(ts) != 3 or len(o) != 4 or not all(isinstance(x, (Reg, Imm)) for x in o[1:]):
        return unsupported(ins, cx, f"`{ins.opcode}` with operand selectors or masks")
    width = 8 if ins.opcode.endswith("4") else 16
    a_signed, b_signed, d_signed = ts[1] == "s32", ts[2] == "s32", ts[0] == "s32"
    fn = _SIMD_FN[ins.opcode[1:-1]]
    add, sat = "add" in ins.mods, "sat" in ins.mods
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if d_signed else (0, (1 << width) - 1)
    ra, rb, rc = (reader(o[k], U32, cx, ins) for k in (1, 2, 3))
    w = writer(o[0], U32, cx, ins)

    def f(fr, m):
        rs = [fn(x, y) for x, y in zip(_lanes(ra(fr), width, a_signed),
                                        _lanes(rb(fr), width, b_signed), strict=True)]  # fmt: skip
        if add:
            total = _arr(rc(fr)).astype(np.int64) + sum(rs)
            w(fr, _out((total & 0xFFFF_FFFF).astype(U32)), m)
            return
        if sat:
            rs = [np.clip(r, lo, hi) for r in rs]
        w(fr, _pack(rs, width), m)

    return f


# --- div / rem ---------------------------------------------------------------------------------
def int_div(a, b, t: np.dtype, want_rem: bool):
    a, b = _arr(a), _arr(b)
    if t.kind == "u":
        zero = b == 0
        bs = np.where(zero, t.type(1), b)
        if want_rem:
            return _out(np.where(zero, a, a % bs).astype(t))
        return _out(np.where(zero, t.type(np.iinfo(t).max), a // bs).astype(t))
    mn = np.iinfo(t).min
    zero = b == 0
    ovf = (a == mn) & (b == -1)
    bs = np.where(zero | ovf, t.type(1), b)
    q = a // bs
    r = a - q * bs
    q = np.where((r != 0) & ((a < 0) != (bs < 0)), q + t.type(1), q)
    q = np.where(zero, t.type(-1), q).astype(t)
    if want_rem:
        return _out(np.where(zero, a, a - q * b).astype(t))
    return _out(q)


@op("div")
def _div(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    if t.kind == "f":
        if "approx" in ins.mods or "full" in ins.mods:
            # div.approx/div.full: hardware error is within 2 ulp; we return the correctly
            # rounded quotient, which is within that bound.
            return _binary(ins, cx, t, lambda a, b: fp.div(a, b, t, "rn"))
        mode = rounding(ins)
        return _binary(ins, cx, t, lambda a, b: fp.div(a, b, t, mode))
    return _binary(ins, cx, t, lambda a, b: int_div(a, b, t, False))


@op("rem")
def _rem(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    return _binary(ins, cx, t, lambda a, b: int_div(a, b, t, True))


# --- min / max / neg / abs ---------------------------------------------------------------------
def _fminmax(is_min: bool, propagate_nan: bool):
    fn = np.minimum if propagate_nan else (np.fmin if is_min else np.fmax)
    if propagate_nan and not is_min:
        fn = np.maximum

    def f(a, b):
        r = fn(a, b)
        # PTX: min(-0, +0) is -0 and max(-0, +0) is +0
        both0 = (a == 0) & (b == 0)
        if np.any(both0):
            z = (
                np.where(np.signbit(a) | np.signbit(b), -0.0, 0.0)
                if is_min
                else np.where(np.signbit(a) & np.signbit(b), -0.0, 0.0)
            )
            r = np.where(both0, z.astype(r.dtype), r)
        return _out(r)

    return f


@op("min", "max")
def _minmax(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    is_min = ins.opcode == "min"
    if (h := half.half_of(ins)) is not None:
        if len(ins.operands) > 3:
            return unsupported(ins, cx, "three-input min/max")
        return half.minmax(ins, cx, h, is_min)
    if ins.types[-1] in _SIMD16:
        return _simd16(ins, cx, ins.opcode)
    if t.kind == "f":
        if len(ins.operands) > 3:
            return unsupported(ins, cx, "three-input min/max")
        return _binary(ins, cx, t, _fminmax(is_min, "NaN" in ins.mods))
    if "relu" in ins.mods:
        return unsupported(ins, cx)
    return _binary(ins, cx, t, np.minimum if is_min else np.maximum)


@op("neg")
def _neg(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    if (h := half.half_of(ins)) is not None:
        return half.sign_op(ins, cx, h, "neg")
    return _unary(ins, cx, t, np.negative)


@op("abs")
def _abs(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    if (h := half.half_of(ins)) is not None:
        return half.sign_op(ins, cx, h, "abs")
    return _unary(ins, cx, t, np.abs)


@op("copysign")
def _copysign(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    # copysign.f32 d, a, b: magnitude of b, sign of a
    return _binary(ins, cx, t, lambda a, b: np.copysign(b, a))


# --- bitwise -------------------------------------------------------------------------------------
@op("and", "or", "xor")
def _logic(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    if t.kind == "f":
        t = UINT[t.itemsize]
    fn = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}[ins.opcode]
    return _binary(ins, cx, t, fn)


@op("not")
def _not(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    return _unary(ins, cx, t, np.invert)


@op("cnot")
def _cnot(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    return _unary(ins, cx, t, lambda a: _out(np.where(a == 0, t.type(1), t.type(0))))


@op("shl", "shr")
def _shift(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    bits = 8 * t.itemsize
    o = ins.operands
    ra = reader(o[1], t, cx, ins)
    rs = reader(o[2], U32, cx, ins)
    w = writer(o[0], t, cx, ins)
    zero = t.type(0)
    left = ins.opcode == "shl"
    arith = not left and t.kind == "i"
    cast = t.type

    def f(fr, m):
        x, s = ra(fr), rs(fr)
        if isinstance(s, np.ndarray):
            big = s >= bits
            sc = np.minimum(s, bits - 1).astype(t)
            if arith:
                r = x >> sc
            else:
                r = np.where(big, zero, (x << sc) if left else (x >> sc))
        else:
            s = int(s)
            if arith:
                r = x >> cast(min(s, bits - 1))
            elif s >= bits:
                r = zero if not isinstance(x, np.ndarray) else np.zeros_like(x)
            else:
                r = (x << cast(s)) if left else (x >> cast(s))
        w(fr, r, m)

    return f


def bit_length(x, t: np.dtype):
    """Number of significant bits of unsigned values (0 for 0), as int64."""
    x = _arr(x)
    if t.itemsize <= 4:
        return np.frexp(x.astype(F64))[1].astype(np.int64)
    x = x.astype(U64)
    hi = (x >> np.uint64(32)).astype(F64)
    lo = (x & M32).astype(F64)
    return np.where(hi > 0, np.frexp(hi)[1] + 32, np.frexp(lo)[1]).astype(np.int64)


@op("fns")
def _fns(ins: Instruction, cx: CompileContext) -> Exec:
    """fns.b32 d, mask, base, offset: the bit position of the offset-th set bit of mask counting
    up (offset > 0) or down (offset < 0) from base, base itself when offset is 0 and that bit is
    set; 0xffffffff when there is none (``__fns``)."""
    o = ins.operands
    rm, rb = reader(o[1], U32, cx, ins), reader(o[2], U32, cx, ins)
    ro = reader(o[3], np.dtype(np.int32), cx, ins)
    w = writer(o[0], U32, cx, ins)

    def f(fr, m):
        mask = _arr(rm(fr)).astype(np.int64)
        base = _arr(rb(fr)).astype(np.int64) & 31
        off = _arr(ro(fr)).astype(np.int64)
        shape = np.broadcast_shapes(mask.shape, base.shape, off.shape)
        d = np.full(shape, 0xFFFF_FFFF, np.int64)
        bit_at = lambda p: (mask >> np.clip(p, 0, 31)) & 1  # noqa: E731
        d = np.where((off == 0) & (bit_at(base) == 1), base, d)
        left = np.abs(off)  # set bits still to pass, the found one included
        step = np.where(off > 0, 1, -1)
        found = off == 0
        for k in range(32):
            pos = base + step * k
            hit = ~found & (pos >= 0) & (pos < 32) & (bit_at(pos) == 1)
            left = left - hit
            now = hit & (left == 0)
            d = np.where(now, pos, d)
            found = found | now
        w(fr, _out(d.astype(U32)), m)

    return f


@op("popc")
def _popc(ins: Instruction, cx: CompileContext) -> Exec:
    t = UINT[last_type(ins, cx).itemsize]
    return _unary(ins, cx, t, lambda x: _out(np.bitwise_count(x).astype(U32)), out=U32)


@op("clz")
def _clz(ins: Instruction, cx: CompileContext) -> Exec:
    t = UINT[last_type(ins, cx).itemsize]
    bits = 8 * t.itemsize
    return _unary(ins, cx, t, lambda x: _out((bits - bit_length(x, t)).astype(U32)), out=U32)


_REV8 = np.array([int(f"{i:08b}"[::-1], 2) for i in range(256)], np.uint8)


@op("brev")
def _brev(ins: Instruction, cx: CompileContext) -> Exec:
    t = UINT[last_type(ins, cx).itemsize]

    def rev(x):
        a = np.ascontiguousarray(np.atleast_1d(_arr(x).astype(t)))
        b = _REV8[a.view(np.uint8).reshape(-1, t.itemsize)[:, ::-1]]
        r = np.ascontiguousarray(b).view(t).reshape(a.shape)
        return r if np.ndim(x) else r[0]

    return _unary(ins, cx, t, rev)


@op("bfind")
def _bfind(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    bits = 8 * t.itemsize
    u = UINT[t.itemsize]
    shiftamt = "shiftamt" in ins.mods

    def f(x):
        x = _arr(x)
        y = np.where(x < 0, ~x, x) if t.kind == "i" else x
        n = bit_length(y.view(u) if y.dtype != u else y, u)
        r = n - 1
        if shiftamt:
            r = np.where(n == 0, -1, bits - n)
        return _out(r.astype(np.int64).astype(U32))

    return _unary(ins, cx, t, f, out=U32)


def _lowmask64(n):
    n = _arr(n).astype(U64)
    return np.where(
        n >= 64,
        np.uint64(0xFFFF_FFFF_FFFF_FFFF),
        (np.uint64(1) << np.minimum(n, np.uint64(63))) - np.uint64(1),
    )


@op("bfe")
def _bfe(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    bits = 8 * t.itemsize
    u = UINT[t.itemsize]
    o = ins.operands
    ra, rp, rl = reader(o[1], u, cx, ins), reader(o[2], U32, cx, ins), reader(o[3], U32, cx, ins)
    w = writer(o[0], t, cx, ins)
    one = np.uint64(1)

    def f(fr, m):
        a = _arr(ra(fr)).astype(U64)
        pos = np.minimum(_arr(rp(fr)) & 0xFF, bits).astype(U64)
        ln = np.minimum(_arr(rl(fr)) & 0xFF, bits).astype(U64)
        field = np.where(pos >= bits, np.uint64(0), a >> np.minimum(pos, np.uint64(bits - 1)))
        k = np.minimum(ln, np.uint64(bits) - pos)
        r = field & _lowmask64(k)
        if t.kind == "i":
            sidx = np.minimum(pos + ln - one, np.uint64(bits - 1))
            sbit = np.where(ln > 0, (a >> sidx) & one, np.uint64(0))
            r = np.where(sbit == one, r | ~_lowmask64(k), r)
        r = (r & _lowmask64(np.uint64(bits))).astype(u)
        w(fr, _out(r.view(t)), m)

    return f


@op("bfi")
def _bfi(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    bits = 8 * t.itemsize
    u = UINT[t.itemsize]
    o = ins.operands
    rf, rb = reader(o[1], u, cx, ins), reader(o[2], u, cx, ins)
    rp, rl = reader(o[3], U32, cx, ins), reader(o[4], U32, cx, ins)
    w = writer(o[0], t, cx, ins)

    def f(fr, m):
        fv, b = _arr(rf(fr)).astype(U64), _arr(rb(fr)).astype(U64)
        pos = np.minimum(_arr(rp(fr)) & 0xFF, bits).astype(U64)
        ln = np.minimum(_arr(rl(fr)) & 0xFF, bits).astype(U64)
        sh = np.minimum(pos, np.uint64(bits - 1))
        msk = np.where(pos >= bits, np.uint64(0), _lowmask64(ln) << sh) & _lowmask64(
            np.uint64(bits)
        )
        r = (b & ~msk) | ((fv << sh) & msk)
        w(fr, _out(r.astype(u).view(t)), m)

    return f


@op("bmsk")
def _bmsk(ins: Instruction, cx: CompileContext) -> Exec:
    wrap = "wrap" in ins.mods
    o = ins.operands
    ra, rb = reader(o[1], U32, cx, ins), reader(o[2], U32, cx, ins)
    w = writer(o[0], U32, cx, ins)

    def f(fr, m):
        a, b = _arr(ra(fr)).astype(U64), _arr(rb(fr)).astype(U64)
        if wrap:
            a, b = a & np.uint64(31), b & np.uint64(31)
        else:
            a, b = np.minimum(a, np.uint64(32)), np.minimum(b, np.uint64(32))
        r = _lowmask64(np.minimum(a + b, np.uint64(32))) & ~_lowmask64(a)
        w(fr, _out(r.astype(U32)), m)

    return f


@op("prmt")
def _prmt(ins: Instruction, cx: CompileContext) -> Exec:
    mode = next((x for x in ins.mods if x in ("f4e", "b4e", "rc8", "ecl", "ecr", "rc16")), None)
    o = ins.operands
    ra, rb, rc = (reader(o[k], U32, cx, ins) for k in (1, 2, 3))
    w = writer(o[0], U32, cx, ins)
    b8, b3, b7, bff = np.uint64(8), np.uint64(3), np.uint64(7), np.uint64(0xFF)

    def f(fr, m):
        a, b, c = (_arr(r(fr)).astype(U64) for r in (ra, rb, rc))
        src = a | (b << np.uint64(32))
        res = np.zeros(np.broadcast(a, b, c).shape, U64)
        s = c & b3
        for i in range(4):
            sign = None
            if mode is None:
                sel = (c >> np.uint64(4 * i)) & np.uint64(0xF)
                idx, sign = sel & b7, (sel & b8) != 0
            elif mode == "f4e":
                idx = (s + np.uint64(i)) & b7
            elif mode == "b4e":
                idx = (s - np.uint64(i)) & b7
            elif mode == "rc8":
                idx = s
            elif mode == "ecl":  # edge clamp left
                idx = np.maximum(s, np.uint64(i))
            elif mode == "ecr":  # edge clamp right
                idx = np.minimum(s, np.uint64(i))
            else:  # rc16: replicate the selected 16-bit half
                idx = (s & np.uint64(1)) * np.uint64(2) + np.uint64(i & 1)
            byte = (src >> (idx * b8)) & bff
            if sign is not None:
                byte = np.where(sign, np.where(byte & np.uint64(0x80), bff, np.uint64(0)), byte)
            res = res | (byte << np.uint64(8 * i))
        w(fr, _out(res.astype(U32)), m)

    return f


@op("lop3")
def _lop3(ins: Instruction, cx: CompileContext) -> Exec:
    t = UINT[last_type(ins, cx).itemsize]
    o = ins.operands
    if isinstance(o[0], Pair):
        return unsupported(ins, cx, "lop3 with a predicate output")
    ra, rb, rc = (reader(o[k], t, cx, ins) for k in (1, 2, 3))
    lut = int(reader(o[4], U32, cx, ins)(None)) & 0xFF
    w = writer(o[0], t, cx, ins)

    def f(fr, m):
        a, b, c = ra(fr), rb(fr), rc(fr)
        na, nb, nc = ~a, ~b, ~c
        r = None
        for i in range(8):
            if lut >> i & 1:
                term = (a if i & 4 else na) & (b if i & 2 else nb) & (c if i & 1 else nc)
                r = term if r is None else r | term
        w(fr, a & na if r is None else r, m)

    return f


@op("shf")
def _shf(ins: Instruction, cx: CompileContext) -> Exec:
    left = "l" in ins.mods
    wrap = "wrap" in ins.mods
    o = ins.operands
    ra, rb, rc = (reader(o[k], U32, cx, ins) for k in (1, 2, 3))
    w = writer(o[0], U32, cx, ins)

    def f(fr, m):
        a, b, c = (_arr(r(fr)).astype(U64) for r in (ra, rb, rc))
        n = (c & np.uint64(31)) if wrap else np.minimum(c, np.uint64(32))
        v = (b << np.uint64(32)) | a
        r = ((v << n) >> np.uint64(32)) if left else (v >> n)
        w(fr, _out((r & M32).astype(U32)), m)

    return f


@op("sad")
def _sad(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    o = ins.operands
    ra, rb, rc = (reader(o[k], t, cx, ins) for k in (1, 2, 3))
    w = writer(o[0], t, cx, ins)
    return lambda fr, m: w(
        fr, np.where(ra(fr) < rb(fr), rb(fr) - ra(fr), ra(fr) - rb(fr)) + rc(fr), m
    )


# --- selection and comparison ------------------------------------------------------------------
@op("selp")
def _selp(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    o = ins.operands
    ra, rb = reader(o[1], t, cx, ins), reader(o[2], t, cx, ins)
    rc = reader(o[3], BOOL, cx, ins)
    w = writer(o[0], t, cx, ins)

    def f(fr, m):
        c = rc(fr)
        if not isinstance(c, np.ndarray):
            w(fr, ra(fr) if c else rb(fr), m)
        else:
            w(fr, np.where(c, ra(fr), rb(fr)), m)

    return f


@op("slct")
def _slct(ins: Instruction, cx: CompileContext) -> Exec:
    ts = ins.types
    t, ct = DTYPES[ts[0]], DTYPES[ts[1]]
    o = ins.operands
    ra, rb = reader(o[1], t, cx, ins), reader(o[2], t, cx, ins)
    rc = reader(o[3], ct, cx, ins)
    w = writer(o[0], t, cx, ins)
    return lambda fr, m: w(fr, _out(np.where(rc(fr) >= 0, ra(fr), rb(fr))), m)


_CMP = {
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal, "lo": np.less, "ls": np.less_equal,
    "hi": np.greater, "hs": np.greater_equal,
}  # fmt: skip


def comparison(cmp: str, t: np.dtype):
    """A numpy function computing PTX comparison ``cmp`` on values of type ``t``."""
    if t.kind != "f":
        return _CMP[cmp]
    if cmp == "num":
        return lambda a, b: ~(np.isnan(a) | np.isnan(b))
    if cmp == "nan":
        return lambda a, b: np.isnan(a) | np.isnan(b)
    if cmp.endswith("u") and cmp[:-1] in _CMP:
        base = _CMP[cmp[:-1]]
        if cmp == "neu":
            return lambda a, b: np.not_equal(a, b)
        return lambda a, b: base(a, b) | np.isnan(a) | np.isnan(b)
    if cmp == "ne":
        return lambda a, b: np.not_equal(a, b) & ~(np.isnan(a) | np.isnan(b))
    return _CMP[cmp]


def _compare_parts(ins: Instruction, cx: CompileContext):
    mods = [x for x in ins.mods if x not in ("ftz",)]
    cmp = mods[0]
    boolop = mods[1] if len(mods) > 1 and mods[1] in ("and", "or", "xor") else None
    t = DTYPES[ins.types[-1]]
    fn = comparison(cmp, t)
    o = ins.operands
    ra, rb = reader(o[1], t, cx, ins), reader(o[2], t, cx, ins)
    if t.kind == "f" and "ftz" in ins.mods:
        ra, rb = _ftz_in(ins, t, ra), _ftz_in(ins, t, rb)
    rc = reader(o[3], BOOL, cx, ins) if boolop else None
    return fn, boolop, ra, rb, rc


_BOOLOP = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor}


def _half_compare(ins: Instruction, cx: CompileContext, h, setp: bool) -> Exec:
    mods = [x for x in ins.mods if x not in ("ftz",)]
    boolop = mods[1] if len(mods) > 1 and mods[1] in _BOOLOP else None
    fn = comparison(mods[0], F32)
    bop = _BOOLOP[boolop] if boolop else None
    return (half.setp if setp else half.set_)(ins, cx, h, fn, bop)


@op("setp")
def _setp(ins: Instruction, cx: CompileContext) -> Exec:
    if (h := half.half_of(ins)) is not None:
        return _half_compare(ins, cx, h, True)
    fn, boolop, ra, rb, rc = _compare_parts(ins, cx)
    d = ins.operands[0]
    if isinstance(d, Pair):
        w1, w2 = writer(d.first, BOOL, cx, ins), writer(d.second, BOOL, cx, ins)
    else:
        w1, w2 = writer(d, BOOL, cx, ins), None
    bop = _BOOLOP[boolop] if boolop else None

    def f(fr, m):
        r = fn(ra(fr), rb(fr))
        if bop is not None:
            c = rc(fr)  # type: ignore[misc]
            w1(fr, bop(r, c), m)
            if w2 is not None:
                w2(fr, bop(~r, c), m)
        else:
            w1(fr, r, m)
            if w2 is not None:
                w2(fr, ~r, m)

    return f


@op("set")
def _set(ins: Instruction, cx: CompileContext) -> Exec:
    if (h := half.half_of(ins)) is not None:
        return _half_compare(ins, cx, h, False)
    fn, boolop, ra, rb, rc = _compare_parts(ins, cx)
    dt = DTYPES[ins.types[0]]
    w = writer(ins.operands[0], dt, cx, ins)
    bop = _BOOLOP[boolop] if boolop else None
    yes = (
        dt.type(1.0)
        if dt.kind == "f"
        else np.array(-1).astype(dt)[()]
        if dt.kind == "i"
        else dt.type(np.iinfo(dt).max)
    )
    no = dt.type(0)

    def f(fr, m):
        r = fn(ra(fr), rb(fr))
        if bop is not None:
            r = bop(r, rc(fr))  # type: ignore[misc]
        w(fr, _out(np.where(r, yes, no)), m)

    return f


# --- mov ---------------------------------------------------------------------------------------
@op("mov")
def _mov(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    d, s = ins.operands[0], ins.operands[1]
    if isinstance(s, Vec):  # pack {lo, hi} -> wide
        n = len(s.items)
        part = UINT[t.itemsize // n]
        readers = [reader(x, part, cx, ins) for x in s.items]
        ut = UINT[t.itemsize]
        w = writer(d, ut, cx, ins)
        shifts = [ut.type(8 * part.itemsize * k) for k in range(n)]

        def pack(fr, m):
            r = None
            for rd, sh in zip(readers, shifts, strict=True):
                v = rd(fr)
                v = v.astype(ut) if isinstance(v, np.ndarray) else ut.type(v)
                r = v << sh if r is None else r | (v << sh)
            w(fr, r, m)

        return pack
    if isinstance(d, Vec):  # unpack wide -> {lo, hi}
        n = len(d.items)
        part = UINT[t.itemsize // n]
        ut = UINT[t.itemsize]
        rd = reader(s, ut, cx, ins)
        ws = [writer(x, part, cx, ins) for x in d.items]
        msk = ut.type((1 << (8 * part.itemsize)) - 1)
        shifts = [ut.type(8 * part.itemsize * k) for k in range(n)]

        def unpack(fr, m):
            v = rd(fr)
            for wk, sh in zip(ws, shifts, strict=True):
                x = (v >> sh) & msk
                wk(fr, x.astype(part) if isinstance(x, np.ndarray) else part.type(x), m)

        return unpack
    if t == BOOL or (isinstance(d, Reg) and DTYPES[d.type] == BOOL):
        rdp = reader(s, BOOL, cx, ins)
        w = writer(d, BOOL, cx, ins)
        return lambda fr, m: w(fr, rdp(fr), m)
    rd = reader(s, t, cx, ins)
    w = writer(d, t, cx, ins)
    return lambda fr, m: w(fr, rd(fr), m)


__all__ = ["bit_length", "comparison", "int_div", "mulhi"]
