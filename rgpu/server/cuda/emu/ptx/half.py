"""16-bit floating point: ``.f16``, ``.bf16`` and their packed ``.f16x2``/``.bf16x2`` forms.

cuda_fp16.h and cuda_bf16.h compile to native half instructions (inline asm on every target,
plain PTX from ``-arch=sm_80`` on): arithmetic, min/max, comparisons, conversions and atomics.
Registers hold the raw bits (a 16-bit register per half, a 32-bit one per packed pair, low half
first). Every instruction here decodes the bits to float32 (exact for both formats), computes in
float64 with the round-to-odd technique of ``fp.py`` where the result is not exact, and encodes
once in the instruction's rounding mode, so results are the correctly rounded ones PTX
specifies. ``bfloat16`` is the upper half of a float32, so it is encoded by rounding to a float32
with round-to-odd first (24 >= 8 + 2 bits keep the rounding exact) and then cutting.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import fp
from .compiler import BOOL, F32, F64, U32, U64, CompileContext, Exec, reader, rounding, writer
from .ir import DTYPES, Instruction, Pair

U16 = np.dtype(np.uint16)
F16 = np.dtype(np.float16)
HALF_TYPES = {"f16": ("f16", False), "bf16": ("bf16", False), "f16x2": ("f16", True),
              "bf16x2": ("bf16", True)}  # fmt: skip
#: the canonical NaN PTX half arithmetic produces
CANONICAL_NAN = U16.type(0x7FFF)
_ONE = {"f16": U16.type(0x3C00), "bf16": U16.type(0x3F80)}
_TINY = {"f16": 2.0**-14, "bf16": 2.0**-126}


def _arr(v) -> np.ndarray:
    return v if isinstance(v, np.ndarray) else np.asarray(v)


def _out(v):
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v[()]
    return v


def half_of(ins: Instruction, k: int = -1) -> tuple[str, bool] | None:
    """(``"f16"``/``"bf16"``, packed) when the instruction's ``k``-th type is a half type."""
    ts = ins.types
    if not ts:
        return None
    return HALF_TYPES.get(ts[k])


# --- codec ---------------------------------------------------------------------------------------
def decode(bits, kind: str) -> np.ndarray:
    """16-bit patterns -> float32 values (exact)."""
    b = _arr(bits).astype(U16)
    if kind == "f16":
        return b.view(F16).astype(F32)
    return (b.astype(U32) << U32.type(16)).view(F32)


def f64_to_f32_odd(x) -> np.ndarray:
    """float64 -> float32 rounded to odd: truncate, and set the last bit when inexact."""
    x = _arr(x).astype(F64)
    t = _arr(fp.round_from_f64(x, F32, "rz"))
    inexact = (t.astype(F64) != x) & ~np.isnan(x)
    if inexact.any():
        t = np.where(inexact, (t.view(U32) | U32.type(1)).view(F32), t)
    return _arr(t)


def bf16_bits(x32, mode: str) -> np.ndarray:
    """float32 -> bfloat16 bits (upper half of the float32), rounded in ``mode``."""
    bits = _arr(np.asarray(x32, F32)).view(U32).astype(U64)
    lower = bits & np.uint64(0xFFFF)
    trunc = bits >> np.uint64(16)
    neg = (bits >> np.uint64(31)) == 1
    if mode == "rn":
        up = (lower > 0x8000) | ((lower == 0x8000) & ((trunc & np.uint64(1)) == 1))
    elif mode == "rz":
        up = np.zeros(bits.shape, bool)
    elif mode == "rp":
        up = (lower != 0) & ~neg
    else:  # rm
        up = (lower != 0) & neg
    out = (trunc + up.astype(U64)).astype(U16)
    return np.where(np.isnan(_arr(x32)), CANONICAL_NAN, out)


def encode(x, kind: str, mode: str = "rn") -> np.ndarray:
    """float64 values (carrying round-to-odd information where inexact) -> 16-bit patterns."""
    x = _arr(x).astype(F64)
    if kind == "f16":
        r = _arr(np.asarray(fp.round_from_f64(x, F16, mode), F16)).view(U16)
    else:
        r = bf16_bits(f64_to_f32_odd(x), mode)
    return np.where(np.isnan(x), CANONICAL_NAN, r)


