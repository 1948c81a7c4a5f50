/* Contexts and the per-thread current-context stack, handles, and the helpers every forwarded
 * call goes through. The server keeps one current context per session (its worker thread), so
 * before a context-bound call the shim sends cuCtxSetCurrent when the session's last one differs
 * from the calling thread's; the handle ids are chosen here, so creation needs no round trip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coherence.h"
#include "rgpu_frame.h"

#define CTX_STACK_MAX 64

static __thread rgpu_ctx *ctx_stack[CTX_STACK_MAX];
static __thread int ctx_depth;

rgpu_ctx *rgpu_current_ctx(void)
{
    return ctx_depth ? ctx_stack[ctx_depth - 1] : NULL;
}

int rgpu_current_dev(void)
{
    rgpu_ctx *c = rgpu_current_ctx();
    return c ? c->dev : 0;
}

static void set_top(rgpu_ctx *c)
{
    if (ctx_depth == 0) {
        if (c)
            ctx_stack[ctx_depth++] = c;
    } else if (c) {
        ctx_stack[ctx_depth - 1] = c;
    } else {
        ctx_depth--;
    }
}

/* ---- handles ----------------------------------------------------------------------------- */

rgpu_obj *rgpu_obj_new(uint32_t kind, int dev, rgpu_ctx *ctx)
{
    rgpu_obj *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->kind = kind;
    o->id = rgpu_new_id();
    o->dev = dev;
    o->ctx = ctx;
    o->params.count = -1;
    pthread_mutex_init(&o->mu, NULL);
    return o;
}

CUresult rgpu_release_remote(const rgpu_obj *o, const char *fn)
{
    if (rgpu_connection_dead())
        return CUDA_SUCCESS;
    mp_buf b;
    rgpu_body_begin(&b, fn, 1);
    mp_uint(&b, o->id);
    return rgpu_status_call(o->dev, &b, 0);
}

void rgpu_obj_free(rgpu_obj *o)
{
    if (!o)
        return;
    o->kind = 0;
    free(o->params.offset);
    free(o->params.size);
    free(o->name);
    free(o->image);
    mp_free(&o->load_opts);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

rgpu_obj *rgpu_obj_check(const void *h, uint32_t kind)
{
    rgpu_obj *o = (rgpu_obj *)h;
    if (!o || (uintptr_t)o < 4096 || o->kind != kind)
        return NULL;
    return o;
}

uint64_t rgpu_stream_id(CUstream s)
{
    uintptr_t v = (uintptr_t)s;
    if (v <= 2)
        return v; /* NULL, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD */
    rgpu_obj *o = rgpu_obj_check(s, RK_STREAM);
    return o ? o->id : UINT64_MAX;
}

/* ---- call helpers ------------------------------------------------------------------------ */

void rgpu_body_begin(mp_buf *b, const char *fn, uint32_t nargs)
{
    mp_init(b);
    mp_array(b, 2);
    mp_str(b, fn);
    mp_array(b, nargs);
}

void rgpu_body_begin_bulk(mp_buf *b, const char *fn, uint32_t nargs)
{
    mp_init(b);
    mp_array(b, 3);
    mp_str(b, fn);
    mp_array(b, nargs);
}

static CUresult send_set_current(rgpu_session *s, uint64_t id)
{
    mp_buf b;
    rgpu_body_begin(&b, "cuCtxSetCurrent", 1);
    mp_uint(&b, id);
    CUresult st = rgpu_batch(s->id, &b, NULL, 0);
    mp_free(&b);
    if (st == CUDA_SUCCESS)
        s->current_ctx = id;
    return st;
}

CUresult rgpu_begin(int dev, rgpu_session **sess)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    rgpu_session *s;
    CUresult st = rgpu_device_session(dev, &s);
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_lock();
    rgpu_ctx *c = rgpu_current_ctx();
    if (c && c->dev == dev && !c->destroyed && s->current_ctx != c->id) {
        st = send_set_current(s, c->id);
        if (st != CUDA_SUCCESS) {
            rgpu_unlock();
            return st;
        }
    }
    *sess = s;
    return CUDA_SUCCESS;
}

/* A synchronising call that failed: the kernel printf output the server still holds (a kernel
 * that printed and then faulted) goes to stdout all the same, as the driver flushes its printf
 * buffer when it reports the fault. A backend that forwards no printf output has no such call. */
