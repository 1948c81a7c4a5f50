"""Warp-level instructions: shfl.sync, vote.sync, activemask, redux.sync, match.sync.

Lanes of a warp are consecutive lanes of a block (32 threads by linear thread index), so warp
operations index the batch's flat lane vector relative to each warp's first lane. Lanes that do
not execute the instruction (masked off by divergence) contribute nothing to votes; a shuffle
that reads such a lane (undefined in PTX) gets 0, as the hardware returns.
"""

from __future__ import annotations

import numpy as np

from .compiler import BOOL, U32, CompileContext, Exec, last_type, op, reader, unsupported, writer
from .ir import Imm, Instruction, Pair

_I64 = np.dtype(np.int64)


def _per_lane(v, n: int):
    return v if isinstance(v, np.ndarray) else np.full(n, v)


@op("shfl")
def _shfl(ins: Instruction, cx: CompileContext) -> Exec:
    mode = next((m for m in ins.mods if m in ("up", "down", "bfly", "idx")), None)
    if mode is None:
        return unsupported(ins, cx)
    o = ins.operands
    d = o[0]
    if isinstance(d, Pair):
        wv, wp = writer(d.first, U32, cx, ins), writer(d.second, BOOL, cx, ins)
    else:
        wv, wp = writer(d, U32, cx, ins), None
    ra = reader(o[1], U32, cx, ins)
    rb = reader(o[2], U32, cx, ins)
    rc = reader(o[3], U32, cx, ins)

    def f(fr, m):
        L = fr.L
        g = L.geo
        n = L.N
        x = _per_lane(ra(fr), n)
        b = rb(fr)
        c = rc(fr)
        lane = g.laneid.astype(_I64)
        b = b.astype(_I64) if isinstance(b, np.ndarray) else _I64.type(b)
        c = c.astype(_I64) if isinstance(c, np.ndarray) else _I64.type(c)
        clamp = c & 31
        seg = (c >> 8) & 31
        minl = lane & seg
        maxl = minl | (clamp & ~seg)
        if mode == "up":
            j = lane - b
            ok = j >= maxl
        elif mode == "down":
            j = lane + b
            ok = j <= maxl
        elif mode == "bfly":
            j = lane ^ b
            ok = j <= maxl
        else:
            j = minl | (b & ~seg)
            ok = j <= maxl
        src = g.warp_first + j
        if not g.full_warps:  # the last warp of a block may be partial
            ok = ok & (g.t.astype(_I64) - lane + j < g.bs)
        src = np.where(ok, src, g.lane)
        v = x[src]
        if m is not None:
            # a source lane that does not execute this shfl is undefined in PTX; the hardware
            # reads 0 there, which code such as the CUDA samples' reduce7 (a last shuffle
            # reduction over the block's first few lanes only) relies on
            absent = ok & ~m[src]
            if absent.any():
                v = np.where(absent, x.dtype.type(0), v)
        wv(fr, v, m)
        if wp is not None:
            wp(fr, ok, m)

    return f


def _warp_sum(L, v: np.ndarray) -> np.ndarray:
    """Per-lane result of summing int64 ``v`` over each lane's warp."""
    g = L.geo
    if g.full_warps:
        s = v.reshape(-1, 32).sum(1)
        return np.repeat(s, 32)
    s = np.bincount(g.warp, weights=v.astype(np.float64)).astype(np.int64)
    return s[g.warp]


def _ballot(L, p: np.ndarray) -> np.ndarray:
    g = L.geo
    bits = p.astype(np.int64) << g.laneid.astype(np.int64)
    return _warp_sum(L, bits).astype(np.uint64).astype(U32)


_FULL = 0xFFFF_FFFF


def _member_reader(ins: Instruction, cx: CompileContext, k: int):
    """A reader of the ``membermask`` operand ``k`` (None when absent or all 32 lanes).

    A ``.sync`` collective runs over the lanes named by each lane's own membermask: a
    ``thread_block_tile<16>`` votes with 0x0000ffff in its low half-warp and 0xffff0000 in the
    high one, and each half must see only its own lanes.
    """
    o = ins.operands
    if len(o) <= k:
        return None
    if isinstance(o[k], Imm) and int(o[k].value) & _FULL == _FULL:
        return None
    return reader(o[k], U32, cx, ins)


def _members(fr, rmask, act: np.ndarray) -> np.ndarray | None:
    """Per-lane mask of the lanes taking part with each lane: its membermask & the active lanes
    (None: every active lane of the warp, the fast common case)."""
    if rmask is None:
        return None
    mm = rmask(fr)
    if not isinstance(mm, np.ndarray) and int(mm) == _FULL:
        return None
    return np.asarray(mm, U32) & _ballot(fr.L, act)


