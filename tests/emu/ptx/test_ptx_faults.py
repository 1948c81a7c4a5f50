"""Every failure is an EmuFault with the right kind and a message naming kernel and line."""

from __future__ import annotations

import numpy as np
import pytest
from ptxkit import pack, run_body, run_ptx

from rgpu.server.cuda.emu.ptx import EmuFault, LoadedModule, parse_ptx

HEAD = ".version 8.0\n.target sm_75\n.address_size 64\n"


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


OOB = (
    HEAD
    + """
.visible .entry oob(.param .u64 p)
{
  .reg .b32 %r<4>; .reg .b64 %rd<4>;
  ld.param.u64 %rd1, [p];
  mov.u32 %r1, %tid.x;
  mul.wide.u32 %rd2, %r1, 4;
  add.s64 %rd3, %rd1, %rd2;
  st.global.u32 [%rd3], %r1;
  ret;
}
"""
)


def test_out_of_bounds_store_names_kernel_line_and_instruction(dev):
    p = dev.zeros(8, np.uint32)  # 32 bytes, but 64 threads store
    with pytest.raises(EmuFault) as ei:
        run_ptx(dev, OOB, "oob", pack("Q", p), block=(64, 1, 1))
    e = ei.value
    assert e.kind == "illegal_address"
    line = _line_of(OOB, "st.global.u32")
    assert e.message.startswith(f"oob: PTX line {line} `st.global.u32 [%rd3], %r1`: address 0x")
    assert "outside every allocation" in e.message
    assert str(e) == e.message


def test_misaligned_access(dev):
    body = "ld.global.u32 %r1, [%rd4+2];"
    with pytest.raises(EmuFault) as ei:
        run_body(dev, body)
    assert ei.value.kind == "misaligned_address"
    assert "ld.global.u32 %r1, [%rd4+2]" in ei.value.message
    assert "aligned to 4" in ei.value.message


def test_misaligned_vector_access(dev):
    with pytest.raises(EmuFault) as ei:
        run_body(dev, "ld.global.v2.u32 {%r1, %r2}, [%rd4+4];", inputs=[0, 0])
    assert ei.value.kind == "misaligned_address"


def test_shared_out_of_bounds(dev):
    body = """
    .shared .align 4 .b8 sm[16];
    mov.u32 %r1, sm;
    st.shared.u32 [%r1+16], 1;
    """
    with pytest.raises(EmuFault) as ei:
        run_body(dev, body)
    assert ei.value.kind == "illegal_address"
    assert "shared memory" in ei.value.message


def test_null_and_freed_pointers(dev):
    with pytest.raises(EmuFault) as ei:
        run_body(dev, "mov.u64 %rd5, 0; ld.global.u32 %r1, [%rd5];")
    assert ei.value.kind == "illegal_address"
    p = dev.zeros(4, np.uint32)
    dev.mem.free(p)
    with pytest.raises(EmuFault) as ei:
        run_ptx(dev, OOB, "oob", pack("Q", p), block=(1, 1, 1))
    assert ei.value.kind == "illegal_address"


def test_unknown_opcode_is_not_supported_when_executed(dev):
    body = (
        "setp.eq.u32 %p1, %r0, 5;\n"
        "@%p1 tex.2dms.v4.f32.s32 {%f1, %f2, %f3, %f4}, [%rd5, {%r1, %r1, %r1, %r1}];"
    )
    # never executed by any lane: the kernel runs
    run_body(dev, body, threads=4)
    with pytest.raises(EmuFault) as ei:
        run_body(dev, body, threads=8)
    assert ei.value.kind == "not_supported"
    assert "tex.2dms.v4.f32.s32" in ei.value.message
    assert "PTX line" in ei.value.message


def test_barrier_in_divergent_code(dev):
    body = """
    setp.lt.u32 %p1, %r0, 16;
    @%p1 bra $La;
    bar.sync 0;
    bra.uni $Lend;
    $La:
    bar.sync 0;
    $Lend:
    """
    with pytest.raises(EmuFault) as ei:
        run_body(dev, body, threads=32)
    assert ei.value.kind == "barrier_divergence"
    assert "bar.sync 0" in ei.value.message


def test_early_exit_before_barrier_is_not_divergence(dev):
    """Exited threads do not count at a barrier, as on the hardware."""
    body_ok = """
    setp.ge.u32 %p1, %r0, 16;
    @%p1 ret;
    bar.sync 0;
    st.global.u32 [%rd3], 5;
    """
    raw = run_body(dev, body_ok, threads=32)
    assert (raw[:16, 0] == 5).all() and (raw[16:, 0] == 0).all()


def test_trap_and_device_assert(dev):
    with pytest.raises(EmuFault) as ei:
        run_body(dev, "trap;")
    assert ei.value.kind == "launch_failed"


def test_invalid_ptx_names_line():
    text = HEAD + ".visible .entry k()\n{\n  .reg .b32 %r<2>;\n  add.u32 %r1, %r1 %r1;\n}\n"
    with pytest.raises(EmuFault) as ei:
        parse_ptx(text)
    assert ei.value.kind == "invalid_ptx"
    assert "PTX line 7" in ei.value.message


@pytest.mark.parametrize(
    "text",
    [
        HEAD + ".visible .entry k() { .reg .b32 %r<2>; add.u32 %r1, %r9, 1; }",
        HEAD + ".visible .entry k() { .reg .bogus %r<2>; }",
        HEAD + ".visible .entry k() { bra $Lnowhere; }",
        HEAD + "garbage",
        HEAD + ".visible .entry k() { .reg .b32 %r<2>; ",
        "\x01",
    ],
)
def test_invalid_ptx_inputs(text, dev):
    with pytest.raises(EmuFault) as ei:
        LoadedModule(parse_ptx(text), dev.mem).launch("k", (1, 1, 1), (1, 1, 1), 0, b"", print)
    assert ei.value.kind == "invalid_ptx"