def _flush(v: np.ndarray, kind: str) -> np.ndarray:
    """``.ftz``: subnormal values become zeros of the same sign."""
    sub = (np.abs(v) < _TINY[kind]) & (v != 0)
    return np.where(sub, np.copysign(np.zeros((), v.dtype), v), v) if sub.any() else v


def _exact_sum(a, b) -> np.ndarray:
    s, e = fp.two_sum(_arr(a).astype(F64), _arr(b).astype(F64))
    return _arr(fp.round_to_odd(s, e))


# --- the element-wise engine ---------------------------------------------------------------------
def _halfwise(
    ins: Instruction, cx: CompileContext, kind: str, packed: bool, nin: int,
    fn: Callable[..., np.ndarray],
) -> Exec:  # fmt: skip
    """Compile ``d = fn(a, b, ...)`` over 16-bit lanes: ``fn`` takes float32 values and returns
    16-bit patterns; packed operands run it on both halves."""
    o = ins.operands
    st = U32 if packed else U16
    rs = [reader(o[k], st, cx, ins) for k in range(1, nin + 1)]
    w = writer(o[0], st, cx, ins)
    ftz = "ftz" in ins.mods and kind == "f16"
    sixteen = U32.type(16)

    def dec(bits):
        v = decode(bits, kind)
        return _flush(v, kind) if ftz else v

    def fin(bits):
        if ftz:  # flush subnormal results too
            sub = (bits & U16.type(0x7C00)) == 0
            bits = np.where(sub, bits & U16.type(0x8000), bits)
        return bits

    def f(fr, m):
        vals = [_arr(r(fr)) for r in rs]
        if packed:
            lo = fin(fn(*[dec(v.astype(U16)) for v in vals])).astype(U32)
            hi = fin(fn(*[dec((v >> sixteen).astype(U16)) for v in vals])).astype(U32)
            w(fr, _out(lo | (hi << sixteen)), m)
        else:
            w(fr, _out(fin(fn(*[dec(v) for v in vals]))), m)

    return f


def _post(ins: Instruction):
    """``.sat`` clamps to [0, 1] (NaN to 0), ``.relu`` clamps negatives and -0 to +0 (as the
    headers' pre-sm_80 ``max.NaN(x, +0)`` does); both commute with the final rounding because 0
    and 1 are representable."""
    sat, relu = "sat" in ins.mods, "relu" in ins.mods
    if not sat and not relu:
        return lambda v: v
    if sat:
        return lambda v: np.where(v > 0, np.minimum(v, 1.0), 0.0)
    return lambda v: np.where(v <= 0, 0.0, v)


def arithmetic(ins: Instruction, cx: CompileContext, kind_packed: tuple[str, bool], what: str
               ) -> Exec:  # fmt: skip
    """add/sub/mul/fma on half types, correctly rounded in the instruction's mode."""
    kind, packed = kind_packed
    mode = rounding(ins)
    post = _post(ins)
    if what == "add":
        fn = lambda a, b: encode(post(_exact_sum(a, b)), kind, mode)  # noqa: E731
    elif what == "sub":
        fn = lambda a, b: encode(post(_exact_sum(a, -b)), kind, mode)  # noqa: E731
    elif what == "mul":  # a product of two halves is exact in float64
        fn = lambda a, b: encode(post(a.astype(F64) * b), kind, mode)  # noqa: E731
    else:
        fn = lambda a, b, c: encode(post(_exact_sum(a.astype(F64) * b, c)), kind, mode)  # noqa: E731
    return _halfwise(ins, cx, kind, packed, 3 if what == "fma" else 2, fn)


