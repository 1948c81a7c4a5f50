"""``mbarrier``: the split arrive/wait barrier object behind ``cuda::barrier`` and pipelines.

The 8-byte barrier object lives in memory (shared, or generic pointing at shared). Its real
layout is opaque to programs, so we use our own: bits 0-31 hold the arrivals still missing in
the current phase, bits 32-62 the expected count, bit 63 the phase parity. An arrival returns a
state token holding the phase it arrived in; ``test_wait``/``try_wait`` report whether that
phase has completed. Arrivals of the lanes of one instruction are applied in lane order. Copies
made with ``cp.async`` are already complete when they are issued here, so
``cp.async.mbarrier.arrive`` only counts an arrival in its ``.noinc`` form.

Transaction counts (``expect_tx``/``complete_tx``: ``cuda::memcpy_async`` into a
``cuda::barrier`` on sm_90 uses ``cp.async.bulk``) live beside the word, per barrier, in the
batch; a phase whose arrivals are all in completes only once its count is back at zero, by the
arrival or by the ``complete_tx`` that gets there last. Bulk copies are performed when issued,
so their ``complete_tx`` comes right after.
"""

from __future__ import annotations

import numpy as np

from .compiler import (
    BOOL,
    U32,
    U64,
    CompileContext,
    Exec,
    addr_reader,
    op,
    reader,
    scatter_writer,
    unsupported,
    writer,
)
from .ir import Addr, Instruction, Sink

_LOW = np.uint64(0xFFFF_FFFF)
_EXP = np.uint64(0x7FFF_FFFF)
_PHASE = np.uint64(1 << 63)


def _space(ins: Instruction) -> str:
    return "shared" if "shared" in ins.mods else "generic"


