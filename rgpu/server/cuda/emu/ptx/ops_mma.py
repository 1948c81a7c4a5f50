"""Warp matrix multiply-accumulate (``wmma.load``/``wmma.mma``/``wmma.store``, nvcuda::wmma).

A WMMA fragment's distribution over the lanes of a warp is unspecified by PTX: programs only
fill, scale, load, multiply and store whole fragments. The emulator therefore picks the simplest
layout: a fragment holds its matrix in row-major order, lane ``l`` owning elements
``l*E ... l*E+E-1`` (``E`` = elements / 32). Fragments whose registers have room for more
elements than that (the f16 A and B fragments repeat data on the hardware too) repeat the lane's
elements in the spare slots, so element-wise code over ``num_elements`` stays consistent.

``wmma.mma`` gathers each warp's fragments into matrices and computes ``D = A @ B + C`` in
float64 (int64 for integer types): products of f16/bf16/tf32 inputs are exact there, and the sum
is rounded once to the accumulator type, within the hardware's (unspecified) accumulation
error. The PTX-level ``mma``/``ldmatrix`` instructions, whose fragment layouts the hardware does
define, and sub-byte types are not supported.
"""

from __future__ import annotations

import numpy as np

from .compiler import U16, U32, U64, CompileContext, Exec, addr_reader, op, reader, unsupported
from .half import decode, encode
from .ir import DTYPES, Addr, Instruction, Reg, Vec

SHAPES = {
    "m16n16k16": (16, 16, 16), "m32n8k16": (32, 8, 16), "m8n32k16": (8, 32, 16),
    "m16n16k8": (16, 16, 8), "m8n8k4": (8, 8, 4),
}  # fmt: skip
#: element type -> bits per element
BITS = {"f16": 16, "bf16": 16, "tf32": 32, "s8": 8, "u8": 8, "f32": 32, "s32": 32, "f64": 64}
_RAW = {8: np.dtype(np.uint8), 16: U16, 32: U32, 64: U64}
_SPACES = ("global", "shared", "local")


def _dims(which: str, shape: tuple[int, int, int]) -> tuple[int, int]:
    m, n, k = shape
    return {"a": (m, k), "b": (k, n)}.get(which, (m, n))


def _regs(frag, cx: CompileContext, ins: Instruction) -> list[Reg]:
    if not isinstance(frag, Vec) or not all(isinstance(r, Reg) for r in frag.items):
        raise cx.fault(ins, "invalid_ptx", "a wmma fragment is a vector of registers")
    return list(frag.items)  # type: ignore[arg-type]