def minmax(ins: Instruction, cx: CompileContext, kind_packed: tuple[str, bool], is_min: bool
           ) -> Exec:  # fmt: skip
    """min/max[.NaN][.xorsign.abs]: -0 < +0; a NaN operand is ignored unless ``.NaN``."""
    kind, packed = kind_packed
    nan = "NaN" in ins.mods
    xorsign = "xorsign" in ins.mods

    def fn(a, b):
        sign = None
        if xorsign:
            sign = np.signbit(a) ^ np.signbit(b)
            a, b = np.abs(a), np.abs(b)
        if is_min:
            r = np.minimum(a, b) if nan else np.fmin(a, b)
            zero = (a == 0) & (b == 0)
            r = np.where(zero, np.where(np.signbit(a) | np.signbit(b), -0.0, 0.0).astype(F32), r)
        else:
            r = np.maximum(a, b) if nan else np.fmax(a, b)
            zero = (a == 0) & (b == 0)
            r = np.where(zero, np.where(np.signbit(a) & np.signbit(b), -0.0, 0.0).astype(F32), r)
        if sign is not None:
            r = np.where(np.isnan(r), r, np.copysign(r, np.where(sign, -1.0, 1.0).astype(F32)))
        return encode(r, kind)

    return _halfwise(ins, cx, kind, packed, 2, fn)


def sign_op(ins: Instruction, cx: CompileContext, kind_packed: tuple[str, bool], what: str
            ) -> Exec:  # fmt: skip
    """neg/abs: the sign bit of each half (``.ftz`` also flushes f16 subnormals)."""
    kind, packed = kind_packed
    if "ftz" in ins.mods:
        f = (lambda a: encode(-a, kind)) if what == "neg" else (lambda a: encode(np.abs(a), kind))
        return _halfwise(ins, cx, kind, packed, 1, f)
    st = U32 if packed else U16
    bit = st.type(0x8000_8000 if packed else 0x8000)
    o = ins.operands
    ra = reader(o[1], st, cx, ins)
    w = writer(o[0], st, cx, ins)
    if what == "neg":
        return lambda fr, m: w(fr, ra(fr) ^ bit, m)
    keep = st.type(~int(bit) & (0xFFFF_FFFF if packed else 0xFFFF))
    return lambda fr, m: w(fr, ra(fr) & keep, m)


def approx(ins: Instruction, cx: CompileContext, kind_packed: tuple[str, bool], fn64) -> Exec:
    """ex2/tanh/rcp/sqrt/rsqrt/lg2/sin/cos.approx on halves: computed in float64, rounded once
    (well inside the hardware's documented error)."""
    kind, packed = kind_packed
    return _halfwise(ins, cx, kind, packed, 1, lambda a: encode(fn64(a.astype(F64)), kind))


# --- comparisons ---------------------------------------------------------------------------------
def compare_parts(ins: Instruction, cx: CompileContext, kind: str, packed: bool, fn):
    """Readers giving per-half comparison results: (frame -> [low, high] or [value])."""
    o = ins.operands
    st = U32 if packed else U16
    ra, rb = reader(o[1], st, cx, ins), reader(o[2], st, cx, ins)
    ftz = "ftz" in ins.mods and kind == "f16"
    sixteen = U32.type(16)

    def dec(bits):
        v = decode(bits, kind)
        return _flush(v, kind) if ftz else v

    def results(fr) -> list[np.ndarray]:
        a, b = _arr(ra(fr)), _arr(rb(fr))
        if not packed:
            return [_out(fn(dec(a), dec(b)))]
        lo = fn(dec(a.astype(U16)), dec(b.astype(U16)))
        hi = fn(dec((a >> sixteen).astype(U16)), dec((b >> sixteen).astype(U16)))
        return [_out(lo), _out(hi)]

    return results


def setp(ins: Instruction, cx: CompileContext, kind_packed, fn, boolop) -> Exec:
    """setp.cmp[.bop].{f16,bf16}[x2] p[|q], a, b[, c]: a packed compare writes the low half's
    result to p and the high half's to q."""
    kind, packed = kind_packed
    res = compare_parts(ins, cx, kind, packed, fn)
    d = ins.operands[0]
    rc = reader(ins.operands[3], BOOL, cx, ins) if boolop is not None else None
    if isinstance(d, Pair):
        w1, w2 = writer(d.first, BOOL, cx, ins), writer(d.second, BOOL, cx, ins)
    else:
        w1, w2 = writer(d, BOOL, cx, ins), None

    def f(fr, m):
        r = res(fr)
        c = rc(fr) if rc is not None else None
        if packed:
            p, q = r
        else:
            p, q = r[0], ~r[0]
        if c is not None:
            p, q = boolop(p, c), boolop(q, c)
        w1(fr, p, m)
        if w2 is not None:
            w2(fr, q, m)

    return f


