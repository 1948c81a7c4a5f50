"""Turns parsed instructions into closures once, at first launch, so execution never looks at
strings: each instruction becomes ``fn(frame, mask)``.

Register model: a register holds the bits of its declared type in a numpy value of that dtype —
a numpy *scalar* while the value is the same for every lane (parameters, ``%ntid``, constants),
an array over the batch's lanes once it differs. An instruction reads each operand as its own
type (same size: a free ``view``; other sizes: truncation or sign/zero extension by the
register's signedness, as PTX defines for relaxed type checking) and writes back converting to
the destination's declared type. ``mask`` is None while every live lane executes, else a bool
array; masked writes merge with ``np.where`` and never modify an array in place, because
``mov`` lets several registers share one array.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import EmuFault
from .ir import DTYPES, Addr, Function, Imm, Instruction, NotPred, Operand, Reg, Sink, Special, Sym
from .parser import SPECIAL_REGISTERS

BOOL = np.dtype(np.bool_)
U8, U16, U32, U64 = (np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64))
S32, S64 = np.dtype(np.int32), np.dtype(np.int64)
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
UINT = {1: U8, 2: U16, 4: U32, 8: U64}
SINT = {1: np.dtype(np.int8), 2: np.dtype(np.int16), 4: S32, 8: S64}

#: Generic-address windows of the per-block and per-lane spaces. Global (and const) memory is
#: the device arena at ``memory.ARENA_BASE``; everything else a generic pointer can name lives in
#: one of these 4 GiB windows, so ``cvta`` is an addition and generic accesses decode per lane.
SHARED_WINDOW = 0x7E00_0000_0000
LOCAL_WINDOW = 0x7D00_0000_0000
PARAM_WINDOW = 0x7C00_0000_0000
WINDOW_SPAN = 1 << 32

Value = Any  # a numpy scalar or array
Exec = Callable[[Any, Any], None]


def convert(v: Value, src: np.dtype, dst: np.dtype) -> Value:
    """Reinterpret or resize the bits of ``v`` (dtype ``src``) as ``dst``.

    Same size: bit view. Integers of other sizes: truncate, or extend by ``src``'s signedness.
    Predicates convert to/from integers as 0/1. Floats of other sizes go through their bits.
    """
    if src == dst:
        return v
    if src == BOOL:
        return np.asarray(v).astype(dst)[()] if np.ndim(v) == 0 else v.astype(dst)
    if dst == BOOL:
        return v != 0
    if src.itemsize == dst.itemsize:
        return v.view(dst)
    if src.kind == "f":
        src2 = UINT[src.itemsize]
        v = v.view(src2)
        src = src2
    if dst.kind == "f":
        mid = UINT[dst.itemsize]
        r = v.astype(mid) if np.ndim(v) else mid.type(v)
        return r.view(dst)
    if dst.itemsize > src.itemsize and src.kind == "u" and dst.kind == "i":
        v = v.astype(UINT[dst.itemsize]) if np.ndim(v) else UINT[dst.itemsize].type(v)
        return v.view(dst)
    return v.astype(dst) if np.ndim(v) else dst.type(v)


def coerce(v: Value, dt: np.dtype) -> Value:
    """Bring an op result whose dtype drifted (numpy type promotion) back to ``dt``: values of
    the same kind are cast (integers wrap), others reinterpreted or converted by ``convert``."""
    src = v.dtype
    if src.kind == dt.kind or (src.kind in "iu" and dt.kind in "iu"):
        return v.astype(dt) if np.ndim(v) else dt.type(v)
    return convert(v, src, dt)


def imm_value(value: int | float, bits: int, dt: np.dtype) -> Value:
    """A numpy scalar of ``dt`` for an immediate (``0f``/``0d`` literals are bit patterns)."""
    if bits:
        raw = np.array(value, UINT[bits // 8]).view(F32 if bits == 32 else F64)[()]
        if dt.kind == "f":
            return dt.type(raw)
        return convert(raw, raw.dtype, dt) if dt.itemsize == bits // 8 else dt.type(int(raw))
    if dt == BOOL:
        return np.bool_(bool(value))
    if dt.kind == "f":
        return dt.type(value)
    if isinstance(value, float):
        value = int(value)
    width = 8 * dt.itemsize
    return np.array(value & ((1 << width) - 1), UINT[dt.itemsize]).view(dt)[()]


@dataclass
class CompileContext:
    """What compiling one function needs: symbol addresses and a way to build faults."""

    kernel: str
    function: Function
    #: symbol -> (value, space) where space is the state space its address lives in.
    symbols: dict[str, tuple[int, str]]
    functions: dict[str, Any] = field(default_factory=dict)
    local_base: int = 0
    #: registers never live at a basic-block leader: masked writes may skip the merge
    block_local: set[int] = field(default_factory=set)

    def fault(self, ins: Instruction, kind: str, detail: str) -> EmuFault:
        where = self.kernel
        if self.function.name != self.kernel:
            where += f" (in .func {self.function.name})"
        return EmuFault(kind, f"{where}: PTX line {ins.line} `{ins.text}`: {detail}")

    def faulter(self, ins: Instruction) -> Callable[[str, str], EmuFault]:
        return lambda kind, detail: self.fault(ins, kind, detail)


def reg_dtype(r: Reg) -> np.dtype:
    return DTYPES[r.type]


def reader(op: Operand, dt: np.dtype, cx: CompileContext, ins: Instruction) -> Callable:
    """A function ``frame -> value of dtype dt`` for a source operand."""
    if isinstance(op, Reg):
        i = op.index
        src = reg_dtype(op)
        if src == dt:
            return lambda fr: fr.regs[i]
        if src.itemsize == dt.itemsize and src != BOOL and dt != BOOL:
            return lambda fr: fr.regs[i].view(dt)
        return lambda fr: convert(fr.regs[i], src, dt)
    if isinstance(op, NotPred):
        i = op.reg.index
        src = reg_dtype(op.reg)
        if src == BOOL:
            return lambda fr: ~fr.regs[i]
        return lambda fr: fr.regs[i] == 0
    if isinstance(op, Imm):
        c = imm_value(op.value, op.bits, dt)
        return lambda fr: c
    if isinstance(op, Special):
        name = op.name
        if name.count(".") == 0 and name in ("%tid", "%ntid", "%ctaid", "%nctaid"):
            raise cx.fault(ins, "not_supported", f"vector special register {name} as a scalar")
        src = DTYPES[SPECIAL_REGISTERS.get(name, "u32")]
        if src == dt:
            return lambda fr: fr.L.special(name)
        return lambda fr: convert(fr.L.special(name), src, dt)
    if isinstance(op, Sym):
        if op.name not in cx.symbols:
            raise cx.fault(ins, "invalid_ptx", f"unknown symbol {op.name!r}")
        val, _ = cx.symbols[op.name]
        c = imm_value(val + op.offset, 0, dt if dt.kind != "f" else U64)
        return lambda fr: c
    raise cx.fault(ins, "invalid_ptx", f"operand {op!r} cannot be read as a value")


def writer(op: Operand, dt: np.dtype, cx: CompileContext, ins: Instruction) -> Callable:
    """A function ``(frame, value of dtype dt, mask) -> None`` for a destination operand."""
    if isinstance(op, Sink):
        return lambda fr, v, m: None
    if not isinstance(op, Reg):
        raise cx.fault(ins, "invalid_ptx", f"destination {op!r} is not a register")
    i = op.index
    dst = reg_dtype(op)
    if i in cx.block_local and ins.guard is None:
        # no waiting lane can ever read this register's old value: skip the merge (a guard's
        # mask, by contrast, always needs it)
        if dst == dt:

            def wl(fr, v, m):
                fr.regs[i] = v

            return wl

        def wlc(fr, v, m):
            if v.dtype != dt:  # numpy promotion slipped through an op: bits must be dt's
                v = coerce(v, dt)
            fr.regs[i] = convert(v, dt, dst)

        return wlc
    if dst == dt:

        def w(fr, v, m):
            if v.dtype != dst:  # numpy promotion slipped through an op: keep the register's type
                v = coerce(v, dst)
            if m is None:
                fr.regs[i] = v
            else:
                fr.regs[i] = np.where(m, v, fr.regs[i])

        return w

    def wc(fr, v, m):
        if v.dtype != dt:
            v = coerce(v, dt)
        v = convert(v, dt, dst)
        if m is None:
            fr.regs[i] = v
        else:
            fr.regs[i] = np.where(m, v, fr.regs[i])

    return wc


def scatter_writer(op: Operand, dt: np.dtype, cx: CompileContext, ins: Instruction) -> Callable:
    """A function ``(frame, values, idx) -> None`` writing ``values`` only to lanes ``idx``.

    Used by loads and atomics, which compute results for active lanes only.
    """
    if isinstance(op, Sink):
        return lambda fr, v, idx: None
    if not isinstance(op, Reg):
        raise cx.fault(ins, "invalid_ptx", f"destination {op!r} is not a register")
    i = op.index
    dst = reg_dtype(op)

    def w(fr, v, idx):
        if dt != dst:
            v = convert(v, dt, dst)
        old = fr.regs[i]
        if np.ndim(old) == 0:
            new = np.full(fr.L.N, old, dst)
        else:
            new = old.copy()
        new[idx] = v
        fr.regs[i] = new

    return w


def guard_reader(ins: Instruction) -> Callable | None:
    """A function ``frame -> bool value`` for the instruction's guard, or None."""
    g = ins.guard
    if g is None:
        return None
    i = g.index
    if DTYPES[g.type] != BOOL:
        if ins.guard_negated:
            return lambda fr: fr.regs[i] == 0
        return lambda fr: fr.regs[i] != 0
    if ins.guard_negated:
        return lambda fr: ~fr.regs[i]
    return lambda fr: fr.regs[i]


