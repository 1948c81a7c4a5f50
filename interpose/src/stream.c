/* Streams, events and synchronisation. Creation and destruction, records and waits are BATCH
 * frames with client-chosen ids; synchronising calls are CALLs, and they report the first
 * deferred error of the session, as CUDA reports asynchronous errors. */
#include <stdlib.h>
#include <string.h>

#include "coherence.h"

static int stream_dev(CUstream s)
{
    rgpu_obj *o = rgpu_obj_check(s, RK_STREAM);
    return o ? o->dev : rgpu_current_dev();
}

static CUresult stream_create(CUstream *phStream, unsigned int flags, int priority, int with_prio)
{
    if (!phStream)
        return CUDA_ERROR_INVALID_VALUE;
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    rgpu_ctx *ctx = rgpu_current_ctx();
    rgpu_obj *o = rgpu_obj_new(RK_STREAM, ctx ? ctx->dev : 0, ctx);
    if (!o)
        return CUDA_ERROR_OUT_OF_MEMORY;
    o->flags = flags;
    mp_buf b;
    if (with_prio) {
        rgpu_body_begin(&b, "cuStreamCreateWithPriority", 3);
        mp_uint(&b, o->id);
        mp_uint(&b, flags);
        mp_int(&b, priority);
    } else {
        rgpu_body_begin(&b, "cuStreamCreate", 2);
        mp_uint(&b, o->id);
        mp_uint(&b, flags);
    }
    CUresult st = rgpu_status_call(o->dev, &b, 0);
    if (st != CUDA_SUCCESS) {
        rgpu_obj_free(o);
        return st;
    }
    *phStream = (CUstream)o;
    return CUDA_SUCCESS;
}

CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags)
{
    return stream_create(phStream, Flags, 0, 0);
}

CUresult cuStreamCreateWithPriority(CUstream *phStream, unsigned int flags, int priority)
{
    return stream_create(phStream, flags, priority, 1);
}

CUresult cuStreamDestroy_v2(CUstream hStream)
{
    rgpu_obj *o = rgpu_obj_check(hStream, RK_STREAM);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    CUresult st = rgpu_release_remote(o, "cuStreamDestroy_v2");
    rgpu_obj_free(o);
    return st;
}

static CUresult stream_sync_call(const char *fn, CUstream s)
{
    uint64_t sid = rgpu_stream_id(s);
    if (sid == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    if (rgpu_capturing(s))
        return rgpu_capture_invalidate(s); /* nothing runs until the graph does */
    CUresult st = rgpu_coherent_push();
    if (st != CUDA_SUCCESS)
        return st;
    mp_buf b;
    rgpu_body_begin(&b, fn, 1);
    mp_uint(&b, sid);
    st = rgpu_status_call(stream_dev(s), &b, 1);
    return st == CUDA_SUCCESS ? rgpu_synchronized() : st;
}

CUresult cuStreamSynchronize(CUstream hStream)
{
    return stream_sync_call("cuStreamSynchronize", hStream);
}

CUresult cuStreamSynchronize_ptsz(CUstream hStream)
{
    return stream_sync_call("cuStreamSynchronize", hStream ? hStream : CU_STREAM_PER_THREAD);
}

CUresult cuStreamQuery(CUstream hStream)
{
    return stream_sync_call("cuStreamQuery", hStream);
}

CUresult cuStreamQuery_ptsz(CUstream hStream)
{
    return stream_sync_call("cuStreamQuery", hStream ? hStream : CU_STREAM_PER_THREAD);
}

static CUresult stream_wait_event(CUstream s, CUevent e, unsigned flags)
{
    uint64_t sid = rgpu_stream_id(s);
    rgpu_obj *ev = rgpu_obj_check(e, RK_EVENT);
    if (sid == UINT64_MAX || !ev)
        return CUDA_ERROR_INVALID_HANDLE;
    if (rgpu_capture_wait_event(s, e, flags))
        return CUDA_SUCCESS; /* fork or join of a capture (graph.c) */
    mp_buf b;
    rgpu_body_begin(&b, "cuStreamWaitEvent", 3);
    mp_uint(&b, sid);
    mp_uint(&b, ev->id);
    mp_uint(&b, flags);
    return rgpu_status_call(stream_dev(s), &b, 0);
}

CUresult cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags)
{
    return stream_wait_event(hStream, hEvent, Flags);
}

