"""IEEE rounding helpers that numpy lacks: directed rounding, exact FMA, flush-to-zero.

numpy computes float32 and float64 arithmetic round-to-nearest only and has no fused
multiply-add. PTX needs ``.rz/.rm/.rp`` and an exactly rounded ``fma``. Everything here is
vectorised and built from error-free transformations:

* ``two_sum`` (Knuth) and ``two_prod`` (Veltkamp/Dekker splitting) give the exact rounding
  error of one float64 addition or multiplication;
* *round to odd* (Boldo & Melquiond) turns a float64 value plus its error into a float64 that
  rounds to any narrower format in any mode exactly as the infinitely precise value would,
  because float64 keeps more than ``p + 2`` bits of a float32/float16 result;
* a float64 FMA is ``RN(th + RO(tl + ul))`` with ``(uh, ul) = a*b`` exactly and
  ``(th, tl) = c + uh`` exactly (Boldo & Melquiond, "Emulation of FMA and correctly rounded
  sums: proved algorithms using rounding to odd", IEEE TC 2008).

The error-free transformations need their error terms representable: splitting fails above
2**995 and an error term below the subnormal range is lost. So float64 lanes whose operands or
result lie outside [2**-900, 2**900] (results that overflow or underflow included), in a
directed mode or in an FMA, are computed again exactly with rationals (``fractions.Fraction``)
and rounded by :func:`round_rational`; such lanes are rare, so their slowness does not matter.
An exact zero sum is -0 in round-toward-minus-infinity and +0 otherwise, unless both addends
are zeros of the same sign (IEEE 754 section 6.3).

float32 ``add/sub/mul/div/sqrt`` in round-to-nearest are computed in float64 and rounded once
to float32; this is exact because 53 >= 2*24 + 2 (Figueroa's double-rounding theorem), and
float32 products are exact in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
F16 = np.dtype(np.float16)

_SPLIT = np.float64(134217729.0)  # 2**27 + 1
_SPLIT_LIMIT = np.float64(2.0**995)
_TINY = {F32: np.float32(2.0**-126), F64: np.float64(2.0**-1022), F16: np.float16(2.0**-14)}


def two_sum(a, b):
    """s = fl(a+b) and e with a + b == s + e exactly (0 where s is not finite)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    if np.ndim(e):
        e = np.where(np.isfinite(e), e, 0.0)
    elif not np.isfinite(e):
        e = np.float64(0.0)
    return s, e


