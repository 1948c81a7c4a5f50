"""Loads, stores, atomics and address-space conversion.

Addresses are computed for the *active* lanes only (a masked-off lane may hold garbage), checked
against the state space they name (``illegal_address`` / ``misaligned_address`` naming the
instruction), then gathered or scattered with numpy fancy indexing. Stores to one address from
several lanes keep the highest lane's value, which is one valid serialisation. Atomics are
serialised in lane order: ufunc ``accumulate`` over a (address, rank) table when that table is
small, else rounds of conflict-free vector updates; either way every lane's returned old value
is consistent with the same order.
"""

from __future__ import annotations

import numpy as np

from . import half
from .compiler import (
    BOOL,
    LOCAL_WINDOW,
    PARAM_WINDOW,
    SHARED_WINDOW,
    U32,
    U64,
    UINT,
    WINDOW_SPAN,
    CompileContext,
    Exec,
    addr_reader,
    last_type,
    op,
    reader,
    scatter_writer,
    unsupported,
    writer,
)
from .ir import Addr, Instruction, Reg, Sink, Sym, Vec, type_size

_SPACES = ("global", "shared", "local", "param", "const")


def _space(ins: Instruction) -> str:
    for s in _SPACES:
        if s in ins.mods:
            return s
    return "generic"


def _vec(ins: Instruction) -> int:
    for m in ins.mods:
        if m in ("v2", "v4", "v8"):
            return int(m[1:])
    return 1


def _func_param(op_: Addr, cx: CompileContext) -> str | None:
    """The name of a call-frame parameter this address names, if it is one."""
    if not isinstance(op_.base, Sym):
        return None
    name = op_.base.name
    sym = cx.symbols.get(name)
    if sym is not None and sym[1] == "param" and cx.function.is_entry:
        return None  # a kernel parameter: read from the launch's parameter buffer
    return name


