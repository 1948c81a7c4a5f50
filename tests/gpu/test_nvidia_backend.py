"""The NVIDIA backend on a real GPU: device facts, memory, nvcc-built modules and libraries,
launches in every form, streams and events, sticky faults, per-session isolation, and that a
closed session gives every byte of device memory back (measured with cuMemGetInfo). The fault
test comes last: should a fault ever reach beyond its context, the other results still stand.

Skipped as a whole where cuInit finds no usable driver and GPU; the tests that load nvcc
output also need nvcc (one PTX test does not: the driver compiles the PTX itself).
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from rgpu.server.cuda import nvidia_driver_device_count
from rgpu.server.cuda.attributes import CUdevice_attribute
from rgpu.server.cuda.errors import CudaError, CUresult
from rgpu.server.cuda.nvidia import NvidiaBackend, NvidiaSession

R = CUresult
DEVICE_COUNT, NO_GPU_REASON = nvidia_driver_device_count()

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE_COUNT == 0, reason=f"no NVIDIA GPU: {NO_GPU_REASON}"),
]

MiB = 1 << 20

KERNELS = r"""
extern "C" __global__ void vectorAdd(const float *a, const float *b, float *c, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        c[i] = a[i] + b[i];
}

extern "C" __global__ void writeAt(int *p, int value)
{
    *(volatile int *)p = value;
}

extern "C" __global__ void spin(long long cycles)
{
    long long start = clock64();
    while (clock64() - start < cycles) {
    }
}

__device__ int counter;

extern "C" __global__ void bump(int by)
{
    atomicAdd(&counter, by);
}
"""

# vectorAdd as PTX (nvcc -ptx, lowered to ISA 7.0 / sm_70 so any recent driver JITs it).
VECTOR_ADD_PTX = b"""
.version 7.0
.target sm_70
.address_size 64