CUresult cuStreamWaitEvent_ptsz(CUstream hStream, CUevent hEvent, unsigned int Flags)
{
    return stream_wait_event(hStream ? hStream : CU_STREAM_PER_THREAD, hEvent, Flags);
}

CUresult cuStreamGetFlags(CUstream hStream, unsigned int *flags)
{
    if (!flags)
        return CUDA_ERROR_INVALID_VALUE;
    if ((uintptr_t)hStream <= 2) {
        *flags = 0;
        return CUDA_SUCCESS;
    }
    rgpu_obj *o = rgpu_obj_check(hStream, RK_STREAM);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    *flags = o->flags;
    return CUDA_SUCCESS;
}

CUresult cuStreamGetPriority(CUstream hStream, int *priority)
{
    if (!priority)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t sid = rgpu_stream_id(hStream);
    if (sid == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    mp_buf b;
    rgpu_body_begin(&b, "cuStreamGetPriority", 1);
    mp_uint(&b, sid);
    rgpu_reply r;
    CUresult st = rgpu_simple_call(stream_dev(hStream), &b, NULL, 0, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    int64_t v = 0;
    rgpu_reply_i64(&r, &v);
    rgpu_reply_free(&r);
    *priority = (int)v;
    return CUDA_SUCCESS;
}

CUresult cuStreamGetCtx(CUstream hStream, CUcontext *pctx)
{
    if (!pctx)
        return CUDA_ERROR_INVALID_VALUE;
    if ((uintptr_t)hStream <= 2) {
        *pctx = (CUcontext)rgpu_current_ctx();
        return *pctx ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
    }
    rgpu_obj *o = rgpu_obj_check(hStream, RK_STREAM);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    *pctx = (CUcontext)o->ctx;
    return CUDA_SUCCESS;
}

CUresult cuStreamGetCtx_v2(CUstream hStream, CUcontext *pCtx, CUgreenCtx *pGreenCtx)
{
    if (pGreenCtx)
        *pGreenCtx = NULL; /* green contexts are not offered */
    return cuStreamGetCtx(hStream, pCtx);
}

CUresult cuStreamGetCtx_v2_ptsz(CUstream hStream, CUcontext *pCtx, CUgreenCtx *pGreenCtx)
{
    return cuStreamGetCtx_v2(hStream, pCtx, pGreenCtx);
}

CUresult cuStreamGetId(CUstream hStream, unsigned long long *streamId)
{
    if (!streamId)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t sid = rgpu_stream_id(hStream);
    if (sid == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    *streamId = sid;
    return CUDA_SUCCESS;
}

CUresult cuStreamGetDevice(CUstream hStream, CUdevice *device)
{
    if (!device)
        return CUDA_ERROR_INVALID_VALUE;
    if (rgpu_stream_id(hStream) == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    *device = stream_dev(hStream);
    return CUDA_SUCCESS;
}

/* ---- events ------------------------------------------------------------------------------ */

CUresult cuEventCreate(CUevent *phEvent, unsigned int Flags)
{
    if (!phEvent)
        return CUDA_ERROR_INVALID_VALUE;
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    rgpu_ctx *ctx = rgpu_current_ctx();
    rgpu_obj *o = rgpu_obj_new(RK_EVENT, ctx ? ctx->dev : 0, ctx);
    if (!o)
        return CUDA_ERROR_OUT_OF_MEMORY;
    o->flags = Flags;
    mp_buf b;
    rgpu_body_begin(&b, "cuEventCreate", 2);
    mp_uint(&b, o->id);
    mp_uint(&b, Flags);
    CUresult st = rgpu_status_call(o->dev, &b, 0);
    if (st != CUDA_SUCCESS) {
        rgpu_obj_free(o);
        return st;
    }
    *phEvent = (CUevent)o;
    return CUDA_SUCCESS;
}

CUresult cuEventDestroy_v2(CUevent hEvent)
{
    rgpu_obj *o = rgpu_obj_check(hEvent, RK_EVENT);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    CUresult st = rgpu_release_remote(o, "cuEventDestroy_v2");
    rgpu_obj_free(o);
    return st;
}

static CUresult event_record(CUevent e, CUstream s, unsigned flags, int with_flags)
{
    rgpu_obj *o = rgpu_obj_check(e, RK_EVENT);
    uint64_t sid = rgpu_stream_id(s);
    if (!o || sid == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    if (rgpu_capture_event_record(e, s, with_flags ? flags : 0))
        return CUDA_SUCCESS; /* in a capture: marks the stream's position (graph.c) */
    mp_buf b;
    if (with_flags) {
        rgpu_body_begin(&b, "cuEventRecordWithFlags", 3);
        mp_uint(&b, o->id);
        mp_uint(&b, sid);
        mp_uint(&b, flags);
    } else {
        rgpu_body_begin(&b, "cuEventRecord", 2);
        mp_uint(&b, o->id);
        mp_uint(&b, sid);
    }
    return rgpu_status_call(o->dev, &b, 0);
}

CUresult cuEventRecord(CUevent hEvent, CUstream hStream)
{
    return event_record(hEvent, hStream, 0, 0);
}

CUresult cuEventRecord_ptsz(CUevent hEvent, CUstream hStream)
{
    return event_record(hEvent, hStream ? hStream : CU_STREAM_PER_THREAD, 0, 0);
}

CUresult cuEventRecordWithFlags(CUevent hEvent, CUstream hStream, unsigned int flags)
{
    return event_record(hEvent, hStream, flags, 1);
}

CUresult cuEventRecordWithFlags_ptsz(CUevent hEvent, CUstream hStream, unsigned int flags)
{
    return event_record(hEvent, hStream ? hStream : CU_STREAM_PER_THREAD, flags, 1);
}

static CUresult event_call(const char *fn, CUevent e)
{
    rgpu_obj *o = rgpu_obj_check(e, RK_EVENT);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    CUresult st = rgpu_coherent_push();
    if (st != CUDA_SUCCESS)
        return st;
    mp_buf b;
    rgpu_body_begin(&b, fn, 1);
    mp_uint(&b, o->id);
    st = rgpu_status_call(o->dev, &b, 1);
    return st == CUDA_SUCCESS ? rgpu_synchronized() : st;
}

CUresult cuEventQuery(CUevent hEvent)
{
    return event_call("cuEventQuery", hEvent);
}

CUresult cuEventSynchronize(CUevent hEvent)
{
    return event_call("cuEventSynchronize", hEvent);
}

CUresult cuEventElapsedTime_v2(float *pMilliseconds, CUevent hStart, CUevent hEnd)
{
    rgpu_obj *a = rgpu_obj_check(hStart, RK_EVENT), *z = rgpu_obj_check(hEnd, RK_EVENT);
    if (!a || !z)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!pMilliseconds)
        return CUDA_ERROR_INVALID_VALUE;
    mp_buf b;
    rgpu_body_begin(&b, "cuEventElapsedTime_v2", 2);
    mp_uint(&b, a->id);
    mp_uint(&b, z->id);
    rgpu_reply r;
    CUresult st = rgpu_simple_call(a->dev, &b, NULL, 0, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    double ms = 0;
    if (!r.has_body || mp_get_double(&r.doc, 0, &ms) != 0)
        st = CUDA_ERROR_UNKNOWN;
    rgpu_reply_free(&r);
    *pMilliseconds = (float)ms;
    return st;
}

CUresult cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd)
{
    return cuEventElapsedTime_v2(pMilliseconds, hStart, hEnd);
}
