/* Memory pools (cudaMallocAsync's cuMemPool* API), kept in the shim.
 *
 * Stream-ordered allocations are ordinary server allocations made at once (per_thread.c): the
 * server runs a session's calls in order, so an allocation is ready before any later work of
 * any stream and a free follows earlier work. A pool here is therefore bookkeeping: which
 * device it serves, its attributes (release threshold, reuse policies, access), and the bytes
 * allocated from it now and at most, which is what cuMemPoolGetAttribute reports. Freed memory
 * goes back to the server at once, so the reserved figures equal the used ones and trimming has
 * nothing to release. Each device has a default pool, the current pool until cuDeviceSetMemPool. */
#include <stdlib.h>
#include <string.h>

#include "coherence.h"

#define POOL_MAGIC 0x52504f4fu
#define MAX_POOL_DEVICES 64

typedef struct rgpu_pool {
    uint32_t magic;
    int dev;
    int is_default;
    uint64_t release_threshold;
    int reuse_follow_event, reuse_opportunistic, reuse_internal_deps;
    uint64_t used, used_high;
    CUmemAccess_flags access;
} rgpu_pool;

typedef struct {
    CUdeviceptr ptr;
    size_t size;
    rgpu_pool *pool;
} pool_alloc;

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static rgpu_pool default_pools[MAX_POOL_DEVICES];
static rgpu_pool *current_pools[MAX_POOL_DEVICES];
static pool_alloc *allocs;
static size_t n_allocs, cap_allocs;

static void pool_init(rgpu_pool *p, int dev, int is_default)
{
    memset(p, 0, sizeof *p);
    p->magic = POOL_MAGIC;
    p->dev = dev;
    p->is_default = is_default;
    p->reuse_follow_event = p->reuse_opportunistic = p->reuse_internal_deps = 1;
    p->access = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
}

static rgpu_pool *default_pool(int dev)
{
    rgpu_pool *p = &default_pools[dev];
    if (p->magic != POOL_MAGIC)
        pool_init(p, dev, 1);
    return p;
}

static rgpu_pool *pool_check(CUmemoryPool h)
{
    rgpu_pool *p = (rgpu_pool *)h;
    return p && p->magic == POOL_MAGIC ? p : NULL;
}

static int dev_ok(CUdevice dev)
{
    return dev >= 0 && dev < rgpu_device_count && dev < MAX_POOL_DEVICES;
}

CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool_out, CUdevice dev)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!pool_out)
        return CUDA_ERROR_INVALID_VALUE;
    if (!dev_ok(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&pool_mu);
    *pool_out = (CUmemoryPool)default_pool(dev);
    pthread_mutex_unlock(&pool_mu);
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!pool)
        return CUDA_ERROR_INVALID_VALUE;
    if (!dev_ok(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&pool_mu);
    *pool = (CUmemoryPool)(current_pools[dev] ? current_pools[dev] : default_pool(dev));
    pthread_mutex_unlock(&pool_mu);
    return CUDA_SUCCESS;
}

CUresult cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!dev_ok(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    rgpu_pool *p = pool_check(pool);
    if (!p || p->dev != dev)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&pool_mu);
    current_pools[dev] = p;
    pthread_mutex_unlock(&pool_mu);
    return CUDA_SUCCESS;
}

CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *poolProps)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!pool || !poolProps)
        return CUDA_ERROR_INVALID_VALUE;
    if (poolProps->allocType != CU_MEM_ALLOCATION_TYPE_PINNED ||
        poolProps->location.type != CU_MEM_LOCATION_TYPE_DEVICE) {
        /* host-located and managed pools would need coherent memory per pool */
        rgpu_report_unsupported("cuMemPoolCreate (pools not located on a device)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (poolProps->handleTypes != CU_MEM_HANDLE_TYPE_NONE) {
        rgpu_report_unsupported("cuMemPoolCreate (exportable pools)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (!dev_ok(poolProps->location.id))
        return CUDA_ERROR_INVALID_DEVICE;
    rgpu_pool *p = malloc(sizeof *p);
    if (!p)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pool_init(p, poolProps->location.id, 0);
    *pool = (CUmemoryPool)p;
    return CUDA_SUCCESS;
}

CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
    rgpu_pool *p = pool_check(pool);
    if (!p || p->is_default)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&pool_mu);
    if (current_pools[p->dev] == p)
        current_pools[p->dev] = NULL;
    /* allocations still out stay valid until freed (as in CUDA); they just leave the pool */
    for (size_t i = 0; i < n_allocs; i++)
        if (allocs[i].pool == p)
            allocs[i].pool = NULL;
    pthread_mutex_unlock(&pool_mu);
    p->magic = 0;
    free(p);
    return CUDA_SUCCESS;
}

CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep)
{
    (void)minBytesToKeep; /* freed memory is never kept: nothing to release */
    return pool_check(pool) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
    rgpu_pool *p = pool_check(pool);
    if (!p || !value)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&pool_mu);
    CUresult st = CUDA_SUCCESS;
    switch (attr) {
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
        p->reuse_follow_event = *(int *)value != 0;
        break;
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
        p->reuse_opportunistic = *(int *)value != 0;
        break;
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES:
        p->reuse_internal_deps = *(int *)value != 0;
        break;
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD:
        p->release_threshold = *(cuuint64_t *)value;
        break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH:
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH:
        if (*(cuuint64_t *)value != 0)
            st = CUDA_ERROR_INVALID_VALUE; /* may only be reset to zero */
        else
            p->used_high = p->used;
        break;
    default:
        st = CUDA_ERROR_INVALID_VALUE;
    }
    pthread_mutex_unlock(&pool_mu);
    return st;
}

