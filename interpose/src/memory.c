/* Memory: device allocations (server addresses, kept in a range table so unified-addressing
 * copies and pointer attributes can be answered), page-locked host memory (real local memory:
 * the server never sees it), and copies in every direction. Host data travels as the bulk
 * segment of its call, in chunks so no message grows without bound; large copies go through
 * the shared-memory region of shm.c instead when the daemon attached one. */
#include <stdlib.h>
#include <string.h>

#include "coherence.h"

/* Copies travel in pieces of 8 MiB, each one CALL (or one use of the shared-memory region)
 * whose bulk is one frame on every leg. Larger pieces were slower, not faster: the daemon and
 * the server join a piece's frames into one buffer, and every buffer of 32 MiB or more is a
 * fresh mmap whose pages fault in on first touch (glibc does not keep such blocks for reuse),
 * which halved the rate of 64 MiB pieces (docs/BENCHMARKS.md). */
#define COPY_CHUNK ((size_t)8 << 20)

typedef struct {
    uint64_t base;
    size_t size;
    int dev;
    rgpu_ctx *ctx;
    unsigned flags; /* host: cuMemHostAlloc flags; 1<<31 = registered (not ours to free) */
} range;

typedef struct {
    range *r;
    size_t n, cap;
} range_table;

static pthread_mutex_t ranges_mu = PTHREAD_MUTEX_INITIALIZER;
static range_table dev_ranges, host_ranges;

#define HOST_REGISTERED (1u << 31)
#define RANGE_GLOBAL (1u << 30)

static int table_add(range_table *t, range r)
{
    pthread_mutex_lock(&ranges_mu);
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        range *p = realloc(t->r, cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&ranges_mu);
            return -1;
        }
        t->r = p;
        t->cap = cap;
    }
    t->r[t->n++] = r;
    pthread_mutex_unlock(&ranges_mu);
    return 0;
}

/* The index of the range containing p, -1 if none. Different servers of a pool may hand out
 * the same addresses, so a range of the calling thread's current device wins over others. */
static long table_index(range_table *t, uint64_t p)
{
    rgpu_ctx *c = rgpu_current_ctx();
    long any = -1;
    for (size_t i = t->n; i-- > 0;) {
        range *r = &t->r[i];
        if (p >= r->base && p < r->base + (r->size ? r->size : 1)) {
            if (!c || r->dev == c->dev)
                return (long)i;
            if (any < 0)
                any = (long)i;
        }
    }
    return any;
}

/* Find the range containing p; copy it out. */
static int table_find(range_table *t, uint64_t p, range *out)
{
    pthread_mutex_lock(&ranges_mu);
    long i = table_index(t, p);
    if (i >= 0)
        *out = t->r[i];
    pthread_mutex_unlock(&ranges_mu);
    return i >= 0;
}

static int table_remove(range_table *t, uint64_t base, range *out)
{
    pthread_mutex_lock(&ranges_mu);
    long i = table_index(t, base);
    int found = i >= 0 && t->r[i].base == base;
    if (found) {
        if (out)
            *out = t->r[i];
        t->r[i] = t->r[--t->n];
    }
    pthread_mutex_unlock(&ranges_mu);
    return found;
}

int rgpu_range_device(uint64_t p, int *dev)
{
    range r;
    if (!table_find(&dev_ranges, p, &r))
        return 0;
    if (dev)
        *dev = r.dev;
    return 1;
}

int rgpu_range_host(const void *p, size_t *base_off, size_t *size)
{
    range r;
    if (!table_find(&host_ranges, (uint64_t)(uintptr_t)p, &r))
        return 0;
    if (base_off)
        *base_off = (size_t)((uintptr_t)p - r.base);
    if (size)
        *size = r.size;
    return 1;
}

void rgpu_range_add_global(uint64_t base, size_t size, int dev)
{
    /* module globals take part in unified-addressing copies and pointer queries; they are
     * not cuMemFree-able (flagged) and stay listed, as their module's addresses stay unused */
    range r;
    if (table_find(&dev_ranges, base, &r) && r.dev == dev)
        return;
    table_add(&dev_ranges, (range){base, size, dev, rgpu_current_ctx(), RANGE_GLOBAL});
}

/* A copy or memset of [p, p+n) starting in a known allocation must end within it: the driver
 * refuses it at the call with CUDA_ERROR_INVALID_VALUE, where a queued call could only report
 * it later. Pointers the shim does not know (pools, graph memory) are left to the server. */
