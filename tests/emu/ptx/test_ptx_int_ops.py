"""Integer, bitwise, comparison and selection instructions: exact expected values."""

from __future__ import annotations

import numpy as np
import pytest
from ptxkit import bits_as, run_body

I32 = np.int32
U32 = np.uint32


def _i32(dev, body, a, b=0, c=0, threads=1):
    """Run ``body`` with %r1..%r3 loaded from inputs a, b, c; stores %r10 as 32 bits."""
    pre = "ld.global.u32 %r1, [%rd4]; ld.global.u32 %r2, [%rd4+8]; ld.global.u32 %r3, [%rd4+16];\n"
    raw = run_body(
        dev,
        pre + body + "\nst.global.u32 [%rd3], %r10;",
        [
            np.asarray(a).astype(np.int64).astype(U32),
            np.asarray(b).astype(np.int64).astype(U32),
            np.asarray(c).astype(np.int64).astype(U32),
        ],
        threads=threads,
    )
    return bits_as(raw, U32)[:, 0]


CASES_32 = [
    ("add.s32 %r10, %r1, %r2;", 2**31 - 1, 1, 0x80000000),
    ("sub.s32 %r10, %r1, %r2;", 5, 7, (-2) & 0xFFFFFFFF),
    ("add.sat.s32 %r10, %r1, %r2;", 2**31 - 1, 5, 2**31 - 1),
    ("sub.sat.s32 %r10, %r1, %r2;", -(2**31), 1, 0x80000000),
    ("mul.lo.s32 %r10, %r1, %r2;", 0x10001, 0x10001, 0x20001),
    ("mul.hi.u32 %r10, %r1, %r2;", 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFE),
    ("mul.hi.s32 %r10, %r1, %r2;", -2, 3, 0xFFFFFFFF),
    ("mad.lo.s32 %r10, %r1, %r2, %r3;", 7, -3, 100, 79),
    ("div.s32 %r10, %r1, %r2;", -7, 2, (-3) & 0xFFFFFFFF),
    ("rem.s32 %r10, %r1, %r2;", -7, 2, (-1) & 0xFFFFFFFF),
    ("div.u32 %r10, %r1, %r2;", 7, 0, 0xFFFFFFFF),
    ("rem.u32 %r10, %r1, %r2;", 7, 0, 7),
    ("div.s32 %r10, %r1, %r2;", -(2**31), -1, 0x80000000),
    ("min.s32 %r10, %r1, %r2;", -5, 3, (-5) & 0xFFFFFFFF),
    ("min.u32 %r10, %r1, %r2;", -5, 3, 3),
    ("max.s32 %r10, %r1, %r2;", -5, 3, 3),
    ("abs.s32 %r10, %r1;", -(2**31), 0, 0x80000000),
    ("neg.s32 %r10, %r1;", 5, 0, (-5) & 0xFFFFFFFF),
    ("shl.b32 %r10, %r1, %r2;", 1, 31, 0x80000000),
    ("shl.b32 %r10, %r1, %r2;", 1, 40, 0),
    ("shr.u32 %r10, %r1, %r2;", -8, 40, 0),
    ("shr.s32 %r10, %r1, %r2;", -8, 40, 0xFFFFFFFF),
    ("shr.s32 %r10, %r1, %r2;", -8, 1, (-4) & 0xFFFFFFFF),
    ("and.b32 %r10, %r1, %r2;", 0xF0F0, 0xFF00, 0xF000),
    ("or.b32 %r10, %r1, %r2;", 0xF0F0, 0xFF00, 0xFFF0),
    ("xor.b32 %r10, %r1, %r2;", 0xF0F0, 0xFF00, 0x0FF0),
    ("not.b32 %r10, %r1;", 0, 0, 0xFFFFFFFF),
    ("cnot.b32 %r10, %r1;", 0, 0, 1),
    ("popc.b32 %r10, %r1;", -1, 0, 32),
    ("clz.b32 %r10, %r1;", 1, 0, 31),
    ("clz.b32 %r10, %r1;", 0, 0, 32),
    ("brev.b32 %r10, %r1;", 1, 0, 0x80000000),
    ("brev.b32 %r10, %r1;", 0x12345678, 0, 0x1E6A2C48),
    ("bfind.u32 %r10, %r1;", 0x00010000, 0, 16),
    ("bfind.u32 %r10, %r1;", 0, 0, 0xFFFFFFFF),
    ("bfind.s32 %r10, %r1;", -1, 0, 0xFFFFFFFF),
    ("bfind.s32 %r10, %r1;", -2, 0, 0),
    ("bfind.shiftamt.u32 %r10, %r1;", 0x00010000, 0, 15),
    ("bfe.u32 %r10, %r1, 4, 8;", 0xABCD, 0, 0xBC),
    ("bfe.s32 %r10, %r1, 4, 8;", 0xABCD, 0, 0xFFFFFFBC),
    ("bfe.s32 %r10, %r1, 40, 8;", -1, 0, 0xFFFFFFFF),
    ("bfe.u32 %r10, %r1, 28, 8;", 0xF0000000, 0, 0xF),
    ("bfi.b32 %r10, %r1, %r2, 8, 4;", 0xF, 0x12345678, 0x12345F78),
    ("bmsk.clamp.b32 %r10, %r1, %r2;", 4, 8, 0xFF0),
    ("bmsk.wrap.b32 %r10, %r1, %r2;", 36, 8, 0xFF0),
    ("prmt.b32 %r10, %r1, %r2, 0x3210;", 0x44332211, 0x88776655, 0x44332211),
    ("prmt.b32 %r10, %r1, %r2, 0x7654;", 0x44332211, 0x88776655, 0x88776655),
    ("prmt.b32 %r10, %r1, %r2, 0x0008;", 0x44332280, 0, 0x808080FF & 0x8080FFFF | 0xFF),
    (
        "lop3.b32 %r10, %r1, %r2, %r3, 0x96;",
        0xFF00FF00,
        0xF0F0F0F0,
        0xCCCCCCCC,
        0xFF00FF00 ^ 0xF0F0F0F0 ^ 0xCCCCCCCC,
    ),
    (
        "lop3.b32 %r10, %r1, %r2, %r3, 0x80;",
        0xFF00FF00,
        0xF0F0F0F0,
        0xCCCCCCCC,
        0xFF00FF00 & 0xF0F0F0F0 & 0xCCCCCCCC,
    ),
    ("shf.l.wrap.b32 %r10, %r1, %r2, 8;", 0xAABBCCDD, 0x11223344, 0x223344AA),
    ("shf.r.wrap.b32 %r10, %r1, %r2, 8;", 0xAABBCCDD, 0x11223344, 0x44AABBCC),
    ("shf.r.clamp.b32 %r10, %r1, %r2, 40;", 0xAABBCCDD, 0x11223344, 0x11223344),
    ("selp.b32 %r10, %r1, %r2, %p1;", 1, 2, 2),
    ("slct.s32.s32 %r10, %r1, %r2, %r3;", 1, 2, -1, 2),
    ("sad.u32 %r10, %r1, %r2, %r3;", 3, 10, 100, 107),
]


