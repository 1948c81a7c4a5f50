"""Memory spaces, atomics, control flow, barriers, calls and warp instructions."""

from __future__ import annotations

import numpy as np
import pytest
from ptxkit import bits_as, pack, run_body, run_ptx

HEAD = ".version 8.0\n.target sm_75\n.address_size 64\n"


def test_vector_loads_stores_and_local_memory(dev):
    body = """
    .local .align 16 .b8 depot[32];
    mov.u64 %rd10, depot;
    ld.global.v2.u32 {%r1, %r2}, [%rd4];
    st.local.v4.u32 [%rd10], {%r2, %r1, %r2, %r1};
    st.local.u32 [%rd10+16], %r0;
    ld.local.v4.u32 {%r3, %r4, %r5, %r6}, [%rd10];
    ld.local.u32 %r7, [%rd10+16];
    add.u32 %r8, %r3, %r4; add.u32 %r8, %r8, %r7;
    st.global.v2.u32 [%rd3], {%r8, %r6};
    """
    a = np.arange(4, dtype=np.uint64) * 0x100000000 + np.arange(4, dtype=np.uint64) * 10
    raw = run_body(dev, body, [a], threads=4)
    lo = (raw[:, 0] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    hi = (raw[:, 0] >> np.uint64(32)).astype(np.uint32)
    t = np.arange(4)
    assert lo.tolist() == (t * 10 + t + t).tolist()
    assert hi.tolist() == (t * 10).tolist()


def test_generic_addressing_mixes_windows_per_lane(dev):
    """Even lanes point at their local buffer, odd lanes at global memory, in one ld."""
    body = """
    .local .align 8 .b8 buf[8];
    mov.u64 %rd10, buf;
    st.local.u32 [%rd10], 1000;
    cvta.local.u64 %rd11, %rd10;
    and.b32 %r1, %r0, 1;
    setp.eq.u32 %p1, %r1, 1;
    selp.b64 %rd12, %rd4, %rd11, %p1;
    ld.u32 %r2, [%rd12];
    isspacep.local %p2, %rd12;
    selp.u32 %r3, 1, 0, %p2;
    st.global.u32 [%rd3], %r2; st.global.u32 [%rd3+4], %r3;
    """
    raw = run_body(dev, body, [np.arange(8, dtype=np.uint32) + 7], threads=8)
    got = bits_as(raw, np.uint32)  # low word
    vals = (raw[:, 0] & np.uint64(0xFFFFFFFF)).astype(np.int64)
    flags = (raw[:, 0] >> np.uint64(32)).astype(np.int64)
    del got
    assert vals.tolist() == [1000 if t % 2 == 0 else t + 7 for t in range(8)]
    assert flags.tolist() == [1 - t % 2 for t in range(8)]


def test_shared_generic_and_static_layout(dev):
    text = (
        HEAD
        + """
    .shared .align 4 .b8 a_s[64];
    .shared .align 8 .b8 b_s[16];
    .visible .entry k(.param .u64 out)
    {
      .reg .b32 %r<10>; .reg .b64 %rd<10>;
      mov.u32 %r0, %tid.x;
      mov.u32 %r1, a_s;
      shl.b32 %r2, %r0, 2;
      add.u32 %r3, %r1, %r2;
      st.shared.u32 [%r3], %r0;
      mov.u64 %rd1, b_s;
      cvta.shared.u64 %rd2, %rd1;
      st.u64 [%rd2], 77;
      bar.sync 0;
      xor.b32 %r4, %r0, 1;
      shl.b32 %r5, %r4, 2;
      add.u32 %r6, %r1, %r5;
      ld.shared.u32 %r7, [%r6];
      ld.shared.u64 %rd3, [b_s];
      cvt.u32.u64 %r8, %rd3;
      add.u32 %r7, %r7, %r8;
      ld.param.u64 %rd4, [out];
      mul.wide.u32 %rd5, %r0, 4;
      add.s64 %rd6, %rd4, %rd5;
      st.global.u32 [%rd6], %r7;
      ret;
    }
    """
    )
    out = dev.zeros(16, np.uint32)
    run_ptx(dev, text, "k", pack("Q", out), block=(16, 1, 1))
    assert dev.get(out, 16, np.uint32).tolist() == [(t ^ 1) + 77 for t in range(16)]


ATOM_TEXT = (
    HEAD
    + """
.visible .entry k(.param .u64 g, .param .u64 oldp)
{
  .reg .pred %p<4>; .reg .b32 %r<20>; .reg .b64 %rd<20>; .reg .f32 %f<4>; .reg .f64 %fd<4>;
  .shared .align 8 .b8 sh[64];
  ld.param.u64 %rd1, [g];
  ld.param.u64 %rd2, [oldp];
  mov.u32 %r0, %tid.x;
  setp.eq.u32 %p1, %r0, 0;
  @%p1 st.shared.u32 [sh], 0;
  @%p1 st.shared.u32 [sh+4], 0;
  bar.sync 0;
  atom.global.add.u32 %r1, [%rd1], 1;
  atom.global.max.s32 %r2, [%rd1+4], %r0;
  atom.global.min.u32 %r3, [%rd1+8], %r0;
  atom.global.inc.u32 %r4, [%rd1+12], 5;
  atom.global.dec.u32 %r5, [%rd1+16], 5;
  atom.global.and.b32 %r6, [%rd1+20], -2;
  atom.global.or.b32 %r7, [%rd1+24], %r0;
  atom.global.xor.b32 %r8, [%rd1+28], 1;
  atom.global.exch.b32 %r9, [%rd1+32], %r0;
  atom.global.cas.b32 %r10, [%rd1+36], %r0, 100;
  cvt.rn.f32.u32 %f1, %r0;
  atom.global.add.f32 %f2, [%rd1+40], %f1;
  red.global.add.u64 [%rd1+48], 3;
  cvt.rn.f64.u32 %fd1, %r0;
  atom.global.add.f64 %fd2, [%rd1+56], %fd1;
  atom.shared.add.u32 %r11, [sh], 2;
  atom.shared.max.u32 %r12, [sh+4], %r0;
  bar.sync 0;
  ld.shared.u32 %r13, [sh];
  ld.shared.u32 %r14, [sh+4];
  @%p1 st.global.u32 [%rd1+64], %r13;
  @%p1 st.global.u32 [%rd1+68], %r14;
  mul.wide.u32 %rd3, %r0, 16;
  add.s64 %rd4, %rd2, %rd3;
  st.global.v4.u32 [%rd4], {%r1, %r4, %r9, %r10};
  ret;
}
"""
)


def test_atomics_serialise_in_lane_order(dev):
    n = 40
    g = np.zeros(18, np.uint32)
    g[2] = 0xFFFFFFFF  # min
    g[5] = 0xFFFFFFFF  # and
    g[9] = 0  # cas compares with tid: lane 0 swaps in 100
    pg = dev.put(g)
    po = dev.zeros(4 * n, np.uint32)
    run_ptx(dev, ATOM_TEXT, "k", pack("QQ", pg, po), block=(n, 1, 1))
    r = dev.get(pg, 18, np.uint32)
    assert r[0] == n
    assert r[1] == n - 1
    assert r[2] == 0
    assert r[3] == n % 6  # inc wraps at 5: 0..5 then 0
    # dec: 0 -> 5 -> 4 ... : lane order sequence from 0
    seq = 0
    for _ in range(n):
        seq = 5 if seq == 0 or seq > 5 else seq - 1
    assert r[4] == seq
    assert r[5] == 0xFFFFFFFE
    assert r[6] == np.bitwise_or.reduce(np.arange(n))
    assert r[7] == n % 2
    assert r[8] == n - 1  # last exchange wins
    assert r[9] == 100
    assert np.frombuffer(r[10:11].tobytes(), np.float32)[0] == sum(range(n))
    assert int(r[12]) | int(r[13]) << 32 == 3 * n
    assert np.frombuffer(r[14:16].tobytes(), np.float64)[0] == sum(range(n))
    assert r[16] == 2 * n and r[17] == n - 1
    old = dev.get(po, 4 * n, np.uint32).reshape(n, 4)
    assert old[:, 0].tolist() == list(range(n))  # add: each lane sees the previous count
    assert old[:, 2].tolist() == [0, *range(n - 1)]  # exch: previous lane's value
    assert old[0, 3] == 0 and (old[1:, 3] == 100).all()  # cas


def test_nested_divergent_loops_reconverge(dev):
    """for i < tid: for j < i: if (i+j) odd: s += i*j else s -= 1  (per lane trip counts)."""
    body = """
    mov.u32 %r1, 0;            // s
    mov.u32 %r2, 0;            // i
    $Louter:
    setp.ge.u32 %p1, %r2, %r0;
    @%p1 bra $Ldone;
    mov.u32 %r3, 0;            // j
    $Linner:
    setp.ge.u32 %p2, %r3, %r2;
    @%p2 bra $Lnext;
    add.u32 %r4, %r2, %r3;
    and.b32 %r5, %r4, 1;
    setp.eq.u32 %p3, %r5, 0;
    @%p3 bra $Leven;
    mad.lo.u32 %r1, %r2, %r3, %r1;
    bra.uni $Ljoin;
    $Leven:
    sub.u32 %r1, %r1, 1;
    $Ljoin:
    add.u32 %r3, %r3, 1;
    bra.uni $Linner;
    $Lnext:
    add.u32 %r2, %r2, 1;
    bra.uni $Louter;
    $Ldone:
    st.global.u32 [%rd3], %r1;
    """
    raw = run_body(dev, body, threads=45)
    got = (raw[:, 0] & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)
    ref = []
    for t in range(45):
        s = 0
        for i in range(t):
            for j in range(i):
                s = s + i * j if (i + j) % 2 else s - 1
        ref.append(np.int32(np.int64(s).astype(np.int32)))
    assert got.tolist() == ref


def test_spin_wait_on_a_later_warp_terminates(dev):
    """Warp 0 spins on a flag that warp 1 sets in code laid out after the loop."""
    text = (
        HEAD
        + """
    .visible .entry k(.param .u64 flag)
    {
      .reg .pred %p<4>; .reg .b32 %r<8>; .reg .b64 %rd<4>;
      ld.param.u64 %rd1, [flag];
      mov.u32 %r0, %tid.x;
      setp.ge.u32 %p1, %r0, 32;
      @%p1 bra $Lproducer;
      $Lspin:
      ld.volatile.global.u32 %r1, [%rd1];
      setp.eq.u32 %p2, %r1, 0;
      @%p2 bra $Lspin;
      st.global.u32 [%rd1+4], %r1;
      ret;
      $Lproducer:
      st.volatile.global.u32 [%rd1], 9;
      ret;
    }
    """
    )
    flag = dev.zeros(2, np.uint32)
    run_ptx(dev, text, "k", pack("Q", flag), block=(64, 1, 1))
    assert dev.get(flag, 2, np.uint32).tolist() == [9, 9]


def test_func_call_with_params_return_and_exit(dev):
    text = (
        HEAD
        + """
    .func (.param .b32 ret) twice_plus(.param .b32 a, .param .b64 b)
    {
      .reg .b32 %r<4>; .reg .b64 %rd<2>;
      .local .align 4 .b8 scratch[4];
      ld.param.b32 %r1, [a];
      ld.param.b64 %rd1, [b];
      cvt.u32.u64 %r2, %rd1;
      mov.u64 %rd1, scratch;
      st.local.u32 [%rd1], %r2;
      ld.local.u32 %r2, [%rd1];
      mad.lo.s32 %r3, %r1, 2, %r2;
      st.param.b32 [ret], %r3;
      ret;
    }
    .visible .entry k(.param .u64 out)
    {
      .reg .pred %p<2>; .reg .b32 %r<6>; .reg .b64 %rd<6>;
      mov.u32 %r0, %tid.x;
      ld.param.u64 %rd1, [out];
      mul.wide.u32 %rd2, %r0, 4;
      add.s64 %rd3, %rd1, %rd2;
      st.global.u32 [%rd3], 55;
      setp.eq.u32 %p1, %r0, 3;
      @%p1 exit;
      {
        .param .b32 p0;
        .param .b64 p1;
        .param .b32 r0;
        st.param.b32 [p0], %r0;
        st.param.b64 [p1], 100;
        call.uni (r0), twice_plus, (p0, p1);
        ld.param.b32 %r1, [r0];
      }
      st.global.u32 [%rd3], %r1;
      ret;
    }
    """
    )
    out = dev.zeros(8, np.uint32)
    run_ptx(dev, text, "k", pack("Q", out), block=(8, 1, 1))
    assert dev.get(out, 8, np.uint32).tolist() == [55 if t == 3 else 2 * t + 100 for t in range(8)]


def test_warp_shuffle_modes_partial_warp_and_activemask(dev):
    body = """
    shfl.sync.up.b32 %r1|%p1, %r0, 1, 0, -1;
    shfl.sync.down.b32 %r2|%p2, %r0, 3, 31, -1;
    shfl.sync.bfly.b32 %r3, %r0, 4, 31, -1;
    shfl.sync.idx.b32 %r4, %r0, 2, 0x1f1f, -1;     // lanes in segments of... clamp 31, seg 31
    shfl.sync.idx.b32 %r5, %r0, 1, 0x181f, -1;     // 8-lane segments: lane 1 of each
    selp.u32 %r6, 1, 0, %p1; selp.u32 %r7, 1, 0, %p2;
    setp.lt.u32 %p3, %r0, 5;
    mov.u32 %r8, 0;
    @%p3 activemask.b32 %r8;
    st.global.v4.u32 [%rd3], {%r1, %r2, %r3, %r5};
    st.global.v4.u32 [%rd3+16], {%r6, %r7, %r8, %r4};
    """
    raw = run_body(dev, body, nout=4, threads=40)  # second warp is partial (8 lanes)
    w = np.ascontiguousarray(raw).view(np.uint32).reshape(40, 8)
    for t in range(40):
        lane, base = t % 32, t - t % 32
        size = 32 if t < 32 else 8
        up = t - 1 if lane >= 1 else t
        down = t + 3 if lane + 3 < size else t
        bfly = base + (lane ^ 4) if (lane ^ 4) < size else t
        seg = base + (lane & ~7) + 1
        assert w[t, 0] == up and w[t, 4] == (lane >= 1), t
        assert w[t, 1] == down and w[t, 5] == (lane + 3 <= 31 and lane + 3 < size), t
        assert w[t, 2] == bfly, t
        assert w[t, 3] == seg, t
        assert w[t, 6] == (0b11111 if t < 5 else 0), t


def test_vote_in_divergent_code_and_bar_red(dev):
    body = """
    and.b32 %r1, %r0, 1;
    setp.eq.u32 %p1, %r1, 0;
    mov.u32 %r2, 0;
    mov.u32 %r3, 0;
    @!%p1 bra $Lskip;
    setp.lt.u32 %p2, %r0, 10;
    vote.sync.ballot.b32 %r2, %p2, 0x55555555;
    vote.sync.all.pred %p3, %p2, 0x55555555;
    selp.u32 %r3, 1, 0, %p3;
    $Lskip:
    setp.lt.u32 %p4, %r0, 6;
    bar.red.popc.u32 %r4, 0, %p4;
    bar.red.or.pred %p5, 0, %p4;
    selp.u32 %r5, 1, 0, %p5;
    st.global.v4.u32 [%rd3], {%r2, %r3, %r4, %r5};
    """
    raw = run_body(dev, body, nout=2, threads=32)
    w = np.ascontiguousarray(raw).view(np.uint32).reshape(32, 4)
    even_lt10 = sum(1 << t for t in range(0, 10, 2))
    for t in range(32):
        if t % 2 == 0:
            assert w[t, 0] == even_lt10
            assert w[t, 1] == 0
        else:
            assert w[t, 0] == 0
        assert w[t, 2] == 6
        assert w[t, 3] == 1


@pytest.mark.parametrize("threads", [1, 33, 300])
def test_special_registers(dev, threads):
    text = (
        HEAD
        + """
    .visible .entry k(.param .u64 out)
    {
      .reg .b32 %r<16>; .reg .b64 %rd<8>;
      mov.u32 %r0, %tid.x; mov.u32 %r1, %tid.y; mov.u32 %r2, %ntid.x; mov.u32 %r3, %ntid.y;
      mov.u32 %r4, %ctaid.x; mov.u32 %r5, %ctaid.y; mov.u32 %r6, %nctaid.x;
      mov.u32 %r7, %laneid; mov.u32 %r8, %warpid; mov.u32 %r9, %lanemask_lt;
      mov.u32 %r10, %nctaid.y;
      mad.lo.u32 %r11, %r1, %r2, %r0;               // linear tid
      mad.lo.u32 %r12, %r5, %r6, %r4;               // linear block
      mul.lo.u32 %r13, %r2, %r3;
      mad.lo.u32 %r14, %r12, %r13, %r11;            // global linear id
      ld.param.u64 %rd1, [out];
      mul.wide.u32 %rd2, %r14, 16;
      add.s64 %rd3, %rd1, %rd2;
      st.global.v4.u32 [%rd3], {%r11, %r7, %r8, %r9};
      mov.u64 %rd4, %clock64;
      ret;
    }
    """
    )
    bx = min(threads, 16)
    by = (threads + bx - 1) // bx
    grid = (3, 2, 1)
    n = bx * by * 6
    out = dev.zeros(4 * n, np.uint32)
    run_ptx(dev, text, "k", pack("Q", out), grid=grid, block=(bx, by, 1))
    w = dev.get(out, 4 * n, np.uint32).reshape(n, 4)
    t = np.arange(n) % (bx * by)
    assert w[:, 0].tolist() == t.tolist()
    assert w[:, 1].tolist() == (t % 32).tolist()
    assert w[:, 2].tolist() == (t // 32).tolist()
    assert w[:, 3].tolist() == ((1 << (t % 32)) - 1).tolist()


def _serial_atomics(buf, el, opname, vals, cmps):
    buf = buf.copy()
    old = []
    for k, e in enumerate(el):
        cur = int(buf[e])
        old.append(cur)
        x = int(vals[k])
        if opname == "add":
            new = cur + x
        elif opname == "min":
            new = min(cur, x)
        elif opname == "max":
            new = max(cur, x)
        elif opname == "and":
            new = cur & x
        elif opname == "or":
            new = cur | x
        elif opname == "xor":
            new = cur ^ x
        elif opname == "exch":
            new = x
        elif opname == "cas":
            new = x if cur == int(cmps[k]) else cur
        elif opname == "inc":
            new = 0 if cur >= x else cur + 1
        else:
            new = x if cur == 0 or cur > x else cur - 1
        buf[e] = new & 0xFFFFFFFF
    return buf, np.array(old, np.uint32)


@pytest.mark.parametrize(
    "opname", ["add", "min", "max", "and", "or", "xor", "exch", "cas", "inc", "dec"]
)
@pytest.mark.parametrize("spread", [1, 3, 50])
def test_atomic_update_matches_serial_order(opname, spread):
    from rgpu.server.cuda.emu.ptx.ops_mem import atomic_update

    rng = np.random.default_rng(spread)
    n = 300
    el = rng.integers(0, spread, n)
    if spread == 3:
        el[:200] = 1  # one long group next to short ones
    vals = rng.integers(0, 6, n).astype(np.uint32)
    if opname in ("inc", "dec") and spread == 1:
        vals[:] = 4  # the closed form for a uniform bound
    cmps = rng.integers(0, 3, n).astype(np.uint32)
    buf = rng.integers(0, 6, spread).astype(np.uint32)
    ref_buf, ref_old = _serial_atomics(buf, el, opname, vals, cmps)
    got_buf = buf.copy()
    old = atomic_update(got_buf, el, opname, np.dtype(np.uint32), vals, cmps)
    assert np.array_equal(got_buf, ref_buf)
    assert np.array_equal(old, ref_old)


RECURSIVE = (
    HEAD
    + """
.func (.param .b32 ret) fact(.param .b32 n)
{
  .reg .pred %p<2>; .reg .b32 %r<6>;
  ld.param.b32 %r1, [n];
  setp.le.u32 %p1, %r1, 1;
  mov.u32 %r5, 1;
  @%p1 bra $Ldone;
  sub.u32 %r2, %r1, 1;
  {
    .param .b32 a0;
    .param .b32 r0;
    st.param.b32 [a0], %r2;
    call.uni (r0), fact, (a0);
    ld.param.b32 %r3, [r0];
  }
  mul.lo.u32 %r5, %r3, %r1;
  $Ldone:
  st.param.b32 [ret], %r5;
  ret;
}
.visible .entry k(.param .u64 out)
{
  .reg .b32 %r<4>; .reg .b64 %rd<4>;
  mov.u32 %r0, %tid.x;
  {
    .param .b32 a0;
    .param .b32 r0;
    st.param.b32 [a0], %r0;
    call.uni (r0), fact, (a0);
    ld.param.b32 %r1, [r0];
  }
  ld.param.u64 %rd1, [out];
  mul.wide.u32 %rd2, %r0, 4;
  add.s64 %rd3, %rd1, %rd2;
  st.global.u32 [%rd3], %r1;
  ret;
}
"""
)


def test_recursive_function_with_divergent_depths(dev):
    out = dev.zeros(8, np.uint32)
    run_ptx(dev, RECURSIVE, "k", pack("Q", out), block=(8, 1, 1))
    fact = [1, 1, 2, 6, 24, 120, 720, 5040]
    assert dev.get(out, 8, np.uint32).tolist() == fact


def test_recursion_with_local_frames(dev):
    """Each recursion level gets its own .local frame (the depot is written before the call
    and read after it returns, so a shared frame would be clobbered)."""
    text = RECURSIVE.replace(
        ".reg .pred %p<2>; .reg .b32 %r<6>;",
        ".reg .pred %p<2>; .reg .b32 %r<6>; .local .align 4 .b8 depot[4];",
    ).replace(
        "mul.lo.u32 %r5, %r3, %r1;",
        "ld.local.u32 %r4, [depot]; mul.lo.u32 %r5, %r3, %r4;",
    ).replace("sub.u32 %r2, %r1, 1;", "sub.u32 %r2, %r1, 1; st.local.u32 [depot], %r1;")
    out = dev.zeros(8, np.uint32)
    run_ptx(dev, text, "k", pack("Q", out), block=(8, 1, 1))
    assert dev.get(out, 8, np.uint32).tolist() == [1, 1, 2, 6, 24, 120, 720, 5040]


def test_brx_idx_jump_table(dev):
    body = """
    and.b32 %r1, %r0, 3;
    $Ltab: .branchtargets $L0, $L1, $L2, $L3;
    brx.idx %r1, $Ltab;
    $L0: mov.u32 %r2, 100; bra.uni $Lend;
    $L1: mov.u32 %r2, 200; bra.uni $Lend;
    $L2: mov.u32 %r2, 300; bra.uni $Lend;
    $L3: mov.u32 %r2, 400;
    $Lend:
    add.u32 %r2, %r2, %r0;
    st.global.u32 [%rd3], %r2;
    """
    raw = run_body(dev, body, threads=8)
    assert (raw[:, 0] & np.uint64(0xFFFFFFFF)).tolist() == [100 * (t % 4 + 1) + t for t in range(8)]
    raw = run_body(dev, body.replace("and.b32 %r1, %r0, 3;", "mov.u32 %r1, 2;"), threads=4)
    assert (raw[:, 0] & np.uint64(0xFFFFFFFF)).tolist() == [300 + t for t in range(4)]


def test_indirect_call_through_function_pointers(dev):
    text = (
        HEAD
        + """
    .func (.param .b32 ret) twice(.param .b32 a)
    { .reg .b32 %r<3>; ld.param.b32 %r1, [a]; add.s32 %r2, %r1, %r1; st.param.b32 [ret], %r2; ret; }
    .func (.param .b32 ret) square(.param .b32 a)
    { .reg .b32 %r<3>; ld.param.b32 %r1, [a]; mul.lo.s32 %r2, %r1, %r1; st.param.b32 [ret], %r2;
      ret; }
    .visible .entry k(.param .u64 out)
    {
      .reg .pred %p<2>; .reg .b32 %r<4>; .reg .b64 %rd<8>;
      mov.u32 %r0, %tid.x;
      mov.u64 %rd4, twice;
      mov.u64 %rd5, square;
      and.b32 %r2, %r0, 1;
      setp.eq.u32 %p1, %r2, 1;
      selp.b64 %rd6, %rd5, %rd4, %p1;
      {
        .param .b32 a0;
        .param .b32 r0;
        st.param.b32 [a0], %r0;
        prototype_0 : .callprototype (.param .b32 _) _ (.param .b32 _);
        call (r0), %rd6, (a0), prototype_0;
        ld.param.b32 %r1, [r0];
      }
      ld.param.u64 %rd1, [out];
      mul.wide.u32 %rd2, %r0, 4;
      add.s64 %rd3, %rd1, %rd2;
      st.global.u32 [%rd3], %r1;
      ret;
    }
    """
    )
    out = dev.zeros(8, np.uint32)
    run_ptx(dev, text, "k", pack("Q", out), block=(8, 1, 1))
    assert dev.get(out, 8, np.uint32).tolist() == [t * t if t % 2 else 2 * t for t in range(8)]


def test_match_any_and_all(dev):
    body = """
    and.b32 %r1, %r0, 3;
    match.any.sync.b32 %r2, %r1, -1;
    match.all.sync.b32 %r3|%p1, %r1, -1;
    shr.u32 %r4, %r0, 5;
    match.all.sync.b32 %r5|%p2, %r4, -1;
    selp.u32 %r6, 1, 0, %p2;
    st.global.v4.u32 [%rd3], {%r2, %r3, %r5, %r6};
    """
    raw = run_body(dev, body, nout=2, threads=32)
    w = np.ascontiguousarray(raw).view(np.uint32).reshape(32, 4)
    for t in range(32):
        assert w[t, 0] == sum(1 << k for k in range(32) if k % 4 == t % 4)
        assert w[t, 1] == 0
        assert w[t, 2] == 0xFFFFFFFF and w[t, 3] == 1


def test_blocks_of_one_batch_may_wait_at_different_barriers(dev):
    text = (
        HEAD
        + """
    .visible .entry k(.param .u64 out)
    {
      .reg .pred %p<4>; .reg .b32 %r<8>; .reg .b64 %rd<6>;
      .shared .align 4 .b8 sm[4];
      mov.u32 %r0, %tid.x;
      mov.u32 %r1, %ctaid.x;
      setp.eq.u32 %p1, %r0, 0;
      @%p1 st.shared.u32 [sm], %r1;
      setp.eq.u32 %p2, %r1, 0;
      @%p2 bra $Lzero;
      add.u32 %r2, %r0, 1000;
      bar.sync 0;
      bra.uni $Ljoin;
      $Lzero:
      add.u32 %r2, %r0, 2000;
      bar.sync 0;
      $Ljoin:
      ld.shared.u32 %r3, [sm];
      add.u32 %r2, %r2, %r3;
      ld.param.u64 %rd1, [out];
      mad.lo.u32 %r4, %r1, 8, %r0;
      mul.wide.u32 %rd2, %r4, 4;
      add.s64 %rd3, %rd1, %rd2;
      st.global.u32 [%rd3], %r2;
      ret;
    }
    """
    )
    out = dev.zeros(16, np.uint32)
    run_ptx(dev, text, "k", pack("Q", out), grid=(2, 1, 1), block=(8, 1, 1))
    got = dev.get(out, 16, np.uint32).tolist()
    assert got == [2000 + t for t in range(8)] + [1000 + t + 1 for t in range(8)]


def test_syncwarp_and_bar_arrive_are_accepted(dev):
    body = """
    bar.warp.sync -1;
    setp.lt.u32 %p1, %r0, 8;
    @%p1 bar.warp.sync 255;
    barrier.sync.aligned 0;
    st.global.u32 [%rd3], 3;
    """
    raw = run_body(dev, body, threads=32)
    assert (raw[:, 0] == 3).all()


def test_cp_async_copies_and_zero_fills(dev):
    body = """
    .shared .align 16 .b8 tile[1024];
    mov.u32 %r1, tile;
    shl.b32 %r2, %r0, 4;
    add.u32 %r3, %r1, %r2;
    setp.eq.u32 %p1, %r0, 1;
    selp.u32 %r4, 5, 16, %p1;
    cp.async.cg.shared.global [%r3], [%rd4], 16, %r4;
    cp.async.commit_group;
    cp.async.wait_group 0;
    bar.sync 0;
    ld.shared.v4.u32 {%r5, %r6, %r7, %r8}, [%r3];
    st.global.v2.u32 [%rd3], {%r5, %r6};
    st.global.v2.u32 [%rd3+8], {%r7, %r8};
    """
    src = np.arange(4 * 16, dtype=np.uint8).reshape(4, 16)
    inputs = [src[:, :8].copy().view(np.uint64)[:, 0], src[:, 8:].copy().view(np.uint64)[:, 0]]
    raw = run_body(dev, body, inputs, nout=2, threads=4)
    got = np.ascontiguousarray(raw).view(np.uint8).reshape(4, 16)
    expect = src.copy()
    expect[1, 5:] = 0
    assert np.array_equal(got, expect)


def test_elect_sync_and_shared_cta_spaces(dev):
    body = """
    .shared .align 4 .b8 cnt[4];
    setp.ge.u32 %p3, %r0, 3;
    @!%p3 bra $Lskip;
    elect.sync %r1|%p1, -1;
    @%p1 atom.shared::cta.add.u32 %r2, [cnt], 1;
    $Lskip:
    bar.sync 0;
    ld.shared::cta.u32 %r3, [cnt];
    st.global.v2.u32 [%rd3], {%r1, %r3};
    """
    raw = run_body(dev, body, threads=40)
    w = np.ascontiguousarray(raw).view(np.uint32).reshape(40, 2)
    assert w[3:32, 0].tolist() == [3] * 29 and w[32:, 0].tolist() == [0] * 8
    assert (w[:, 1] == 2).all()  # one elected lane per warp incremented


def test_function_pointer_table_in_global_initialiser(dev):
    text = (
        HEAD
        + """
    .func (.param .b32 ret) inc(.param .b32 a)
    { .reg .b32 %r<3>; ld.param.b32 %r1, [a]; add.s32 %r2, %r1, 1; st.param.b32 [ret], %r2; ret; }
    .func (.param .b32 ret) neg(.param .b32 a)
    { .reg .b32 %r<3>; ld.param.b32 %r1, [a]; neg.s32 %r2, %r1; st.param.b32 [ret], %r2; ret; }
    .global .align 8 .u64 table[2] = {inc, neg};
    .visible .entry k(.param .u64 out)
    {
      .reg .b32 %r<4>; .reg .b64 %rd<8>;
      mov.u32 %r0, %tid.x;
      and.b32 %r2, %r0, 1;
      mul.wide.u32 %rd4, %r2, 8;
      mov.u64 %rd5, table;
      add.s64 %rd6, %rd5, %rd4;
      ld.global.u64 %rd7, [%rd6];
      {
        .param .b32 a0;
        .param .b32 r0;
        st.param.b32 [a0], %r0;
        call (r0), %rd7, (a0);
        ld.param.b32 %r1, [r0];
      }
      ld.param.u64 %rd1, [out];
      mul.wide.u32 %rd2, %r0, 4;
      add.s64 %rd3, %rd1, %rd2;
      st.global.u32 [%rd3], %r1;
      ret;
    }
    """
    )
    out = dev.zeros(6, np.int32)
    run_ptx(dev, text, "k", pack("Q", out), block=(6, 1, 1))
    assert dev.get(out, 6, np.int32).tolist() == [1, -1, 3, -3, 5, -5]


NAMED = """
    .shared .align 4 .b8 buf[256];
    mov.u32 %r1, buf;
    shl.b32 %r2, %r0, 2;
    setp.ge.u32 %p1, %r0, 32;
    @%p1 bra $Lconsumer;
    add.u32 %r3, %r1, %r2;
    mul.lo.u32 %r4, %r0, 7;
    st.shared.u32 [%r3], %r4;
    ARRIVE
    mov.u32 %r6, 0;
    bra.uni $Lend;
    $Lconsumer:
    bar.sync 1, 64;
    sub.u32 %r5, %r2, 128;
    add.u32 %r3, %r1, %r5;
    ld.shared.u32 %r6, [%r3];
    $Lend:
    st.global.u32 [%rd3], %r6;
"""


def test_named_barrier_producer_consumer(dev):
    raw = run_body(dev, NAMED.replace("ARRIVE", "bar.arrive 1, 64;"), threads=64)
    got = (raw[:, 0] & np.uint64(0xFFFFFFFF)).tolist()
    assert got == [0] * 32 + [7 * t for t in range(32)]


def test_named_barrier_that_can_never_complete(dev):
    from rgpu.server.cuda.emu.ptx import EmuFault

    with pytest.raises(EmuFault) as ei:
        run_body(dev, NAMED.replace("ARRIVE", ""), threads=64)
    assert ei.value.kind == "barrier_divergence"
    assert "bar.sync 1, 64" in ei.value.message


def test_warp_specialised_barriers_with_counts(dev):
    body = """
    setp.ge.u32 %p1, %r0, 32;
    @%p1 bra $Lb;
    bar.sync 1, 32;
    mov.u32 %r1, 1;
    bra.uni $Lend;
    $Lb:
    bar.sync 2, 32;
    mov.u32 %r1, 2;
    $Lend:
    st.global.u32 [%rd3], %r1;
    """
    raw = run_body(dev, body, threads=64)
    assert (raw[:, 0] & np.uint64(0xFFFFFFFF)).tolist() == [1] * 32 + [2] * 32


def test_mbarrier_phases_with_divergent_arrivals(dev):
    """8 threads, barrier expecting 8 arrivals: the first 3 arrive early and spin until the
    rest arrive; then a second phase completes with arrival counts of 2 from 4 threads."""
    body = """
    .shared .align 8 .b8 bar[8];
    mov.u32 %r1, bar;
    setp.eq.u32 %p1, %r0, 0;
    @%p1 mbarrier.init.shared.b64 [%r1], 8;
    bar.sync 0;
    setp.lt.u32 %p2, %r0, 3;
    @!%p2 bra $Llate;
    mbarrier.arrive.shared.b64 %rd10, [%r1];
    $Lspin:
    mbarrier.test_wait.shared.b64 %p3, [%r1], %rd10;
    @!%p3 bra $Lspin;
    bra.uni $Lphase2;
    $Llate:
    nanosleep.u32 10;
    mbarrier.arrive.shared.b64 %rd10, [%r1];
    $Lwait2:
    mbarrier.try_wait.shared.b64 %p3, [%r1], %rd10;
    @!%p3 bra $Lwait2;
    $Lphase2:
    setp.lt.u32 %p4, %r0, 4;
    mov.u32 %r5, 0;
    @!%p4 bra $Ldone;
    mbarrier.arrive.shared.b64 %rd11, [%r1], 2;
    $Lspin2:
    mbarrier.test_wait.parity.shared.b64 %p5, [%r1], 1;
    @!%p5 bra $Lspin2;
    mov.u32 %r5, 1;
    $Ldone:
    ld.shared.u64 %rd12, [%r1];
    shr.u64 %rd13, %rd12, 63;
    cvt.u32.u64 %r6, %rd13;
    st.global.v2.u32 [%rd3], {%r5, %r6};
    """
    raw = run_body(dev, body, threads=8)
    w = np.ascontiguousarray(raw).view(np.uint32).reshape(8, 2)
    assert w[:, 0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert (w[:, 1] == 0).all()  # two phases completed: parity back to 0


def test_redux_vote_uni_prmt_modes_and_mul24(dev):
    body = """
    redux.sync.add.u32 %r1, %r0, -1;
    redux.sync.max.s32 %r2, %r0, -1;
    redux.sync.or.b32 %r3, %r0, -1;
    setp.lt.u32 %p1, %r0, 100;
    vote.sync.uni.pred %p2, %p1, -1;
    setp.lt.u32 %p3, %r0, 3;
    vote.sync.uni.pred %p4, %p3, -1;
    selp.u32 %r4, 1, 0, %p2;
    selp.u32 %r5, 2, 0, %p4;
    add.u32 %r4, %r4, %r5;
    prmt.b32.f4e %r6, 0x44332211, 0x88776655, 1;
    prmt.b32.rc8 %r7, 0x44332211, 0x88776655, 2;
    prmt.b32.rc16 %r8, 0x44332211, 0x88776655, 1;
    mul24.lo.s32 %r9, 0x00FFFFFF, 2;
    st.global.v4.u32 [%rd3], {%r1, %r2, %r3, %r4};
    st.global.v4.u32 [%rd3+16], {%r6, %r7, %r8, %r9};
    """
    raw = run_body(dev, body, nout=4, threads=32)
    w = np.ascontiguousarray(raw).view(np.uint32).reshape(32, 8)
    assert (w[:, 0] == sum(range(32))).all()
    assert (w[:, 1] == 31).all() and (w[:, 2] == 31).all()
    assert (w[:, 3] == 1).all()  # %p1 uniform (true everywhere), %p3 not uniform
    assert (w[:, 4] == 0x55443322).all()  # f4e, selector 1: bytes 1..4
    assert (w[:, 5] == 0x33333333).all()  # rc8: replicate byte 2
    assert (w[:, 6] == 0x44334433).all()  # rc16: replicate the upper half
    assert (w[:, 7] == ((-1 * 2) & 0xFFFFFFFF)).all()  # 0xFFFFFF is -1 as a 24-bit value


@pytest.mark.parametrize(("expected", "arrivals"), [(8, 3), (8, 8), (3, 8), (5, 13), (1, 4)])
def test_mbarrier_vector_arrivals_match_sequential(expected, arrivals):
    from rgpu.server.cuda.emu.ptx.ops_sync import _arrive

    word = np.array([(expected << 32) | expected], np.uint64)
    fast = word.copy()
    tokens = _arrive(fast, np.zeros(arrivals, np.int64), np.ones(arrivals, np.int64), False)
    slow = word.copy()
    seq = [
        _arrive(slow, np.zeros(1, np.int64), np.ones(1, np.int64), False)[0]
        for _ in range(arrivals)
    ]
    assert tokens.tolist() == [int(t) for t in seq]
    assert fast[0] == slow[0]
