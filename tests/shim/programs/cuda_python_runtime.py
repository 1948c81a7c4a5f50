"""cuda-python's runtime bindings (cuda.bindings.runtime) on the shim. They link a recent cudart
statically, which fetches the library-private export table 21318c60 while initialising and fails
every call without it. Device queries, a PTX library loaded through the runtime and launched
through the driver (CUkernel as CUfunction), async copies on a stream, memory info."""

import ctypes
import sys

import numpy as np
from cuda.bindings import driver as cu
from cuda.bindings import runtime as rt

PTX = b"""
.version 7.0
.target sm_52
.address_size 64
.visible .entry scale(.param .u64 p, .param .f32 s, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<6>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [p];
    ld.param.f32 %f1, [s];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r5, 4;
    add.s64 %rd2, %rd2, %rd3;
    ld.global.f32 %f2, [%rd2];
    mul.f32 %f3, %f2, %f1;
    st.global.f32 [%rd2], %f3;
DONE:
    ret;
}
"""


def check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise SystemExit(f"cuda_python_runtime: {err!r}")
    return rest[0] if len(rest) == 1 else rest


def main() -> int:
    count = check(rt.cudaGetDeviceCount())
    prop = check(rt.cudaGetDeviceProperties(0))
    print(f"{count} device(s); device 0: {prop.name.decode()} "
          f"(compute capability {prop.major}.{prop.minor})")
    lib = check(rt.cudaLibraryLoadData(PTX + b"\0", None, None, 0, None, None, 0))
    kernel = check(rt.cudaLibraryGetKernel(lib, b"scale"))
    n = 1 << 16
    a = np.arange(n, dtype=np.float32)
    d = check(rt.cudaMalloc(a.nbytes))
    stream = check(rt.cudaStreamCreate())
    check(rt.cudaMemcpyAsync(d, a.ctypes.data, a.nbytes,
                             rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
    pd, ps, pn = ctypes.c_uint64(d), ctypes.c_float(2.5), ctypes.c_uint32(n)
    params = (ctypes.c_void_p * 3)(ctypes.addressof(pd), ctypes.addressof(ps),
                                   ctypes.addressof(pn))
    check(cu.cuLaunchKernel(cu.CUfunction(int(kernel)), n // 256, 1, 1, 256, 1, 1, 0,
                            cu.CUstream(int(stream)), ctypes.addressof(params), 0))
    b = np.empty_like(a)
    check(rt.cudaMemcpyAsync(b.ctypes.data, d, a.nbytes,
                             rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
    check(rt.cudaStreamSynchronize(stream))
    free, total = check(rt.cudaMemGetInfo())
    check(rt.cudaFree(d))
    check(rt.cudaStreamDestroy(stream))
    check(rt.cudaLibraryUnload(lib))
    ok = np.array_equal(b, a * np.float32(2.5)) and 0 < free <= total
    print(f"scale of {n} floats through the runtime bindings: {'PASSED' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