.visible .entry vectorAdd(
    .param .u64 vectorAdd_param_0,
    .param .u64 vectorAdd_param_1,
    .param .u64 vectorAdd_param_2,
    .param .u32 vectorAdd_param_3
)
{
    .reg .pred %p<2>;
    .reg .f32 %f<4>;
    .reg .b32 %r<6>;
    .reg .b64 %rd<11>;

    ld.param.u64 %rd1, [vectorAdd_param_0];
    ld.param.u64 %rd2, [vectorAdd_param_1];
    ld.param.u64 %rd3, [vectorAdd_param_2];
    ld.param.u32 %r2, [vectorAdd_param_3];
    mov.u32 %r3, %ctaid.x;
    mov.u32 %r4, %ntid.x;
    mov.u32 %r5, %tid.x;
    mad.lo.s32 %r1, %r3, %r4, %r5;
    setp.ge.s32 %p1, %r1, %r2;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd4, %rd1;
    mul.wide.s32 %rd5, %r1, 4;
    add.s64 %rd6, %rd4, %rd5;
    cvta.to.global.u64 %rd7, %rd2;
    add.s64 %rd8, %rd7, %rd5;
    ld.global.f32 %f1, [%rd8];
    ld.global.f32 %f2, [%rd6];
    add.f32 %f3, %f2, %f1;
    cvta.to.global.u64 %rd9, %rd3;
    add.s64 %rd10, %rd9, %rd5;
    st.global.f32 [%rd10], %f3;
DONE:
    ret;
}
"""

WRAPPER_MAGIC = 0x466243B1
CU_LAUNCH_ATTRIBUTE_COOPERATIVE = 2
CU_LAUNCH_ATTRIBUTE_PRIORITY = 8
CU_LIBRARY_BINARY_IS_PRESERVED = 1
CU_POINTER_ATTRIBUTE_CONTEXT = 1
CU_POINTER_ATTRIBUTE_MEMORY_TYPE = 2
CU_POINTER_ATTRIBUTE_RANGE_SIZE = 12
CU_MEMORYTYPE_HOST, CU_MEMORYTYPE_DEVICE = 1, 2
CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0
CU_FUNC_ATTRIBUTE_NUM_REGS = 4
CU_LIMIT_STACK_SIZE = 0
CU_STREAM_NON_BLOCKING = 1


def code_of(fn: Callable[..., object], *args: object) -> CUresult | None:
    """The CUresult a call fails with, None when it succeeds."""
    try:
        fn(*args)
    except CudaError as exc:
        return exc.code
    return None


def _find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def backend() -> Iterator[NvidiaBackend]:
    b = NvidiaBackend()
    yield b
    b.close()


@pytest.fixture(scope="module")
def fatbin(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """KERNELS built by nvcc for this GPU (`-arch=native`, else nvcc's default)."""
    nvcc = _find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    out = tmp_path_factory.mktemp("nvcc")
    source = out / "kernels.cu"
    source.write_text(KERNELS)
    target = out / "kernels.fatbin"
    errors = []
    for arch in (["-arch=native"], []):
        run = subprocess.run([nvcc, "-fatbin", *arch, "-o", str(target), str(source)],
                             capture_output=True, text=True, timeout=300)
        if run.returncode == 0:
            return target.read_bytes()
        errors.append(run.stderr)
    pytest.fail("nvcc failed: " + "\n".join(errors))


def wrapped(image: bytes) -> bytes:
    """What the shim ships for a `__fatBinC_Wrapper_t`: its 24 bytes, then the fatbin."""
    return struct.pack("<IIQQ", WRAPPER_MAGIC, 1, 0x1000, 0) + image


@pytest.fixture
def session(backend: NvidiaBackend) -> Iterator[NvidiaSession]:
    s = backend.open_session("test")
    s.cuDevicePrimaryCtxRetain(1, 0)
    yield s
    s.close()


def floats(values: list[float]) -> bytes:
    return array("f", values).tobytes()


def vector_add_params(a: int, b: int, c: int, n: int) -> bytes:
    return struct.pack("<QQQi", a, b, c, n)


class VectorAdd:
    """Inputs on the device and the expected sum, for checking one launch after another."""

    def __init__(self, s: NvidiaSession, n: int = 5000) -> None:
        rng = random.Random(n)
        self.s, self.n = s, n
        # float32 inputs: their exact sum rounded to float32 is what the GPU's add gives.
        self.x = list(array("f", [rng.uniform(-100, 100) for _ in range(n)]))
        self.y = list(array("f", [rng.uniform(-100, 100) for _ in range(n)]))
        self.a, self.b, self.c = (s.cuMemAlloc_v2(4 * n) for _ in range(3))
        s.cuMemcpyHtoD_v2(self.a, floats(self.x))
        s.cuMemcpyHtoD_v2(self.b, floats(self.y))
        self.params = vector_add_params(self.a, self.b, self.c, n)
        self.blocks = (n + 255) // 256

    def clear(self) -> None:
        self.s.cuMemsetD32_v2(self.c, 0, self.n)

    def check(self) -> None:
        self.s.cuCtxSynchronize()
        got = array("f")
        got.frombytes(self.s.cuMemcpyDtoH_v2(self.c, 4 * self.n))
        want = array("f", [x + y for x, y in zip(self.x, self.y, strict=True)])
        assert got == want


def test_device_facts_are_complete(backend: NvidiaBackend) -> None:
    assert backend.cuDeviceGetCount() == DEVICE_COUNT
    for ordinal in range(backend.cuDeviceGetCount()):
        facts = backend.device_facts(ordinal)
        assert facts.missing_attributes() == []
        assert facts.name and facts.backend == "nvidia"
        assert len(facts.uuid) == 16 and facts.uuid != bytes(16)
        assert facts.total_memory > 256 * MiB
        assert facts.compute_capability >= (5, 0)
        assert facts.compute_capability == (
            facts.attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            facts.attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
        )
        assert facts.attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT) > 0
        assert facts.attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_WARP_SIZE) == 32
        assert facts.attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK) \
            >= 1024
        assert facts.pci_bus_id_string.count(":") == 2
        assert facts.driver_version == backend.cuDriverGetVersion() >= 12000
        assert type(facts).from_wire(facts.to_wire()) == facts
    assert code_of(backend.device_facts, DEVICE_COUNT) == R.CUDA_ERROR_INVALID_DEVICE