@op("vote")
def _vote(ins: Instruction, cx: CompileContext) -> Exec:
    kind = next((m for m in ins.mods if m in ("ballot", "any", "all", "uni")), None)
    if kind is None:
        return unsupported(ins, cx)
    o = ins.operands
    rp = reader(o[1], BOOL, cx, ins)
    w = writer(o[0], U32 if kind == "ballot" else BOOL, cx, ins)
    rmask = _member_reader(ins, cx, 2)

    def f(fr, m):
        L = fr.L
        n = L.N
        p = _per_lane(rp(fr), n).astype(BOOL)
        act = np.ones(n, BOOL) if m is None else m
        mem = _members(fr, rmask, act)
        if mem is not None:
            bal = _ballot(L, p & act) & mem
            if kind == "ballot":
                w(fr, bal, m)
            elif kind == "any":
                w(fr, bal != 0, m)
            elif kind == "all":
                w(fr, bal == mem, m)
            else:
                w(fr, (bal == 0) | (bal == mem), m)
            return
        if kind == "ballot":
            w(fr, _ballot(L, p & act), m)
            return
        cnt_true = _warp_sum(L, (p & act).astype(np.int64))
        cnt_act = _warp_sum(L, act.astype(np.int64))
        if kind == "any":
            r = cnt_true > 0
        elif kind == "all":
            r = cnt_true == cnt_act
        else:
            r = (cnt_true == 0) | (cnt_true == cnt_act)
        w(fr, r, m)

    return f


@op("activemask")
def _activemask(ins: Instruction, cx: CompileContext) -> Exec:
    w = writer(ins.operands[0], U32, cx, ins)

    def f(fr, m):
        L = fr.L
        act = np.ones(L.N, BOOL) if m is None else m
        w(fr, _ballot(L, act), m)

    return f


@op("redux")
def _redux(ins: Instruction, cx: CompileContext) -> Exec:
    kind = next((m for m in ins.mods if m in ("add", "min", "max", "and", "or", "xor")), None)
    t = last_type(ins, cx)
    if kind is None or t.kind == "f":
        return unsupported(ins, cx)
    o = ins.operands
    ra = reader(o[1], t, cx, ins)
    w = writer(o[0], t, cx, ins)
    uf = {"add": np.add, "min": np.minimum, "max": np.maximum, "and": np.bitwise_and,
          "or": np.bitwise_or, "xor": np.bitwise_xor}[kind]  # fmt: skip
    ident = {"add": 0, "min": np.iinfo(t).max, "max": np.iinfo(t).min, "and": np.iinfo(t).max
             if t.kind == "u" else -1, "or": 0, "xor": 0}[kind]  # fmt: skip

    rmask = _member_reader(ins, cx, 2)

    def f(fr, m):
        L = fr.L
        g = L.geo
        x = _per_lane(ra(fr), L.N).astype(t)
        act = np.ones(L.N, BOOL) if m is None else m
        mem = _members(fr, rmask, act)
        if mem is not None:  # one reduction per distinct membermask (a tile's lanes share one)
            out = np.zeros(L.N, t)
            bit = (np.uint32(1) << g.laneid.astype(U32)).astype(U32)
            for mv in np.unique(mem[act]):
                mine = act & (mem == mv)
                xs = np.where(act & ((bit & mv) != 0), x, t.type(ident))
                if g.full_warps:
                    r = np.repeat(uf.reduce(xs.reshape(-1, 32), axis=1), 32)
                else:
                    starts = np.flatnonzero(np.r_[True, g.warp[1:] != g.warp[:-1]])
                    r = uf.reduceat(xs, starts)
                    r = r[np.searchsorted(starts, np.arange(L.N), "right") - 1]
                out = np.where(mine, r.astype(t), out)
            w(fr, out, m)
            return
        if m is not None:
            x = np.where(m, x, t.type(ident))
        if g.full_warps:
            r = uf.reduce(x.reshape(-1, 32), axis=1)
            w(fr, np.repeat(r, 32).astype(t), m)
        else:
            starts = np.flatnonzero(np.r_[True, g.warp[1:] != g.warp[:-1]])
            r = uf.reduceat(x, starts)
            w(fr, r[np.searchsorted(starts, np.arange(L.N), "right") - 1].astype(t), m)

    return f