@op("ld", "ldu")
def _ld(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    if t == BOOL:
        raise cx.fault(ins, "invalid_ptx", "ld of a predicate")
    if "b128" in ins.mods:
        return unsupported(ins, cx, "128-bit loads")
    space = _space(ins)
    nvec = _vec(ins)
    dst, src = ins.operands[0], ins.operands[1]
    if not isinstance(src, Addr):
        raise cx.fault(ins, "invalid_ptx", "ld needs an address operand")
    dsts = list(dst.items) if isinstance(dst, Vec) else [dst]
    if len(dsts) != nvec:
        raise cx.fault(ins, "invalid_ptx", f"vector width {nvec} does not match the operand")
    size = t.itemsize

    if space == "param":
        pname = _func_param(src, cx)
        if pname is not None:  # call-frame parameter, per lane
            ws = [writer(d, t, cx, ins) for d in dsts]
            base = src.offset + (src.base.offset if isinstance(src.base, Sym) else 0)
            err = cx.fault(ins, "invalid_ptx", f"parameter {pname!r} read before it was written")

            def ld_fparam(fr, m):
                slots = fr.ps.get(pname)
                if slots is None:
                    raise err
                for j, w in enumerate(ws):
                    v = slots.get(base + j * size)
                    if v is None or v.dtype.itemsize != size:
                        v = _param_bytes(slots, base + j * size, t, fr.L.N)
                    elif v.dtype != t:
                        v = _fit(v, t)
                    w(fr, v, m)

            return ld_fparam

    rd_addr, sym_space = addr_reader(src, cx, ins)
    if space == "generic" and sym_space is not None:
        space = sym_space
    fault = cx.faulter(ins)
    ws_full = [writer(d, t, cx, ins) for d in dsts]
    ws_idx = [scatter_writer(d, t, cx, ins) for d in dsts]
    vsize = size * nvec

    fast_reg = src.base.index if isinstance(src.base, Reg) and space in _FAST_SPACES else None
    const_off = src.offset

    def ld(fr, m):
        L = fr.L
        if fast_reg is not None and m is None:
            hit = L.fast_elements(space, fr.regs[fast_reg], const_off, vsize, t)
            if hit is not None:
                buf, el, k = hit
                for j in range(nvec):
                    # a view from the offset saves an index add; a negative one cannot slice
                    v = buf[k + j :][el] if k + j >= 0 else buf[el + (k + j)]
                    ws_full[j](fr, v, None)
                return
        a = rd_addr(fr)
        if m is not None and isinstance(a, np.ndarray):
            idx = np.flatnonzero(m)
            a = a[idx]
        else:
            idx = None if m is None else np.flatnonzero(m)
        groups = L.resolve(space, a, vsize, t, idx if idx is not None else None, fault)
        if len(groups) == 1 and groups[0][0] is None:
            _, buf, el = groups[0]
            for j in range(nvec):
                v = buf[el + j] if j else buf[el]
                if isinstance(v, np.ndarray):
                    if m is None:
                        ws_full[j](fr, v, None)
                    else:
                        ws_idx[j](fr, v, idx)
                else:
                    ws_full[j](fr, v, m)
            return
        n = a.size
        for j in range(nvec):
            out = np.empty(n, t)
            for sel, buf, el in groups:
                out[sel] = buf[el + j]
            if m is None:
                ws_full[j](fr, out, None)
            else:
                ws_idx[j](fr, out, idx)

    return ld


def _param_bytes(slots: dict, off: int, t: np.dtype, n: int):
    """A call parameter read whose offset or size differs from how it was written (e.g. a
    struct stored with ``st.param.b8`` and loaded with ``ld.param.b32``): reassemble bytes."""
    size = t.itemsize
    uniform = all(not isinstance(v, np.ndarray) for v in slots.values())
    rows = 1 if uniform else n
    out = np.zeros((rows, size), np.uint8)
    for o, v in slots.items():
        vb = np.asarray(v)
        k = vb.dtype.itemsize
        lo, hi = max(o, off), min(o + k, off + size)
        if lo >= hi:
            continue
        b = np.ascontiguousarray(np.broadcast_to(vb, (rows,))).view(np.uint8).reshape(rows, k)
        out[:, lo - off : hi - off] = b[:, lo - o : hi - o]
    r = out.view(t).reshape(rows)
    return r[0] if uniform else r


#: spaces whose accesses through a register base can use the per-batch element cache
_FAST_SPACES = frozenset({"global", "const", "shared", "local"})


def _fit(v, t: np.dtype):
    """Bits of a stored call parameter re-read with another type of the same or other size."""
    from .compiler import convert

    return convert(v, v.dtype, t)


@op("st")
def _st(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    if "b128" in ins.mods:
        return unsupported(ins, cx, "128-bit stores")
    space = _space(ins)
    nvec = _vec(ins)
    dst, src = ins.operands[0], ins.operands[1]
    if not isinstance(dst, Addr):
        raise cx.fault(ins, "invalid_ptx", "st needs an address operand")
    srcs = list(src.items) if isinstance(src, Vec) else [src]
    size = t.itemsize
    readers = [None if isinstance(s, Sink) else reader(s, t, cx, ins) for s in srcs]

    if space == "param":
        pname = _func_param(dst, cx)
        if pname is None:
            raise cx.fault(ins, "invalid_ptx", "st.param to a kernel parameter")
        base = dst.offset + (dst.base.offset if isinstance(dst.base, Sym) else 0)

        def st_fparam(fr, m):
            slots = fr.ps.setdefault(pname, {})
            for j, rd in enumerate(readers):
                if rd is None:
                    continue
                v = rd(fr)
                o = base + j * size
                if m is not None:
                    old = slots.get(o)
                    if old is None:
                        old = t.type(0)
                    elif old.dtype != t:
                        old = _fit(old, t)
                    v = np.where(m, v, old)
                slots[o] = v

        return st_fparam

    rd_addr, sym_space = addr_reader(dst, cx, ins)
    if space == "generic" and sym_space is not None:
        space = sym_space
    if space in ("const", "param"):
        raise cx.fault(ins, "invalid_ptx", f"st to the read-only .{space} space")
    fault = cx.faulter(ins)
    vsize = size * nvec

    fast_reg = dst.base.index if isinstance(dst.base, Reg) and space in _FAST_SPACES else None
    const_off = dst.offset

    def st(fr, m):
        L = fr.L
        if fast_reg is not None and m is None:
            hit = L.fast_elements(space, fr.regs[fast_reg], const_off, vsize, t)
            if hit is not None:
                buf, el, k = hit
                for j, rd in enumerate(readers):
                    if rd is not None:
                        if k + j >= 0:
                            buf[k + j :][el] = rd(fr)
                        else:
                            buf[el + (k + j)] = rd(fr)
                return
        a = rd_addr(fr)
        idx = None
        if m is not None:
            idx = np.flatnonzero(m)
            if isinstance(a, np.ndarray):
                a = a[idx]
        elif not isinstance(a, np.ndarray):
            # every lane stores to one address: the last lane wins
            idx = None
        groups = L.resolve(space, a, vsize, t, idx, fault)
        for j, rd in enumerate(readers):
            if rd is None:
                continue
            v = rd(fr)
            if isinstance(v, np.ndarray) and idx is not None:
                v = v[idx]
            for sel, buf, el in groups:
                e = el + j if j else el
                if sel is None:
                    if not isinstance(e, np.ndarray) and isinstance(v, np.ndarray):
                        buf[e] = v[-1]
                    else:
                        buf[e] = v
                else:
                    buf[e] = v[sel] if isinstance(v, np.ndarray) else v

    return st


# --- cvta / isspacep ---------------------------------------------------------------------------
_WINDOWS = {"shared": SHARED_WINDOW, "local": LOCAL_WINDOW, "param": PARAM_WINDOW}


@op("cvta")
def _cvta(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    space = next((s for s in _SPACES if s in ins.mods), None)
    to = "to" in ins.mods
    d, s = ins.operands
    rd = reader(s, t, cx, ins)
    w = writer(d, t, cx, ins)
    win = _WINDOWS.get(space or "", 0)
    if not win:
        return lambda fr, m: w(fr, rd(fr), m)
    c = t.type(win & ((1 << (8 * t.itemsize)) - 1))
    if to:
        return lambda fr, m: w(fr, rd(fr) - c, m)
    return lambda fr, m: w(fr, rd(fr) + c, m)


@op("isspacep")
def _isspacep(ins: Instruction, cx: CompileContext) -> Exec:
    space = next((s for s in _SPACES if s in ins.mods), "global")
    d, s = ins.operands
    rd = reader(s, U64, cx, ins)
    w = writer(d, BOOL, cx, ins)
    if space in _WINDOWS:
        lo = U64.type(_WINDOWS[space])
        hi = U64.type(_WINDOWS[space] + WINDOW_SPAN)
        return lambda fr, m: w(fr, (rd(fr) >= lo) & (rd(fr) < hi), m)

    def glob(fr, m):
        a = rd(fr)
        inwin = np.zeros(np.shape(a), BOOL)
        for base in _WINDOWS.values():
            inwin = inwin | ((a >= U64.type(base)) & (a < U64.type(base + WINDOW_SPAN)))
        w(fr, ~inwin, m)

    return glob


@op("prefetch", "prefetchu", "membar", "fence", "nanosleep", "pmevent", "griddepcontrol",
    "discard", "applypriority", "createpolicy")  # fmt: skip
def _nop(ins: Instruction, cx: CompileContext) -> Exec:
    if ins.opcode == "createpolicy":
        w = writer(ins.operands[0], U64, cx, ins)
        return lambda fr, m: w(fr, U64.type(0), m)
    return lambda fr, m: None


# --- atomics -------------------------------------------------------------------------------------
_ATOM_OPS = ("add", "min", "max", "inc", "dec", "and", "or", "xor", "exch", "cas")


def _ufunc(name: str, t: np.dtype):
    if name == "add":
        return np.add
    if name in ("min", "max"):
        if t.kind == "f":
            return np.fmin if name == "min" else np.fmax
        return np.minimum if name == "min" else np.maximum
    return {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}.get(name)


def atomic_update(buf: np.ndarray, el: np.ndarray, opname: str, t: np.dtype, v, c=None):
    """Apply atomics in lane order; returns the old value seen by each lane.

    Lanes are grouped by address (a stable sort keeps lane order inside a group). Groups of one
    lane update directly; associative operations use ``ufunc.accumulate`` over a padded
    (group, rank) table; long groups of non-associative operations (cas, inc, dec) are
    simulated group by group with vector searches; short ones in conflict-free rounds.
    """
    n = el.size
    v = np.broadcast_to(v, (n,)).astype(t, copy=False)
    if c is not None:
        c = np.broadcast_to(c, (n,)).astype(t, copy=False)
    lo = int(el.min())
    if lo == int(el.max()):  # every lane hits one address (a global counter, max, flag)
        old, buf[lo] = _sequential(opname, _ufunc(opname, t), t, buf[lo], v, c)
        return old
    order = np.argsort(el, kind="stable")
    se = el[order]
    sv = v[order]
    sc = None if c is None else c[order]
    start = np.empty(n, BOOL)
    start[0] = True
    np.not_equal(se[1:], se[:-1], out=start[1:])
    seg_start = np.flatnonzero(start)
    nseg = seg_start.size
    seg_id = np.cumsum(start) - 1
    rank = np.arange(n) - seg_start[seg_id]
    lens = np.diff(np.append(seg_start, n))
    maxlen = int(lens.max())
    addrs = se[seg_start]
    init = buf[addrs].copy()
    uf = _ufunc(opname, t)
    if maxlen == 1:
        old_sorted = init
        if uf is not None:
            buf[addrs] = uf(init, sv)
        elif opname == "exch":
            buf[addrs] = sv
        elif opname == "cas":
            buf[addrs] = np.where(init == sc, sv, init)
        else:
            buf[addrs] = _incdec(opname, init, sv, t)
    elif uf is not None and nseg * (maxlen + 1) <= 8 * n + 4096:
        table = np.zeros((nseg, maxlen + 1), t)
        table[:, 0] = init
        table[seg_id, rank + 1] = sv
        acc = uf.accumulate(table, axis=1, dtype=t)  # (add would widen small ints)
        old_sorted = acc[seg_id, rank]
        buf[addrs] = acc[np.arange(nseg), lens]
    elif opname == "exch":
        prev = np.empty_like(sv)
        prev[1:] = sv[:-1]
        old_sorted = np.where(rank == 0, init[seg_id], prev)
        buf[addrs] = sv[seg_start + lens - 1]
    else:
        old_sorted = np.empty(n, t)
        long_segs = np.flatnonzero(lens > 16)
        for g in long_segs:
            lo, hi = int(seg_start[g]), int(seg_start[g]) + int(lens[g])
            cg = None if sc is None else sc[lo:hi]
            old_sorted[lo:hi], buf[addrs[g]] = _sequential(opname, uf, t, init[g], sv[lo:hi], cg)
        short = lens[seg_id] <= 16
        for r in range(min(maxlen, 16)):
            sel = np.flatnonzero(short & (rank == r))
            if sel.size == 0:
                break
            a = se[sel]
            cur = buf[a]
            old_sorted[sel] = cur
            x = sv[sel]
            if uf is not None:
                buf[a] = uf(cur, x)
            elif opname == "cas":
                buf[a] = np.where(cur == sc[sel], x, cur)  # type: ignore[index]
            else:
                buf[a] = _incdec(opname, cur, x, t)
    old = np.empty(n, t)
    old[order] = old_sorted
    return old


def _sequential(opname: str, uf, t: np.dtype, init, vals: np.ndarray, cmps):
    """Old values and final value of one address updated by ``vals`` in order."""
    n = vals.size
    if uf is not None:
        acc = uf.accumulate(np.concatenate([np.array([init], t), vals]), dtype=t)
        return acc[:-1], acc[-1]
    old = np.empty(n, t)
    cur = t.type(init)
    if opname == "exch":
        old[0] = cur
        old[1:] = vals[:-1]
        return old, vals[-1]
    if opname == "cas":  # jump from one successful compare to the next
        pos = 0
        while pos < n:
            hits = np.flatnonzero(cmps[pos:] == cur)
            if hits.size == 0:
                old[pos:] = cur
                break
            k = pos + int(hits[0])
            old[pos : k + 1] = cur
            cur = vals[k]
            pos = k + 1
        return old, cur
    if (vals == vals[0]).all():  # inc/dec with one bound: a closed form
        bound = int(vals[0])
        x = int(cur)
        first = x
        if opname == "inc":
            x0 = x if x <= bound else None
            seq = np.arange(n, dtype=np.int64)
            if x0 is None:
                old[0] = first
                old[1:] = (seq[:-1] % (bound + 1)).astype(t)
            else:
                old[:] = ((x0 + seq) % (bound + 1)).astype(t)
        else:
            seq = np.arange(n, dtype=np.int64)
            if x == 0 or x > bound:
                old[0] = first
                old[1:] = ((bound - seq[:-1]) % (bound + 1)).astype(t)
            else:
                old[:] = ((x - seq) % (bound + 1)).astype(t)
        last = _incdec(opname, old[-1:], vals[-1:], t)[0]
        return old, last
    for k in range(n):  # general case: one lane at a time
        old[k] = cur
        cur = _incdec(opname, np.array([cur], t), vals[k : k + 1], t)[0]
    return old, cur


def _incdec(opname: str, cur, x, t):
    if opname == "inc":
        return np.where(cur >= x, t.type(0), cur + t.type(1)).astype(t)
    return np.where((cur == 0) | (cur > x), x, cur - t.type(1)).astype(t)


@op("atom", "red")
def _atom(ins: Instruction, cx: CompileContext) -> Exec:
    t = last_type(ins, cx)
    opname = next((m for m in ins.mods if m in _ATOM_OPS), None)
    if opname is None:
        return unsupported(ins, cx)
    if _vec(ins) > 1:
        return _vector_atom(ins, cx)
    hk = half.half_of(ins)
    if hk is not None:
        if half.atomic_combine(opname, *hk) is None:
            return unsupported(ins, cx)
        return _half_atom(ins, cx, hk, opname)
    if t.kind == "f" and opname not in ("add", "min", "max", "exch"):
        return unsupported(ins, cx)
    if _vec(ins) > 1:
        return unsupported(ins, cx)
    if opname in ("and", "or", "xor", "exch", "cas", "inc", "dec") and t.kind == "f":
        t = UINT[t.itemsize]
    if opname in ("inc", "dec") and t.kind != "u":
        t = UINT[t.itemsize]
    space = _space(ins)
    has_dst = ins.opcode == "atom"
    o = ins.operands
    a_op = o[1] if has_dst else o[0]
    if not isinstance(a_op, Addr):
        raise cx.fault(ins, "invalid_ptx", "atomic needs an address operand")
    rest = o[2:] if has_dst else o[1:]
    rv = reader(rest[0], t, cx, ins)
    rc = None
    rnew = rv
    if opname == "cas":
        rc = rv
        rnew = reader(rest[1], t, cx, ins)
    rd_addr, sym_space = addr_reader(a_op, cx, ins)
    if space == "generic" and sym_space is not None:
        space = sym_space
    if space not in ("global", "shared", "generic"):
        raise cx.fault(ins, "invalid_ptx", f"atomics on .{space}")
    fault = cx.faulter(ins)
    wdst = scatter_writer(o[0], t, cx, ins) if has_dst else None
    wfull = writer(o[0], t, cx, ins) if has_dst else None
    need_old = has_dst and not isinstance(o[0], Sink)

    def atom(fr, m):
        L = fr.L
        a = rd_addr(fr)
        idx = np.flatnonzero(m) if m is not None else np.arange(L.N)
        a = a[idx] if isinstance(a, np.ndarray) else np.full(idx.size, a, U64)
        groups = L.resolve(space, a, t.itemsize, t, idx, fault)
        x = rnew(fr)
        x = x[idx] if isinstance(x, np.ndarray) else x
        cmpv = None
        if rc is not None:
            cmpv = rc(fr)
            cmpv = cmpv[idx] if isinstance(cmpv, np.ndarray) else cmpv
        old = np.empty(idx.size, t) if need_old else None
        for sel, buf, el in groups:
            el = np.broadcast_to(el, (a.size if sel is None else sel.size,))
            xs = x if sel is None or not isinstance(x, np.ndarray) else x[sel]
            cs = cmpv if sel is None or not isinstance(cmpv, np.ndarray) else cmpv[sel]
            if not need_old and opname == "add" and t.kind == "f":
                np.add.at(buf, el, xs)  # sequential in lane order: exact serialisation
                continue
            got = atomic_update(buf, el, opname, t, xs, cs)
            if old is not None:
                if sel is None:
                    old = got
                else:
                    old[sel] = got
        if need_old:
            if m is None:
                wfull(fr, old, None)  # type: ignore[misc]
            else:
                wdst(fr, old, idx)  # type: ignore[misc]

    return atom


def _vector_atom(ins: Instruction, cx: CompileContext) -> Exec:
    """atom/red.vN (sm_90 ``atomicAdd(float2*/float4*)``, packed halves): each element is its
    own atomic on consecutive addresses, compiled as the scalar instruction it amounts to."""
    o = ins.operands
    has_dst = ins.opcode == "atom"
    a_op = o[1] if has_dst else o[0]
    src = o[2] if has_dst else o[1]
    dst = o[0] if has_dst else None
    n = _vec(ins)
    bad_dst = dst is not None and (not isinstance(dst, Vec) or len(dst.items) != n)
    if not isinstance(a_op, Addr) or not isinstance(src, Vec) or len(src.items) != n or bad_dst:
        raise cx.fault(ins, "invalid_ptx", "vector atomic needs vector operands")
    size = type_size(ins.types[-1])
    mods = tuple(m for m in ins.mods if m not in ("v2", "v4", "v8"))
    parts = []
    for j in range(n):
        addr = Addr(a_op.base, a_op.offset + j * size)
        ops_ = (addr, src.items[j]) if dst is None else (dst.items[j], addr, src.items[j])  # type: ignore[union-attr]
        sub = Instruction(ins.opcode, mods, ops_, None, False, ins.line, ins.text)
        parts.append(_atom(sub, cx))

    def f(fr, m):
        for p in parts:
            p(fr, m)

    return f


def _half_atom(ins: Instruction, cx: CompileContext, hk: tuple[str, bool], opname: str) -> Exec:
    """atom/red add/min/max on .f16/.bf16 (and .f16x2/.bf16x2: each half on its own), applied
    in lane order with one rounding per update, as the hardware serialises them."""
    combine = half.atomic_combine(opname, *hk)
    t = U32 if hk[1] else np.dtype(np.uint16)
    space = _space(ins)
    has_dst = ins.opcode == "atom"
    o = ins.operands
    a_op = o[1] if has_dst else o[0]
    if not isinstance(a_op, Addr):
        raise cx.fault(ins, "invalid_ptx", "atomic needs an address operand")
    rv = reader((o[2:] if has_dst else o[1:])[0], t, cx, ins)
    rd_addr, sym_space = addr_reader(a_op, cx, ins)
    if space == "generic" and sym_space is not None:
        space = sym_space
    if space not in ("global", "shared", "generic"):
        raise cx.fault(ins, "invalid_ptx", f"atomics on .{space}")
    fault = cx.faulter(ins)
    wdst = scatter_writer(o[0], t, cx, ins) if has_dst else None

    def atom(fr, m):
        L = fr.L
        a = rd_addr(fr)
        idx = np.flatnonzero(m) if m is not None else np.arange(L.N)
        a = a[idx] if isinstance(a, np.ndarray) else np.full(idx.size, a, U64)
        x = rv(fr)
        x = x[idx] if isinstance(x, np.ndarray) else np.full(idx.size, x, t)
        old = np.empty(idx.size, t)
        for sel, buf, el in L.resolve(space, a, t.itemsize, t, idx, fault):
            el = np.broadcast_to(el, (a.size if sel is None else sel.size,))
            got = half.atomic_rounds(buf, el, x if sel is None else x[sel], combine)  # type: ignore[arg-type]
            if sel is None:
                old = got
            else:
                old[sel] = got
        if wdst is not None:
            wdst(fr, old, idx)

    return atom


__all__ = ["atomic_update"]


@op("cp")
def _cp_async(ins: Instruction, cx: CompileContext) -> Exec:
    """``cp.async`` global -> shared copies, performed synchronously.

    Lanes of a batch execute in lockstep, so the copy is complete by the time any
    ``cp.async.wait_group``/``wait_all`` (no-ops here) could be reached. An optional source size
    zero-fills the rest of the destination, as the hardware does. Bulk/tensor forms
    (``cp.async.bulk``) are not supported.
    """
    mods = ins.mods
    if "async" not in mods:
        return unsupported(ins, cx)
    if any(m in mods for m in ("commit_group", "wait_group", "wait_all")):
        return lambda fr, m: None
    if "mbarrier" in mods:  # cp.async.mbarrier.arrive: the copies are already complete
        if "noinc" not in mods:
            return lambda fr, m: None  # its pending-count increment and arrival cancel out
        from .ops_sync import _arrive

        rd, _ = addr_reader(ins.operands[0], cx, ins)  # type: ignore[arg-type]
        space = "shared" if "shared" in mods else "generic"
        fault = cx.faulter(ins)

        def arrive_noinc(fr, m):
            L = fr.L
            idx = np.flatnonzero(m) if m is not None else np.arange(L.N)
            a = rd(fr)
            a = a[idx] if isinstance(a, np.ndarray) else np.full(idx.size, a, U64)
            ((_, buf, el),) = L.resolve(space, a, 8, U64, idx, fault)
            _arrive(buf, el, np.ones(idx.size, np.int64), False)

        return arrive_noinc
    if "bulk" in mods:
        return _cp_async_bulk(ins, cx)
    if "shared" not in mods or "global" not in mods:
        return unsupported(ins, cx)
    o = ins.operands
    if len(o) < 3 or not isinstance(o[0], Addr) or not isinstance(o[1], Addr):
        raise cx.fault(ins, "invalid_ptx", "cp.async needs [dst], [src], size")
    size = int(reader(o[2], U32, cx, ins)(None))
    if size not in (4, 8, 16):
        raise cx.fault(ins, "invalid_ptx", f"cp.async copy size {size} is not 4, 8 or 16")
    rd_dst, _ = addr_reader(o[0], cx, ins)
    rd_src, _ = addr_reader(o[1], cx, ins)
    rsz = reader(o[3], U32, cx, ins) if len(o) > 3 and not isinstance(o[3], Sink) else None
    fault = cx.faulter(ins)
    byte = np.dtype(np.uint8)

    def cp(fr, m):
        L = fr.L
        idx = np.flatnonzero(m) if m is not None else np.arange(L.N)
        d, s = rd_dst(fr), rd_src(fr)
        d = d[idx] if isinstance(d, np.ndarray) else np.full(idx.size, d)
        s = s[idx] if isinstance(s, np.ndarray) else np.full(idx.size, s, U64)
        ((_, sbuf, sel_),) = L.resolve("global", s, size, byte, idx, fault)
        ((_, dbuf, del_),) = L.resolve("shared", d, size, byte, idx, fault)
        valid = None
        if rsz is not None:
            v = rsz(fr)
            valid = v[idx] if isinstance(v, np.ndarray) else np.full(idx.size, v)
        for k in range(size):
            b = sbuf[sel_ + k]
            if valid is not None:
                b = np.where(k < valid, b, np.uint8(0))
            dbuf[del_ + k] = b

    return cp


def _cp_async_bulk(ins: Instruction, cx: CompileContext) -> Exec:
    """Non-tensor bulk copies (TMA), performed when issued: ``cp.async.bulk.shared.global
    .mbarrier::complete_tx::bytes [dst], [src], size, [mbar]`` (then ``complete_tx`` on the
    barrier), ``cp.async.bulk.global.shared.bulk_group [dst], [src], size``, and the group
    commits/waits and prefetches, which have nothing left to do."""
    mods = ins.mods
    if "tensor" in mods:
        return unsupported(ins, cx, "tensor-map bulk copies (`cp.async.bulk.tensor`)")
    if any(m in mods for m in ("commit_group", "wait_group", "prefetch")):
        return lambda fr, m: None
    o = ins.operands
    spaces = [m for m in mods if m in ("shared", "global")]
    if len(spaces) != 2 or len(o) < 3 or not isinstance(o[0], Addr) or not isinstance(o[1], Addr):
        return unsupported(ins, cx)
    if any(m.startswith("multicast") or m.startswith("L2::") for m in mods):
        return unsupported(ins, cx, "bulk copies with multicast or cache hints")
    dst_space, src_space = spaces
    mbar = o[3] if len(o) > 3 and "mbarrier::complete_tx::bytes" in mods else None
    if mbar is not None and not isinstance(mbar, Addr):
        raise cx.fault(ins, "invalid_ptx", "bulk copy needs an mbarrier address")
    rd_dst, _ = addr_reader(o[0], cx, ins)
    rd_src, _ = addr_reader(o[1], cx, ins)
    rsize = reader(o[2], U32, cx, ins)
    rd_bar = addr_reader(mbar, cx, ins)[0] if mbar is not None else None
    fault = cx.faulter(ins)
    byte = np.dtype(np.uint8)

    def lanes(v, idx):
        return v[idx] if isinstance(v, np.ndarray) else np.full(idx.size, v, U64)

    def bulk(fr, m):
        from .ops_sync import complete_tx

        L = fr.L
        idx = np.flatnonzero(m) if m is not None else np.arange(L.N)
        d, s = lanes(rd_dst(fr), idx), lanes(rd_src(fr), idx)
        size = np.broadcast_to(np.asarray(rsize(fr), np.int64), (L.N,))[idx]
        for j in range(idx.size):  # one issuing thread per copy, usually
            n = int(size[j])
            one = idx[j : j + 1]
            src = s[j] + np.arange(n, dtype=np.uint64)
            dst = d[j] + np.arange(n, dtype=np.uint64)
            ((_, sbuf, sel_),) = L.resolve(src_space, src, 1, byte, np.repeat(one, n), fault)
            ((_, dbuf, del_),) = L.resolve(dst_space, dst, 1, byte, np.repeat(one, n), fault)
            dbuf[del_] = sbuf[sel_]
        if rd_bar is not None:
            b = lanes(rd_bar(fr), idx)
            ((_, buf, el),) = L.resolve("shared", b, 8, U64, idx, fault)
            complete_tx(buf, el, size, L.mbar_tx)

    return bulk