static CUresult check_span(CUdeviceptr p, size_t n)
{
    range r;
    if (!table_find(&dev_ranges, p, &r))
        return CUDA_SUCCESS;
    if (n > r.size - (p - r.base)) {
        RGPU_DEBUG("%zu bytes at %#llx run past the end of the allocation of %zu bytes at %#llx",
                   n, (unsigned long long)p, r.size, (unsigned long long)r.base);
        return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

static int dev_of_ptr(CUdeviceptr p)
{
    int dev;
    return rgpu_range_device(p, &dev) ? dev : rgpu_current_dev();
}

/* ---- device memory ----------------------------------------------------------------------- */

CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
    if (!dptr)
        return CUDA_ERROR_INVALID_VALUE;
    if (bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    mp_buf b;
    rgpu_body_begin(&b, "cuMemAlloc_v2", 1);
    mp_uint(&b, bytesize);
    int dev = rgpu_current_dev();
    rgpu_reply r;
    CUresult st = rgpu_simple_call(dev, &b, NULL, 0, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    int64_t v = 0;
    if (rgpu_reply_i64(&r, &v) != 0)
        st = CUDA_ERROR_UNKNOWN;
    rgpu_reply_free(&r);
    if (st == CUDA_SUCCESS) {
        *dptr = (CUdeviceptr)v;
        table_add(&dev_ranges, (range){(uint64_t)v, bytesize, dev, rgpu_current_ctx(), 0});
    }
    return st;
}

CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes,
                            size_t Height, unsigned int ElementSizeBytes)
{
    if (!dptr || !pPitch)
        return CUDA_ERROR_INVALID_VALUE;
    mp_buf b;
    rgpu_body_begin(&b, "cuMemAllocPitch_v2", 3);
    mp_uint(&b, WidthInBytes);
    mp_uint(&b, Height);
    mp_uint(&b, ElementSizeBytes);
    int dev = rgpu_current_dev();
    rgpu_reply r;
    CUresult st = rgpu_simple_call(dev, &b, NULL, 0, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    int64_t p = 0, pitch = 0;
    if (rgpu_reply_pair(&r, &p, &pitch) != 0)
        st = CUDA_ERROR_UNKNOWN;
    rgpu_reply_free(&r);
    if (st == CUDA_SUCCESS) {
        *dptr = (CUdeviceptr)p;
        *pPitch = (size_t)pitch;
        table_add(&dev_ranges,
                  (range){(uint64_t)p, (size_t)pitch * Height, dev, rgpu_current_ctx(), 0});
    }
    return st;
}

CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    if (dptr == 0)
        return CUDA_SUCCESS;
    if (rgpu_coherent_release(dptr, 0))
        return CUDA_SUCCESS; /* managed memory: its device copy was freed with it */
    if (rgpu_coherent_find((const void *)(uintptr_t)dptr, NULL, NULL))
        return CUDA_ERROR_INVALID_VALUE; /* mapped page-locked memory: cuMemFreeHost's */
    if (rgpu_graph_owns(dptr))
        return CUDA_SUCCESS; /* memory of a graph's allocation node: the graph holds it */
    range r;
    if (!table_find(&dev_ranges, dptr, &r) || r.base != dptr || (r.flags & RANGE_GLOBAL))
        return CUDA_ERROR_INVALID_VALUE;
    table_remove(&dev_ranges, dptr, &r);
    rgpu_pool_free(dptr);
    if (rgpu_connection_dead())
        return CUDA_SUCCESS;
    mp_buf b;
    rgpu_body_begin(&b, "cuMemFree_v2", 1);
    mp_uint(&b, dptr);
    return rgpu_status_call(r.dev, &b, 0);
}

CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
    mp_buf b;
    rgpu_body_begin(&b, "cuMemGetInfo_v2", 0);
    rgpu_reply r;
    CUresult st = rgpu_simple_call(rgpu_current_dev(), &b, NULL, 0, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    int64_t f = 0, t = 0;
    if (rgpu_reply_pair(&r, &f, &t) != 0)
        st = CUDA_ERROR_UNKNOWN;
    rgpu_reply_free(&r);
    if (free_bytes)
        *free_bytes = (size_t)f;
    if (total)
        *total = (size_t)t;
    return st;
}

CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr)
{
    uint64_t mbase;
    size_t msize;
    if (rgpu_coherent_is_managed(dptr, &mbase, &msize)) {
        if (pbase)
            *pbase = mbase;
        if (psize)
            *psize = msize;
        return CUDA_SUCCESS;
    }
    range r;
    if (!table_find(&dev_ranges, dptr, &r))
        return CUDA_ERROR_NOT_FOUND;
    if (pbase)
        *pbase = r.base;
    if (psize)
        *psize = r.size;
    return CUDA_SUCCESS;
}

/* ---- copies ------------------------------------------------------------------------------ */

/* Through the shared-memory region (shm.c), which the caller holds, in pieces of up to
 * COPY_CHUNK: the region is split into slots and up to SHM_INFLIGHT pieces are in flight, so
 * copying one piece in or out of the region overlaps the daemon and the server moving the
 * others. The daemon reads (HtoD) or fills (DtoH) a slot before it answers, so a slot is
 * reused only after its piece's reply. Async copies wait for the replies too (pageable-memory
 * copies may). */
#define SHM_INFLIGHT 4

typedef struct {
    rgpu_pending *p[SHM_INFLIGHT];
    uint32_t sid[SHM_INFLIGHT];
    size_t len[SHM_INFLIGHT];
    size_t off[SHM_INFLIGHT];
    int slots;
    size_t piece;
} shm_pipe;

static void pipe_init(shm_pipe *q, size_t cap)
{
    memset(q, 0, sizeof *q);
    /* a quarter of the region (so small regions pipeline too), 1 MiB to COPY_CHUNK */
    size_t piece = cap / SHM_INFLIGHT;
    piece = piece < ((size_t)1 << 20) ? (size_t)1 << 20 : piece;
    piece = piece > COPY_CHUNK ? COPY_CHUNK : piece;
    q->piece = piece < cap ? piece : cap;
    size_t slots = cap / q->piece;
    q->slots = slots > SHM_INFLIGHT ? SHM_INFLIGHT : (int)slots;
}

/* Send `b` for slot `k` (on the device's session, its context current there). */
static CUresult pipe_start(shm_pipe *q, int k, int dev, const mp_buf *b)
{
    rgpu_session *s;
    CUresult st = rgpu_begin(dev, &s);
    if (st != CUDA_SUCCESS)
        return st;
    q->sid[k] = s->id;
    q->p[k] = rgpu_call_start(s->id, b);
    rgpu_unlock();
    return q->p[k] ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

/* Wait for slot `k`'s reply (if one is in flight); the caller frees `r` on success. */
static CUresult pipe_finish(shm_pipe *q, int k, rgpu_reply *r)
{
    memset(r, 0, sizeof *r);
    if (!q->p[k])
        return CUDA_SUCCESS;
    CUresult st = rgpu_call_finish(q->p[k], q->sid[k], r);
    q->p[k] = NULL;
    return st;
}

static CUresult htod_shm(CUdeviceptr dst, const uint8_t *src, size_t n, uint64_t sid,
                         int async, int dev, uint8_t *shm, size_t cap)
{
    shm_pipe q;
    pipe_init(&q, cap);
    CUresult st = CUDA_SUCCESS;
    size_t issued = 0;
    for (size_t off = 0; off < n && st == CUDA_SUCCESS; off += q.piece, issued++) {
        int k = (int)(issued % (size_t)q.slots);
        rgpu_reply r;
        st = pipe_finish(&q, k, &r);
        if (st != CUDA_SUCCESS)
            break;
        rgpu_reply_free(&r);
        size_t len = n - off < q.piece ? n - off : q.piece;
        memcpy(shm + (size_t)k * q.piece, src + off, len);
        mp_buf b;
        rgpu_shm_body(&b, async ? "cuMemcpyHtoDAsync_v2" : "cuMemcpyHtoD_v2", async ? 2 : 1);
        mp_uint(&b, dst + off);
        if (async)
            mp_uint(&b, sid);
        mp_uint(&b, 1); /* bulk_index: the data is the second argument */
        mp_map(&b, 1);
        mp_str(&b, "shm");
        mp_array(&b, 2);
        mp_uint(&b, (size_t)k * q.piece);
        mp_uint(&b, len);
        st = pipe_start(&q, k, dev, &b);
        mp_free(&b);
    }
    for (size_t j = 0; j < (size_t)q.slots; j++) { /* the rest, in the order they went */
        rgpu_reply r;
        CUresult one = pipe_finish(&q, (int)((issued + j) % (size_t)q.slots), &r);
        if (one == CUDA_SUCCESS)
            rgpu_reply_free(&r);
        else if (st == CUDA_SUCCESS)
            st = one;
    }
    return st;
}

/* Slot `k`'s DtoH reply: its bytes to `dst`. */
static CUresult dtoh_take(shm_pipe *q, int k, uint8_t *dst, const uint8_t *shm)
{
    if (!q->p[k])
        return CUDA_SUCCESS;
    size_t len = q->len[k];
    rgpu_reply r;
    CUresult st = pipe_finish(q, k, &r);
    if (st != CUDA_SUCCESS)
        return st;
    int64_t got = -1;
    if (r.bulk_len == len) { /* the daemon may answer as socket bulk after all */
        memcpy(dst + q->off[k], r.bulk, len);
    } else if (r.has_body && r.doc.nodes[0].type == MP_MAP &&
               mp_get_i64(&r.doc, mp_map_get(&r.doc, 0, "shm"), &got) == 0 &&
               got == (int64_t)len) {
        memcpy(dst + q->off[k], shm + (size_t)k * q->piece, len);
    } else {
        st = CUDA_ERROR_UNKNOWN;
    }
    rgpu_reply_free(&r);
    return st;
}

static CUresult dtoh_shm(uint8_t *dst, CUdeviceptr src, size_t n, uint64_t sid, int async,
                         int dev, uint8_t *shm, size_t cap)
{
    shm_pipe q;
    pipe_init(&q, cap);
    CUresult st = CUDA_SUCCESS;
    size_t issued = 0;
    for (size_t off = 0; off < n && st == CUDA_SUCCESS; off += q.piece, issued++) {
        int k = (int)(issued % (size_t)q.slots);
        st = dtoh_take(&q, k, dst, shm);
        if (st != CUDA_SUCCESS)
            break;
        size_t len = n - off < q.piece ? n - off : q.piece;
        mp_buf b;
        rgpu_shm_body(&b, async ? "cuMemcpyDtoHAsync_v2" : "cuMemcpyDtoH_v2", async ? 3 : 2);
        mp_uint(&b, src + off);
        mp_uint(&b, len);
        if (async)
            mp_uint(&b, sid);
        mp_nil(&b); /* no bulk_index: nothing goes up */
        mp_map(&b, 1);
        mp_str(&b, "shm_reply");
        mp_array(&b, 2);
        mp_uint(&b, (size_t)k * q.piece);
        mp_uint(&b, q.piece);
        q.len[k] = len;
        q.off[k] = off;
        st = pipe_start(&q, k, dev, &b);
        mp_free(&b);
    }
    for (size_t j = 0; j < (size_t)q.slots; j++) {
        int k = (int)((issued + j) % (size_t)q.slots);
        CUresult one = st == CUDA_SUCCESS ? dtoh_take(&q, k, dst, shm) : CUDA_SUCCESS;
        if (st != CUDA_SUCCESS && q.p[k]) { /* after a failure: drain, copy nothing */
            rgpu_reply r;
            if (pipe_finish(&q, k, &r) == CUDA_SUCCESS)
                rgpu_reply_free(&r);
        }
        if (st == CUDA_SUCCESS)
            st = one;
    }
    return st;
}

static CUresult htod_copy(CUdeviceptr dst, const void *src, size_t n, CUstream stream,
                          int async);

static CUresult htod(CUdeviceptr dst, const void *src, size_t n, CUstream stream, int async)
{
    if (n == 0)
        return CUDA_SUCCESS;
    if (!src)
        return CUDA_ERROR_INVALID_VALUE;
    if (async && rgpu_capturing(stream)) {
        CUDA_MEMCPY3D c;
        rgpu_linear_copy3d(&c, CU_MEMORYTYPE_DEVICE, dst, CU_MEMORYTYPE_HOST,
                           (uint64_t)(uintptr_t)src, n);
        return rgpu_capture_copy(stream, &c);
    }
    CUresult st = rgpu_coherent_push();
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_coherent_device_wrote(0);
    st = htod_copy(dst, src, n, stream, async);
    return st == CUDA_SUCCESS && !async ? rgpu_coherent_after_blocking_copy() : st;
}

static CUresult htod_copy(CUdeviceptr dst, const void *src, size_t n, CUstream stream, int async)
{
    uint64_t sid = rgpu_stream_id(stream);
    if (sid == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    int dev = dev_of_ptr(dst);
    uint8_t *shm;
    size_t cap;
    if (rgpu_shm_acquire(n, &shm, &cap)) {
        CUresult st = htod_shm(dst, src, n, sid, async, dev, shm, cap);
        rgpu_shm_release();
        return st;
    }
    CUresult st = CUDA_SUCCESS;
    for (size_t off = 0; off < n && st == CUDA_SUCCESS; off += COPY_CHUNK) {
        size_t len = n - off < COPY_CHUNK ? n - off : COPY_CHUNK;
        int last = off + len >= n;
        mp_buf b;
        if (async) {
            rgpu_body_begin_bulk(&b, "cuMemcpyHtoDAsync_v2", 2);
            mp_uint(&b, dst + off);
            mp_uint(&b, sid);
        } else {
            rgpu_body_begin_bulk(&b, "cuMemcpyHtoD_v2", 1);
            mp_uint(&b, dst + off);
        }
        mp_uint(&b, 1); /* bulk_index: the data is the second argument */
        if (last && !async) {
            rgpu_reply r;
            st = rgpu_simple_call(dev, &b, (const uint8_t *)src + off, len, &r);
            if (st == CUDA_SUCCESS)
                rgpu_reply_free(&r);
        } else {
            st = rgpu_simple_batch(dev, &b, (const uint8_t *)src + off, len);
        }
        mp_free(&b);
    }
    return st;
}

static CUresult dtoh_copy(void *dst, CUdeviceptr src, size_t n, CUstream stream, int async);

static CUresult dtoh(void *dst, CUdeviceptr src, size_t n, CUstream stream, int async)
{
    if (n == 0)
        return CUDA_SUCCESS;
    if (!dst)
        return CUDA_ERROR_INVALID_VALUE;
    if (async && rgpu_capturing(stream)) {
        CUDA_MEMCPY3D c;
        rgpu_linear_copy3d(&c, CU_MEMORYTYPE_HOST, (uint64_t)(uintptr_t)dst, CU_MEMORYTYPE_DEVICE,
                           src, n);
        return rgpu_capture_copy(stream, &c);
    }
    CUresult st = rgpu_coherent_push();
    if (st != CUDA_SUCCESS)
        return st;
    st = dtoh_copy(dst, src, n, stream, async);
    return st == CUDA_SUCCESS && !async ? rgpu_coherent_after_blocking_copy() : st;
}

static CUresult dtoh_copy(void *dst, CUdeviceptr src, size_t n, CUstream stream, int async)
{
    uint64_t sid = rgpu_stream_id(stream);
    if (sid == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    int dev = dev_of_ptr(src);
    uint8_t *shm;
    size_t cap;
    if (rgpu_shm_acquire(n, &shm, &cap)) {
        CUresult st = dtoh_shm(dst, src, n, sid, async, dev, shm, cap);
        rgpu_shm_release();
        return st;
    }
    CUresult st = CUDA_SUCCESS;
    for (size_t off = 0; off < n && st == CUDA_SUCCESS; off += COPY_CHUNK) {
        size_t len = n - off < COPY_CHUNK ? n - off : COPY_CHUNK;
        mp_buf b;
        if (async) {
            rgpu_body_begin(&b, "cuMemcpyDtoHAsync_v2", 3);
            mp_uint(&b, src + off);
            mp_uint(&b, len);
            mp_uint(&b, sid);
        } else {
            rgpu_body_begin(&b, "cuMemcpyDtoH_v2", 2);
            mp_uint(&b, src + off);
            mp_uint(&b, len);
        }
        rgpu_reply r;
        st = rgpu_simple_call(dev, &b, NULL, 0, &r);
        mp_free(&b);
        if (st != CUDA_SUCCESS)
            break;
        if (r.bulk_len == len) {
            memcpy((uint8_t *)dst + off, r.bulk, len);
        } else if (r.has_body && r.doc.nodes[0].type == MP_BIN && r.doc.nodes[0].count == len) {
            memcpy((uint8_t *)dst + off, r.doc.nodes[0].v.p, len);
        } else {
            st = CUDA_ERROR_UNKNOWN;
        }
        rgpu_reply_free(&r);
    }
    return st;
}

static CUresult dtod(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream stream, int async,
                     const char *fn)
{
    if (n == 0)
        return CUDA_SUCCESS;
    uint64_t sid = rgpu_stream_id(stream);
    if (sid == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    if (check_span(dst, n) != CUDA_SUCCESS || check_span(src, n) != CUDA_SUCCESS)
        return CUDA_ERROR_INVALID_VALUE;
    if (async && rgpu_capturing(stream)) {
        CUDA_MEMCPY3D c;
        rgpu_linear_copy3d(&c, CU_MEMORYTYPE_DEVICE, dst, CU_MEMORYTYPE_DEVICE, src, n);
        return rgpu_capture_copy(stream, &c);
    }
    CUresult st = rgpu_coherent_push();
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_coherent_device_wrote(0);
    mp_buf b;
    rgpu_body_begin(&b, fn, async ? 4 : 3);
    mp_uint(&b, dst);
    mp_uint(&b, src);
    mp_uint(&b, n);
    if (async)
        mp_uint(&b, sid);
    st = rgpu_status_call(dev_of_ptr(dst), &b, 0);
    /* a blocking copy into managed memory: the host reads it next */
    if (st == CUDA_SUCCESS && !async &&
        rgpu_coherent_find((const void *)(uintptr_t)dst, NULL, NULL))
        st = rgpu_coherent_after_blocking_copy();
    return st;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount)
{
    return htod(dstDevice, srcHost, ByteCount, NULL, 0);
}

CUresult cuMemcpyDtoH_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount)
{
    return dtoh(dstHost, srcDevice, ByteCount, NULL, 0);
}

CUresult cuMemcpyDtoD_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount)
{
    return dtod(dstDevice, srcDevice, ByteCount, NULL, 0, "cuMemcpyDtoD_v2");
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount,
                              CUstream hStream)
{
    return htod(dstDevice, srcHost, ByteCount, hStream, 1);
}

CUresult cuMemcpyDtoHAsync_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount,
                              CUstream hStream)
{
    return dtoh(dstHost, srcDevice, ByteCount, hStream, 1);
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount,
                              CUstream hStream)
{
    return dtod(dstDevice, srcDevice, ByteCount, hStream, 1, "cuMemcpyDtoDAsync_v2");
}

/* A copy between devices of the pool, which may live on different servers: staged through
 * this process (the servers never talk to each other). Each side runs in its own context. */
static CUresult staged_copy(CUdeviceptr dst, rgpu_ctx *dst_ctx, CUdeviceptr src,
                            rgpu_ctx *src_ctx, size_t n)
{
    if (n == 0)
        return CUDA_SUCCESS;
    uint8_t *buf = calloc(1, n); /* zeroed: keeps -Wmaybe-uninitialized quiet */
    if (!buf)
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult st = CUDA_SUCCESS;
    if (src_ctx)
        st = cuCtxPushCurrent_v2((CUcontext)src_ctx);
    if (st == CUDA_SUCCESS) {
        st = dtoh(buf, src, n, NULL, 0);
        if (src_ctx)
            cuCtxPopCurrent_v2(NULL);
    }
    if (st == CUDA_SUCCESS && dst_ctx)
        st = cuCtxPushCurrent_v2((CUcontext)dst_ctx);
    if (st == CUDA_SUCCESS) {
        st = htod(dst, buf, n, NULL, 0);
        if (dst_ctx)
            cuCtxPopCurrent_v2(NULL);
    }
    free(buf);
    return st;
}

CUresult cuMemcpyPeer(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                      CUcontext srcContext, size_t ByteCount)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    return staged_copy(dstDevice, (rgpu_ctx *)dstContext, srcDevice, (rgpu_ctx *)srcContext,
                       ByteCount);
}

CUresult cuMemcpyPeer_ptds(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                           CUcontext srcContext, size_t ByteCount)
{
    return cuMemcpyPeer(dstDevice, dstContext, srcDevice, srcContext, ByteCount);
}

CUresult cuMemcpyPeerAsync(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                           CUcontext srcContext, size_t ByteCount, CUstream hStream)
{
    /* ordered after the stream's work by waiting for it: stronger than CUDA asks */
    CUresult st = cuStreamSynchronize(hStream);
    if (st != CUDA_SUCCESS)
        return st;
    return cuMemcpyPeer(dstDevice, dstContext, srcDevice, srcContext, ByteCount);
}

CUresult cuMemcpyPeerAsync_ptsz(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                                CUcontext srcContext, size_t ByteCount, CUstream hStream)
{
    return cuMemcpyPeerAsync(dstDevice, dstContext, srcDevice, srcContext, ByteCount,
                             hStream ? hStream : CU_STREAM_PER_THREAD);
}

static CUresult unified_copy(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream stream,
                             int async)
{
    range dr, sr;
    int d_dev = table_find(&dev_ranges, dst, &dr);
    int s_dev = table_find(&dev_ranges, src, &sr);
    if (d_dev && s_dev && dr.dev != sr.dev) {
        if (async) { /* ordered after the stream's work by waiting for it */
            CUresult st = cuStreamSynchronize(stream);
            if (st != CUDA_SUCCESS)
                return st;
        }
        return staged_copy(dst, dr.ctx, src, sr.ctx, n);
    }
    if (d_dev && s_dev)
        return async ? dtod(dst, src, n, stream, 1, "cuMemcpyAsync")
                     : dtod(dst, src, n, NULL, 0, "cuMemcpy");
    if (d_dev)
        return htod(dst, (const void *)(uintptr_t)src, n, stream, async);
    if (s_dev)
        return dtoh((void *)(uintptr_t)dst, src, n, stream, async);
    if (n && (!dst || !src))
        return CUDA_ERROR_INVALID_VALUE;
    if (async && stream) {
        CUresult st = cuStreamSynchronize(stream);
        if (st != CUDA_SUCCESS)
            return st;
    }
    memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
    return CUDA_SUCCESS;
}

CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount)
{
    return unified_copy(dst, src, ByteCount, NULL, 0);
}

CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream)
{
    return unified_copy(dst, src, ByteCount, hStream, 1);
}

/* 2D copies: host sides are packed (WidthInBytes per row) for the server. */
static CUresult copy2d(const CUDA_MEMCPY2D *c, CUstream stream, int async)
{
    if (!c)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t sid = rgpu_stream_id(stream);
    if (sid == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    CUmemorytype st_ = c->srcMemoryType, dt = c->dstMemoryType;
    if (st_ == CU_MEMORYTYPE_UNIFIED)
        st_ = rgpu_range_device(c->srcDevice, NULL) ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
    if (dt == CU_MEMORYTYPE_UNIFIED)
        dt = rgpu_range_device(c->dstDevice, NULL) ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
    size_t w = c->WidthInBytes, h = c->Height;
    if (st_ == CU_MEMORYTYPE_ARRAY || dt == CU_MEMORYTYPE_ARRAY) {
        if (w == 0 || h == 0)
            return CUDA_SUCCESS;
        CUDA_MEMCPY3D c3;
        memset(&c3, 0, sizeof c3);
        c3.srcXInBytes = c->srcXInBytes;
        c3.srcY = c->srcY;
        c3.srcMemoryType = c->srcMemoryType;
        c3.srcHost = c->srcHost;
        c3.srcDevice = c->srcDevice;
        c3.srcArray = c->srcArray;
        c3.srcPitch = c->srcPitch;
        c3.dstXInBytes = c->dstXInBytes;
        c3.dstY = c->dstY;
        c3.dstMemoryType = c->dstMemoryType;
        c3.dstHost = c->dstHost;
        c3.dstDevice = c->dstDevice;
        c3.dstArray = c->dstArray;
        c3.dstPitch = c->dstPitch;
        c3.WidthInBytes = w;
        c3.Height = h;
        c3.Depth = 1;
        return rgpu_copy3d_array(&c3, stream, async);
    }
    if (w == 0 || h == 0)
        return CUDA_SUCCESS;
    if (async && rgpu_capturing(stream)) {
        CUDA_MEMCPY3D c3;
        memset(&c3, 0, sizeof c3);
        c3.srcXInBytes = c->srcXInBytes;
        c3.srcY = c->srcY;
        c3.srcMemoryType = c->srcMemoryType;
        c3.srcHost = c->srcHost;
        c3.srcDevice = c->srcDevice;
        c3.srcArray = c->srcArray;
        c3.srcPitch = c->srcPitch;
        c3.srcHeight = c->srcY + h;
        c3.dstXInBytes = c->dstXInBytes;
        c3.dstY = c->dstY;
        c3.dstMemoryType = c->dstMemoryType;
        c3.dstHost = c->dstHost;
        c3.dstDevice = c->dstDevice;
        c3.dstArray = c->dstArray;
        c3.dstPitch = c->dstPitch;
        c3.dstHeight = c->dstY + h;
        c3.WidthInBytes = w;
        c3.Height = h;
        c3.Depth = 1;
        return rgpu_capture_copy(stream, &c3);
    }
    CUresult pst = rgpu_coherent_push();
    if (pst != CUDA_SUCCESS)
        return pst;
    const uint8_t *src_host = st_ == CU_MEMORYTYPE_HOST
                                  ? (const uint8_t *)(c->srcMemoryType == CU_MEMORYTYPE_UNIFIED
                                                          ? (const void *)(uintptr_t)c->srcDevice
                                                          : c->srcHost)
                                  : NULL;
    uint8_t *dst_host = dt == CU_MEMORYTYPE_HOST
                            ? (uint8_t *)(c->dstMemoryType == CU_MEMORYTYPE_UNIFIED
                                              ? (void *)(uintptr_t)c->dstDevice
                                              : c->dstHost)
                            : NULL;
    if (src_host && dst_host) {
        for (size_t r = 0; r < h; r++)
            memmove(dst_host + (c->dstY + r) * c->dstPitch + c->dstXInBytes,
                    src_host + (c->srcY + r) * c->srcPitch + c->srcXInBytes, w);
        return CUDA_SUCCESS;
    }
    uint8_t *packed = NULL;
    if (src_host) {
        if (w > SIZE_MAX / h)
            return CUDA_ERROR_INVALID_VALUE;
        packed = malloc(w * h);
        if (!packed)
            return CUDA_ERROR_OUT_OF_MEMORY;
        for (size_t r = 0; r < h; r++)
            memcpy(packed + r * w, src_host + (c->srcY + r) * c->srcPitch + c->srcXInBytes, w);
    }
    mp_buf b;
    const char *fn = async ? "cuMemcpy2DAsync_v2" : "cuMemcpy2D_v2";
    if (packed)
        rgpu_body_begin_bulk(&b, fn, async ? 2 : 1);
    else
        rgpu_body_begin(&b, fn, async ? 2 : 1);
    mp_map(&b, 12);
    mp_str(&b, "srcXInBytes");
    mp_uint(&b, src_host ? 0 : c->srcXInBytes);
    mp_str(&b, "srcY");
    mp_uint(&b, src_host ? 0 : c->srcY);
    mp_str(&b, "srcMemoryType");
    mp_uint(&b, st_);
    mp_str(&b, "srcDevice");
    mp_uint(&b, src_host ? 0 : c->srcDevice);
    mp_str(&b, "srcPitch");
    mp_uint(&b, src_host ? w : c->srcPitch);
    mp_str(&b, "dstXInBytes");
    mp_uint(&b, dst_host ? 0 : c->dstXInBytes);
    mp_str(&b, "dstY");
    mp_uint(&b, dst_host ? 0 : c->dstY);
    mp_str(&b, "dstMemoryType");
    mp_uint(&b, dt);
    mp_str(&b, "dstDevice");
    mp_uint(&b, dst_host ? 0 : c->dstDevice);
    mp_str(&b, "dstPitch");
    mp_uint(&b, dst_host ? w : c->dstPitch);
    mp_str(&b, "WidthInBytes");
    mp_uint(&b, w);
    mp_str(&b, "Height");
    mp_uint(&b, h);
    if (async)
        mp_uint(&b, sid);
    if (packed)
        mp_uint(&b, async ? 2 : 1); /* bulk_index: host_data follows */
    int dev = rgpu_current_dev();
    if (!src_host && c->srcDevice)
        dev = dev_of_ptr(c->srcDevice);
    else if (!dst_host && c->dstDevice)
        dev = dev_of_ptr(c->dstDevice);
    rgpu_reply r;
    CUresult st;
    if (dst_host || !async) {
        st = rgpu_simple_call(dev, &b, packed, packed ? w * h : 0, &r);
        if (st == CUDA_SUCCESS) {
            if (dst_host) {
                if (r.bulk_len != w * h) {
                    st = CUDA_ERROR_UNKNOWN;
                } else {
                    for (size_t row = 0; row < h; row++)
                        memcpy(dst_host + (c->dstY + row) * c->dstPitch + c->dstXInBytes,
                               r.bulk + row * w, w);
                }
            }
            rgpu_reply_free(&r);
        }
    } else {
        st = rgpu_simple_batch(dev, &b, packed, packed ? w * h : 0);
    }
    mp_free(&b);
    free(packed);
    if (!dst_host)
        rgpu_coherent_device_wrote(0);
    return st == CUDA_SUCCESS && !async ? rgpu_coherent_after_blocking_copy() : st;
}

CUresult cuMemcpy2D_v2(const CUDA_MEMCPY2D *pCopy)
{
    return copy2d(pCopy, NULL, 0);
}

CUresult cuMemcpy2DUnaligned_v2(const CUDA_MEMCPY2D *pCopy)
{
    return copy2d(pCopy, NULL, 0);
}

CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *pCopy, CUstream hStream)
{
    return copy2d(pCopy, hStream, 1);
}

