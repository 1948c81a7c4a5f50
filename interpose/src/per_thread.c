/* The per-thread-default-stream variants (_ptds, _ptsz: what cuGetProcAddress returns with
 * CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, for programs built with
 * --default-stream per-thread), and stream-ordered calls the shim answers with stronger
 * ordering than CUDA promises: allocation is immediate, a free or a host function waits for the
 * stream's earlier work. Stronger ordering is always a correct implementation. */
#include <stdlib.h>

#include "coherence.h"

/* NULL means the calling thread's default stream in these variants. */
static CUstream pt(CUstream s)
{
    return s ? s : CU_STREAM_PER_THREAD;
}

CUresult cuMemcpyHtoD_v2_ptds(CUdeviceptr dst, const void *src, size_t n)
{
    return cuMemcpyHtoD_v2(dst, src, n);
}

CUresult cuMemcpyDtoH_v2_ptds(void *dst, CUdeviceptr src, size_t n)
{
    return cuMemcpyDtoH_v2(dst, src, n);
}

CUresult cuMemcpyDtoD_v2_ptds(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    return cuMemcpyDtoD_v2(dst, src, n);
}

CUresult cuMemcpy_ptds(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    return cuMemcpy(dst, src, n);
}

CUresult cuMemcpy2D_v2_ptds(const CUDA_MEMCPY2D *p)
{
    return cuMemcpy2D_v2(p);
}

CUresult cuMemcpy2DUnaligned_v2_ptds(const CUDA_MEMCPY2D *p)
{
    return cuMemcpy2DUnaligned_v2(p);
}

CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
{
    return cuMemcpyAsync(dst, src, n, pt(s));
}

CUresult cuMemcpyHtoDAsync_v2_ptsz(CUdeviceptr dst, const void *src, size_t n, CUstream s)
{
    return cuMemcpyHtoDAsync_v2(dst, src, n, pt(s));
}

CUresult cuMemcpyDtoHAsync_v2_ptsz(void *dst, CUdeviceptr src, size_t n, CUstream s)
{
    return cuMemcpyDtoHAsync_v2(dst, src, n, pt(s));
}

CUresult cuMemcpyDtoDAsync_v2_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
{
    return cuMemcpyDtoDAsync_v2(dst, src, n, pt(s));
}

CUresult cuMemcpy2DAsync_v2_ptsz(const CUDA_MEMCPY2D *p, CUstream s)
{
    return cuMemcpy2DAsync_v2(p, pt(s));
}

CUresult cuMemsetD8_v2_ptds(CUdeviceptr d, unsigned char v, size_t n)
{
    return cuMemsetD8_v2(d, v, n);
}

CUresult cuMemsetD16_v2_ptds(CUdeviceptr d, unsigned short v, size_t n)
{
    return cuMemsetD16_v2(d, v, n);
}

CUresult cuMemsetD32_v2_ptds(CUdeviceptr d, unsigned int v, size_t n)
{
    return cuMemsetD32_v2(d, v, n);
}

CUresult cuMemsetD2D8_v2_ptds(CUdeviceptr d, size_t pitch, unsigned char v, size_t w, size_t h)
{
    return cuMemsetD2D8_v2(d, pitch, v, w, h);
}

CUresult cuMemsetD2D16_v2_ptds(CUdeviceptr d, size_t pitch, unsigned short v, size_t w, size_t h)
{
    return cuMemsetD2D16_v2(d, pitch, v, w, h);
}

CUresult cuMemsetD2D32_v2_ptds(CUdeviceptr d, size_t pitch, unsigned int v, size_t w, size_t h)
{
    return cuMemsetD2D32_v2(d, pitch, v, w, h);
}

CUresult cuMemsetD8Async_ptsz(CUdeviceptr d, unsigned char v, size_t n, CUstream s)
{
    return cuMemsetD8Async(d, v, n, pt(s));
}

CUresult cuMemsetD16Async_ptsz(CUdeviceptr d, unsigned short v, size_t n, CUstream s)
{
    return cuMemsetD16Async(d, v, n, pt(s));
}

CUresult cuMemsetD32Async_ptsz(CUdeviceptr d, unsigned int v, size_t n, CUstream s)
{
    return cuMemsetD32Async(d, v, n, pt(s));
}

CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy,
                                        unsigned int gz, unsigned int bx, unsigned int by,
                                        unsigned int bz, unsigned int shmem, CUstream s,
                                        void **kernelParams)
{
    return cuLaunchCooperativeKernel(f, gx, gy, gz, bx, by, bz, shmem, pt(s), kernelParams);
}

CUresult cuStreamGetFlags_ptsz(CUstream s, unsigned int *flags)
{
    return cuStreamGetFlags(s, flags);
}

CUresult cuStreamGetPriority_ptsz(CUstream s, int *priority)
{
    return cuStreamGetPriority(pt(s), priority);
}

CUresult cuStreamGetCtx_ptsz(CUstream s, CUcontext *pctx)
{
    return cuStreamGetCtx(s, pctx);
}

CUresult cuStreamGetId_ptsz(CUstream s, unsigned long long *id)
{
    return cuStreamGetId(pt(s), id);
}

CUresult cuStreamGetDevice_ptsz(CUstream s, CUdevice *dev)
{
    return cuStreamGetDevice(s, dev);
}

/* ---- stream-ordered allocation ----------------------------------------------------------- */

CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
    if (rgpu_stream_id(hStream) == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    if (rgpu_capturing(hStream))
        return rgpu_capture_alloc(hStream, dptr, bytesize); /* an allocation node */
    /* usable at once: earlier than the stream needs */
    return rgpu_pool_alloc(dptr, bytesize, NULL);
}

CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
    return cuMemAllocAsync(dptr, bytesize, hStream);
}

CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream)
{
    if (rgpu_stream_id(hStream) == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    if (rgpu_capturing(hStream))
        return rgpu_capture_free(hStream, dptr); /* a free node */
    if (rgpu_graph_owns(dptr))
        return CUDA_SUCCESS; /* its graph holds it */
    /* the server runs a session's calls in order, so the free follows the stream's work */
    rgpu_pool_free(dptr);
    return cuMemFree_v2(dptr);
}

CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream)
{
    return cuMemFreeAsync(dptr, hStream);
}

/* ---- host functions in stream order: run here once the stream's earlier work is done ---- */

CUresult cuLaunchHostFunc(CUstream hStream, CUhostFn fn, void *userData)
{
    if (!fn)
        return CUDA_ERROR_INVALID_VALUE;
    if (rgpu_capturing(hStream))
        return rgpu_capture_host(hStream, fn, userData);
    CUresult st = cuStreamSynchronize(hStream);
    if (st != CUDA_SUCCESS)
        return st;
    fn(userData);
    return CUDA_SUCCESS;
}

CUresult cuLaunchHostFunc_ptsz(CUstream hStream, CUhostFn fn, void *userData)
{
    return cuLaunchHostFunc(pt(hStream), fn, userData);
}

CUresult cuStreamAddCallback(CUstream hStream, CUstreamCallback callback, void *userData,
                             unsigned int flags)
{
    if (!callback || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (rgpu_capturing(hStream))
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; /* as in CUDA: cuLaunchHostFunc instead */
    CUresult st = cuStreamSynchronize(hStream);
    if (st == CUDA_ERROR_INVALID_HANDLE)
        return st;
    callback(hStream, st, userData); /* the callback is told the stream's error, as in CUDA */
    return CUDA_SUCCESS;
}

CUresult cuStreamAddCallback_ptsz(CUstream hStream, CUstreamCallback callback, void *userData,
                                  unsigned int flags)
{
    return cuStreamAddCallback(pt(hStream), callback, userData, flags);
}

/* ---- capture (the streams' capture state is in graph.c) --------------------------------- */

static __thread CUstreamCaptureMode capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;

CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *mode)
{
    if (!mode)
        return CUDA_ERROR_INVALID_VALUE;
    CUstreamCaptureMode old = capture_mode;
    capture_mode = *mode;
    *mode = old;
    return CUDA_SUCCESS;
}

/* ---- 2D memsets in stream order: after the stream's work (the server has no stream-ordered
 * 2D fill; the session runs calls in order, so waiting for the stream first is exact) ------ */

static CUresult capture_memset2d(CUstream s, CUdeviceptr d, size_t pitch, unsigned v,
                                 unsigned elem, size_t w, size_t h)
{
    CUDA_MEMSET_NODE_PARAMS m = {d, pitch, v, elem, w, h};
    return rgpu_capture_memset(s, &m);
}

CUresult cuMemsetD2D8Async(CUdeviceptr d, size_t pitch, unsigned char v, size_t w, size_t h,
                           CUstream s)
{
    if (rgpu_capturing(s))
        return capture_memset2d(s, d, pitch, v, 1, w, h);
    CUresult st = cuStreamSynchronize(s);
    return st != CUDA_SUCCESS ? st : cuMemsetD2D8_v2(d, pitch, v, w, h);
}

CUresult cuMemsetD2D16Async(CUdeviceptr d, size_t pitch, unsigned short v, size_t w, size_t h,
                            CUstream s)
{
    if (rgpu_capturing(s))
        return capture_memset2d(s, d, pitch, v, 2, w, h);
    CUresult st = cuStreamSynchronize(s);
    return st != CUDA_SUCCESS ? st : cuMemsetD2D16_v2(d, pitch, v, w, h);
}

CUresult cuMemsetD2D32Async(CUdeviceptr d, size_t pitch, unsigned int v, size_t w, size_t h,
                            CUstream s)
{
    if (rgpu_capturing(s))
        return capture_memset2d(s, d, pitch, v, 4, w, h);
    CUresult st = cuStreamSynchronize(s);
    return st != CUDA_SUCCESS ? st : cuMemsetD2D32_v2(d, pitch, v, w, h);
}

CUresult cuMemsetD2D8Async_ptsz(CUdeviceptr d, size_t pitch, unsigned char v, size_t w, size_t h,
                                CUstream s)
{
    return cuMemsetD2D8Async(d, pitch, v, w, h, pt(s));
}

CUresult cuMemsetD2D16Async_ptsz(CUdeviceptr d, size_t pitch, unsigned short v, size_t w,
                                 size_t h, CUstream s)
{
    return cuMemsetD2D16Async(d, pitch, v, w, h, pt(s));
}

CUresult cuMemsetD2D32Async_ptsz(CUdeviceptr d, size_t pitch, unsigned int v, size_t w, size_t h,
                                 CUstream s)
{
    return cuMemsetD2D32Async(d, pitch, v, w, h, pt(s));
}