static void flush_pending_output(int dev)
{
    if (rgpu_connection_dead())
        return;
    mp_buf b;
    rgpu_body_begin(&b, "cuRgpuPrintfPending", 0);
    rgpu_reply r;
    if (rgpu_simple_call(dev, &b, NULL, 0, &r) == CUDA_SUCCESS) {
        rgpu_sync_output(&r);
        rgpu_reply_free(&r);
    }
    mp_free(&b);
}

CUresult rgpu_simple_call(int dev, const mp_buf *body, const void *bulk, size_t bulk_len,
                          rgpu_reply *out)
{
    rgpu_session *s;
    CUresult st = rgpu_begin(dev, &s);
    if (st != CUDA_SUCCESS) {
        memset(out, 0, sizeof *out);
        out->status = st;
        return st;
    }
    st = rgpu_call(s->id, body, bulk, bulk_len, out);
    rgpu_unlock();
    if (st != CUDA_SUCCESS && st != CUDA_ERROR_NOT_READY) {
        char fn[64];
        rgpu_body_fn(body, fn, sizeof fn);
        if (rgpu_reports_deferred(fn))
            flush_pending_output(dev);
    }
    return st;
}

CUresult rgpu_simple_batch(int dev, const mp_buf *body, const void *bulk, size_t bulk_len)
{
    rgpu_session *s;
    CUresult st = rgpu_begin(dev, &s);
    if (st != CUDA_SUCCESS)
        return st;
    st = rgpu_batch(s->id, body, bulk, bulk_len);
    rgpu_unlock();
    return st;
}

int rgpu_reply_i64(rgpu_reply *r, int64_t *v)
{
    return r->has_body ? mp_get_i64(&r->doc, 0, v) : -1;
}

int rgpu_reply_pair(rgpu_reply *r, int64_t *a, int64_t *b)
{
    if (!r->has_body)
        return -1;
    if (mp_get_i64(&r->doc, mp_array_at(&r->doc, 0, 0), a) != 0)
        return -1;
    return mp_get_i64(&r->doc, mp_array_at(&r->doc, 0, 1), b);
}

/* A call whose result is only a status, on device `dev`; `sync` makes it a CALL. */
/* Kernel printf output the server hands back from a synchronising call ({"printf": text}) goes
 * to the application's stdout, where the driver writes it. */
void rgpu_sync_output(rgpu_reply *r)
{
    if (!r->has_body || r->doc.nodes[0].type != MP_MAP)
        return;
    int i = mp_map_get(&r->doc, 0, "printf");
    if (i < 0)
        return;
    const mp_node *n = &r->doc.nodes[i];
    if ((n->type != MP_STR && n->type != MP_BIN) || !n->count)
        return;
    fflush(stdout);
    fwrite(n->v.p, 1, n->count, stdout);
    fflush(stdout);
}

CUresult rgpu_status_call(int dev, mp_buf *b, int sync)
{
    CUresult st;
    if (sync) {
        rgpu_reply r;
        st = rgpu_simple_call(dev, b, NULL, 0, &r);
        if (st == CUDA_SUCCESS) {
            rgpu_sync_output(&r);
            rgpu_reply_free(&r);
        }
    } else {
        st = rgpu_simple_batch(dev, b, NULL, 0);
    }
    mp_free(b);
    return st;
}

/* ---- primary contexts -------------------------------------------------------------------- */

static rgpu_ctx *ctx_new(int dev, int primary, unsigned flags)
{
    rgpu_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->kind = RK_CTX;
    c->id = rgpu_new_id();
    c->dev = dev;
    c->primary = primary;
    c->flags = flags;
    return c;
}

static rgpu_ctx *ctx_check(CUcontext h)
{
    rgpu_ctx *c = (rgpu_ctx *)h;
    if (!c || (uintptr_t)c < 4096 || c->kind != RK_CTX)
        return NULL;
    return c;
}