def _prmt_sign_case():
    # selector 8 = byte 0 with sign replication: 0x80 -> 0xFF; other nibbles select byte 0
    return 0x808080FF


@pytest.mark.parametrize(
    ("body", "a", "b", "expected"), [(*c[:3], c[-1]) for c in CASES_32 if len(c) == 4]
)
def test_int32_ops(dev, body, a, b, expected):
    if "0x0008" in body:
        expected = _prmt_sign_case()
    got = _i32(dev, "setp.eq.s32 %p1, %r1, 0;" + body if "%p1" in body else body, a, b)
    assert int(got[0]) == expected & 0xFFFFFFFF


@pytest.mark.parametrize(("body", "a", "b", "c", "expected"), [c for c in CASES_32 if len(c) == 5])
def test_int32_three_operand_ops(dev, body, a, b, c, expected):
    got = _i32(dev, body, a, b, c)
    assert int(got[0]) == expected & 0xFFFFFFFF


def test_vector_and_scalar_paths_agree(dev):
    """The same op on 40 lanes (arrays) and on uniform values (numpy scalars)."""
    a = np.arange(-20, 20, dtype=np.int32) * 123457
    got = _i32(dev, "mul.hi.s32 %r10, %r1, 1234567;", a, 0, threads=40)
    ref = ((a.astype(np.int64) * 1234567) >> 32).astype(np.uint32)
    assert np.array_equal(got, ref)