@op("match")
def _match(ins: Instruction, cx: CompileContext) -> Exec:
    """match.any: mask of active lanes holding the same value; match.all: the active mask if
    every active lane holds the same value, else 0 (with an optional predicate result)."""
    mode = "all" if "all" in ins.mods else "any" if "any" in ins.mods else None
    if mode is None:
        return unsupported(ins, cx)
    t = last_type(ins, cx)
    o = ins.operands
    d = o[0]
    if isinstance(d, Pair):
        w, wp = writer(d.first, U32, cx, ins), writer(d.second, BOOL, cx, ins)
    else:
        w, wp = writer(d, U32, cx, ins), None
    ra = reader(o[1], t, cx, ins)
    rmask = _member_reader(ins, cx, 2)

    def f(fr, m):
        L = fr.L
        g = L.geo
        n = L.N
        x = _per_lane(ra(fr), n)
        act = np.ones(n, BOOL) if m is None else m
        mem = _members(fr, rmask, act)
        out = np.zeros(n, np.uint64)
        for k in range(32):  # compare with lane k of the same warp
            src = g.warp_first + k
            valid = src < n
            src = np.minimum(src, n - 1)
            same = valid & (x[src] == x) & act[src] & (g.warp[src] == g.warp)
            out |= same.astype(np.uint64) << np.uint64(k)
        out32 = out.astype(U32)
        if mem is not None:
            out32 = out32 & mem
        if mode == "any":
            w(fr, out32, m)
            return
        full = _ballot(L, act) if mem is None else mem
        ok = out32 == full
        w(fr, np.where(ok, full, U32.type(0)), m)
        if wp is not None:
            wp(fr, ok, m)

    return f


@op("elect")
def _elect(ins: Instruction, cx: CompileContext) -> Exec:
    """elect.sync d|p, membermask: the lowest active lane of each warp is elected."""
    o = ins.operands
    d = o[0]
    if isinstance(d, Pair):
        w, wp = writer(d.first, U32, cx, ins), writer(d.second, BOOL, cx, ins)
    else:
        w, wp = writer(d, U32, cx, ins), None
    rmask = _member_reader(ins, cx, 1)

    def f(fr, m):
        L = fr.L
        g = L.geo
        act = np.ones(L.N, BOOL) if m is None else m
        lane = g.laneid.astype(np.int64)
        mem = _members(fr, rmask, act)
        if mem is not None:  # the lowest lane of each lane's own member set
            low = (mem & (~mem + U32.type(1))).astype(np.uint64)
            leader = np.where(mem != 0, np.log2(np.maximum(low, 1)).astype(np.int64), 64)
            w(fr, leader.astype(U32), m)
            if wp is not None:
                wp(fr, act & (lane == leader), m)
            return
        key = np.where(act, lane, 64)
        if g.full_warps:
            leader = np.repeat(key.reshape(-1, 32).min(1), 32)
        else:
            first = np.full(int(g.warp.max()) + 1, 64, np.int64)
            np.minimum.at(first, g.warp, key)
            leader = first[g.warp]
        w(fr, leader.astype(U32), m)
        if wp is not None:
            wp(fr, act & (lane == leader), m)

    return f


@op("bar", "barrier")
def _warp_barrier(ins: Instruction, cx: CompileContext) -> Exec:
    """``bar.warp.sync`` and ``bar.arrive`` (block barriers proper are scheduler terminators).

    A warp's lanes execute in lockstep here, so ``__syncwarp`` has nothing to wait for.
    ``bar.arrive a, b`` adds the arriving threads of each block to barrier ``a``'s tally, which
    the scheduler counts towards the ``b`` threads that barrier waits for.
    """
    if "cluster" in ins.mods:  # barrier.cluster.arrive/.wait: sm_90 thread-block clusters
        return unsupported(ins, cx, f"`{ins.opcode}.{'.'.join(ins.mods)}` (a thread-block "
                           "cluster barrier: clusters need compute capability 9.0)")
    if "arrive" not in ins.mods:
        return lambda fr, m: None
    o = ins.operands
    if not o:
        return unsupported(ins, cx, "bar.arrive without a barrier number")
    if not isinstance(o[0], Imm):
        return unsupported(ins, cx, "bar.arrive with a barrier number in a register")
    bar_id = int(o[0].value)

    def arrive(fr, m):
        L = fr.L
        if m is None:
            per_block = np.full(L.nb, L.bs, np.int64)
        else:
            per_block = m.reshape(L.nb, L.bs).sum(1)
        tally = L.bar_arrived.get(bar_id)
        L.bar_arrived[bar_id] = per_block if tally is None else tally + per_block

    return arrive