def set_(ins: Instruction, cx: CompileContext, kind_packed, fn, boolop) -> Exec:
    """set.cmp[.bop].dtype.{f16,bf16}[x2]: each (half) result is 1.0 in a half destination,
    all ones in an integer one, and 0 when false."""
    kind, packed = kind_packed
    res = compare_parts(ins, cx, kind, packed, fn)
    dname = ins.types[0]
    rc = reader(ins.operands[3], BOOL, cx, ins) if boolop is not None else None
    if dname in HALF_TYPES:
        yes = _ONE[HALF_TYPES[dname][0]]
    elif dname == "f32":
        yes = None
    else:
        yes = U16.type(0xFFFF)
    dt = DTYPES[dname]
    w = writer(ins.operands[0], U32 if packed else dt, cx, ins)

    def f(fr, m):
        r = res(fr)
        if rc is not None:
            c = rc(fr)
            r = [boolop(x, c) for x in r]
        if packed:
            lo = np.where(r[0], yes, U16.type(0)).astype(U32)
            hi = np.where(r[1], yes, U16.type(0)).astype(U32)
            w(fr, _out(lo | (hi << U32.type(16))), m)
        elif yes is None:
            w(fr, _out(np.where(r[0], F32.type(1), F32.type(0))), m)
        elif dt.itemsize == 2:
            w(fr, _out(np.where(r[0], yes, U16.type(0)).view(dt)), m)
        else:
            ones = np.array(-1).astype(dt)[()] if dt.kind == "i" else dt.type(np.iinfo(dt).max)
            w(fr, _out(np.where(r[0], ones, dt.type(0))), m)

    return f


# --- conversions ---------------------------------------------------------------------------------
def _int_odd(a: np.ndarray) -> np.ndarray:
    """Integers -> float64 rounded to odd (exact for up to 32 bits)."""
    if a.dtype.itemsize <= 4:
        return a.astype(F64)
    sh = a.dtype.type(32)
    hi = (a >> sh).astype(F64) * 2.0**32
    lo = (a & a.dtype.type(0xFFFF_FFFF)).astype(F64)
    s, e = fp.two_sum(hi, lo)
    return _arr(fp.round_to_odd(s, e))


def convert(ins: Instruction, cx: CompileContext, dname: str, sname: str, int_round) -> Exec:
    """cvt where one side is ``.f16``/``.bf16`` and the other anything (f16 <-> f32 pairs keep
    their own paths); ``int_round`` maps ``.rni``-style modifiers to numpy rounding."""
    mode = rounding(ins)
    irnd = next((m for m in ins.mods if m in int_round), None)
    o = ins.operands
    sat, relu = "sat" in ins.mods, "relu" in ins.mods
    ftz = "ftz" in ins.mods
    shalf = HALF_TYPES.get(sname)
    dhalf = HALF_TYPES.get(dname)
    if (shalf and shalf[1]) or (dhalf and dhalf[1]):
        raise cx.fault(ins, "not_supported", f"cvt between {dname} and {sname}")
    sdt = U16 if shalf else DTYPES[sname]
    ra = reader(o[1], sdt, cx, ins)
    ddt = U16 if dhalf else DTYPES[dname]
    w = writer(o[0], ddt, cx, ins)

    def source(fr) -> np.ndarray:
        x = _arr(ra(fr))
        if shalf:
            v = decode(x, shalf[0]).astype(F64)
            return _flush(v, shalf[0]) if ftz and shalf[0] == "f16" else v
        if sdt.kind == "f":
            v = x.astype(F64)
            return _flush(v, "bf16") if ftz and sdt == F32 else v
        return _int_odd(x)

    if dhalf:
        kind = dhalf[0]

        def to_half(fr, m):
            v = source(fr)
            if irnd is not None:  # round to an integral value in the same format
                v = int_round[irnd](v)
            if sat:
                v = np.where(v > 0, np.minimum(v, 1.0), 0.0)
            if relu:
                v = np.where(v <= 0, 0.0, v)
            w(fr, _out(encode(v, kind, mode)), m)

        return to_half

    if ddt.kind in "iu":
        from .ops_float import _float_to_int

        rnd = int_round[irnd or "rzi"]
        return lambda fr, m: w(fr, _float_to_int(source(fr), ddt, rnd), m)

    def to_float(fr, m):  # f32/f64 hold every half value exactly
        v = source(fr)
        if ddt == F32 and irnd is not None:
            v = int_round[irnd](v)
        w(fr, _out(v.astype(ddt)), m)

    return to_float