CUresult rgpu_primary_retain(int devno, rgpu_ctx **out)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (devno < 0 || devno >= rgpu_device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    rgpu_device *dev = &rgpu_devices[devno];
    rgpu_session *s;
    CUresult st = rgpu_device_session(devno, &s);
    if (st != CUDA_SUCCESS)
        return st;
    pthread_mutex_lock(&dev->primary_mu);
    if (!dev->primary) {
        dev->primary = ctx_new(devno, 1, 0);
        if (!dev->primary) {
            pthread_mutex_unlock(&dev->primary_mu);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
    }
    rgpu_ctx *c = dev->primary;
    int first = c->refcount == 0;
    c->refcount++;
    c->destroyed = 0;
    pthread_mutex_unlock(&dev->primary_mu);
    if (first) {
        mp_buf b;
        rgpu_body_begin(&b, "cuDevicePrimaryCtxRetain", 2);
        mp_uint(&b, c->id);
        mp_int(&b, dev->cuda_index);
        rgpu_lock();
        st = rgpu_batch(s->id, &b, NULL, 0);
        /* the server makes a retained primary current when none is */
        if (st == CUDA_SUCCESS && s->current_ctx == 0)
            s->current_ctx = c->id;
        rgpu_unlock();
        mp_free(&b);
        if (st != CUDA_SUCCESS)
            return st;
    }
    *out = c;
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    if (!pctx)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_ctx *c;
    CUresult st = rgpu_primary_retain(dev, &c);
    if (st == CUDA_SUCCESS)
        *pctx = (CUcontext)c;
    return st;
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice devno)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (devno < 0 || devno >= rgpu_device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    rgpu_device *dev = &rgpu_devices[devno];
    pthread_mutex_lock(&dev->primary_mu);
    rgpu_ctx *c = dev->primary;
    if (!c || c->refcount <= 0) {
        pthread_mutex_unlock(&dev->primary_mu);
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    c->refcount--;
    pthread_mutex_unlock(&dev->primary_mu);
    if (rgpu_connection_dead())
        return CUDA_SUCCESS; /* teardown after a lost server: nothing left to release */
    mp_buf b;
    rgpu_body_begin(&b, "cuDevicePrimaryCtxRelease_v2", 1);
    mp_int(&b, rgpu_devices[devno].cuda_index);
    return rgpu_status_call(devno, &b, 0);
}

CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
    return cuDevicePrimaryCtxRelease_v2(dev);
}

CUresult cuDevicePrimaryCtxReset_v2(CUdevice devno)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (devno < 0 || devno >= rgpu_device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    rgpu_ctx *c = rgpu_devices[devno].primary;
    if (c)
        rgpu_cls_context_destroyed((CUcontext)c);
    rgpu_coherent_device_reset(devno);
    rgpu_pool_device_reset(devno);
    mp_buf b;
    rgpu_body_begin(&b, "cuDevicePrimaryCtxReset_v2", 1);
    mp_int(&b, rgpu_devices[devno].cuda_index);
    return rgpu_status_call(devno, &b, 1);
}

CUresult cuDevicePrimaryCtxReset(CUdevice dev)
{
    return cuDevicePrimaryCtxReset_v2(dev);
}

CUresult cuDevicePrimaryCtxGetState(CUdevice devno, unsigned int *flags, int *active)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (devno < 0 || devno >= rgpu_device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    if (!flags || !active)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_ctx *c = rgpu_devices[devno].primary;
    *flags = c ? c->flags : 0;
    *active = c && c->refcount > 0;
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice devno, unsigned int flags)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (devno < 0 || devno >= rgpu_device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    rgpu_device *dev = &rgpu_devices[devno];
    pthread_mutex_lock(&dev->primary_mu);
    if (!dev->primary)
        dev->primary = ctx_new(devno, 1, flags);
    if (dev->primary)
        dev->primary->flags = flags;
    pthread_mutex_unlock(&dev->primary_mu);
    mp_buf b;
    rgpu_body_begin(&b, "cuDevicePrimaryCtxSetFlags_v2", 2);
    mp_int(&b, dev->cuda_index);
    mp_uint(&b, flags);
    return rgpu_status_call(devno, &b, 0);
}

CUresult cuDevicePrimaryCtxSetFlags(CUdevice dev, unsigned int flags)
{
    return cuDevicePrimaryCtxSetFlags_v2(dev, flags);
}

/* ---- created contexts and the stack ------------------------------------------------------ */

CUresult cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *params, unsigned int flags,
                        CUdevice devno)
{
    (void)params;
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!pctx)
        return CUDA_ERROR_INVALID_VALUE;
    if (devno < 0 || devno >= rgpu_device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    rgpu_session *s;
    CUresult st = rgpu_device_session(devno, &s);
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_ctx *c = ctx_new(devno, 0, flags);
    if (!c)
        return CUDA_ERROR_OUT_OF_MEMORY;
    mp_buf b;
    rgpu_body_begin(&b, "cuCtxCreate_v4", 3);
    mp_uint(&b, c->id);
    mp_uint(&b, flags);
    mp_int(&b, rgpu_devices[devno].cuda_index);
    rgpu_lock();
    st = rgpu_batch(s->id, &b, NULL, 0);
    if (st == CUDA_SUCCESS)
        s->current_ctx = c->id; /* created contexts become current */
    rgpu_unlock();
    mp_free(&b);
    if (st != CUDA_SUCCESS) {
        free(c);
        return st;
    }
    if (ctx_depth < CTX_STACK_MAX)
        ctx_stack[ctx_depth++] = c;
    *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    return cuCtxCreate_v4(pctx, NULL, flags, dev);
}