def _split(a):
    c = _SPLIT * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a, b):
    """p = fl(a*b) and e with a*b == p + e exactly when no overflow/underflow occurs."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    ok = np.isfinite(e) & (np.abs(a) < _SPLIT_LIMIT) & (np.abs(b) < _SPLIT_LIMIT)
    if np.ndim(ok):
        e = np.where(ok, e, 0.0)
    elif not ok:
        e = np.float64(0.0)
    return p, e


def round_to_odd(s, e):
    """Nudge float64 ``s`` to an odd mantissa when the exact value s + e is not s itself."""
    s = np.asarray(s, F64)
    e = np.asarray(e, F64)
    bits = s.view(np.int64)
    inexact = (e != 0) & ((bits & 1) == 0)
    if not np.any(inexact):
        return s[()] if s.ndim == 0 else s
    step = np.where(np.signbit(e) == np.signbit(s), 1, -1).astype(np.int64)
    out = np.where(inexact, bits + step, bits).view(F64)
    return out[()] if out.ndim == 0 else out


def round_from_f64(x, dt: np.dtype, mode: str):
    """Round float64 values to ``dt`` (float32/float16/float64) in ``mode`` rn/rz/rm/rp.

    For a narrower ``dt``, ``x`` must already carry round-to-odd information when it is not
    exact. For float64 targets ``x`` is returned unchanged (the caller handles directed modes
    with :func:`adjust_directed`).
    """
    if dt == F64:
        return x
    r = np.asarray(x).astype(dt)
    if mode == "rn":
        return r[()] if r.ndim == 0 else r
    r64 = r.astype(F64)
    if mode == "rz":
        fix = np.abs(r64) > np.abs(x)
        tgt = np.zeros_like(r)
    elif mode == "rm":
        fix = r64 > x
        tgt = np.full_like(r, -np.inf)
    else:  # rp
        fix = r64 < x
        tgt = np.full_like(r, np.inf)
    if np.any(fix):
        r = np.where(fix, np.nextafter(r, tgt), r)
    return r[()] if np.ndim(r) == 0 else r


def adjust_directed(r, err, mode: str):
    """Fix a round-to-nearest float64 result ``r`` given the sign of ``exact - r``."""
    if mode == "rn":
        return r
    if mode == "rm":
        fix = err < 0
        tgt = -np.inf
    elif mode == "rp":
        fix = err > 0
        tgt = np.inf
    else:
        fix = (err != 0) & (np.signbit(err) != np.signbit(r))
        tgt = 0.0
    if np.any(fix):
        r = np.where(fix, np.nextafter(r, np.asarray(tgt, r.dtype)), r)
        if np.ndim(r) == 0:
            r = r[()]
    return r


def ftz(x):
    """Flush subnormal values to sign-preserving zero (PTX ``.ftz``)."""
    tiny = _TINY[np.asarray(x).dtype]
    sub = (np.abs(x) < tiny) & (x != 0)
    if np.ndim(sub):
        if sub.any():
            return np.where(sub, np.copysign(np.zeros((), x.dtype), x), x)
        return x
    if sub:
        return np.copysign(x.dtype.type(0), x)
    return x


def saturate(x):
    """Clamp to [0, 1]; NaN becomes +0 (PTX ``.sat`` on floats)."""
    one = x.dtype.type(1)
    r = np.where(x > 0, np.minimum(x, one), x.dtype.type(0))
    return r if np.ndim(r) else r[()]


# --- exact float64 rounding for the lanes the fast paths cannot do -------------------------
_SAFE_LO = 2.0**-900
_SAFE_HI = 2.0**900


def round_rational(x: Fraction, mode: str) -> float:
    """The float64 nearest to the exact non-zero rational ``x`` in ``mode`` rn/rz/rm/rp."""
    try:
        r = x.numerator / x.denominator  # correctly rounded to nearest by CPython
    except OverflowError:
        r = math.inf if x > 0 else -math.inf
    if r == 0:
        r = 0.0 if x > 0 else -0.0
    if mode == "rn":
        return r
    above = r > 0 if math.isinf(r) else Fraction(r) > x
    below = r < 0 if math.isinf(r) else Fraction(r) < x
    if mode == "rm" and above:
        return math.nextafter(r, -math.inf)
    if mode == "rp" and below:
        return math.nextafter(r, math.inf)
    if mode == "rz" and ((x > 0 and above) or (x < 0 and below)):
        return math.nextafter(r, 0.0)
    return r


def _outside(x):
    """Non-zero values outside the range where the error-free transformations are exact."""
    ax = np.abs(x)
    return (ax != 0) & ((ax < _SAFE_LO) | (ax > _SAFE_HI))


def _all_finite(*xs):
    ok = np.isfinite(xs[0])
    for x in xs[1:]:
        ok = ok & np.isfinite(x)
    return ok


def _redo_exactly(r, risky, operands: tuple, exact: Callable[..., float]):
    """``r`` with the ``risky`` lanes replaced by ``exact(*their operands as floats)``."""
    if not np.any(risky):
        return r
    arrs = np.broadcast_arrays(*(np.atleast_1d(np.asarray(o, F64)) for o in operands),
                               np.atleast_1d(np.asarray(r, F64)), np.atleast_1d(risky))
    out = np.array(arrs[-2], F64)
    for i in zip(*np.nonzero(arrs[-1]), strict=True):
        out[i] = exact(*(float(a[i]) for a in arrs[:-2]))
    return out if np.ndim(r) or np.ndim(risky) else out.reshape(())[()]


def _rm_zero(r, exact_zero):
    """Round toward minus infinity: the ``exact_zero`` lanes (a sum that cancels exactly, not
    two +0 addends) are -0."""
    if not np.any(exact_zero):
        return r
    r = np.where(exact_zero, np.copysign(np.zeros((), np.asarray(r).dtype), -1.0), r)
    return r[()] if np.ndim(r) == 0 else r


def _not_both_plus_zero(p, c):
    return ~((p == 0) & (c == 0) & ~np.signbit(p) & ~np.signbit(c))


# --- correctly rounded operations ----------------------------------------------------------
def add(a, b, dt: np.dtype, mode: str):
    """a + b rounded to ``dt`` in ``mode`` (inputs already of dtype ``dt``)."""
    if mode == "rn" and dt != F16:
        return a + b
    a64 = np.asarray(a, F64)
    b64 = np.asarray(b, F64)
    s, e = two_sum(a64, b64)
    if dt == F64:
        r = adjust_directed(a + b, e, mode)
        if mode != "rn":  # an overflowed sum: the directed modes may keep the largest finite
            r = _redo_exactly(r, np.isinf(r) & _all_finite(a64, b64), (a64, b64),
                              lambda x, y: round_rational(Fraction(x) + Fraction(y), mode))
    else:
        r = round_from_f64(round_to_odd(s, e), dt, mode)
    if mode == "rm":  # a zero sum is exact: sums never underflow
        r = _rm_zero(r, (r == 0) & _not_both_plus_zero(a64, b64))
    return r


def mul(a, b, dt: np.dtype, mode: str):
    """a * b rounded to ``dt`` in ``mode``."""
    if mode == "rn" and dt != F16:
        return a * b
    if dt == F64:
        p, e = two_prod(a, b)
        r = adjust_directed(p, e, mode)
        risky = _all_finite(a, b) & (a != 0) & (b != 0) & (
            _outside(a) | _outside(b) | _outside(p) | (p == 0) | np.isinf(p))
        return _redo_exactly(r, risky, (a, b),
                             lambda x, y: round_rational(Fraction(x) * Fraction(y), mode))
    return round_from_f64(np.asarray(a, F64) * np.asarray(b, F64), dt, mode)


def _fma_exact(mode: str) -> Callable[[float, float, float], float]:
    def exact(a: float, b: float, c: float) -> float:
        x = Fraction(a) * Fraction(b) + Fraction(c)
        if x != 0:
            return round_rational(x, mode)
        c_neg = math.copysign(1.0, c) < 0
        if (a == 0 or b == 0) and c == 0 and (math.copysign(1.0, a) * math.copysign(1.0, b)
                                              < 0) == c_neg:
            return -0.0 if c_neg else 0.0  # two zeros of one sign
        return -0.0 if mode == "rm" else 0.0

    return exact


def fma(a, b, c, dt: np.dtype, mode: str):
    """a * b + c with a single rounding to ``dt`` in ``mode``."""
    if dt == F64:
        uh, ul = two_prod(a, b)
        th, tl = two_sum(c, uh)
        vs, ve = two_sum(tl, ul)
        v = round_to_odd(vs, ve)
        r, err = two_sum(th, v)
        if mode != "rn":
            err = np.where(err != 0, err, ve) if np.ndim(err) or np.ndim(ve) else (err or ve)
            r = adjust_directed(r, err, mode)
        # an infinite c absorbs any finite product, even one that overflowed above
        absorbed = np.isinf(c) & np.isfinite(a) & np.isfinite(b)
        if np.any(absorbed):
            r = np.where(absorbed, c, r)
            r = r[()] if np.ndim(r) == 0 else r
        # exactly zero, known without rationals: c == -a*b, or two zero addends
        exact_zero = (th == 0) & (tl == 0) & (ul == 0)
        if mode == "rm":
            r = _rm_zero(r, exact_zero & _not_both_plus_zero(uh, c))
        risky = _all_finite(a, b, c) & (
            _outside(a) | _outside(b) | _outside(c) | _outside(uh) | _outside(r)
            | ((r == 0) & ~exact_zero) | ((uh == 0) & (a != 0) & (b != 0)) | np.isinf(r)
            | np.isinf(uh))
        return _redo_exactly(r, risky, (a, b, c), _fma_exact(mode))
    p = np.asarray(a, F64) * np.asarray(b, F64)  # exact for float32/float16 inputs
    c64 = np.asarray(c, F64)
    s, e = two_sum(p, c64)
    r = round_from_f64(round_to_odd(s, e), dt, mode)
    if mode == "rm":  # s == 0: the sum cancels exactly
        r = _rm_zero(r, (s == 0) & _not_both_plus_zero(p, c64))
    return r


def div(a, b, dt: np.dtype, mode: str):
    """a / b rounded to ``dt`` in ``mode``."""
    a64 = np.asarray(a, F64)
    b64 = np.asarray(b, F64)
    q = a64 / b64
    if mode == "rn" and dt != F64:
        return np.asarray(q).astype(dt)[()] if np.ndim(q) == 0 else q.astype(dt)
    if mode == "rn":
        return q
    p, pe = two_prod(q, b64)
    rem = (a64 - p) - pe
    err = np.where(np.isfinite(q) & (b64 != 0), rem * np.sign(b64), 0.0)
    if dt == F64:
        r = adjust_directed(q, err, mode)
        risky = _all_finite(a64, b64) & (a64 != 0) & (b64 != 0) & (
            _outside(a64) | _outside(b64) | _outside(q) | (q == 0) | np.isinf(q))
        return _redo_exactly(r, risky, (a64, b64),
                             lambda x, y: round_rational(Fraction(x) / Fraction(y), mode))
    return round_from_f64(round_to_odd(q, err), dt, mode)


def _sqrt_exact(mode: str) -> Callable[[float], float]:
    def exact(a: float) -> float:
        r = math.sqrt(a)  # correctly rounded to nearest
        sq, fa = Fraction(r) ** 2, Fraction(a)
        if mode in ("rm", "rz") and sq > fa:
            return math.nextafter(r, 0.0)
        if mode == "rp" and sq < fa:
            return math.nextafter(r, math.inf)
        return r

    return exact


def sqrt(a, dt: np.dtype, mode: str):
    """Square root rounded to ``dt`` in ``mode``."""
    a64 = np.asarray(a, F64)
    q = np.sqrt(a64)
    if mode == "rn":
        return q if dt == F64 else (q.astype(dt) if np.ndim(q) else dt.type(q))
    p, pe = two_prod(q, q)
    err = np.where(np.isfinite(q) & (q > 0), (a64 - p) - pe, 0.0)
    if dt == F64:
        r = adjust_directed(q, err, mode)
        risky = np.isfinite(a64) & (a64 > 0) & (_outside(a64) | _outside(q))
        return _redo_exactly(r, risky, (a64,), _sqrt_exact(mode))
    return round_from_f64(round_to_odd(q, err), dt, mode)