def test_memory_round_trips(session: NvidiaSession) -> None:
    s = session
    data = random.Random(1).randbytes(3 * MiB + 5)
    a, b = s.cuMemAlloc_v2(len(data)), s.cuMemAlloc_v2(len(data))
    s.cuMemcpyHtoD_v2(a, data)
    assert s.cuMemcpyDtoH_v2(a, len(data)) == data
    s.cuMemcpyDtoD_v2(b, a, len(data))
    assert s.cuMemcpyDtoH_v2(b, len(data)) == data
    s.cuMemcpy(b + 1, a, 100)
    assert s.cuMemcpyDtoH_v2(b + 1, 100) == data[:100]
    base, size = s.cuMemGetAddressRange_v2(a + 7)
    assert base == a and size >= len(data)
    assert s.cuPointerGetAttribute(CU_POINTER_ATTRIBUTE_CONTEXT, a) == 1
    assert s.cuPointerGetAttribute(CU_POINTER_ATTRIBUTE_MEMORY_TYPE, a) == CU_MEMORYTYPE_DEVICE
    assert s.cuPointerGetAttribute(CU_POINTER_ATTRIBUTE_RANGE_SIZE, a) >= len(data)

    untouched = s.cuMemcpyDtoH_v2(b + 3, 1)
    s.cuMemsetD8_v2(b, 0xAB, 3)
    s.cuMemsetD16_v2(b + 4, 0x1234, 2)
    s.cuMemsetD32_v2(b + 8, 0xDEADBEEF, 2)
    assert s.cuMemcpyDtoH_v2(b, 16) == (b"\xab" * 3 + untouched + struct.pack("<2H", 0x1234,
                                        0x1234) + struct.pack("<2I", 0xDEADBEEF, 0xDEADBEEF))

    s.cuStreamCreate(10, CU_STREAM_NON_BLOCKING)
    s.cuMemsetD32Async(b, 7, 4, 10)
    s.cuMemcpyHtoDAsync_v2(a, data[:4096], 10)
    s.cuMemcpyDtoDAsync_v2(b + 16, a, 4096, 10)
    s.cuMemcpyAsync(b + 8192, b + 16, 4096, 10)
    assert s.cuMemcpyDtoHAsync_v2(b, 16, 10) == struct.pack("<4I", 7, 7, 7, 7)
    assert s.cuMemcpyDtoHAsync_v2(b + 8192, 4096, 10) == data[:4096]
    s.cuMemsetD8Async(b, 1, 2, 0)
    s.cuMemsetD16Async(b + 2, 2, 1, 0)
    s.cuStreamSynchronize(0)
    assert s.cuMemcpyDtoH_v2(b, 4) == b"\x01\x01\x02\x00"

    dptr, pitch = s.cuMemAllocPitch_v2(100, 8, 4)
    assert pitch >= 100
    rows = bytes(range(100)) * 8
    to_device = dict(srcXInBytes=0, srcY=0, srcMemoryType=CU_MEMORYTYPE_HOST, srcDevice=0,
                     srcPitch=0, dstXInBytes=0, dstY=0, dstMemoryType=CU_MEMORYTYPE_DEVICE,
                     dstDevice=dptr, dstPitch=pitch, WidthInBytes=100, Height=8)
    assert s.cuMemcpy2D_v2(to_device, rows) is None
    to_host = dict(to_device, srcMemoryType=CU_MEMORYTYPE_DEVICE, srcDevice=dptr,
                   srcPitch=pitch, dstMemoryType=CU_MEMORYTYPE_HOST, dstDevice=0, dstPitch=0)
    assert s.cuMemcpy2D_v2(to_host) == rows
    s.cuMemsetD2D8_v2(dptr, pitch, 9, 10, 8)
    s.cuMemcpy2DAsync_v2(dict(to_device, WidthInBytes=4, Height=2), 10, b"abcdefgh")
    got = s.cuMemcpy2DAsync_v2(to_host, 10)
    assert got is not None
    assert got[:4] == b"abcd" and got[4:10] == b"\x09" * 6 and got[100:104] == b"efgh"
    s.cuMemsetD2D16_v2(dptr, pitch, 0x0101, 5, 8)
    s.cuMemsetD2D32_v2(dptr, pitch, 0x02020202, 1, 8)
    got = s.cuMemcpy2D_v2(to_host)
    assert got is not None and got[:12] == b"\x02" * 4 + b"\x01" * 6 + b"\x0a\x0b"

    # Memory the session did not allocate is not its to name.
    assert code_of(s.cuMemcpyDtoH_v2, a, len(data) + 1) == R.CUDA_ERROR_INVALID_VALUE
    assert code_of(s.cuMemcpyHtoD_v2, 0x1000, b"x") == R.CUDA_ERROR_INVALID_VALUE
    assert code_of(s.cuMemFree_v2, a + 4) == R.CUDA_ERROR_INVALID_VALUE
    s.cuMemFree_v2(a)
    assert code_of(s.cuMemFree_v2, a) == R.CUDA_ERROR_INVALID_VALUE
    assert code_of(s.cuMemcpyDtoH_v2, a, 4) == R.CUDA_ERROR_INVALID_VALUE
    free, total = s.cuMemGetInfo_v2()
    assert 0 < free <= total