def test_64bit_mul_hi_wide_and_mad(dev):
    body = """
    ld.global.u64 %rd10, [%rd4]; ld.global.u64 %rd11, [%rd4+8];
    mul.hi.u64 %rd12, %rd10, %rd11; st.global.u64 [%rd3], %rd12;
    mul.hi.s64 %rd13, %rd10, %rd11; st.global.u64 [%rd3+8], %rd13;
    mul.lo.s64 %rd14, %rd10, %rd11; st.global.u64 [%rd3+16], %rd14;
    cvt.u32.u64 %r5, %rd10; cvt.u32.u64 %r6, %rd11;
    mul.wide.s32 %rd15, %r5, %r6; st.global.u64 [%rd3+24], %rd15;
    mad.wide.u32 %rd16, %r5, %r6, %rd10; st.global.u64 [%rd3+32], %rd16;
    mul.wide.u16 %r7, %r5, %r6; st.global.u32 [%rd3+40], %r7;
    """
    vals = [
        (0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF),
        (0x123456789ABCDEF0, 0xFEDCBA9876543210),
        (2**63, 3),
        (5, 7),
    ]
    a = np.array([v[0] for v in vals], np.uint64)
    b = np.array([v[1] for v in vals], np.uint64)
    raw = run_body(dev, body, [a, b], nout=6, threads=len(vals))
    for t, (x, y) in enumerate(vals):
        sx = x - 2**64 if x >= 2**63 else x
        sy = y - 2**64 if y >= 2**63 else y
        assert int(raw[t, 0]) == (x * y) >> 64
        assert int(raw[t, 1]) == ((sx * sy) >> 64) & (2**64 - 1)
        assert int(raw[t, 2]) == (x * y) & (2**64 - 1)
        lx, ly = x & 0xFFFFFFFF, y & 0xFFFFFFFF
        slx = lx - 2**32 if lx >= 2**31 else lx
        sly = ly - 2**32 if ly >= 2**31 else ly
        assert int(raw[t, 3]) == (slx * sly) & (2**64 - 1)
        assert int(raw[t, 4]) == (lx * ly + x) & (2**64 - 1)
        assert int(raw[t, 5]) & 0xFFFFFFFF == ((lx & 0xFFFF) * (ly & 0xFFFF)) & 0xFFFFFFFF


def test_add_cc_chain_128bit(dev):
    body = """
    ld.global.u64 %rd10, [%rd4]; ld.global.u64 %rd11, [%rd4+8];
    cvt.u32.u64 %r4, %rd10; shr.u64 %rd12, %rd10, 32; cvt.u32.u64 %r5, %rd12;
    cvt.u32.u64 %r6, %rd11; shr.u64 %rd13, %rd11, 32; cvt.u32.u64 %r7, %rd13;
    add.cc.u32 %r8, %r4, %r6;
    addc.cc.u32 %r9, %r5, %r7;
    addc.u32 %r10, 0, 0;
    st.global.u32 [%rd3], %r8; st.global.u32 [%rd3+4], %r9; st.global.u32 [%rd3+8], %r10;
    """
    a = np.array([0xFFFFFFFFFFFFFFFF, 0x00000001FFFFFFFF], np.uint64)
    b = np.array([1, 0x00000000FFFFFFFF], np.uint64)
    raw = run_body(dev, body, [a, b], nout=2, threads=2)
    for t in range(2):
        total = int(a[t]) + int(b[t])
        assert int(raw[t, 0]) == total & (2**64 - 1)
        assert int(raw[t, 1]) & 0xFFFFFFFF == total >> 64