def addr_reader(op: Addr, cx: CompileContext, ins: Instruction) -> tuple[Callable, str | None]:
    """(``frame -> u64 address``, the state space of a symbolic base or None)."""
    off = op.offset
    if isinstance(op.base, Reg):
        wide = DTYPES[op.base.type].itemsize == 8
        at = U64 if wide else U32  # 32-bit addresses (shared/local offsets) stay 32-bit
        rd = reader(op.base, at, cx, ins)
        if off == 0:
            return rd, None
        o = at.type(off & ((1 << (8 * at.itemsize)) - 1))
        return (lambda fr: rd(fr) + o), None
    if isinstance(op.base, Sym):
        if op.base.name not in cx.symbols:
            raise cx.fault(ins, "invalid_ptx", f"unknown symbol {op.base.name!r}")
        val, space = cx.symbols[op.base.name]
        c = U64.type((val + off + op.base.offset) & 0xFFFF_FFFF_FFFF_FFFF)
        return (lambda fr: c), space
    c = U64.type(off & 0xFFFF_FFFF_FFFF_FFFF)
    return (lambda fr: c), None


# --- registry ---------------------------------------------------------------------------------
Factory = Callable[[Instruction, CompileContext], Exec]
OPS: dict[str, Factory] = {}


def op(*names: str) -> Callable[[Factory], Factory]:
    """Register a factory compiling the named opcodes."""

    def deco(f: Factory) -> Factory:
        for n in names:
            OPS[n] = f
        return f

    return deco