def test_other_sessions_memory_is_out_of_reach(backend: NvidiaBackend) -> None:
    owner, other = backend.open_session("owner"), backend.open_session("other")
    try:
        owner.cuDevicePrimaryCtxRetain(1, 0)
        other.cuDevicePrimaryCtxRetain(1, 0)
        secret = owner.cuMemAlloc_v2(4096)
        owner.cuMemcpyHtoD_v2(secret, b"s" * 4096)
        assert code_of(other.cuMemcpyDtoH_v2, secret, 16) == R.CUDA_ERROR_INVALID_VALUE
        assert code_of(other.cuMemFree_v2, secret) == R.CUDA_ERROR_INVALID_VALUE
        assert code_of(other.cuPointerGetAttribute, 1, secret) == R.CUDA_ERROR_INVALID_VALUE
        # A primary context reset in one session leaves the other's memory alone.
        other.cuDevicePrimaryCtxReset_v2(0)
        assert owner.cuMemcpyDtoH_v2(secret, 4) == b"ssss"
    finally:
        owner.close()
        other.close()


def test_module_vector_add_and_param_info(session: NvidiaSession, fatbin: bytes) -> None:
    s = session
    s.cuModuleLoadData(20, wrapped(fatbin))
    s.cuModuleGetFunction(30, 20, "vectorAdd")
    assert s.cuFuncGetName(30) == "vectorAdd"
    assert [s.cuFuncGetParamInfo(30, i) for i in range(4)] == [[0, 8], [8, 8], [16, 8], [24, 4]]
    assert code_of(s.cuFuncGetParamInfo, 30, 4) == R.CUDA_ERROR_INVALID_VALUE
    assert s.cuFuncGetAttribute(CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 30) >= 256
    assert s.cuFuncGetAttribute(CU_FUNC_ATTRIBUTE_NUM_REGS, 30) > 0
    assert s.cuOccupancyMaxActiveBlocksPerMultiprocessor(30, 256, 0) > 0
    s.cuFuncSetCacheConfig(30, 1)
    v = VectorAdd(s)
    s.cuLaunchKernel(30, v.blocks, 1, 1, 256, 1, 1, 0, 0, v.params)
    v.check()

    s.cuModuleLoadDataEx(21, fatbin, {7: 3})  # CU_JIT_OPTIMIZATION_LEVEL
    s.cuModuleLoadFatBinary(22, fatbin)
    s.cuModuleGetFunction(31, 22, "vectorAdd")
    s.cuStreamCreate(10, 0)
    v.clear()
    s.cuLaunchKernel(31, v.blocks, 1, 1, 256, 1, 1, 0, 10, v.params)
    s.cuStreamSynchronize(10)
    v.check()

    counter, size = s.cuModuleGetGlobal_v2(20, "counter")
    assert size == 4
    s.cuMemcpyHtoD_v2(counter, struct.pack("<i", 5))
    s.cuModuleGetFunction(32, 20, "bump")
    s.cuLaunchKernel(32, 4, 1, 1, 32, 1, 1, 0, 0, struct.pack("<i", 2))
    s.cuCtxSynchronize()
    assert s.cuMemcpyDtoH_v2(counter, 4) == struct.pack("<i", 5 + 4 * 32 * 2)

    s.cuModuleUnload(20)
    assert code_of(s.cuLaunchKernel, 30, 1, 1, 1, 1, 1, 1, 0, 0, v.params) \
        == R.CUDA_ERROR_INVALID_HANDLE
    assert code_of(s.cuMemcpyDtoH_v2, counter, 4) == R.CUDA_ERROR_INVALID_VALUE
    assert code_of(s.cuModuleGetFunction, 33, 21, "noSuchKernel") == R.CUDA_ERROR_NOT_FOUND