@pytest.mark.parametrize(
    ("cmp", "typ", "a", "b", "expected"),
    [
        ("lt", "s32", -1, 1, True), ("lo", "u32", -1, 1, False), ("hs", "u32", -1, 1, True),
        ("ne", "s32", 3, 3, False), ("le", "s32", 3, 3, True), ("gt", "u32", 0, 1, False),
    ],
)  # fmt: skip
def test_setp_integer(dev, cmp, typ, a, b, expected):
    body = f"setp.{cmp}.{typ} %p1, %r1, %r2; selp.u32 %r10, 1, 0, %p1;"
    assert bool(_i32(dev, body, a, b)[0]) is expected


def test_setp_bool_combination_and_pair(dev):
    body = """
    setp.lt.s32 %p2, %r3, 0;
    setp.gt.and.s32 %p3|%p4, %r1, %r2, %p2;
    setp.gt.or.s32 %p5, %r1, %r2, !%p2;
    selp.u32 %r11, 1, 0, %p3; selp.u32 %r12, 2, 0, %p4; selp.u32 %r13, 4, 0, %p5;
    add.u32 %r10, %r11, %r12; add.u32 %r10, %r10, %r13;
    """
    # a > b true, c < 0 true: p3 = 1, p4 = (!cmp) & p2 = 0, p5 = 1 | 0
    assert int(_i32(dev, body, 5, 1, -1)[0]) == 1 + 4
    # a > b false, c < 0 true: p3 = 0, p4 = 1, p5 = 0 | 0 = 0
    assert int(_i32(dev, body, 0, 1, -1)[0]) == 2


def test_set_instruction(dev):
    body = "set.lt.u32.s32 %r10, %r1, %r2;"
    assert int(_i32(dev, body, -3, 2)[0]) == 0xFFFFFFFF
    body = "set.lt.f32.s32 %f1, %r1, %r2; mov.b32 %r10, %f1;"
    assert int(_i32(dev, body, -3, 2)[0]) == 0x3F800000


def test_predicate_logic_and_guards(dev):
    body = """
    setp.eq.s32 %p1, %r1, 1; setp.eq.s32 %p2, %r2, 1;
    and.pred %p3, %p1, %p2; or.pred %p4, %p1, %p2; xor.pred %p5, %p1, %p2; not.pred %p6, %p1;
    mov.u32 %r10, 0;
    @%p3 add.u32 %r10, %r10, 1;
    @%p4 add.u32 %r10, %r10, 2;
    @%p5 add.u32 %r10, %r10, 4;
    @!%p6 add.u32 %r10, %r10, 8;
    """
    a = np.array([0, 0, 1, 1], np.int32)
    b = np.array([0, 1, 0, 1], np.int32)
    got = _i32(dev, body, a, b, threads=4)
    assert got.tolist() == [0, 2 + 4, 2 + 4 + 8, 1 + 2 + 8]


def test_mov_pack_unpack_and_immediates(dev):
    body = """
    mov.b64 %rd10, {%r1, %r2};
    st.global.u64 [%rd3], %rd10;
    mov.b64 {%r11, %r12}, %rd10;
    mov.b32 {%h1, %h2}, %r11;
    mov.b32 %r13, {%h2, %h1};
    st.global.u32 [%rd3+8], %r13;
    mov.u32 %r14, -1;
    mul.wide.u32 %rd11, %r14, -1431655765;
    st.global.u64 [%rd3+16], %rd11;
    """
    raw = run_body(
        dev,
        "ld.global.u32 %r1, [%rd4]; ld.global.u32 %r2, [%rd4+8];" + body,
        [np.uint32(0x11112222), np.uint32(0x33334444)],
        nout=3,
    )
    assert int(raw[0, 0]) == 0x3333444411112222
    assert int(raw[0, 1]) & 0xFFFFFFFF == 0x22221111
    assert int(raw[0, 2]) == 0xFFFFFFFF * ((-1431655765) & 0xFFFFFFFF)


def test_mad24_uses_low_24_bits(dev):
    got = _i32(dev, "mad24.lo.s32 %r10, %r1, %r2, %r3;", 0x01FFFFFF, 3, 10)
    assert int(got[0]) == (-1 * 3 + 10) & 0xFFFFFFFF  # 0x1FFFFFF -> 24-bit -1
    got = _i32(dev, "mad24.lo.u32 %r10, %r1, %r2, %r3;", 0x01000002, 3, 10)
    assert int(got[0]) == 2 * 3 + 10