/* 3D copies between linear memory: one 2D copy per slice; CUDA arrays are textures.c's. */
static CUresult copy3d(const CUDA_MEMCPY3D *c, CUstream stream, int async)
{
    if (!c)
        return CUDA_ERROR_INVALID_VALUE;
    if (c->srcMemoryType == CU_MEMORYTYPE_ARRAY || c->dstMemoryType == CU_MEMORYTYPE_ARRAY)
        return rgpu_copy3d_array(c, stream, async);
    if (c->Depth > 1 && (!c->srcHeight || !c->dstHeight))
        return CUDA_ERROR_INVALID_VALUE;
    if (async && rgpu_capturing(stream))
        return rgpu_capture_copy(stream, c);
    CUresult st = CUDA_SUCCESS;
    for (size_t z = 0; z < c->Depth && st == CUDA_SUCCESS; z++) {
        size_t soff = (c->srcZ + z) * c->srcPitch * c->srcHeight;
        size_t doff = (c->dstZ + z) * c->dstPitch * c->dstHeight;
        CUDA_MEMCPY2D p;
        memset(&p, 0, sizeof p);
        p.srcXInBytes = c->srcXInBytes;
        p.srcY = c->srcY;
        p.srcMemoryType = c->srcMemoryType;
        p.srcHost = c->srcHost ? (const uint8_t *)c->srcHost + soff : NULL;
        p.srcDevice = c->srcDevice ? c->srcDevice + soff : 0;
        p.srcPitch = c->srcPitch;
        p.dstXInBytes = c->dstXInBytes;
        p.dstY = c->dstY;
        p.dstMemoryType = c->dstMemoryType;
        p.dstHost = c->dstHost ? (uint8_t *)c->dstHost + doff : NULL;
        p.dstDevice = c->dstDevice ? c->dstDevice + doff : 0;
        p.dstPitch = c->dstPitch;
        p.WidthInBytes = c->WidthInBytes;
        p.Height = c->Height;
        st = copy2d(&p, stream, async);
    }
    return st;
}

