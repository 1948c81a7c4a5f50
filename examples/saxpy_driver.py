"""An ordinary cuda-python program (no rgpu code) using the CUDA driver API with PTX:
run it on a remote GPU with `rgpu run -- python saxpy_driver.py`.

cuda-python's driver bindings load libcuda.so.1; under `rgpu run` that is rgpu's shim.
"""

import sys

import numpy as np
from cuda.bindings import driver as cu

SAXPY_PTX = b"""
.version 7.0
.target sm_52
.address_size 64
.visible .entry saxpy(.param .f32 a, .param .u64 x, .param .u64 y, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .f32 %f<5>;
    .reg .b64 %rd<8>;
    ld.param.f32 %f1, [a];
    ld.param.u64 %rd1, [x];
    ld.param.u64 %rd2, [y];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd3, %rd1;
    cvta.to.global.u64 %rd4, %rd2;
    mul.wide.u32 %rd5, %r5, 4;
    add.s64 %rd6, %rd3, %rd5;
    add.s64 %rd7, %rd4, %rd5;
    ld.global.f32 %f2, [%rd6];
    ld.global.f32 %f3, [%rd7];
    fma.rn.f32 %f4, %f1, %f2, %f3;
    st.global.f32 [%rd7], %f4;
DONE:
    ret;
}
"""


def ok(result):
    err, *values = result
    if err != cu.CUresult.CUDA_SUCCESS:
        _, name = cu.cuGetErrorName(err)
        raise SystemExit(f"CUDA error {name.decode() if name else err}")
    return values[0] if len(values) == 1 else values


def main() -> int:
    ok(cu.cuInit(0))
    dev = ok(cu.cuDeviceGet(0))
    name = ok(cu.cuDeviceGetName(128, dev)).split(b"\0")[0].decode()
    print(f"device 0: {name}")
    ctx = ok(cu.cuDevicePrimaryCtxRetain(dev))
    ok(cu.cuCtxSetCurrent(ctx))
    module = ok(cu.cuModuleLoadData(SAXPY_PTX + b"\0"))
    saxpy = ok(cu.cuModuleGetFunction(module, b"saxpy"))

    n = 1 << 18
    rng = np.random.default_rng(7)
    x = rng.standard_normal(n, dtype=np.float32)
    y = rng.standard_normal(n, dtype=np.float32)
    a = np.float32(2.5)
    dx, dy = ok(cu.cuMemAlloc(x.nbytes)), ok(cu.cuMemAlloc(y.nbytes))
    ok(cu.cuMemcpyHtoD(dx, x.ctypes.data, x.nbytes))
    ok(cu.cuMemcpyHtoD(dy, y.ctypes.data, y.nbytes))

    params = [np.array([a], np.float32), np.array([int(dx)], np.uint64),
              np.array([int(dy)], np.uint64), np.array([n], np.uint32)]
    argv = np.array([p.ctypes.data for p in params], dtype=np.uint64)
    ok(cu.cuLaunchKernel(saxpy, (n + 255) // 256, 1, 1, 256, 1, 1, 0, 0, argv.ctypes.data, 0))
    ok(cu.cuCtxSynchronize())
    out = np.empty_like(y)
    ok(cu.cuMemcpyDtoH(out.ctypes.data, dy, out.nbytes))
    expected = a.astype(np.float64) * x + y  # fma rounds once; allow that last bit
    bad = int(np.count_nonzero(np.abs(out - expected) > 1e-6 * np.abs(expected) + 1e-7))
    print(f"saxpy of {n} floats: {'PASSED' if bad == 0 else 'FAILED'}")
    for p in (dx, dy):
        ok(cu.cuMemFree(p))
    ok(cu.cuModuleUnload(module))
    ok(cu.cuDevicePrimaryCtxRelease(dev))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
