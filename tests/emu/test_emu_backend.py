"""Driver semantics of the emulated device through the session API: contexts, memory, modules,
parameter layouts, launch validation, sticky faults, streams and events, cleanup accounting."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rgpu.server.cuda import describe_cuda_gpus, open_cuda_backend
from rgpu.server.cuda.attributes import CUfunction_attribute as F
from rgpu.server.cuda.errors import CudaError, CUresult

R = CUresult


def code_of(fn, *args) -> CUresult:
    with pytest.raises(CudaError) as info:
        fn(*args)
    return info.value.code


@pytest.fixture(scope="module")
def kernels_image(nvcc_build) -> bytes:
    return nvcc_build("kernels.cu", "-fatbin").read_bytes()


def test_auto_backend_is_emulated_here(backend):
    from rgpu.server.cuda.emu.backend import EmuCudaBackend

    b = open_cuda_backend("auto", emu_memory=64 << 20)
    assert isinstance(b, EmuCudaBackend)
    (gpu,) = describe_cuda_gpus(b)
    assert gpu["name"] == "RGPU Emulated CUDA Device" and gpu["emulated"] is True
    assert gpu["compute_capability"] == (7, 5) and gpu["total_memory"] == 64 << 20
    from rgpu.server.discovery import CudaDeviceSummary

    assert CudaDeviceSummary(**gpu).uuid == b.device_facts(0).uuid
    assert b.cuDriverGetVersion() >= 13000 and b.cuDeviceGetCount() == 1
    assert code_of(b.device_facts, 1) == R.CUDA_ERROR_INVALID_DEVICE
    b.close()


def test_contexts(backend):
    s = backend.open_session("ctx")
    assert s.cuCtxGetCurrent() == 0
    assert code_of(s.cuMemAlloc_v2, 16) == R.CUDA_ERROR_INVALID_CONTEXT
    s.cuDevicePrimaryCtxRetain(7, 0)
    s.cuDevicePrimaryCtxRetain(7, 0)
    assert s.cuDevicePrimaryCtxGetState(0) == [0, 1]
    assert s.cuCtxGetCurrent() == 7 and s.cuCtxGetDevice() == 0
    assert s.cuCtxGetLimit(1) == 1 << 20
    s.cuCtxCreate_v4(8, 0, 0)
    assert s.cuCtxGetCurrent() == 8
    s.cuCtxPushCurrent_v2(7)
    assert s.cuCtxPopCurrent_v2() == 7 and s.cuCtxGetCurrent() == 8
    assert code_of(s.cuCtxCreate_v4, 8, 0, 0) == R.CUDA_ERROR_INVALID_VALUE
    assert code_of(s.cuCtxCreate_v4, 9, 0, 3) == R.CUDA_ERROR_INVALID_DEVICE
    assert code_of(s.cuCtxSetCurrent, 99) == R.CUDA_ERROR_INVALID_CONTEXT
    s.cuCtxDestroy_v2(8)
    assert s.cuCtxGetCurrent() == 0
    s.cuDevicePrimaryCtxRelease_v2(0)
    s.cuDevicePrimaryCtxRelease_v2(0)
    assert s.cuDevicePrimaryCtxGetState(0) == [0, 0]
    s.close()
    assert code_of(s.cuCtxGetCurrent) == R.CUDA_ERROR_DEINITIALIZED


def test_memory_copies_and_memsets(gpu):
    s = gpu.s
    free0, total = s.cuMemGetInfo_v2()
    a = s.cuMemAlloc_v2(4096)
    assert s.cuMemGetInfo_v2()[0] <= free0 - 4096 and s.cuMemGetInfo_v2()[1] == total
    assert s.cuMemGetAddressRange_v2(a + 100) == [a, 4096]
    s.cuMemcpyHtoD_v2(a, bytes(range(256)) * 16)
    assert s.cuMemcpyDtoH_v2(a + 10, 5) == bytes([10, 11, 12, 13, 14])
    s.cuMemcpyDtoD_v2(a + 1, a, 8)  # overlapping: memmove semantics
    assert s.cuMemcpyDtoH_v2(a, 9) == bytes([0, 0, 1, 2, 3, 4, 5, 6, 7])
    s.cuMemsetD8_v2(a, 0xAB, 3)
    s.cuMemsetD16_v2(a + 4, 0x1234, 2)
    s.cuMemsetD32_v2(a + 8, 0xDEADBEEF, 2)
    words = np.frombuffer(s.cuMemcpyDtoH_v2(a, 16), np.uint8)
    assert list(words[:3]) == [0xAB] * 3
    assert np.frombuffer(words[4:8].tobytes(), np.uint16).tolist() == [0x1234, 0x1234]
    assert np.frombuffer(words[8:16].tobytes(), np.uint32).tolist() == [0xDEADBEEF] * 2
    assert code_of(s.cuMemsetD32_v2, a + 2, 0, 1) == R.CUDA_ERROR_INVALID_VALUE
    assert code_of(s.cuMemcpyHtoD_v2, a + 4090, b"x" * 10) == R.CUDA_ERROR_INVALID_VALUE
    assert code_of(s.cuMemcpyDtoH_v2, a - 4096 * 64, 4) == R.CUDA_ERROR_INVALID_VALUE
    assert code_of(s.cuMemFree_v2, a + 1) == R.CUDA_ERROR_INVALID_VALUE
    s.cuMemAlloc_v2(16)  # host-side range errors are not sticky
    s.cuMemFree_v2(a)
    assert code_of(s.cuMemFree_v2, a) == R.CUDA_ERROR_INVALID_VALUE
    assert code_of(s.cuMemAlloc_v2, 1 << 40) == R.CUDA_ERROR_OUT_OF_MEMORY


def test_2d_copies_and_memsets(gpu):
    s = gpu.s
    dptr, pitch = s.cuMemAllocPitch_v2(10, 4, 4)
    assert pitch >= 10 and pitch % 256 == 0
    host = bytes(range(40))
    s.cuMemcpy2D_v2(
        {"srcXInBytes": 0, "srcY": 0, "srcMemoryType": 1, "srcDevice": 0, "srcPitch": 10,
         "dstXInBytes": 0, "dstY": 0, "dstMemoryType": 2, "dstDevice": dptr, "dstPitch": pitch,
         "WidthInBytes": 10, "Height": 4},
        host,
    )
    assert s.cuMemcpyDtoH_v2(dptr + pitch, 10) == host[10:20]
    s.cuMemsetD2D8_v2(dptr + 2, pitch, 0xFF, 3, 4)
    back = s.cuMemcpy2D_v2(
        {"srcXInBytes": 1, "srcY": 1, "srcMemoryType": 2, "srcDevice": dptr, "srcPitch": pitch,
         "dstXInBytes": 0, "dstY": 0, "dstMemoryType": 1, "dstDevice": 0, "dstPitch": 0,
         "WidthInBytes": 5, "Height": 3},
    )
    expect = b"".join(bytes([host[r * 10 + 1], 255, 255, 255, host[r * 10 + 5]]) for r in (1, 2, 3))
    assert back == expect
    s.cuMemsetD2D32_v2(dptr, pitch, 7, 2, 4)
    assert np.frombuffer(s.cuMemcpyDtoH_v2(dptr + 3 * pitch, 8), np.uint32).tolist() == [7, 7]


def test_cleanup_accounting(backend, kernels_image):
    memory = backend.memories[0]
    used0 = memory.used
    s = backend.open_session("cleanup")
    s.cuDevicePrimaryCtxRetain(1, 0)
    s.cuCtxCreate_v4(2, 0, 0)
    for _ in range(5):
        s.cuMemAlloc_v2(1 << 20)
    s.cuLibraryLoadData(3, kernels_image)
    s.cuModuleLoadData(4, kernels_image)
    s.cuStreamCreate(5, 0)
    s.cuEventCreate(6, 0)
    assert memory.used > used0 + (5 << 20)
    s.cuModuleUnload(4)
    s.close()
    assert memory.used == used0
    s.close()  # idempotent


def test_handles_are_checked(gpu, kernels_image):
    s = gpu.s
    lib = gpu.load(kernels_image)
    assert code_of(s.cuLibraryGetKernel, 500, lib, "noSuchKernel") == R.CUDA_ERROR_NOT_FOUND
    assert code_of(s.cuLibraryGetKernel, 500, 999, "vectorAdd") == R.CUDA_ERROR_INVALID_HANDLE
    assert code_of(s.cuModuleGetFunction, 500, 999, "vectorAdd") == R.CUDA_ERROR_INVALID_HANDLE
    assert code_of(s.cuStreamSynchronize, 12345) == R.CUDA_ERROR_INVALID_HANDLE
    assert code_of(s.cuEventRecord, 12345, 0) == R.CUDA_ERROR_INVALID_HANDLE
    assert code_of(s.cuLaunchKernel, 12345, 1, 1, 1, 1, 1, 1, 0, 0, b"") == (
        R.CUDA_ERROR_INVALID_HANDLE
    )
    assert code_of(s.cuLibraryGetGlobal, lib, "nothing") == R.CUDA_ERROR_NOT_FOUND
    k = gpu.kernel(lib, "vectorAdd")
    assert code_of(s.cuLibraryGetKernel, k, lib, "saxpy") == R.CUDA_ERROR_INVALID_VALUE
    s.cuLibraryUnload(lib)
    assert code_of(s.cuKernelGetName, k) == R.CUDA_ERROR_INVALID_HANDLE


def test_sass_only_image_is_refused(gpu, nvcc_build):
    image = nvcc_build("small.cu", "-fatbin", "-gencode", "arch=compute_90,code=sm_90").read_bytes()
    assert code_of(gpu.s.cuModuleLoadData, 50, image) == R.CUDA_ERROR_NO_BINARY_FOR_GPU
    assert code_of(gpu.s.cuLibraryLoadData, 51, b"\x00garbage") == R.CUDA_ERROR_INVALID_IMAGE


def test_param_info_and_attributes(gpu, kernels_image):
    s = gpu.s
    lib = gpu.load(kernels_image)
    k = gpu.kernel(lib, "vectorAdd")
    layout = [s.cuKernelGetParamInfo(k, i) for i in range(4)]
    assert layout == [[0, 8], [8, 8], [16, 8], [24, 4]]
    assert code_of(s.cuKernelGetParamInfo, k, 4) == R.CUDA_ERROR_INVALID_VALUE
    f = gpu.new_id()
    s.cuKernelGetFunction(f, k)
    assert s.cuFuncGetParamInfo(f, 3) == [24, 4]
    assert s.cuFuncGetName(f) == "vectorAdd"
    sp = gpu.kernel(lib, "structParams")
    assert [s.cuKernelGetParamInfo(sp, i) for i in range(5)] == [
        [0, 32], [32, 8], [40, 8], [48, 8], [56, 8]]
    mm = gpu.kernel(lib, "matmul")
    assert s.cuKernelGetAttribute(F.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, mm, 0) == 2048
    assert s.cuKernelGetAttribute(F.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, mm, 0) == 1024
    assert s.cuKernelGetAttribute(F.CU_FUNC_ATTRIBUTE_PTX_VERSION, mm, 0) == 75  # compute_75
    assert s.cuKernelGetAttribute(F.CU_FUNC_ATTRIBUTE_BINARY_VERSION, mm, 0) == 75
    assert s.cuKernelGetAttribute(F.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, mm, 0) == (
        48 * 1024 - 2048)
    s.cuFuncSetAttribute(f, F.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 60000)
    assert code_of(s.cuFuncSetAttribute, f, F.CU_FUNC_ATTRIBUTE_NUM_REGS, 3) == (
        R.CUDA_ERROR_INVALID_VALUE)
    assert code_of(s.cuFuncGetAttribute, 77, f) == R.CUDA_ERROR_INVALID_VALUE


def test_module_globals(gpu, kernels_image):
    s = gpu.s
    mod = gpu.new_id()
    s.cuModuleLoadData(mod, kernels_image)
    dptr, size = s.cuModuleGetGlobal_v2(mod, "coeffs")
    assert size == 32
    s.cuMemcpyHtoD_v2(dptr, np.arange(8, dtype=np.float32).tobytes())
    assert np.frombuffer(s.cuMemcpyDtoH_v2(dptr, 32), np.float32).tolist() == list(range(8))
    assert s.cuModuleGetGlobal_v2(mod, "counter")[1] == 4
    assert code_of(s.cuModuleGetGlobal_v2, mod, "nope") == R.CUDA_ERROR_NOT_FOUND


def test_launch_validation(gpu, kernels_image):
    s = gpu.s
    lib = gpu.load(kernels_image)
    k = gpu.kernel(lib, "vectorAdd")
    params = gpu.pack(k, 0, 0, 0, np.int32(0))
    assert code_of(s.cuLaunchKernel, k, 1, 1, 1, 2048, 1, 1, 0, 0, params) == (
        R.CUDA_ERROR_INVALID_VALUE)
    assert code_of(s.cuLaunchKernel, k, 0, 1, 1, 32, 1, 1, 0, 0, params) == (
        R.CUDA_ERROR_INVALID_VALUE)
    assert code_of(s.cuLaunchKernel, k, 1, 1, 1, 32, 1, 1, 0, 0, params[:20]) == (
        R.CUDA_ERROR_INVALID_VALUE)
    assert code_of(s.cuLaunchKernel, k, 1, 1, 1, 32, 1, 1, 1 << 20, 0, params) == (
        R.CUDA_ERROR_INVALID_VALUE)
    s.cuLaunchKernel(k, 1, 1, 1, 32, 1, 1, 0, 0, params)  # n = 0: touches nothing
    s.cuCtxSynchronize()


def test_events_measure_elapsed_time(gpu, kernels_image):
    s = gpu.s
    lib = gpu.load(kernels_image)
    k = gpu.kernel(lib, "vectorAdd")
    n = 1 << 16
    a = gpu.put(np.ones(n, np.float32))
    c = gpu.zeros(4 * n)
    s.cuStreamCreate(40, 1)
    for e in (41, 42, 43):
        s.cuEventCreate(e, 0)
    s.cuEventRecord(41, 40)
    s.cuEventRecord(42, 40)
    gpu.launch(k, n // 256, 256, a, a, c, np.int32(n), stream=40)
    s.cuEventRecord(43, 40)
    s.cuEventSynchronize(43)
    s.cuEventQuery(43)
    empty = s.cuEventElapsedTime_v2(41, 42)
    work = s.cuEventElapsedTime_v2(42, 43)
    assert 0 <= empty < work
    assert s.cuEventElapsedTime_v2(43, 41) < 0  # reversed order: negative, as in CUDA
    s.cuEventCreate(44, 2)  # CU_EVENT_DISABLE_TIMING
    s.cuEventRecord(44, 40)
    assert code_of(s.cuEventElapsedTime_v2, 41, 44) == R.CUDA_ERROR_INVALID_HANDLE
    s.cuEventCreate(45, 0)
    assert code_of(s.cuEventElapsedTime_v2, 41, 45) == R.CUDA_ERROR_INVALID_HANDLE


def test_event_time_comes_from_the_injected_clock(kernels_image):
    from rgpu.server.cuda.emu.backend import EmuCudaBackend
    from rgpu.server.cuda.emu.device import EmuDeviceConfig

    ticks = iter([10.0, 10.25])
    b = EmuCudaBackend(EmuDeviceConfig(memory_size=16 << 20, clock=lambda: next(ticks)))
    s = b.open_session("clock")
    s.cuCtxCreate_v4(1, 0, 0)
    s.cuEventCreate(2, 0)
    s.cuEventCreate(3, 0)
    s.cuEventRecord(2, 0)
    s.cuEventRecord(3, 0)
    assert s.cuEventElapsedTime_v2(2, 3) == 250.0
    b.close()


def test_stream_order_copy_launch_copy(gpu, kernels_image):
    s = gpu.s
    lib = gpu.load(kernels_image)
    k = gpu.kernel(lib, "saxpy")
    n = 1000
    x = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    dx, dy = s.cuMemAlloc_v2(4 * n), s.cuMemAlloc_v2(4 * n)
    s.cuStreamCreate(60, 0)
    s.cuMemcpyHtoDAsync_v2(dx, x.tobytes(), 60)
    s.cuMemsetD32Async(dy, np.float32(1.0).view(np.uint32).item(), n, 60)
    gpu.launch(k, 4, 128, np.int32(n), np.float32(2.0), dx, dy, stream=60)
    s.cuStreamWaitEvent(60, _recorded_event(s, 61, 60), 0)
    out = np.frombuffer(s.cuMemcpyDtoHAsync_v2(dy, 4 * n, 60), np.float32)
    s.cuStreamQuery(60)
    s.cuStreamSynchronize(60)
    np.testing.assert_array_equal(out, np.float32(2.0) * x + np.float32(1.0))
    s.cuStreamDestroy_v2(60)
    assert code_of(s.cuStreamSynchronize, 60) == R.CUDA_ERROR_INVALID_HANDLE


def _recorded_event(s, event: int, stream: int) -> int:
    s.cuEventCreate(event, 0)
    s.cuEventRecord(event, stream)
    return event


def test_illegal_address_is_sticky_and_isolated(backend, make_gpu, kernels_image, caplog):
    bad = make_gpu("faulty")
    good = make_gpu("healthy")
    try:
        k = bad.kernel(bad.load(kernels_image), "writeAt")
        p = bad.s.cuMemAlloc_v2(16)
        with caplog.at_level(logging.ERROR, logger="rgpu.server.cuda"):
            with pytest.raises(CudaError) as info:
                bad.launch(k, 1, 32, p, 1 << 20)
        assert info.value.code == R.CUDA_ERROR_ILLEGAL_ADDRESS
        assert any("writeAt" in r.getMessage() for r in caplog.records)
        for call, args in [(bad.s.cuCtxSynchronize, ()), (bad.s.cuMemAlloc_v2, (16,)),
                           (bad.s.cuMemcpyDtoH_v2, (p, 4)), (bad.launch, (k, 1, 1, p, 0)),
                           (bad.s.cuKernelGetParamInfo, (k, 0)), (bad.s.cuStreamCreate, (9, 0))]:
            assert code_of(call, *args) == R.CUDA_ERROR_ILLEGAL_ADDRESS
        # Another session on the same device is unaffected.
        gk = good.kernel(good.load(kernels_image), "writeAt")
        q = good.s.cuMemAlloc_v2(16)
        good.launch(gk, 1, 32, q, 2)
        assert good.get(q, np.int32, 4).tolist() == [0, 0, 42, 0]
        # A reset of the primary context makes the faulty session usable again.
        bad.s.cuDevicePrimaryCtxReset_v2(0)
        bad.s.cuCtxSynchronize()
    finally:
        bad.s.close()
        good.s.close()


def test_misaligned_address_is_sticky(gpu, kernels_image):
    k = gpu.kernel(gpu.load(kernels_image), "writeAt")
    p = gpu.s.cuMemAlloc_v2(64)
    assert code_of(gpu.launch, k, 1, 32, p + 2, 0) == R.CUDA_ERROR_MISALIGNED_ADDRESS
    assert code_of(gpu.s.cuCtxSynchronize) == R.CUDA_ERROR_MISALIGNED_ADDRESS


_METHODS = ["cuMemAlloc_v2", "cuMemFree_v2", "cuMemcpyDtoH_v2", "cuMemcpyHtoD_v2",
            "cuMemsetD32_v2", "cuStreamCreate", "cuEventRecord", "cuLaunchKernel",
            "cuModuleGetFunction", "cuKernelGetParamInfo", "cuFuncGetAttribute",
            "cuCtxSetCurrent", "cuLibraryLoadData", "cuEventElapsedTime_v2", "cuMemcpy2D_v2"]
_ARG = st.one_of(st.integers(-(1 << 65), 1 << 65), st.binary(max_size=64), st.text(max_size=8),
                 st.none(), st.floats(), st.dictionaries(st.text(max_size=4), st.integers()))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(calls=st.lists(st.tuples(st.sampled_from(_METHODS), st.lists(_ARG, max_size=10)),
                      max_size=6))
def test_any_call_answers_a_cuda_error_or_succeeds(gpu, calls):
    for name, args in calls:
        try:
            getattr(gpu.s, name)(*args)
        except CudaError:
            pass


def test_pointer_attributes_and_unified_copy(gpu):
    s = gpu.s
    a, b = s.cuMemAlloc_v2(1000), s.cuMemAlloc_v2(1000)
    assert s.cuPointerGetAttribute(1, a + 10) == gpu.ctx  # CONTEXT
    assert s.cuPointerGetAttribute(2, a + 10) == 2  # MEMORY_TYPE: device
    assert s.cuPointerGetAttribute(9, a) == 0  # DEVICE_ORDINAL
    assert s.cuPointerGetAttribute(11, a + 10) == a  # RANGE_START_ADDR
    assert s.cuPointerGetAttribute(12, a + 10) == 1000  # RANGE_SIZE
    assert code_of(s.cuPointerGetAttribute, 4, a) == R.CUDA_ERROR_INVALID_VALUE
    assert code_of(s.cuPointerGetAttribute, 1, 0x1234) == R.CUDA_ERROR_INVALID_VALUE
    s.cuMemcpyHtoD_v2(a, b"rgpu" * 250)
    s.cuMemcpy(b, a, 1000)
    s.cuMemcpyAsync(b, a + 4, 4, 0)
    assert s.cuMemcpyDtoH_v2(b, 8) == b"rgpurgpu"


def test_streams_report_their_settings(gpu):
    s = gpu.s
    assert s.cuCtxGetStreamPriorityRange() == [0, -5]
    s.cuStreamCreateWithPriority(70, 1, -9)
    assert s.cuStreamGetPriority(70) == -5  # clamped to the range, as CUDA does
    assert s.cuStreamGetFlags(70) == 1
    assert s.cuStreamGetCtx(70) == gpu.ctx and s.cuStreamGetCtx(0) == gpu.ctx
    assert s.cuCtxGetFlags() == 0
    assert code_of(s.cuStreamCreate, 0, 0) == R.CUDA_ERROR_INVALID_VALUE


def test_launch_ex_occupancy_and_cooperative(gpu, kernels_image):
    s = gpu.s
    lib = gpu.load(kernels_image)
    k = gpu.kernel(lib, "vectorAdd")
    n = 1000
    a, c = gpu.put(np.arange(n, dtype=np.float32)), gpu.zeros(4 * n)
    params = gpu.pack(k, a, a, c, np.int32(n))
    config = {"gridDimX": 4, "gridDimY": 1, "gridDimZ": 1, "blockDimX": 256, "blockDimY": 1,
              "blockDimZ": 1, "sharedMemBytes": 0, "hStream": 0, "attrs": [[8, 0]]}
    s.cuLaunchKernelEx(config, k, params)
    np.testing.assert_array_equal(gpu.get(c, np.float32, n), 2 * np.arange(n, dtype=np.float32))
    coop = dict(config, attrs=[[2, 1]])
    s.cuLaunchKernelEx(coop, k, params)  # cooperative: every block resident at once
    s.cuLaunchCooperativeKernel(k, 4, 1, 1, 256, 1, 1, 0, 0, params)
    np.testing.assert_array_equal(gpu.get(c, np.float32, n), 2 * np.arange(n, dtype=np.float32))
    assert code_of(s.cuLaunchCooperativeKernel, k, 100_000, 1, 1, 256, 1, 1, 0, 0, params) == (
        R.CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE)
    blocks = s.cuOccupancyMaxActiveBlocksPerMultiprocessor(k, 256, 0)
    assert 1 <= blocks <= 4
    red = gpu.kernel(lib, "reduceSum")
    assert s.cuOccupancyMaxActiveBlocksPerMultiprocessor(red, 32, 32 * 1024) <= 2
    s.cuCtxSynchronize()


def test_sessions_run_concurrently(backend, make_gpu, kernels_image):
    import threading

    gpus = [make_gpu(f"worker{i}") for i in range(3)]
    errors: list[BaseException] = []

    def work(g, seed: int) -> None:
        try:
            k = g.kernel(g.load(kernels_image), "vectorAdd")
            n = 20_000
            x = np.random.default_rng(seed).standard_normal(n, dtype=np.float32)
            dx, dz = g.put(x), g.zeros(4 * n)
            for _ in range(5):
                g.launch(k, (n + 255) // 256, 256, dx, dx, dz, np.int32(n))
            np.testing.assert_array_equal(g.get(dz, np.float32, n), x + x)
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(g, i)) for i, g in enumerate(gpus)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("form", ["zstd", "lz4", "uncompressed", "wrapper", "ptx", "ptx+nul"])
@pytest.mark.parametrize("loader", ["cuModuleLoadData", "cuLibraryLoadData"])
def test_every_image_form_loads_and_runs(gpu, nvcc_build, form, loader):
    import struct

    from rgpu.server.cuda.fatbin import FATBIN_WRAPPER_MAGIC

    build = {
        "zstd": ("-fatbin",), "wrapper": ("-fatbin",), "lz4": ("-fatbin", "-compress-mode=speed"),
        "uncompressed": ("-fatbin", "-compress-mode=none"), "ptx": ("-ptx",), "ptx+nul": ("-ptx",),
    }[form]
    image = nvcc_build("small.cu", *build).read_bytes()
    if form == "wrapper":
        image = struct.pack("<IIQQ", FATBIN_WRAPPER_MAGIC, 1, 0x7F0000001000, 0) + image
    elif form == "ptx+nul":
        image += b"\0"
    s = gpu.s
    handle, f = gpu.new_id(), gpu.new_id()
    getattr(s, loader)(handle, image)
    if loader == "cuModuleLoadData":
        s.cuModuleGetFunction(f, handle, "scale")
    else:
        s.cuLibraryGetKernel(f, handle, "scale")
    x = np.arange(300, dtype=np.float32)
    dx = gpu.put(x)
    gpu.launch(f, 2, 256, dx, np.float32(-1.5), np.int32(300))
    np.testing.assert_array_equal(gpu.get(dx, np.float32, 300), x * np.float32(-1.5))