CUresult cuCtxCreate_v3(CUcontext *pctx, CUexecAffinityParam *p, int n, unsigned int flags,
                        CUdevice dev)
{
    (void)p;
    (void)n;
    return cuCtxCreate_v4(pctx, NULL, flags, dev);
}

void rgpu_ctx_note_destroyed(rgpu_ctx *c)
{
    for (int i = 0; i < ctx_depth; i++) {
        if (ctx_stack[i] == c) {
            memmove(&ctx_stack[i], &ctx_stack[i + 1], (size_t)(ctx_depth - i - 1) * sizeof c);
            ctx_depth--;
            i--;
        }
    }
}

CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    rgpu_ctx *c = ctx_check(ctx);
    if (!c || c->destroyed)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (c->primary)
        return CUDA_ERROR_INVALID_CONTEXT;
    rgpu_cls_context_destroyed(ctx);
    rgpu_session *s;
    CUresult st = rgpu_device_session(c->dev, &s);
    if (st != CUDA_SUCCESS)
        return st;
    mp_buf b;
    rgpu_body_begin(&b, "cuCtxDestroy_v2", 1);
    mp_uint(&b, c->id);
    rgpu_lock();
    st = rgpu_batch(s->id, &b, NULL, 0);
    if (s->current_ctx == c->id)
        s->current_ctx = 0;
    rgpu_unlock();
    mp_free(&b);
    c->destroyed = 1;
    rgpu_ctx_note_destroyed(c);
    /* the object stays allocated: stale handles must read as destroyed, not as freed memory */
    return st;
}

CUresult cuCtxSetCurrent(CUcontext ctx)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!ctx) {
        set_top(NULL);
        return CUDA_SUCCESS;
    }
    rgpu_ctx *c = ctx_check(ctx);
    if (!c || c->destroyed)
        return CUDA_ERROR_INVALID_CONTEXT;
    set_top(c); /* sent lazily, before the next call that needs it */
    return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext *pctx)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!pctx)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = (CUcontext)rgpu_current_ctx();
    return CUDA_SUCCESS;
}

CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    rgpu_ctx *c = ctx_check(ctx);
    if (!c || c->destroyed)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (ctx_depth >= CTX_STACK_MAX)
        return CUDA_ERROR_OUT_OF_MEMORY;
    ctx_stack[ctx_depth++] = c;
    return CUDA_SUCCESS;
}

CUresult cuCtxPopCurrent_v2(CUcontext *pctx)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (ctx_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    rgpu_ctx *c = ctx_stack[--ctx_depth];
    if (pctx)
        *pctx = (CUcontext)c;
    return CUDA_SUCCESS;
}

CUresult cuCtxGetDevice(CUdevice *device)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!device)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_ctx *c = rgpu_current_ctx();
    if (!c)
        return CUDA_ERROR_INVALID_CONTEXT;
    *device = c->dev;
    return CUDA_SUCCESS;
}

CUresult cuCtxGetDevice_v2(CUdevice *device, CUcontext ctx)
{
    if (!ctx)
        return cuCtxGetDevice(device);
    rgpu_ctx *c = ctx_check(ctx);
    if (!c)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (!device)
        return CUDA_ERROR_INVALID_VALUE;
    *device = c->dev;
    return CUDA_SUCCESS;
}

CUresult cuCtxGetFlags(unsigned int *flags)
{
    if (!flags)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_ctx *c = rgpu_current_ctx();
    if (!c)
        return CUDA_ERROR_INVALID_CONTEXT;
    *flags = c->flags;
    return CUDA_SUCCESS;
}

CUresult cuCtxSetFlags(unsigned int flags)
{
    rgpu_ctx *c = rgpu_current_ctx();
    if (!c)
        return CUDA_ERROR_INVALID_CONTEXT;
    c->flags = flags;
    return CUDA_SUCCESS;
}