def test_ptx_text_loads_without_nvcc(session: NvidiaSession) -> None:
    s = session
    s.cuModuleLoadData(20, VECTOR_ADD_PTX)  # no terminating NUL: the backend adds it
    s.cuModuleGetFunction(30, 20, "vectorAdd")
    v = VectorAdd(s, 300)
    s.cuLaunchKernel(30, v.blocks, 1, 1, 256, 1, 1, 0, 0, v.params)
    v.check()


def test_library_kernels_launch_every_way(session: NvidiaSession, fatbin: bytes) -> None:
    s = session
    s.cuLibraryLoadData(40, wrapped(fatbin), None, {CU_LIBRARY_BINARY_IS_PRESERVED: 1})
    assert s.cuLibraryGetKernelCount(40) == 4
    s.cuLibraryGetKernel(41, 40, "vectorAdd")
    assert s.cuKernelGetName(41) == "vectorAdd"
    # cudart asks cuFuncGetParamInfo with a CUkernel; the backend answers through the kernel.
    layout = [[0, 8], [8, 8], [16, 8], [24, 4]]
    assert [s.cuKernelGetParamInfo(41, i) for i in range(4)] == layout
    assert [s.cuFuncGetParamInfo(41, i) for i in range(4)] == layout
    assert code_of(s.cuKernelGetParamInfo, 41, 4) == R.CUDA_ERROR_INVALID_VALUE
    assert s.cuKernelGetAttribute(CU_FUNC_ATTRIBUTE_NUM_REGS, 41, 0) > 0
    assert s.cuFuncGetAttribute(CU_FUNC_ATTRIBUTE_NUM_REGS, 41) > 0
    s.cuKernelSetAttribute(8, 0, 41, 0)  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    v = VectorAdd(s)

    s.cuLaunchKernel(41, v.blocks, 1, 1, 256, 1, 1, 0, 0, v.params)
    v.check()

    s.cuKernelGetFunction(31, 41)
    assert s.cuFuncGetParamInfo(31, 3) == [24, 4]
    v.clear()
    s.cuLaunchKernel(31, v.blocks, 1, 1, 256, 1, 1, 0, 0, v.params)
    v.check()

    s.cuStreamCreateWithPriority(11, 0, s.cuCtxGetStreamPriorityRange()[1])
    config = dict(gridDimX=v.blocks, gridDimY=1, gridDimZ=1, blockDimX=256, blockDimY=1,
                  blockDimZ=1, sharedMemBytes=0, hStream=11,
                  attrs=[[CU_LAUNCH_ATTRIBUTE_PRIORITY, 0]])
    v.clear()
    s.cuLaunchKernelEx(config, 41, v.params)
    s.cuStreamSynchronize(11)
    v.check()

    v.clear()
    s.cuLaunchKernelEx(dict(config, attrs=[[CU_LAUNCH_ATTRIBUTE_COOPERATIVE, 1]]), 31, v.params)
    v.check()

    v.clear()
    s.cuLaunchCooperativeKernel(41, v.blocks, 1, 1, 256, 1, 1, 0, 0, v.params)
    v.check()
    v.clear()
    s.cuLaunchCooperativeKernel(31, v.blocks, 1, 1, 256, 1, 1, 0, 11, v.params)
    v.check()

    s.cuLibraryGetModule(23, 40)
    s.cuModuleGetFunction(32, 23, "bump")
    counter, _ = s.cuLibraryGetGlobal(40, "counter")
    s.cuMemsetD32_v2(counter, 0, 1)
    s.cuLaunchKernel(32, 1, 1, 1, 8, 1, 1, 0, 0, struct.pack("<i", 3))
    s.cuCtxSynchronize()
    assert s.cuMemcpyDtoH_v2(counter, 4) == struct.pack("<i", 24)

    s.cuLibraryUnload(40)
    for f in (41, 31, 32):
        assert code_of(s.cuLaunchKernel, f, 1, 1, 1, 1, 1, 1, 0, 0, v.params) \
            == R.CUDA_ERROR_INVALID_HANDLE
    assert code_of(s.cuModuleGetFunction, 33, 23, "bump") == R.CUDA_ERROR_INVALID_HANDLE