CUresult cuMemcpy3D_v2(const CUDA_MEMCPY3D *pCopy)
{
    return copy3d(pCopy, NULL, 0);
}

CUresult cuMemcpy3D_v2_ptds(const CUDA_MEMCPY3D *pCopy)
{
    return copy3d(pCopy, NULL, 0);
}

CUresult cuMemcpy3DAsync_v2(const CUDA_MEMCPY3D *pCopy, CUstream hStream)
{
    return copy3d(pCopy, hStream, 1);
}

CUresult cuMemcpy3DAsync_v2_ptsz(const CUDA_MEMCPY3D *pCopy, CUstream hStream)
{
    return copy3d(pCopy, hStream ? hStream : CU_STREAM_PER_THREAD, 1);
}

/* ---- memset ------------------------------------------------------------------------------ */

static CUresult memset_call(const char *fn, CUdeviceptr dst, unsigned value, size_t count,
                            CUstream stream, int async)
{
    uint64_t sid = rgpu_stream_id(stream);
    if (sid == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    unsigned elem = fn[9] == '8' ? 1 : fn[9] == '1' ? 2 : 4; /* cuMemsetD8/D16/D32... */
    if (count > SIZE_MAX / elem || check_span(dst, count * elem) != CUDA_SUCCESS)
        return CUDA_ERROR_INVALID_VALUE;
    if (async && rgpu_capturing(stream)) {
        CUDA_MEMSET_NODE_PARAMS m = {dst, count * elem, value, elem, count, 1};
        return rgpu_capture_memset(stream, &m);
    }
    CUresult st = rgpu_coherent_push();
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_coherent_device_wrote(0);
    mp_buf b;
    rgpu_body_begin(&b, fn, async ? 4 : 3);
    mp_uint(&b, dst);
    mp_uint(&b, value);
    mp_uint(&b, count);
    if (async)
        mp_uint(&b, sid);
    st = rgpu_status_call(dev_of_ptr(dst), &b, 0);
    if (st == CUDA_SUCCESS && !async && /* managed memory set for the host to read next */
        rgpu_coherent_find((const void *)(uintptr_t)dst, NULL, NULL))
        st = rgpu_coherent_after_blocking_copy();
    return st;
}

static CUresult memset2d_call(const char *fn, CUdeviceptr dst, size_t pitch, unsigned value,
                              size_t w, size_t h)
{
    CUresult st = rgpu_coherent_push();
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_coherent_device_wrote(0);
    mp_buf b;
    rgpu_body_begin(&b, fn, 5);
    mp_uint(&b, dst);
    mp_uint(&b, pitch);
    mp_uint(&b, value);
    mp_uint(&b, w);
    mp_uint(&b, h);
    return rgpu_status_call(dev_of_ptr(dst), &b, 0);
}

CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char uc, size_t N)
{
    return memset_call("cuMemsetD8_v2", d, uc, N, NULL, 0);
}