def last_type(ins: Instruction, cx: CompileContext) -> np.dtype:
    ts = ins.types
    if not ts:
        raise cx.fault(ins, "invalid_ptx", f"{ins.opcode} needs a type suffix")
    return DTYPES[ts[-1]]


def rounding(ins: Instruction, default: str = "rn") -> str:
    for m in ins.mods:
        if m in ("rn", "rz", "rm", "rp"):
            return m
    return default


def unsupported(ins: Instruction, cx: CompileContext, what: str | None = None) -> Exec:
    """An instruction we cannot run: it faults only if a lane actually executes it."""
    detail = what or f"instruction `{ins.opcode}{''.join('.' + m for m in ins.mods)}`"
    err = cx.fault(ins, "not_supported", f"{detail} is not supported by the emulated device")

    def f(fr, m):
        raise err

    f.unsupported = err  # type: ignore[attr-defined]  (lets coverage tools list these)
    return f


def compile_instruction(ins: Instruction, cx: CompileContext) -> Exec:
    """The closure for one non-control instruction, guard included."""
    factory = OPS.get(ins.opcode)
    try:
        fn = unsupported(ins, cx) if factory is None else factory(ins, cx)
    except EmuFault as e:
        if e.kind != "not_supported":
            raise
        err = e

        def raiser(fr, m):
            raise err

        raiser.unsupported = err  # type: ignore[attr-defined]
        fn = raiser
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise cx.fault(ins, "invalid_ptx", f"malformed instruction ({e})") from e
    g = guard_reader(ins)
    if g is None:
        return fn

    def guarded(fr, m):
        p = g(fr)
        if np.ndim(p) == 0:
            if p:
                fn(fr, m)
            return
        if m is not None:
            p = p & m
        if p.any():
            fn(fr, p)

    return guarded