def test_streams_and_events(session: NvidiaSession, fatbin: bytes) -> None:
    s = session
    s.cuModuleLoadData(20, fatbin)
    s.cuModuleGetFunction(30, 20, "spin")
    least, greatest = s.cuCtxGetStreamPriorityRange()
    s.cuStreamCreateWithPriority(10, CU_STREAM_NON_BLOCKING, greatest)
    assert s.cuStreamGetPriority(10) == greatest <= least
    assert s.cuStreamGetFlags(10) == CU_STREAM_NON_BLOCKING
    assert s.cuStreamGetCtx(10) == 1 and s.cuStreamGetCtx(0) == 1
    s.cuEventCreate(50, 0)
    s.cuEventCreate(51, 0)
    s.cuEventRecord(50, 10)
    s.cuLaunchKernel(30, 1, 1, 1, 1, 1, 1, 0, 10, struct.pack("<q", 2_000_000))
    s.cuEventRecordWithFlags(51, 10, 0)
    s.cuEventSynchronize(51)
    s.cuEventQuery(51)
    assert s.cuEventElapsedTime_v2(50, 51) > 0

    # Work still running: queries answer CUDA_ERROR_NOT_READY, as the interface says.
    s.cuLaunchKernel(30, 1, 1, 1, 1, 1, 1, 0, 10, struct.pack("<q", 2_000_000_000))
    s.cuEventRecord(51, 10)
    assert code_of(s.cuStreamQuery, 10) == R.CUDA_ERROR_NOT_READY
    assert code_of(s.cuEventQuery, 51) == R.CUDA_ERROR_NOT_READY
    s.cuStreamCreate(11, 0)
    s.cuStreamWaitEvent(11, 51, 0)
    s.cuStreamSynchronize(11)
    s.cuEventQuery(51)
    s.cuStreamQuery(10)
    s.cuEventDestroy_v2(51)
    s.cuStreamDestroy_v2(11)
    assert code_of(s.cuEventQuery, 51) == R.CUDA_ERROR_INVALID_HANDLE
    assert code_of(s.cuStreamSynchronize, 11) == R.CUDA_ERROR_INVALID_HANDLE
    s.cuStreamSynchronize(1)  # CU_STREAM_LEGACY
    s.cuStreamSynchronize(2)  # CU_STREAM_PER_THREAD


def test_contexts(session: NvidiaSession) -> None:
    s = session
    assert s.cuCtxGetCurrent() == 1
    assert s.cuDevicePrimaryCtxGetState(0)[1] == 1
    s.cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 4096)
    assert s.cuCtxGetLimit(CU_LIMIT_STACK_SIZE) >= 4096
    s.cuCtxGetFlags()
    s.cuCtxCreate_v4(2, 0, 0)
    assert s.cuCtxGetCurrent() == 2 and s.cuCtxGetDevice() == 0
    mine = s.cuMemAlloc_v2(4096)
    assert s.cuPointerGetAttribute(CU_POINTER_ATTRIBUTE_CONTEXT, mine) == 2
    s.cuCtxPushCurrent_v2(1)
    assert s.cuCtxGetCurrent() == 1
    assert s.cuCtxPopCurrent_v2() == 1
    assert s.cuCtxGetCurrent() == 2
    s.cuCtxSetCurrent(1)
    assert code_of(s.cuCtxDestroy_v2, 1) == R.CUDA_ERROR_INVALID_CONTEXT
    s.cuCtxDestroy_v2(2)
    assert s.cuCtxGetCurrent() == 1
    assert code_of(s.cuMemcpyDtoH_v2, mine, 4) == R.CUDA_ERROR_INVALID_VALUE
    assert code_of(s.cuCtxSetCurrent, 2) == R.CUDA_ERROR_INVALID_CONTEXT
    s.cuCtxSetCurrent(0)
    assert code_of(s.cuMemAlloc_v2, 16) == R.CUDA_ERROR_INVALID_CONTEXT
    s.cuCtxSetCurrent(1)
    s.cuDevicePrimaryCtxRetain(1, 0)
    s.cuDevicePrimaryCtxRelease_v2(0)
    s.cuDevicePrimaryCtxSetFlags_v2(0, 0)  # CU_CTX_SCHED_AUTO, on the active context
    assert s.cuDevicePrimaryCtxGetState(0) == [0, 1]
    assert code_of(s.cuDevicePrimaryCtxRetain, 3, 0) == R.CUDA_ERROR_INVALID_VALUE
    for bad in (lambda: s.cuStreamSynchronize(99), lambda: s.cuEventRecord(9, 0),
                lambda: s.cuModuleUnload(5), lambda: s.cuLibraryUnload(5),
                lambda: s.cuLaunchKernel(77, 1, 1, 1, 1, 1, 1, 0, 0, b"")):
        assert code_of(bad) == R.CUDA_ERROR_INVALID_HANDLE