CUresult cuMemsetD16_v2(CUdeviceptr d, unsigned short us, size_t N)
{
    return memset_call("cuMemsetD16_v2", d, us, N, NULL, 0);
}

CUresult cuMemsetD32_v2(CUdeviceptr d, unsigned int ui, size_t N)
{
    return memset_call("cuMemsetD32_v2", d, ui, N, NULL, 0);
}

CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char uc, size_t N, CUstream s)
{
    return memset_call("cuMemsetD8Async", d, uc, N, s, 1);
}

CUresult cuMemsetD16Async(CUdeviceptr d, unsigned short us, size_t N, CUstream s)
{
    return memset_call("cuMemsetD16Async", d, us, N, s, 1);
}

CUresult cuMemsetD32Async(CUdeviceptr d, unsigned int ui, size_t N, CUstream s)
{
    return memset_call("cuMemsetD32Async", d, ui, N, s, 1);
}

CUresult cuMemsetD2D8_v2(CUdeviceptr d, size_t pitch, unsigned char uc, size_t w, size_t h)
{
    return memset2d_call("cuMemsetD2D8_v2", d, pitch, uc, w, h);
}

CUresult cuMemsetD2D16_v2(CUdeviceptr d, size_t pitch, unsigned short us, size_t w, size_t h)
{
    return memset2d_call("cuMemsetD2D16_v2", d, pitch, us, w, h);
}

