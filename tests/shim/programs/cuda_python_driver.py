"""cuda-python's driver bindings (cuda.bindings.driver) on the shim: they dlopen libcuda.so.1,
so LD_LIBRARY_PATH alone routes them to rgpu. Loads PTX, launches, copies back, checks."""

import sys

import numpy as np
from cuda.bindings import driver as cu

PTX = b"""
.version 7.0
.target sm_52
.address_size 64
.visible .entry square(.param .u64 p, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .f32 %f<3>;
    .reg .b64 %rd<5>;
    ld.param.u64 %rd1, [p];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r5, 4;
    add.s64 %rd4, %rd2, %rd3;
    ld.global.f32 %f1, [%rd4];
    mul.f32 %f2, %f1, %f1;
    st.global.f32 [%rd4], %f2;
DONE:
    ret;
}
"""


def check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cu.CUresult.CUDA_SUCCESS:
        print(f"FAIL {err!r}")
        sys.exit(1)
    return rest[0] if len(rest) == 1 else rest


def main() -> int:
    check(cu.cuInit(0))
    version = check(cu.cuDriverGetVersion())
    dev = check(cu.cuDeviceGet(0))
    name = check(cu.cuDeviceGetName(64, dev)).split(b"\0")[0].decode()
    print(f"driver {version} device {name}")
    ctx = check(cu.cuDevicePrimaryCtxRetain(dev))
    check(cu.cuCtxSetCurrent(ctx))
    module = check(cu.cuModuleLoadData(PTX + b"\0"))
    fn = check(cu.cuModuleGetFunction(module, b"square"))
    n = 512
    host = np.arange(n, dtype=np.float32)
    dptr = check(cu.cuMemAlloc(host.nbytes))
    check(cu.cuMemcpyHtoD(dptr, host.ctypes.data, host.nbytes))
    args = [np.array([int(dptr)], dtype=np.uint64), np.array([n], dtype=np.uint32)]
    argv = np.array([a.ctypes.data for a in args], dtype=np.uint64)
    check(cu.cuLaunchKernel(fn, (n + 127) // 128, 1, 1, 128, 1, 1, 0, 0, argv.ctypes.data, 0))
    check(cu.cuCtxSynchronize())
    out = np.zeros_like(host)
    check(cu.cuMemcpyDtoH(out.ctypes.data, dptr, out.nbytes))
    bad = int(np.count_nonzero(out != host * host))
    print(f"cuda-python mismatches {bad}")
    check(cu.cuMemFree(dptr))
    check(cu.cuModuleUnload(module))
    check(cu.cuDevicePrimaryCtxRelease(dev))
    print("PASSED" if bad == 0 else "FAILED")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
