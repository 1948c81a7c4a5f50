/* The driver API directly: load PTX text with cuModuleLoadData, launch through both the
 * kernelParams and the extra forms, and with cuLaunchKernelEx. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                        \
    do {                                                                                \
        CUresult r_ = (x);                                                              \
        if (r_ != CUDA_SUCCESS) {                                                       \
            const char *n_ = "?";                                                       \
            cuGetErrorName(r_, &n_);                                                    \
            printf("FAIL %s: %s (%d)\n", #x, n_, (int)r_);                              \
            return 1;                                                                   \
        }                                                                               \
    } while (0)

static const char *ptx =
    ".version 7.0\n"
    ".target sm_52\n"
    ".address_size 64\n"
    "\n"
    ".visible .entry axpy(\n"
    "    .param .u64 x,\n"
    "    .param .u64 y,\n"
    "    .param .f32 a,\n"
    "    .param .u32 n\n"
    ")\n"
    "{\n"
    "    .reg .pred %p<2>;\n"
    "    .reg .f32 %f<4>;\n"
    "    .reg .b32 %r<6>;\n"
    "    .reg .b64 %rd<8>;\n"
    "    ld.param.u64 %rd1, [x];\n"
    "    ld.param.u64 %rd2, [y];\n"
    "    ld.param.f32 %f1, [a];\n"
    "    ld.param.u32 %r1, [n];\n"
    "    mov.u32 %r2, %ctaid.x;\n"
    "    mov.u32 %r3, %ntid.x;\n"
    "    mov.u32 %r4, %tid.x;\n"
    "    mad.lo.s32 %r5, %r2, %r3, %r4;\n"
    "    setp.ge.u32 %p1, %r5, %r1;\n"
    "    @%p1 bra DONE;\n"
    "    cvta.to.global.u64 %rd3, %rd1;\n"
    "    cvta.to.global.u64 %rd4, %rd2;\n"
    "    mul.wide.u32 %rd5, %r5, 4;\n"
    "    add.s64 %rd6, %rd3, %rd5;\n"
    "    add.s64 %rd7, %rd4, %rd5;\n"
    "    ld.global.f32 %f2, [%rd6];\n"
    "    ld.global.f32 %f3, [%rd7];\n"
    "    fma.rn.f32 %f3, %f1, %f2, %f3;\n"
    "    st.global.f32 [%rd7], %f3;\n"
    "DONE:\n"
    "    ret;\n"
    "}\n";

int main(void)
{
    enum { N = 1000 };
    float hx[N], hy[N];
    for (int i = 0; i < N; i++) {
        hx[i] = (float)i;
        hy[i] = 1.0f;
    }
    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction fn;
    char name[128];
    int major = 0, minor = 0, version = 0;
    CHECK(cuInit(0));
    CHECK(cuDriverGetVersion(&version));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDeviceGetName(name, sizeof name, dev));
    CHECK(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
    CHECK(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
    printf("driver %d device %s sm_%d%d\n", version, name, major, minor);
    CHECK(cuCtxCreate(&ctx, NULL, 0, dev));
    CHECK(cuModuleLoadData(&mod, ptx));
    CHECK(cuModuleGetFunction(&fn, mod, "axpy"));
    CUdeviceptr x, y;
    CHECK(cuMemAlloc(&x, sizeof hx));
    CHECK(cuMemAlloc(&y, sizeof hy));
    CHECK(cuMemcpyHtoD(x, hx, sizeof hx));
    CHECK(cuMemcpyHtoD(y, hy, sizeof hy));
    float a = 2.0f;
    unsigned n = N;
    void *params[] = {&x, &y, &a, &n};
    CHECK(cuLaunchKernel(fn, (N + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, params, NULL));
    /* the same launch with a packed buffer (extra form): y = 2x + (2x + 1) */
    struct {
        CUdeviceptr x, y;
        float a;
        unsigned n;
    } packed = {x, y, a, n};
    size_t size = sizeof packed;
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &packed, CU_LAUNCH_PARAM_BUFFER_SIZE, &size,
                     CU_LAUNCH_PARAM_END};
    CHECK(cuLaunchKernel(fn, (N + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, NULL, extra));
    /* and once more through cuLaunchKernelEx on a stream */
    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUlaunchConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDimX = (N + 127) / 128;
    cfg.gridDimY = cfg.gridDimZ = 1;
    cfg.blockDimX = 128;
    cfg.blockDimY = cfg.blockDimZ = 1;
    cfg.hStream = s;
    CHECK(cuCtxSynchronize());
    CHECK(cuLaunchKernelEx(&cfg, fn, params, NULL));
    CHECK(cuStreamSynchronize(s));
    CHECK(cuMemcpyDtoH(hy, y, sizeof hy));
    int bad = 0;
    for (int i = 0; i < N; i++)
        if (hy[i] != 6.0f * i + 1.0f)
            bad++;
    CUdeviceptr base;
    size_t rsize;
    CHECK(cuMemGetAddressRange(&base, &rsize, y + 8));
    unsigned mtype = 0;
    CHECK(cuPointerGetAttribute(&mtype, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, y));
    printf("ptx mismatches %d range_ok %d memtype %u\n", bad, base == y && rsize == sizeof hy,
           mtype);
    /* copies larger than one 8 MiB frame (split into MORE frames both ways), DtoD, memset */
    size_t big = (size_t)20 << 20;
    unsigned char *src = malloc(big), *back = malloc(big);
    for (size_t i = 0; i < big; i++)
        src[i] = (unsigned char)(i * 131 + (i >> 13));
    CUdeviceptr b1, b2;
    CHECK(cuMemAlloc(&b1, big));
    CHECK(cuMemAlloc(&b2, big));
    CHECK(cuMemcpyHtoD(b1, src, big));
    CHECK(cuMemcpyDtoD(b2, b1, big));
    CHECK(cuMemsetD32(b2, 0x01020304u, 4));
    CHECK(cuMemcpy((CUdeviceptr)(uintptr_t)back, b2, big)); /* unified: device to host */
    int big_bad = memcmp(back + 16, src + 16, big - 16) != 0;
    for (int i = 0; i < 16; i++)
        big_bad |= back[i] != (unsigned char)(4 - i % 4);
    /* a 2D copy: a 7x5 host tile into a pitched allocation and back */
    CUdeviceptr pitched;
    size_t pitch;
    CHECK(cuMemAllocPitch(&pitched, &pitch, 64, 8, 4));
    unsigned char tile[5][7], tile_back[5][7];
    for (int r = 0; r < 5; r++)
        for (int c = 0; c < 7; c++)
            tile[r][c] = (unsigned char)(r * 16 + c);
    CUDA_MEMCPY2D m;
    memset(&m, 0, sizeof m);
    m.srcMemoryType = CU_MEMORYTYPE_HOST;
    m.srcHost = tile;
    m.srcPitch = 7;
    m.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    m.dstDevice = pitched;
    m.dstPitch = pitch;
    m.dstXInBytes = 3;
    m.dstY = 2;
    m.WidthInBytes = 7;
    m.Height = 5;
    CHECK(cuMemcpy2D(&m));
    memset(&m, 0, sizeof m);
    m.srcMemoryType = CU_MEMORYTYPE_DEVICE;
    m.srcDevice = pitched;
    m.srcPitch = pitch;
    m.srcXInBytes = 3;
    m.srcY = 2;
    m.dstMemoryType = CU_MEMORYTYPE_HOST;
    m.dstHost = tile_back;
    m.dstPitch = 7;
    m.WidthInBytes = 7;
    m.Height = 5;
    CHECK(cuMemcpy2D(&m));
    int tile_bad = memcmp(tile, tile_back, sizeof tile) != 0;
    /* a 2D fill in stream order, read back row by row */
    CHECK(cuMemsetD2D32Async(pitched, pitch, 0xdeadbeefu, 16, 8, s));
    unsigned row[16];
    CHECK(cuMemcpyDtoH(row, pitched + 7 * pitch, sizeof row));
    for (int i = 0; i < 16; i++)
        tile_bad |= row[i] != 0xdeadbeefu;
    printf("big copy mismatches %d tile mismatches %d\n", big_bad, tile_bad);
    bad += big_bad + tile_bad;
    CHECK(cuMemFree(b1));
    CHECK(cuMemFree(b2));
    CHECK(cuMemFree(pitched));
    free(src);
    free(back);
    /* page-locked and registered host memory are local; pointer attributes come from the
     * shim's range tables */
    static float registered[256];
    float *pinned = NULL;
    unsigned hflags = 99, htype = 0;
    CHECK(cuMemHostRegister(registered, sizeof registered, 0));
    CHECK(cuMemAllocHost((void **)&pinned, sizeof registered));
    CHECK(cuPointerGetAttribute(&htype, CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                                (CUdeviceptr)(uintptr_t)registered));
    CHECK(cuMemHostGetFlags(&hflags, pinned));
    for (int i = 0; i < 256; i++)
        registered[i] = (float)(3 * i);
    CHECK(cuMemcpyHtoDAsync(y, registered, sizeof registered, s));
    CHECK(cuMemcpyDtoHAsync(pinned, y, sizeof registered, s));
    CHECK(cuStreamSynchronize(s));
    int host_bad = memcmp(pinned, registered, sizeof registered) != 0 || htype != CU_MEMORYTYPE_HOST;
    unsigned long long unknown_id = 7;
    CUpointer_attribute qa[] = {CU_POINTER_ATTRIBUTE_BUFFER_ID};
    void *qd[] = {&unknown_id};
    CHECK(cuPointerGetAttributes(1, qa, qd, (CUdeviceptr)(uintptr_t)&unknown_id));
    host_bad |= unknown_id != 0;
    CHECK(cuMemHostUnregister(registered));
    CHECK(cuMemFreeHost(pinned));
    /* the context stack */
    CUcontext top = NULL, popped = NULL;
    CHECK(cuCtxPushCurrent(ctx));
    CHECK(cuCtxGetCurrent(&top));
    CHECK(cuCtxPopCurrent(&popped));
    host_bad |= top != ctx || popped != ctx;
    /* capture mode exchange (per thread) and a pointer attribute set */
    CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
    CHECK(cuThreadExchangeStreamCaptureMode(&mode));
    host_bad |= mode != CU_STREAM_CAPTURE_MODE_GLOBAL;
    CHECK(cuThreadExchangeStreamCaptureMode(&mode));
    host_bad |= mode != CU_STREAM_CAPTURE_MODE_RELAXED;
    unsigned sync_memops = 1;
    CHECK(cuPointerSetAttribute(&sync_memops, CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, y));
    printf("host memory and context stack mismatches %d\n", host_bad);
    bad += host_bad;
    /* something the shim does not implement: NOT_SUPPORTED, and the daemon counts it */
    CUlinkState link;
    CUresult unsupported = cuLinkCreate(0, NULL, NULL, &link);
    printf("cuLinkCreate %d\n", (int)unsupported);
    bad += unsupported != CUDA_ERROR_NOT_SUPPORTED;
    CHECK(cuStreamDestroy(s));
    CHECK(cuMemFree(x));
    CHECK(cuMemFree(y));
    CHECK(cuModuleUnload(mod));
    CHECK(cuCtxDestroy(ctx));
    int ok = bad == 0 && base == y && mtype == CU_MEMORYTYPE_DEVICE;
    printf(ok ? "PASSED\n" : "FAILED\n");
    return !ok;
}