CUresult cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
    rgpu_pool *p = pool_check(pool);
    if (!p || !value)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&pool_mu);
    CUresult st = CUDA_SUCCESS;
    switch (attr) {
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
        *(int *)value = p->reuse_follow_event;
        break;
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
        *(int *)value = p->reuse_opportunistic;
        break;
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES:
        *(int *)value = p->reuse_internal_deps;
        break;
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD:
        *(cuuint64_t *)value = p->release_threshold;
        break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT:
    case CU_MEMPOOL_ATTR_USED_MEM_CURRENT:
        *(cuuint64_t *)value = p->used;
        break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH:
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH:
        *(cuuint64_t *)value = p->used_high;
        break;
    default:
        st = CUDA_ERROR_INVALID_VALUE;
    }
    pthread_mutex_unlock(&pool_mu);
    return st;
}

CUresult cuMemPoolSetAccess(CUmemoryPool pool, const CUmemAccessDesc *map, size_t count)
{
    rgpu_pool *p = pool_check(pool);
    if (!p || (count && !map))
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < count; i++) {
        if (map[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE || !dev_ok(map[i].location.id))
            return CUDA_ERROR_INVALID_VALUE;
        if (map[i].location.id == p->dev && map[i].flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
            return CUDA_ERROR_INVALID_VALUE; /* the owning device keeps read-write access */
        if (map[i].location.id != p->dev && map[i].flags != CU_MEM_ACCESS_FLAGS_PROT_NONE) {
            rgpu_report_unsupported("cuMemPoolSetAccess (peer access)");
            return CUDA_ERROR_NOT_SUPPORTED;
        }
    }
    return CUDA_SUCCESS;
}

CUresult cuMemPoolGetAccess(CUmemAccess_flags *flags, CUmemoryPool memPool,
                            CUmemLocation *location)
{
    rgpu_pool *p = pool_check(memPool);
    if (!p || !flags || !location)
        return CUDA_ERROR_INVALID_VALUE;
    *flags = location->type == CU_MEM_LOCATION_TYPE_DEVICE && location->id == p->dev
                 ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE
                 : CU_MEM_ACCESS_FLAGS_PROT_NONE;
    return CUDA_SUCCESS;
}

/* An allocation made from `pool` (NULL: the stream's device's current pool). */
CUresult rgpu_pool_alloc(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool)
{
    rgpu_pool *p = NULL;
    if (pool) {
        p = pool_check(pool);
        if (!p)
            return CUDA_ERROR_INVALID_VALUE;
    }
    CUresult st = cuMemAlloc_v2(dptr, bytesize);
    if (st != CUDA_SUCCESS)
        return st;
    pthread_mutex_lock(&pool_mu);
    if (!p) {
        int dev = rgpu_current_dev();
        p = dev_ok(dev) ? (current_pools[dev] ? current_pools[dev] : default_pool(dev)) : NULL;
    }
    if (p && n_allocs == cap_allocs) {
        size_t cap = cap_allocs ? cap_allocs * 2 : 64;
        pool_alloc *a = realloc(allocs, cap * sizeof *a);
        if (a) {
            allocs = a;
            cap_allocs = cap;
        }
    }
    if (p && n_allocs < cap_allocs) {
        allocs[n_allocs++] = (pool_alloc){*dptr, bytesize, p};
        p->used += bytesize;
        if (p->used > p->used_high)
            p->used_high = p->used;
    }
    pthread_mutex_unlock(&pool_mu);
    return CUDA_SUCCESS;
}

void rgpu_pool_device_reset(int dev)
{
    pthread_mutex_lock(&pool_mu);
    for (size_t i = 0; i < n_allocs;) {
        if (allocs[i].pool && allocs[i].pool->dev == dev) {
            allocs[i].pool->used -= allocs[i].size;
            allocs[i] = allocs[--n_allocs];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&pool_mu);
}

/* `dptr` is being freed: it leaves its pool's figures. */
void rgpu_pool_free(CUdeviceptr dptr)
{
    pthread_mutex_lock(&pool_mu);
    for (size_t i = 0; i < n_allocs; i++) {
        if (allocs[i].ptr == dptr) {
            if (allocs[i].pool)
                allocs[i].pool->used -= allocs[i].size;
            allocs[i] = allocs[--n_allocs];
            break;
        }
    }
    pthread_mutex_unlock(&pool_mu);
}

CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                 CUstream hStream)
{
    if (rgpu_stream_id(hStream) == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!dptr || !pool)
        return CUDA_ERROR_INVALID_VALUE;
    if (rgpu_capturing(hStream))
        return rgpu_capture_alloc(hStream, dptr, bytesize);
    return rgpu_pool_alloc(dptr, bytesize, pool);
}

CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                      CUstream hStream)
{
    return cuMemAllocFromPoolAsync(dptr, bytesize, pool, hStream ? hStream : CU_STREAM_PER_THREAD);
}