CUresult cuCtxGetId(CUcontext ctx, unsigned long long *ctxId)
{
    rgpu_ctx *c = ctx ? ctx_check(ctx) : rgpu_current_ctx();
    if (!c)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (!ctxId)
        return CUDA_ERROR_INVALID_VALUE;
    *ctxId = c->id;
    return CUDA_SUCCESS;
}

CUresult cuCtxGetApiVersion(CUcontext ctx, unsigned int *version)
{
    if (!version)
        return CUDA_ERROR_INVALID_VALUE;
    (void)ctx;
    *version = 3020;
    return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize(void)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult st = rgpu_coherent_push();
    if (st != CUDA_SUCCESS)
        return st;
    mp_buf b;
    rgpu_body_begin(&b, "cuCtxSynchronize", 0);
    st = rgpu_status_call(rgpu_current_dev(), &b, 1);
    return st == CUDA_SUCCESS ? rgpu_synchronized() : st;
}

CUresult cuCtxSynchronize_v2(CUcontext ctx)
{
    if (!ctx)
        return cuCtxSynchronize();
    rgpu_ctx *c = ctx_check(ctx);
    if (!c || c->destroyed)
        return CUDA_ERROR_INVALID_CONTEXT;
    CUresult st = cuCtxPushCurrent_v2(ctx);
    if (st != CUDA_SUCCESS)
        return st;
    st = cuCtxSynchronize();
    cuCtxPopCurrent_v2(NULL);
    return st;
}

static CUresult int_call(mp_buf *b, int64_t *v)
{
    rgpu_reply r;
    CUresult st = rgpu_simple_call(rgpu_current_dev(), b, NULL, 0, &r);
    mp_free(b);
    if (st != CUDA_SUCCESS)
        return st;
    if (rgpu_reply_i64(&r, v) != 0)
        st = CUDA_ERROR_UNKNOWN;
    rgpu_reply_free(&r);
    return st;
}

CUresult cuCtxGetLimit(size_t *pvalue, CUlimit limit)
{
    if (!pvalue)
        return CUDA_ERROR_INVALID_VALUE;
    mp_buf b;
    rgpu_body_begin(&b, "cuCtxGetLimit", 1);
    mp_int(&b, limit);
    int64_t v = 0;
    CUresult st = int_call(&b, &v);
    if (st == CUDA_SUCCESS)
        *pvalue = (size_t)v;
    return st;
}

CUresult cuCtxSetLimit(CUlimit limit, size_t value)
{
    mp_buf b;
    rgpu_body_begin(&b, "cuCtxSetLimit", 2);
    mp_int(&b, limit);
    mp_uint(&b, value);
    return rgpu_status_call(rgpu_current_dev(), &b, 1);
}

CUresult cuCtxGetStreamPriorityRange(int *leastPriority, int *greatestPriority)
{
    mp_buf b;
    rgpu_body_begin(&b, "cuCtxGetStreamPriorityRange", 0);
    rgpu_reply r;
    CUresult st = rgpu_simple_call(rgpu_current_dev(), &b, NULL, 0, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    int64_t lo = 0, hi = 0;
    rgpu_reply_pair(&r, &lo, &hi);
    rgpu_reply_free(&r);
    if (leastPriority)
        *leastPriority = (int)lo;
    if (greatestPriority)
        *greatestPriority = (int)hi;
    return CUDA_SUCCESS;
}

CUresult cuCtxGetCacheConfig(CUfunc_cache *pconfig)
{
    if (!pconfig)
        return CUDA_ERROR_INVALID_VALUE;
    *pconfig = CU_FUNC_CACHE_PREFER_NONE;
    return CUDA_SUCCESS;
}

CUresult cuCtxSetCacheConfig(CUfunc_cache config)
{
    (void)config; /* a hint */
    return CUDA_SUCCESS;
}

CUresult cuCtxGetSharedMemConfig(CUsharedconfig *pConfig)
{
    if (!pConfig)
        return CUDA_ERROR_INVALID_VALUE;
    *pConfig = CU_SHARED_MEM_CONFIG_FOUR_BYTE_BANK_SIZE;
    return CUDA_SUCCESS;
}

CUresult cuCtxSetSharedMemConfig(CUsharedconfig config)
{
    (void)config;
    return CUDA_SUCCESS;
}