CUresult cuMemsetD2D32_v2(CUdeviceptr d, size_t pitch, unsigned int ui, size_t w, size_t h)
{
    return memset2d_call("cuMemsetD2D32_v2", d, pitch, ui, w, h);
}

/* ---- page-locked host memory: real local memory ------------------------------------------ */

CUresult cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags)
{
    if (!pp || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    void *p = NULL;
    if (Flags & CU_MEMHOSTALLOC_DEVICEMAP) {
        /* kernels use it too: a device copy at the same address (managed.c) */
        CUresult st = rgpu_coherent_host_alloc(&p, bytesize, Flags);
        if (st != CUDA_SUCCESS)
            return st;
    } else if (!rgpu_coherent_pinned_alloc(&p, bytesize, Flags) && /* kernels may use it */
               posix_memalign(&p, 4096, bytesize) != 0) {
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (table_add(&host_ranges, (range){(uint64_t)(uintptr_t)p, bytesize, rgpu_current_dev(),
                                        rgpu_current_ctx(), Flags}) != 0) {
        if (!rgpu_coherent_release((uint64_t)(uintptr_t)p, 1))
            free(p);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *pp = p;
    return CUDA_SUCCESS;
}

CUresult cuMemAllocHost_v2(void **pp, size_t bytesize)
{
    return cuMemHostAlloc(pp, bytesize, 0);
}

CUresult cuMemFreeHost(void *p)
{
    range r;
    if (!table_remove(&host_ranges, (uint64_t)(uintptr_t)p, &r) || (r.flags & HOST_REGISTERED))
        return CUDA_ERROR_INVALID_VALUE;
    if (!rgpu_coherent_release((uint64_t)(uintptr_t)p, 1))
        free(p);
    return CUDA_SUCCESS;
}

CUresult cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags)
{
    if (!p || bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (rgpu_range_host(p, NULL, NULL))
        return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
    if (Flags & CU_MEMHOSTREGISTER_DEVICEMAP) {
        CUresult st = rgpu_coherent_register(p, bytesize, Flags);
        if (st != CUDA_SUCCESS)
            return st;
    }
    if (table_add(&host_ranges, (range){(uint64_t)(uintptr_t)p, bytesize, rgpu_current_dev(),
                                        rgpu_current_ctx(), Flags | HOST_REGISTERED}) != 0) {
        rgpu_coherent_release((uint64_t)(uintptr_t)p, 1);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
}

CUresult cuMemHostRegister(void *p, size_t bytesize, unsigned int Flags)
{
    return cuMemHostRegister_v2(p, bytesize, Flags);
}

CUresult cuMemHostUnregister(void *p)
{
    range r;
    if (!table_find(&host_ranges, (uint64_t)(uintptr_t)p, &r) || !(r.flags & HOST_REGISTERED) ||
        r.base != (uint64_t)(uintptr_t)p)
        return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
    table_remove(&host_ranges, r.base, NULL);
    rgpu_coherent_release(r.base, 1);
    return CUDA_SUCCESS;
}

CUresult cuMemHostGetFlags(unsigned int *pFlags, void *p)
{
    range r;
    if (!pFlags)
        return CUDA_ERROR_INVALID_VALUE;
    if (!table_find(&host_ranges, (uint64_t)(uintptr_t)p, &r))
        return CUDA_ERROR_INVALID_VALUE;
    *pFlags = r.flags & ~HOST_REGISTERED;
    return CUDA_SUCCESS;
}

CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *pdptr, void *p, unsigned int Flags)
{
    if (!pdptr || Flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    range r;
    if (!table_find(&host_ranges, (uint64_t)(uintptr_t)p, &r))
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_coherent_wake(p); /* plain page-locked memory at its device copy's address */
    uint64_t d = rgpu_coherent_device_address(p);
    if (!d) {
        /* page-locked memory allocated or registered without DEVICEMAP: as with unified
         * addressing, it is mapped all the same; its device copy is made now */
        CUresult st = rgpu_coherent_register((void *)(uintptr_t)r.base, r.size, r.flags);
        if (st != CUDA_SUCCESS)
            return st;
        d = rgpu_coherent_device_address(p);
    }
    *pdptr = (CUdeviceptr)d;
    return d ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- pointer attributes, from the range tables ------------------------------------------- */

static CUresult pointer_attribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr)
{
    range r;
    int is_host = table_find(&host_ranges, ptr, &r);
    int is_dev = !is_host && table_find(&dev_ranges, ptr, &r);
    if (!is_dev && !is_host)
        return CUDA_ERROR_INVALID_VALUE;
    if (!data)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t mbase = 0, mapped = 0;
    size_t msize = 0;
    int managed = is_dev && rgpu_coherent_is_managed(ptr, &mbase, &msize);
    if (managed) {
        r.base = mbase;
        r.size = msize;
    }
    if (is_host)
        mapped = rgpu_coherent_device_address((const void *)(uintptr_t)ptr);
    switch (attribute) {
    case CU_POINTER_ATTRIBUTE_CONTEXT:
        *(CUcontext *)data = (CUcontext)r.ctx;
        break;
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
        *(unsigned int *)data = is_dev ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
        break;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
        if (!is_dev && !mapped)
            return CUDA_ERROR_NOT_SUPPORTED; /* page-locked memory not mapped (yet) */
        *(CUdeviceptr *)data = is_dev ? ptr : mapped;
        break;
    case CU_POINTER_ATTRIBUTE_HOST_POINTER:
        if (is_dev && !managed)
            return CUDA_ERROR_INVALID_VALUE;
        *(void **)data = (void *)(uintptr_t)ptr;
        break;
    case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS:
        *(unsigned int *)data = 1;
        break;
    case CU_POINTER_ATTRIBUTE_BUFFER_ID:
        *(unsigned long long *)data = r.base;
        break;
    case CU_POINTER_ATTRIBUTE_IS_MANAGED:
        *(unsigned int *)data = (unsigned)managed;
        break;
    case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
    case CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE:
        *(unsigned int *)data = 0;
        break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
        *(int *)data = r.dev;
        break;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
        *(void **)data = (void *)(uintptr_t)r.base;
        break;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
        *(size_t *)data = r.size;
        break;
    case CU_POINTER_ATTRIBUTE_MAPPED:
        *(unsigned int *)data = 1;
        break;
    case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
        *(unsigned long long *)data = 0;
        break;
    case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS:
        *(unsigned int *)data = 3; /* CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE */
        break;
    case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
        *(void **)data = NULL;
        break;
    default:
        return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    return pointer_attribute(data, attribute, ptr);
}

CUresult cuPointerSetAttribute(const void *value, CUpointer_attribute attribute, CUdeviceptr ptr)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    range r;
    if (!table_find(&dev_ranges, ptr, &r))
        return CUDA_ERROR_INVALID_VALUE;
    if (attribute != CU_POINTER_ATTRIBUTE_SYNC_MEMOPS || !value)
        return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS; /* memory operations on it are synchronous already */
}

CUresult cuPointerGetAttributes(unsigned int numAttributes, CUpointer_attribute *attributes,
                                void **data, CUdeviceptr ptr)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!attributes || !data)
        return CUDA_ERROR_INVALID_VALUE;
    for (unsigned i = 0; i < numAttributes; i++) {
        if (!data[i])
            continue;
        if (pointer_attribute(data[i], attributes[i], ptr) == CUDA_SUCCESS)
            continue;
        /* documented: unknown pointers read as zero values, not an error */
        switch (attributes[i]) {
        case CU_POINTER_ATTRIBUTE_CONTEXT:
        case CU_POINTER_ATTRIBUTE_HOST_POINTER:
        case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
        case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
            *(void **)data[i] = NULL;
            break;
        case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
        case CU_POINTER_ATTRIBUTE_BUFFER_ID:
        case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
        case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
            *(unsigned long long *)data[i] = 0;
            break;
        case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
            *(int *)data[i] = -2;
            break;
        default:
            *(unsigned int *)data[i] = 0;
            break;
        }
    }
    return CUDA_SUCCESS;
}