def test_launch_argument_errors(dev):
    lm = LoadedModule(parse_ptx(OOB), dev.mem)
    for grid, block, shared, params in [
        ((0, 1, 1), (1, 1, 1), 0, bytes(8)),
        ((1, 1, 1), (2048, 1, 1), 0, bytes(8)),
        ((1, 1, 1), (1, 1, 1), 0, bytes(4)),
        ((1, 1, 1), (1, 1, 1), 1 << 30, bytes(8)),
    ]:
        with pytest.raises(EmuFault) as ei:
            lm.launch("oob", grid, block, shared, params, print)
        assert ei.value.kind == "invalid_value"
    with pytest.raises(EmuFault) as ei:
        lm.launch("nope", (1, 1, 1), (1, 1, 1), 0, bytes(8), print)
    assert ei.value.kind == "invalid_value"


def test_internal_errors_become_launch_failed(dev, monkeypatch):
    from rgpu.server.cuda.emu.ptx import ops_alu

    def broken(a, b):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(ops_alu, "int_div", lambda *a: broken(*a[:2]))
    with pytest.raises(EmuFault) as ei:
        run_body(dev, "div.u32 %r1, %r0, 3;")
    assert ei.value.kind == "launch_failed"
    assert "PTX line" in ei.value.message and "div.u32" in ei.value.message


def test_hung_kernel_is_reported(dev, monkeypatch):
    from rgpu.server.cuda.emu.ptx import interp

    monkeypatch.setattr(interp, "STEP_LIMIT", 2000)
    body = """
    $Lspin:
    ld.volatile.global.u32 %r1, [%rd4];
    setp.eq.u32 %p2, %r1, 0;
    @%p2 bra $Lspin;
    """
    with pytest.raises(EmuFault) as ei:
        run_body(dev, body, threads=4)
    assert ei.value.kind == "launch_failed"
    assert "hung" in ei.value.message and "PTX line" in ei.value.message


def test_struct_call_parameter_reassembled_from_bytes(dev):
    text = (
        HEAD
        + """
    .func (.param .b32 ret) sum2(.param .align 4 .b8 s[8])
    {
      .reg .b32 %r<4>;
      ld.param.b32 %r1, [s];
      ld.param.b32 %r2, [s+4];
      add.s32 %r3, %r1, %r2;
      st.param.b32 [ret], %r3;
      ret;
    }
    .visible .entry k(.param .u64 out)
    {
      .reg .b16 %h<4>; .reg .b32 %r<6>; .reg .b64 %rd<4>;
      mov.u32 %r0, %tid.x;
      {
        .param .align 4 .b8 p0[8];
        .param .b32 r0;
        st.param.b8 [p0], 1;
        st.param.b8 [p0+1], 1;
        st.param.b16 [p0+2], 0;
        st.param.b32 [p0+4], %r0;
        call.uni (r0), sum2, (p0);
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
    out = dev.zeros(4, np.uint32)
    run_ptx(dev, text, "k", pack("Q", out), block=(4, 1, 1))
    assert dev.get(out, 4, np.uint32).tolist() == [257 + t for t in range(4)]


def test_cache_qualifiers_with_double_colons(dev):
    raw = run_body(
        dev,
        "ld.global.L1::no_allocate.L2::128B.u32 %r1, [%rd4]; st.global.u32 [%rd3], %r1;",
        [np.uint32(41)],
    )
    assert int(raw[0, 0]) == 41


def test_bad_launch_argument_types_are_invalid_value(dev):
    lm = LoadedModule(parse_ptx(OOB), dev.mem)
    for args in [
        (("x", 1, 1), (1, 1, 1), 0, bytes(8)),
        ((1, 1), (1, 1, 1), 0, bytes(8)),
        ((1, 1, 1), (1, 1, 1), 0, 12.5),
    ]:
        with pytest.raises(EmuFault) as ei:
            lm.launch("oob", *args, print)
        assert ei.value.kind == "invalid_value"


def test_printf_callback_failure_is_launch_failed(dev):
    def boom(text):
        raise RuntimeError("sink closed")

    text = (
        HEAD
        + """
    .extern .func (.param .b32 func_retval0) vprintf (.param .b64 a, .param .b64 b);
    .global .align 1 .b8 fmt[4] = {104, 105, 10, 0};
    .visible .entry k()
    {
      .reg .b64 %rd<3>; .reg .b32 %r<2>;
      mov.u64 %rd1, fmt;
      cvta.global.u64 %rd2, %rd1;
      {
        .param .b64 p0; .param .b64 p1; .param .b32 r0;
        st.param.b64 [p0], %rd2;
        st.param.b64 [p1], 0;
        call.uni (r0), vprintf, (p0, p1);
        ld.param.b32 %r1, [r0];
      }
      ret;
    }
    """
    )
    lm = LoadedModule(parse_ptx(text), dev.mem)
    got: list[str] = []
    lm.launch("k", (1, 1, 1), (2, 1, 1), 0, b"", got.append)
    assert got == ["hi\n", "hi\n"]
    with pytest.raises(EmuFault) as ei:
        lm.launch("k", (1, 1, 1), (2, 1, 1), 0, b"", boom)
    assert ei.value.kind == "launch_failed"