# --- atomics -------------------------------------------------------------------------------------
def atomic_combine(opname: str, kind: str, packed: bool) -> Callable | None:
    """``(old bits, operand bits) -> new bits`` for atom/red on half types (add, min, max)."""

    def one(a, b):
        x, y = decode(a, kind), decode(b, kind)
        if opname == "add":
            return encode(_exact_sum(x, y), kind, "rn")
        r = np.fmin(x, y) if opname == "min" else np.fmax(x, y)
        return encode(r, kind)

    if opname not in ("add", "min", "max"):
        return None
    if not packed:
        return one
    sixteen = U32.type(16)

    def two(a, b):
        lo = one(a.astype(U16), b.astype(U16)).astype(U32)
        hi = one((a >> sixteen).astype(U16), (b >> sixteen).astype(U16)).astype(U32)
        return lo | (hi << sixteen)

    return two


def atomic_rounds(buf: np.ndarray, el: np.ndarray, x: np.ndarray, combine: Callable) -> np.ndarray:
    """Apply ``combine`` atomically in lane order; returns each lane's old value.

    Lanes are ranked within their address; round ``r`` updates every address's ``r``-th lane at
    once, so the cost is one vector step per round (the longest conflict chain)."""
    n = el.size
    x = np.broadcast_to(x, (n,))
    order = np.argsort(el, kind="stable")
    se = el[order]
    start = np.empty(n, BOOL)
    start[0] = True
    np.not_equal(se[1:], se[:-1], out=start[1:])
    seg_start = np.flatnonzero(start)
    rank = np.arange(n) - seg_start[np.cumsum(start) - 1]
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max()) + 2))
    old_sorted = np.empty(n, buf.dtype)
    xs = x[order]
    for r in range(bounds.size - 1):
        sel = by_rank[bounds[r] : bounds[r + 1]]
        a = se[sel]
        cur = buf[a]
        old_sorted[sel] = cur
        buf[a] = combine(cur, xs[sel])
    old = np.empty(n, buf.dtype)
    old[order] = old_sorted
    return old


__all__ = [
    "HALF_TYPES",
    "arithmetic",
    "atomic_combine",
    "atomic_rounds",
    "convert",
    "decode",
    "encode",
    "half_of",
    "minmax",
    "set_",
    "setp",
    "sign_op",
]


# --- 8-bit floats (cuda_fp8.h: __nv_fp8_e4m3, __nv_fp8_e5m2) -----------------------------------
#: (exponent bits, mantissa bits, bias, largest finite value, has infinities)
FP8 = {"e4m3": (4, 3, 7, 448.0, False), "e5m2": (5, 2, 15, 57344.0, True)}


def _fp8_table(kind: str) -> np.ndarray:
    """float64 value of each of the 256 bit patterns."""
    ebits, mbits, bias, _, has_inf = FP8[kind]
    out = np.empty(256, np.float64)
    for b in range(256):
        s, e, mnt = b >> 7, (b >> mbits) & ((1 << ebits) - 1), b & ((1 << mbits) - 1)
        if e == (1 << ebits) - 1 and (has_inf or mnt == (1 << mbits) - 1):
            v = (np.inf if mnt == 0 else np.nan) if has_inf else np.nan
        elif e == 0:
            v = mnt * 2.0 ** (1 - bias - mbits)
        else:
            v = (1 + mnt / (1 << mbits)) * 2.0 ** (e - bias)
        out[b] = -v if s else v
    return out