class _Fragment:
    """How one fragment's elements sit in its registers."""

    def __init__(self, regs: list[Reg], etype: str, rows: int, cols: int) -> None:
        self.regs = regs
        self.etype = etype
        self.ebits = BITS[etype]
        self.rbits = 64 if any(DTYPES[r.type].itemsize == 8 for r in regs) else 32
        self.per_reg = max(1, self.rbits // self.ebits)
        self.slots = len(regs) * self.per_reg
        self.rows, self.cols = rows, cols
        self.E = rows * cols // 32  # elements a lane owns

    def unpack(self, fr, lanes: int) -> np.ndarray:
        """(lanes, E) raw element bits (as uint64) from the registers."""
        rt = U64 if self.rbits == 64 else U32
        mask = np.uint64((1 << self.ebits) - 1) if self.ebits < 64 else None
        out = np.zeros((lanes, self.E), np.uint64)
        for s in range(min(self.E, self.slots)):
            r, j = divmod(s, self.per_reg)
            v = fr.regs[self.regs[r].index]
            v = np.broadcast_to(np.asarray(v).view(rt) if np.asarray(v).dtype.itemsize ==
                                rt.itemsize else np.asarray(v).astype(rt), (lanes,))  # fmt: skip
            v = v.astype(np.uint64)
            if mask is not None:
                v = (v >> np.uint64(j * self.ebits)) & mask
            out[:, s] = v
        return out

    def pack(self, fr, bits: np.ndarray, m) -> None:
        """Write (lanes, E) element bits into the registers (spare slots repeat elements)."""
        lanes = bits.shape[0]
        for r, reg in enumerate(self.regs):
            word = np.zeros(lanes, np.uint64)
            for j in range(self.per_reg):
                s = (r * self.per_reg + j) % self.E
                word |= bits[:, s] << np.uint64(j * self.ebits)
            dt = DTYPES[reg.type]
            v = word.astype(U64 if dt.itemsize == 8 else U32)
            v = v.view(dt) if dt.itemsize == v.dtype.itemsize else v.astype(dt)
            if m is not None:
                v = np.where(m, v, fr.regs[reg.index])
            fr.regs[reg.index] = v


def _values(bits: np.ndarray, etype: str) -> np.ndarray:
    """Element bits -> float64 (or int64) values."""
    if etype in ("f16", "bf16"):
        return decode(bits.astype(U16), etype).astype(np.float64)
    if etype == "tf32":  # the hardware reads 10 of the 23 mantissa bits
        return (bits.astype(U32) & U32.type(0xFFFF_E000)).view(np.float32).astype(np.float64)
    if etype == "f32":
        return bits.astype(U32).view(np.float32).astype(np.float64)
    if etype == "f64":
        return bits.view(np.float64)
    if etype == "s8":
        return bits.astype(np.uint8).view(np.int8).astype(np.int64)
    if etype == "s32":
        return bits.astype(U32).view(np.int32).astype(np.int64)
    return bits.astype(np.int64)  # u8


def _bits(values: np.ndarray, etype: str) -> np.ndarray:
    """float64/int64 values -> element bits (rounded to nearest)."""
    if etype in ("f16", "bf16"):
        return encode(values, etype).astype(np.uint64)
    if etype == "f32":
        return values.astype(np.float32).view(U32).astype(np.uint64)
    if etype == "f64":
        return values.astype(np.float64).view(np.uint64)
    return (values.astype(np.int64) & 0xFFFF_FFFF).astype(np.uint64)  # s32 wraps


def _addresses(base, ldm, shape: tuple[int, int], layout: str, E: int, ebytes: int, lane):
    """(lanes, E) byte addresses of the elements each lane owns."""
    e = lane[:, None] * E + np.arange(E, dtype=np.int64)[None, :]
    r, c = np.divmod(e, shape[1])
    off = r * ldm[:, None] + c if layout == "row" else c * ldm[:, None] + r
    return base[:, None].astype(np.int64) + off * ebytes


@op("wmma")
def _wmma(ins: Instruction, cx: CompileContext) -> Exec:
    mods = ins.mods
    shape_name = next((x for x in mods if x in SHAPES), None)
    if shape_name is None or not mods:
        return unsupported(ins, cx, f"wmma shape of `{ins.opcode}.{'.'.join(mods)}`")
    shape = SHAPES[shape_name]
    if mods[0] in ("load", "store"):
        return _wmma_memory(ins, cx, shape)
    if mods[0] == "mma":
        return _wmma_mma(ins, cx, shape)
    return unsupported(ins, cx)


def _wmma_memory(ins: Instruction, cx: CompileContext, shape) -> Exec:
    mods = ins.mods
    store = mods[0] == "store"
    which = mods[1]
    layout = "col" if "col" in mods else "row"
    etype = next((x for x in reversed(mods) if x in BITS), None)
    space = next((x for x in mods if x in _SPACES), "generic")
    if etype is None or which not in ("a", "b", "c", "d"):
        return unsupported(ins, cx)
    o = ins.operands
    frag_op, addr_op = (o[1], o[0]) if store else (o[0], o[1])
    if not isinstance(addr_op, Addr):
        raise cx.fault(ins, "invalid_ptx", "wmma needs an address operand")
    rows, cols = _dims(which, shape)
    frag = _Fragment(_regs(frag_op, cx, ins), etype, rows, cols)
    rd_addr, sym_space = addr_reader(addr_op, cx, ins)
    if space == "generic" and sym_space is not None:
        space = sym_space
    rstride = reader(o[2], U32, cx, ins) if len(o) > 2 else None
    default_ld = cols if layout == "row" else rows
    ebytes = frag.ebits // 8
    raw = _RAW[frag.ebits]
    fault = cx.faulter(ins)

    def f(fr, m):
        L = fr.L
        n = L.N
        idx = np.flatnonzero(m) if m is not None else np.arange(n)
        base = np.broadcast_to(np.asarray(rd_addr(fr)).astype(np.int64), (n,))[idx]
        ld = rstride(fr) if rstride is not None else default_ld
        ld = np.broadcast_to(np.asarray(ld).astype(np.int64), (n,))[idx]
        lane = L.geo.laneid.astype(np.int64)[idx]
        addrs = _addresses(base, ld, (rows, cols), layout, frag.E, ebytes, lane)
        flat = addrs.reshape(-1).astype(U64)
        groups = L.resolve(space, flat, ebytes, raw, np.repeat(idx, frag.E), fault)
        if store:
            bits = frag.unpack(fr, n)[idx].reshape(-1)
            for sel, buf, el in groups:
                vals = bits if sel is None else bits[sel]
                buf[el] = vals.astype(raw)
            return
        got = np.zeros(flat.size, np.uint64)
        for sel, buf, el in groups:
            if sel is None:
                got = buf[el].astype(np.uint64)
            else:
                got[sel] = buf[el]
        bits = np.zeros((n, frag.E), np.uint64)
        bits[idx] = got.reshape(idx.size, frag.E)
        frag.pack(fr, bits, m)

    return f


def _wmma_mma(ins: Instruction, cx: CompileContext, shape) -> Exec:
    ts = [x for x in ins.mods if x in BITS]
    if len(ts) == 2:  # .dtype.ctype with f16 inputs
        dtype, atype, btype, ctype = ts[0], "f16", "f16", ts[1]
    elif len(ts) == 4:
        dtype, atype, btype, ctype = ts
    else:
        return unsupported(ins, cx)
    if "satfinite" in ins.mods and dtype != "s32":
        return unsupported(ins, cx, "wmma.mma .satfinite on floating-point accumulators")
    m_, n_, k_ = shape
    o = ins.operands
    fd, fa, fb, fc = (
        _Fragment(_regs(o[i], cx, ins), t, *_dims(w, shape))
        for i, t, w in ((0, dtype, "d"), (1, atype, "a"), (2, btype, "b"), (3, ctype, "c"))
    )
    integer = dtype == "s32"
    sat = "satfinite" in ins.mods
    bad_warp = cx.fault(ins, "not_supported", "wmma in a block whose size is not whole warps")

    def f(fr, m):
        L = fr.L
        n = L.N
        if not L.geo.full_warps:
            raise bad_warp
        w = n // 32

        def matrix(frag: _Fragment, rows: int, cols: int) -> np.ndarray:
            v = _values(frag.unpack(fr, n), frag.etype)
            return v.reshape(w, 32 * frag.E)[:, : rows * cols].reshape(w, rows, cols)

        a, b, c = matrix(fa, m_, k_), matrix(fb, k_, n_), matrix(fc, m_, n_)
        if integer:
            d = np.einsum("wik,wkj->wij", a, b) + c
            if sat:
                d = np.clip(d, -(2**31), 2**31 - 1)
        else:
            d = np.matmul(a, b) + c
        bits = _bits(d.reshape(w, m_ * n_), dtype).reshape(n, fd.E)
        fd.pack(fr, bits, m)

    return f


__all__ = ["SHAPES"]
