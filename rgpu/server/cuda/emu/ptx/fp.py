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
  sums: proved algorithms using rounding to odd", IEEE TC 2008). Products that overflow the
  splitting range (|a|, |b| above 2**995) or underflow fall back to ``a*b + c`` with two
  roundings; that is the one documented inexactness.

float32 ``add/sub/mul/div/sqrt`` in round-to-nearest are computed in float64 and rounded once
to float32; this is exact because 53 >= 2*24 + 2 (Figueroa's double-rounding theorem), and
float32 products are exact in float64.
"""

from __future__ import annotations

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


# --- correctly rounded operations ----------------------------------------------------------
def add(a, b, dt: np.dtype, mode: str):
    """a + b rounded to ``dt`` in ``mode`` (inputs already of dtype ``dt``)."""
    if mode == "rn" and dt != F16:
        return a + b
    a64 = np.asarray(a, F64)
    b64 = np.asarray(b, F64)
    s, e = two_sum(a64, b64)
    if dt == F64:
        return adjust_directed(a + b, e, mode)
    return round_from_f64(round_to_odd(s, e), dt, mode)


def mul(a, b, dt: np.dtype, mode: str):
    """a * b rounded to ``dt`` in ``mode``."""
    if mode == "rn" and dt != F16:
        return a * b
    if dt == F64:
        p, e = two_prod(a, b)
        return adjust_directed(p, e, mode)
    return round_from_f64(np.asarray(a, F64) * np.asarray(b, F64), dt, mode)


def fma(a, b, c, dt: np.dtype, mode: str):
    """a * b + c with a single rounding to ``dt`` in ``mode``."""
    if dt == F64:
        uh, ul = two_prod(a, b)
        th, tl = two_sum(c, uh)
        vs, ve = two_sum(tl, ul)
        v = round_to_odd(vs, ve)
        r, err = two_sum(th, v)
        if mode == "rn":
            return r
        err = np.where(err != 0, err, ve) if np.ndim(err) or np.ndim(ve) else (err or ve)
        return adjust_directed(r, err, mode)
    p = np.asarray(a, F64) * np.asarray(b, F64)  # exact for float32/float16 inputs
    s, e = two_sum(p, np.asarray(c, F64))
    return round_from_f64(round_to_odd(s, e), dt, mode)


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
        return adjust_directed(q, err, mode)
    return round_from_f64(round_to_odd(q, err), dt, mode)


def sqrt(a, dt: np.dtype, mode: str):
    """Square root rounded to ``dt`` in ``mode``."""
    a64 = np.asarray(a, F64)
    q = np.sqrt(a64)
    if mode == "rn":
        return q if dt == F64 else (q.astype(dt) if np.ndim(q) else dt.type(q))
    p, pe = two_prod(q, q)
    err = np.where(np.isfinite(q) & (q > 0), (a64 - p) - pe, 0.0)
    if dt == F64:
        return adjust_directed(q, err, mode)
    return round_from_f64(round_to_odd(q, err), dt, mode)