_FP8_VALUES = {k: _fp8_table(k) for k in FP8}


def fp8_decode(bits, kind: str) -> np.ndarray:
    return _FP8_VALUES[kind][_arr(bits).astype(np.uint8)]


def fp8_encode(x, kind: str, relu: bool = False) -> np.ndarray:
    """float64 values -> fp8 bits, round to nearest even, saturating finite (``.satfinite``):
    magnitudes past the largest finite value (infinities included) become it, NaN stays NaN."""
    _, mbits, bias, top, _ = FP8[kind]
    x = _arr(x).astype(np.float64)
    if relu:
        x = np.where(x < 0, 0.0, x)
    sign = np.signbit(x)
    a = np.abs(x)
    nan = np.isnan(a)
    a = np.where(nan, 0.0, np.minimum(a, top))
    emin = 1 - bias
    e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    e = np.maximum(e, emin)
    q = np.exp2(e - mbits)
    r = np.minimum(np.rint(a / q) * q, top)  # exact scaling by powers of two
    e2 = np.floor(np.log2(np.where(r > 0, r, 1.0)))
    normal = r >= 2.0**emin
    expf = np.where(normal, e2 + bias, 0)
    mant = np.where(normal, (r / np.exp2(e2) - 1) * (1 << mbits), r / 2.0 ** (emin - mbits))
    bits = (expf.astype(np.int64) << mbits) | np.rint(mant).astype(np.int64)
    bits = np.where(nan, 0x7F, bits) | (sign.astype(np.int64) << 7)
    return bits.astype(np.uint8)


def convert_fp8(ins: Instruction, cx: CompileContext, fmt: str) -> Exec:
    """cvt.rn.satfinite[.relu].{e4m3x2,e5m2x2}.{f32 (two operands), f16x2} packs two values into
    16 bits (the first operand in the high byte); cvt.rn[.relu].f16x2.{e4m3x2,e5m2x2} unpacks
    them into halves, exactly."""
    kind = fmt[:-2]
    relu = "relu" in ins.mods
    o = ins.operands
    ts = ins.types
    eight = U16.type(8)
    if ts == ["f16x2"] and ins.mods.index(fmt) > ins.mods.index("f16x2"):  # unpack
        ra = reader(o[1], U16, cx, ins)
        w = writer(o[0], U32, cx, ins)

        def unpack(fr, m):
            v = _arr(ra(fr)).astype(U16)
            lo, hi = fp8_decode(v & U16.type(0xFF), kind), fp8_decode(v >> eight, kind)
            if relu:
                lo, hi = np.where(lo < 0, 0.0, lo), np.where(hi < 0, 0.0, hi)
            h = [encode(x, "f16").astype(U32) for x in (lo, hi)]
            w(fr, _out(h[0] | (h[1] << U32.type(16))), m)

        return unpack
    w = writer(o[0], U16, cx, ins)
    if ts == ["f32"] and len(o) == 3:
        ra, rb = reader(o[1], F32, cx, ins), reader(o[2], F32, cx, ins)

        def pack(fr, m):
            hi = fp8_encode(_arr(ra(fr)).astype(F64), kind, relu).astype(U16)
            lo = fp8_encode(_arr(rb(fr)).astype(F64), kind, relu).astype(U16)
            w(fr, _out((hi << eight) | lo), m)

        return pack
    if ts == ["f16x2"]:
        ra = reader(o[1], U32, cx, ins)

        def pack_halves(fr, m):
            v = _arr(ra(fr)).astype(U32)
            lo = fp8_encode(decode(v.astype(U16), "f16"), kind, relu).astype(U16)
            hi = fp8_encode(decode((v >> U32.type(16)).astype(U16), "f16"), kind, relu)
            w(fr, _out((hi.astype(U16) << eight) | lo), m)

        return pack_halves
    raise cx.fault(ins, "not_supported", f"cvt `{ins.text}` is not supported")
