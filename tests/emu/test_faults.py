"""How PTX machine faults reach the app: each EmuFault kind's CUresult, which ones poison the
context, and the log line naming the kernel and PTX line. Uses hand-written PTX text, which also
covers loading modules from PTX."""

from __future__ import annotations

import logging

import pytest

from rgpu.server.cuda.errors import CudaError, CUresult

R = CUresult
HEADER = ".version 9.0\n.target sm_75\n.address_size 64\n"


def test_every_fault_kind_has_its_cuda_result(backend):
    from rgpu.server.cuda.emu.backend import fault_to_error
    from rgpu.server.cuda.emu.ptx import FAULT_KINDS, EmuFault

    expected = {
        "illegal_address": (R.CUDA_ERROR_ILLEGAL_ADDRESS, True),
        "misaligned_address": (R.CUDA_ERROR_MISALIGNED_ADDRESS, True),
        "barrier_divergence": (R.CUDA_ERROR_LAUNCH_FAILED, True),
        "launch_failed": (R.CUDA_ERROR_LAUNCH_FAILED, True),
        "assert": (R.CUDA_ERROR_ASSERT, True),
        "not_supported": (R.CUDA_ERROR_NOT_SUPPORTED, False),
        "invalid_ptx": (R.CUDA_ERROR_INVALID_PTX, False),
        "out_of_memory": (R.CUDA_ERROR_OUT_OF_MEMORY, False),
        "invalid_value": (R.CUDA_ERROR_INVALID_VALUE, False),
    }
    assert set(expected) == set(FAULT_KINDS)
    for kind, (code, sticky) in expected.items():
        error, is_sticky = fault_to_error(EmuFault(kind, f"k: PTX line 3: {kind}"))
        assert (error.code, is_sticky) == (code, sticky)
        assert error.message == f"k: PTX line 3: {kind}"


def _load(gpu, body: str, name: str = "k") -> int:
    module, func = gpu.new_id(), gpu.new_id()
    gpu.s.cuModuleLoadData(module, (HEADER + f".visible .entry {name}() {{ {body} }}").encode())
    gpu.s.cuModuleGetFunction(func, module, name)
    return func


def _launch(gpu, func: int, threads: int = 64) -> None:
    gpu.s.cuLaunchKernel(func, 1, 1, 1, threads, 1, 1, 0, 0, b"")


def test_ptx_text_with_and_without_nul_runs(gpu):
    module = gpu.new_id()
    gpu.s.cuModuleLoadData(module, (HEADER + ".visible .entry k() { ret; }").encode() + b"\0")
    func = gpu.new_id()
    gpu.s.cuModuleGetFunction(func, module, "k")
    _launch(gpu, func)
    _launch(gpu, _load(gpu, "ret;"))


def test_invalid_ptx_is_refused_at_load_and_not_sticky(gpu):
    with pytest.raises(CudaError) as info:
        _load(gpu, "bogus.op %r1; ret;")
    assert info.value.code == R.CUDA_ERROR_INVALID_PTX
    assert "line 4" in info.value.message
    gpu.s.cuCtxSynchronize()


def test_unsupported_instruction_is_not_sticky(gpu, caplog):
    candidates = [
        ".reg .b32 %r<4>; mov.u32 %r1, 0; ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%r2}, [%r1];"
        " ret;",
        ".reg .b32 %r<4>; mov.u32 %r1, 1; dp4a.u32.u32 %r2, %r1, %r1, %r1; ret;",
        ".reg .b64 %rd<2>; mov.u64 %rd1, 0; prefetchu.L1 [%rd1]; ret;",
    ]
    for body in candidates:
        func = _load(gpu, body)
        try:
            _launch(gpu, func)
        except CudaError as error:
            assert error.code == R.CUDA_ERROR_NOT_SUPPORTED
            assert "not supported" in error.message
            gpu.s.cuCtxSynchronize()  # the context stays usable
            _launch(gpu, _load(gpu, "ret;"))
            return
    pytest.skip("the PTX machine supports every candidate instruction")


@pytest.mark.parametrize(
    "body",
    [
        # Threads 0..39 wait at one barrier, 40..63 at another: a barrier in divergent code.
        ".reg .pred %p; .reg .b32 %r<3>; mov.u32 %r1, %tid.x; setp.lt.u32 %p, %r1, 40;"
        " @%p bra L; bar.sync 0; bra E; L: bar.sync 1; E: ret;",
        "trap; ret;",
    ],
    ids=["barrier_divergence", "trap"],
)
def test_launch_failures_are_sticky_and_logged(gpu, caplog, body):
    func = _load(gpu, body, name="faulty")
    with caplog.at_level(logging.ERROR, logger="rgpu.server.cuda"):
        with pytest.raises(CudaError) as info:
            _launch(gpu, func)
    assert info.value.code == R.CUDA_ERROR_LAUNCH_FAILED
    logged = [r.getMessage() for r in caplog.records]
    assert any("faulty" in m and "PTX line" in m and "unusable" in m for m in logged)
    with pytest.raises(CudaError) as again:
        gpu.s.cuCtxSynchronize()
    assert again.value.code == R.CUDA_ERROR_LAUNCH_FAILED
    with pytest.raises(CudaError) as alloc:
        gpu.s.cuMemAlloc_v2(64)
    assert alloc.value.code == R.CUDA_ERROR_LAUNCH_FAILED