def test_close_gives_all_device_memory_back(backend: NvidiaBackend, fatbin: bytes) -> None:
    probe = backend.open_session("probe")
    try:
        probe.cuDevicePrimaryCtxRetain(1, 0)
        probe.cuCtxSynchronize()
        free_before = probe.cuMemGetInfo_v2()[0]

        s = backend.open_session("leaky app")
        s.cuDevicePrimaryCtxRetain(1, 0)
        for _ in range(2):
            s.cuMemAlloc_v2(256 * MiB)
        s.cuMemAllocPitch_v2(4096, 1024, 4)
        s.cuModuleLoadData(20, fatbin)
        s.cuModuleGetFunction(30, 20, "vectorAdd")
        s.cuLibraryLoadData(40, wrapped(fatbin), None, {CU_LIBRARY_BINARY_IS_PRESERVED: 1})
        s.cuLibraryGetKernel(41, 40, "vectorAdd")
        s.cuStreamCreate(10, 0)
        s.cuEventCreate(50, 0)
        v = VectorAdd(s)
        s.cuLaunchKernel(41, v.blocks, 1, 1, 256, 1, 1, 0, 10, v.params)
        s.cuMemcpyHtoDAsync_v2(v.a, floats(v.x), 10)
        s.cuEventRecord(50, 10)
        s.cuCtxCreate_v4(2, 0, 0)
        s.cuMemAlloc_v2(64 * MiB)
        s.cuStreamCreate(11, 0)
        s.cuCtxSetCurrent(1)
        s.cuCtxSynchronize()
        assert probe.cuMemGetInfo_v2()[0] <= free_before - 576 * MiB  # the probe sees it

        s.close()
        free_after = probe.cuMemGetInfo_v2()[0]
        assert free_after >= free_before - 2 * MiB, (free_before - free_after) / MiB
    finally:
        probe.close()


def test_each_session_on_its_own_worker_thread(backend: NvidiaBackend, fatbin: bytes) -> None:
    """As the server runs them: every call of a session on that session's single worker
    thread, sessions side by side; and the session is closed from its worker too."""

    def work(s: NvidiaSession, seed: int) -> None:
        s.cuDevicePrimaryCtxRetain(1, 0)
        s.cuModuleLoadData(20, fatbin)
        s.cuModuleGetFunction(30, 20, "vectorAdd")
        v = VectorAdd(s, 1000 + seed)
        for _ in range(20):
            v.clear()
            s.cuLaunchKernel(30, v.blocks, 1, 1, 256, 1, 1, 0, 0, v.params)
            v.check()
        s.cuCtxCreate_v4(2, 0, 0)  # switch contexts back and forth under the other thread
        s.cuMemAlloc_v2(4096)
        s.cuCtxSetCurrent(1)
        v.check()

    workers = [ThreadPoolExecutor(max_workers=1) for _ in range(3)]
    sessions = [backend.open_session(f"worker {i}") for i in range(3)]
    try:
        futures = [w.submit(work, s, i) for i, (w, s) in enumerate(zip(workers, sessions,
                                                                      strict=True))]
        for f in futures:
            f.result(timeout=120)
        closing = [w.submit(s.close) for w, s in zip(workers, sessions, strict=True)]
        for f in closing:
            f.result(timeout=60)
    finally:
        for w in workers:
            w.shutdown(wait=True)
        for s in sessions:
            s.close()