def _arrive(
    buf: np.ndarray, el, counts: np.ndarray, drop: bool, tx: dict | None = None, add_tx=None
) -> np.ndarray:
    """Apply arrivals (in lane order) to barrier words; returns each lane's state token.

    ``tx`` holds the transaction counts of the batch's barriers; ``add_tx`` (per lane) is added
    to them before each arrival (``mbarrier.arrive.expect_tx``)."""
    el = np.broadcast_to(np.asarray(el), counts.shape)
    tokens = np.empty(counts.size, np.uint64)
    for a in np.unique(el):
        lanes = np.flatnonzero(el == a)
        word = int(buf[a])
        pending, expected, phase = word & 0xFFFF_FFFF, (word >> 32) & 0x7FFF_FFFF, word >> 63
        k = lanes.size
        key = (id(buf), int(a))
        if tx is not None and (add_tx is not None or tx.get(key, 0)):
            for i in lanes:  # with transactions in flight: one arrival at a time
                if add_tx is not None:
                    tx[key] = tx.get(key, 0) + int(add_tx[i])
                tokens[i] = phase << 63
                if drop:
                    expected = max(expected - 1, 0)
                pending = max(pending - int(counts[i]), 0)
                if pending == 0 and tx.get(key, 0) == 0:
                    phase ^= 1
                    pending = expected
            buf[a] = np.uint64((phase << 63) | (expected << 32) | (pending & 0xFFFF_FFFF))
            continue
        if not drop and expected > 0 and 0 < pending <= expected and (counts[lanes] == 1).all():
            # k single arrivals: phase completions happen at arrivals pending, +expected, ...
            j = np.arange(k)
            before = np.where(j < pending, 0, 1 + (j - pending) // expected)
            tokens[lanes] = ((phase ^ (before & 1)) << 63).astype(np.uint64)
            if k < pending:
                pending -= k
            else:
                done = 1 + (k - pending) // expected
                phase ^= done & 1
                pending = expected - (k - pending) % expected
            buf[a] = np.uint64((phase << 63) | (expected << 32) | (pending & 0xFFFF_FFFF))
            continue
        for i in lanes:  # arrivals of one barrier: usually one block's threads, in order
            tokens[i] = phase << 63
            if drop:
                expected = max(expected - 1, 0)
            pending -= int(counts[i])
            if pending <= 0:
                phase ^= 1
                pending = expected
        buf[a] = np.uint64((phase << 63) | (expected << 32) | (pending & 0xFFFF_FFFF))
    return tokens


def complete_tx(buf: np.ndarray, el, amounts: np.ndarray, tx: dict) -> None:
    """Subtract transaction bytes (in lane order); a phase whose arrivals are all in and whose
    count reaches zero completes."""
    el = np.broadcast_to(np.asarray(el), amounts.shape)
    for i in range(amounts.size):
        a = int(el[i])
        key = (id(buf), a)
        tx[key] = tx.get(key, 0) - int(amounts[i])
        word = int(buf[a])
        pending, expected, phase = word & 0xFFFF_FFFF, (word >> 32) & 0x7FFF_FFFF, word >> 63
        if pending == 0 and tx[key] == 0:
            buf[a] = np.uint64(((phase ^ 1) << 63) | (expected << 32) | expected)


@op("mbarrier")
def _mbarrier(ins: Instruction, cx: CompileContext) -> Exec:
    mods = ins.mods
    o = ins.operands
    space = _space(ins)
    fault = cx.faulter(ins)
    kind = next(
        (m for m in mods if m in ("init", "arrive", "arrive_drop", "test_wait", "try_wait",
                                  "inval", "pending_count", "expect_tx", "complete_tx")),
        None,
    )  # fmt: skip
    if kind is None or "noComplete" in mods:
        return unsupported(ins, cx)
    if kind == "inval":
        return lambda fr, m: None
    if kind == "pending_count":
        rs = reader(o[1], U64, cx, ins)
        wp = writer(o[0], U32, cx, ins)
        return lambda fr, m: wp(fr, (np.asarray(rs(fr)) & _LOW).astype(U32)[()], m)
    addr_op = o[0] if kind in ("init", "expect_tx", "complete_tx") else o[1]
    if not isinstance(addr_op, Addr):
        raise cx.fault(ins, "invalid_ptx", "mbarrier needs an address operand")
    rd_addr, _ = addr_reader(addr_op, cx, ins)

    def locate(fr, m):
        L = fr.L
        idx = np.flatnonzero(m) if m is not None else np.arange(L.N)
        a = rd_addr(fr)
        a = a[idx] if isinstance(a, np.ndarray) else np.full(idx.size, a, U64)
        ((_, buf, el),) = L.resolve(space, a, 8, U64, idx, fault)
        return idx, buf, el

    if kind == "init":
        rc = reader(o[1], U32, cx, ins)

        def init(fr, m):
            idx, buf, el = locate(fr, m)
            c = np.broadcast_to(np.asarray(rc(fr), U64), (fr.L.N,))[idx]
            buf[el] = (c & _EXP) << np.uint64(32) | (c & _LOW)

        return init

    if kind in ("expect_tx", "complete_tx"):  # mbarrier.expect_tx [addr], txCount
        rtx = reader(o[1], U32, cx, ins)
        sign = 1 if kind == "expect_tx" else -1

        def tx_op(fr, m):
            idx, buf, el = locate(fr, m)
            n = np.broadcast_to(np.asarray(rtx(fr), np.int64), (fr.L.N,))[idx]
            if sign < 0:
                complete_tx(buf, el, n, fr.L.mbar_tx)
                return
            el = np.broadcast_to(np.asarray(el), n.shape)
            for a, k in zip(el.tolist(), n.tolist(), strict=True):
                key = (id(buf), a)
                fr.L.mbar_tx[key] = fr.L.mbar_tx.get(key, 0) + k

        return tx_op

    if kind in ("arrive", "arrive_drop"):
        expect = "expect_tx" in mods  # arrive.expect_tx: the operand is a byte count
        rcount = reader(o[2], U32, cx, ins) if len(o) > 2 else None
        wtok = scatter_writer(o[0], U64, cx, ins) if not isinstance(o[0], Sink) else None

        def arrive(fr, m):
            idx, buf, el = locate(fr, m)
            counts = np.ones(idx.size, np.int64)
            add = None
            if rcount is not None:
                v = np.broadcast_to(np.asarray(rcount(fr), np.int64), (fr.L.N,))[idx]
                if expect:
                    add = v
                else:
                    counts = v
            tokens = _arrive(buf, el, counts, kind == "arrive_drop", fr.L.mbar_tx, add)
            if wtok is not None:
                wtok(fr, tokens, idx)

        return arrive

    # test_wait / try_wait: has the phase recorded in the token (or the parity) completed?
    parity = "parity" in mods
    rtok = reader(o[2], U32 if parity else U64, cx, ins)
    wdone = scatter_writer(o[0], BOOL, cx, ins)

    def wait(fr, m):
        idx, buf, el = locate(fr, m)
        word = np.broadcast_to(buf[el], idx.shape)
        phase = word >> np.uint64(63)
        tok = np.broadcast_to(np.asarray(rtok(fr)), (fr.L.N,))[idx]
        want = (tok.astype(np.uint64) & np.uint64(1)) if parity else tok.astype(np.uint64) >> 63
        wdone(fr, phase != want, idx)

    return wait