def test_session_is_tied_to_no_thread(backend: NvidiaBackend, fatbin: bytes) -> None:
    """A call made on another thread still acts on the session's current context."""
    s = backend.open_session("moving")
    try:
        s.cuDevicePrimaryCtxRetain(1, 0)
        ptr = s.cuMemAlloc_v2(16)
        with ThreadPoolExecutor(max_workers=1) as other:
            other.submit(s.cuMemcpyHtoD_v2, ptr, b"0123456789abcdef").result()
            assert other.submit(s.cuCtxGetCurrent).result() == 1
        assert s.cuMemcpyDtoH_v2(ptr, 16) == b"0123456789abcdef"
    finally:
        s.close()


def test_module_image_forms_refused_plainly(session: NvidiaSession, fatbin: bytes) -> None:
    """A wrapper without its fatbin is refused plainly; so is garbage."""
    s = session
    assert code_of(s.cuModuleLoadData, 20, struct.pack("<IIQQ", WRAPPER_MAGIC, 1, 0, 0)) \
        == R.CUDA_ERROR_INVALID_IMAGE
    assert code_of(s.cuModuleLoadData, 21, b"definitely not code") is not None
    assert code_of(s.cuModuleLoadData, 22, "text") == R.CUDA_ERROR_INVALID_VALUE
    s.cuModuleLoadData(23, fatbin)
    assert code_of(s.cuModuleLoadData, 23, fatbin) == R.CUDA_ERROR_INVALID_VALUE  # id in use


def test_illegal_address_is_sticky_and_stays_in_its_session(
    backend: NvidiaBackend, fatbin: bytes
) -> None:
    bad, good = backend.open_session("faulty"), backend.open_session("bystander")
    try:
        for s in (bad, good):
            s.cuDevicePrimaryCtxRetain(1, 0)
            s.cuModuleLoadData(20, fatbin)
        bad.cuModuleGetFunction(30, 20, "writeAt")
        bad.cuMemAlloc_v2(MiB)
        bad.cuLaunchKernel(30, 1, 1, 1, 1, 1, 1, 0, 0, struct.pack("<Qi", 0x10, 1))
        assert code_of(bad.cuCtxSynchronize) == R.CUDA_ERROR_ILLEGAL_ADDRESS
        assert code_of(bad.cuMemAlloc_v2, 16) == R.CUDA_ERROR_ILLEGAL_ADDRESS
        assert code_of(bad.cuCtxSynchronize) == R.CUDA_ERROR_ILLEGAL_ADDRESS

        good.cuModuleGetFunction(30, 20, "vectorAdd")
        v = VectorAdd(good)
        good.cuLaunchKernel(30, v.blocks, 1, 1, 256, 1, 1, 0, 0, v.params)
        v.check()

        bad.cuDevicePrimaryCtxReset_v2(0)  # clears the sticky error, frees everything
        assert code_of(bad.cuLaunchKernel, 30, 1, 1, 1, 1, 1, 1, 0, 0, b"") \
            == R.CUDA_ERROR_INVALID_HANDLE
        ptr = bad.cuMemAlloc_v2(64)
        bad.cuMemcpyHtoD_v2(ptr, b"ok")
        assert bad.cuMemcpyDtoH_v2(ptr, 2) == b"ok"

        bad.cuModuleLoadData(21, fatbin)
        bad.cuModuleGetFunction(31, 21, "writeAt")
        bad.cuLaunchKernel(31, 1, 1, 1, 1, 1, 1, 0, 0, struct.pack("<Qi", 0x10, 1))
        with pytest.raises(CudaError) as info:
            bad.cuCtxSynchronize()
        assert info.value.code == R.CUDA_ERROR_ILLEGAL_ADDRESS
        assert "cuCtxSynchronize" in str(info.value)
        free_before = good.cuMemGetInfo_v2()[0]
        bad.close()  # a poisoned context is still released, without raising
        assert good.cuMemGetInfo_v2()[0] >= free_before
        assert code_of(bad.cuCtxGetCurrent) == R.CUDA_ERROR_DEINITIALIZED
    finally:
        bad.close()
        good.close()
