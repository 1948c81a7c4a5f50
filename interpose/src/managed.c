/* Managed memory and mapped page-locked host memory: memory both the host and kernels use.
 *
 * The server's memory is not this process's, so each such range has two copies: the host copy
 * (what the application reads and writes) and the device copy (a server allocation, what
 * kernels see), kept coherent at the points where CUDA makes the host's and the device's view
 * agree on a device without concurrent managed access (the facts say so):
 *   - before work that may read device memory (launches, copies, memsets, synchronisation) the
 *     host's writes since the last agreement go to the device: the host copy is compared with a
 *     reference copy (the contents both sides agreed on) page by page, and changed pages travel;
 *   - after a synchronisation point (context, stream or event synchronisation, a completed
 *     query, a blocking copy), if the device may have written since the last refresh, the device
 *     copy comes back into the host copy and the reference.
 * Managed memory and CU_MEMHOSTALLOC_DEVICEMAP allocations live at the same address on both
 * sides (the host copy is mapped at the server allocation's address), so pointers inside
 * kernel parameters or data need no translation. Registered host memory (its address is the
 * application's) gets a device copy elsewhere: cuMemHostGetDevicePointer answers that address,
 * and CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM reads 0, as it does on GPUs
 * where the two differ.
 * Plain page-locked memory (cuMemAllocHost, cuMemHostAlloc without DEVICEMAP) is usable by
 * kernels through its own address too, as under unified addressing: up to PINNED_MAP_MAX bytes
 * (and PINNED_MAP_TOTAL in all) it is allocated at the address of a server allocation, as a range kept "dormant" (neither
 * pushed nor pulled: copies from staging buffers cost nothing more) until a launch's
 * parameters hold a pointer into it or cuMemHostGetDevicePointer asks for it; from then on it
 * is kept coherent like mapped memory. It is never listed as device memory (copies and
 * pointer queries see host memory); its server allocation is made and freed directly. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "coherence.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define COH_PAGE ((size_t)4096)
#define SAME_ADDRESS_TRIES 8
#define PINNED_MAP_MAX ((size_t)64 << 20)
/* ... and at most this much of it at once: each such allocation also holds device memory,
 * which the application's own cuMemAlloc calls must not run short of. */
#define PINNED_MAP_TOTAL ((size_t)256 << 20)



typedef struct {
    uint64_t dev_addr; /* what kernels use */
    uint8_t *host;     /* what the host uses (== dev_addr unless registered) */
    size_t size;
    size_t map_len;       /* bytes mapped at `host` by us (0: the application's memory) */
    uint8_t *ref;         /* contents both sides agreed on at the last push or pull */
    uint64_t server_base; /* the server allocation, freed with the range */
    rgpu_ctx *ctx;
    int dev;
    unsigned kind;
    unsigned host_flags; /* cuMemHostAlloc / cuMemHostRegister flags */
    uint64_t pulled_gen; /* device_gen when the host copy was last refreshed */
    int fresh;           /* never pushed: all of it goes */
    int dormant;         /* plain page-locked memory no kernel was given yet: not kept coherent */
} coh_range;

static pthread_mutex_t coh_mu = PTHREAD_MUTEX_INITIALIZER;
static coh_range *ranges;
static size_t n_ranges, cap_ranges;
static uint64_t device_gen = 1; /* bumped whenever work that may write memory is queued */
static uint64_t launch_gen = 1; /* bumped at each launch */
static uint64_t printf_gen = 1; /* launch_gen when printf output was last drained */
static __thread int in_coherence; /* the copies made here must not recurse into here */
static size_t n_dormant;           /* dormant ranges (coh_mu) */

static int add_range(const coh_range *r)
{
    pthread_mutex_lock(&coh_mu);
    if (n_ranges == cap_ranges) {
        size_t cap = cap_ranges ? cap_ranges * 2 : 16;
        coh_range *p = realloc(ranges, cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&coh_mu);
            return -1;
        }
        ranges = p;
        cap_ranges = cap;
    }
    ranges[n_ranges++] = *r;
    n_dormant += r->dormant ? 1 : 0;
    pthread_mutex_unlock(&coh_mu);
    return 0;
}

/* Index of the range whose host copy (by_host) or device copy holds p; -1 if none. Called
 * with coh_mu held. */
static long find_locked(uint64_t p, int by_host)
{
    for (size_t i = 0; i < n_ranges; i++) {
        uint64_t base = by_host ? (uint64_t)(uintptr_t)ranges[i].host : ranges[i].dev_addr;
        if (p >= base && p < base + ranges[i].size)
            return (long)i;
    }
    return -1;
}

int rgpu_coherent_find(const void *p, uint64_t *dev_addr, unsigned *flags)
{
    uint64_t a = (uint64_t)(uintptr_t)p;
    pthread_mutex_lock(&coh_mu);
    long i = find_locked(a, 1);
    uint64_t d = i >= 0 ? ranges[i].dev_addr + (a - (uint64_t)(uintptr_t)ranges[i].host) : 0;
    if (i < 0) {
        i = find_locked(a, 0);
        d = a;
    }
    if (i >= 0 && ranges[i].dormant)
        i = -1; /* plain page-locked memory: host memory until a kernel uses it */
    if (i >= 0) {
        if (dev_addr)
            *dev_addr = d;
        if (flags)
            *flags = ranges[i].kind;
    }
    pthread_mutex_unlock(&coh_mu);
    return i >= 0;
}

int rgpu_coherent_is_managed(uint64_t p, uint64_t *base, size_t *size)
{
    pthread_mutex_lock(&coh_mu);
    long i = find_locked(p, 0);
    int yes = i >= 0 && (ranges[i].kind & COH_MANAGED);
    if (yes) {
        if (base)
            *base = ranges[i].dev_addr;
        if (size)
            *size = ranges[i].size;
    }
    pthread_mutex_unlock(&coh_mu);
    return yes;
}

/* ---- keeping the copies coherent --------------------------------------------------------- */

static CUresult with_ctx(rgpu_ctx *ctx, int *pushed)
{
    *pushed = 0;
    if (ctx && rgpu_current_ctx() != ctx && !ctx->destroyed) {
        CUresult st = cuCtxPushCurrent_v2((CUcontext)ctx);
        if (st != CUDA_SUCCESS)
            return st;
        *pushed = 1;
    }
    return CUDA_SUCCESS;
}

/* Host writes of one range to its device copy: runs of changed pages, one copy each. */
static CUresult push_range(coh_range *r)
{
    int pushed;
    CUresult st = with_ctx(r->ctx, &pushed);
    if (st != CUDA_SUCCESS)
        return st;
    size_t off = 0;
    while (off < r->size && st == CUDA_SUCCESS) {
        size_t len = r->size - off < COH_PAGE ? r->size - off : COH_PAGE;
        if (!r->fresh && memcmp(r->host + off, r->ref + off, len) == 0) {
            off += len;
            continue;
        }
        size_t end = off + len;
        while (end < r->size) {
            size_t l2 = r->size - end < COH_PAGE ? r->size - end : COH_PAGE;
            if (!r->fresh && memcmp(r->host + end, r->ref + end, l2) == 0)
                break;
            end += l2;
        }
        memcpy(r->ref + off, r->host + off, end - off);
        st = cuMemcpyHtoD_v2(r->dev_addr + off, r->ref + off, end - off);
        off = end;
    }
    if (st == CUDA_SUCCESS)
        r->fresh = 0;
    if (pushed)
        cuCtxPopCurrent_v2(NULL);
    return st;
}

static CUresult pull_range(coh_range *r)
{
    int pushed;
    CUresult st = with_ctx(r->ctx, &pushed);
    if (st != CUDA_SUCCESS)
        return st;
    st = cuMemcpyDtoH_v2(r->ref, r->dev_addr, r->size);
    if (st == CUDA_SUCCESS)
        memcpy(r->host, r->ref, r->size);
    if (pushed)
        cuCtxPopCurrent_v2(NULL);
    return st;
}

CUresult rgpu_coherent_push(void)
{
    if (in_coherence || !__atomic_load_n(&n_ranges, __ATOMIC_ACQUIRE))
        return CUDA_SUCCESS;
    in_coherence = 1;
    rgpu_deferred_hold(1); /* the launch or copy this precedes reports its own result */
    CUresult st = CUDA_SUCCESS;
    pthread_mutex_lock(&coh_mu);
    for (size_t i = 0; i < n_ranges && st == CUDA_SUCCESS; i++)
        if (!ranges[i].dormant)
            st = push_range(&ranges[i]);
    pthread_mutex_unlock(&coh_mu);
    rgpu_deferred_hold(0);
    in_coherence = 0;
    return st;
}

void rgpu_coherent_device_wrote(int launch)
{
    if (in_coherence)
        return; /* our own copies: both sides agree already */
    __atomic_add_fetch(&device_gen, 1, __ATOMIC_ACQ_REL);
    if (launch)
        __atomic_add_fetch(&launch_gen, 1, __ATOMIC_ACQ_REL);
}

CUresult rgpu_coherent_pull(void)
{
    if (in_coherence || !__atomic_load_n(&n_ranges, __ATOMIC_ACQUIRE))
        return CUDA_SUCCESS;
    in_coherence = 1;
    CUresult st = CUDA_SUCCESS;
    uint64_t gen = __atomic_load_n(&device_gen, __ATOMIC_ACQUIRE);
    pthread_mutex_lock(&coh_mu);
    for (size_t i = 0; i < n_ranges && st == CUDA_SUCCESS; i++) {
        coh_range *r = &ranges[i];
        if ((r->pulled_gen == gen && !r->fresh) || r->dormant)
            continue;
        st = push_range(r); /* host writes first: the device copy then holds both */
        if (st == CUDA_SUCCESS)
            st = pull_range(r);
        if (st == CUDA_SUCCESS)
            r->pulled_gen = gen;
    }
    pthread_mutex_unlock(&coh_mu);
    in_coherence = 0;
    return st;
}

CUresult rgpu_coherent_after_blocking_copy(void)
{
    if (in_coherence)
        return CUDA_SUCCESS;
    /* A blocking copy is where the driver prints what kernels printed before it: drain the
     * server's printf buffer (a synchronisation) when there was device work since the last. */
    uint64_t gen = __atomic_load_n(&launch_gen, __ATOMIC_ACQUIRE);
    if (__atomic_load_n(&printf_gen, __ATOMIC_ACQUIRE) != gen) {
        in_coherence = 1;
        CUresult st = cuCtxSynchronize();
        in_coherence = 0;
        if (st != CUDA_SUCCESS)
            return st;
    }
    return rgpu_coherent_pull();
}

CUresult rgpu_synchronized(void)
{
    __atomic_store_n(&printf_gen, __atomic_load_n(&launch_gen, __ATOMIC_ACQUIRE),
                     __ATOMIC_RELEASE);
    return rgpu_coherent_pull();
}

/* ---- allocation -------------------------------------------------------------------------- */

/* A device allocation with the host copy mapped at the same address. The server chooses the
 * address; where this process already uses it, the allocation is kept aside and another is
 * tried, then the ones kept aside are freed. */
/* Plain page-locked memory's server allocation is not device memory of the application's
 * (not in the shim's allocation table, not cuMemFree-able): made and freed by direct calls. */
static CUresult server_alloc(int dev, size_t size, CUdeviceptr *out)
{
    mp_buf b;
    rgpu_body_begin(&b, "cuMemAlloc_v2", 1);
    mp_uint(&b, size);
    rgpu_reply r;
    CUresult st = rgpu_simple_call(dev, &b, NULL, 0, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    int64_t v = 0;
    if (rgpu_reply_i64(&r, &v) != 0 || v <= 0)
        st = CUDA_ERROR_UNKNOWN;
    rgpu_reply_free(&r);
    *out = (CUdeviceptr)v;
    return st;
}

static void server_free(int dev, CUdeviceptr p)
{
    if (rgpu_connection_dead())
        return;
    mp_buf b;
    rgpu_body_begin(&b, "cuMemFree_v2", 1);
    mp_uint(&b, p);
    rgpu_status_call(dev, &b, 0);
}

static CUresult alloc_same_address(size_t size, unsigned kind, unsigned host_flags, void **out)
{
    if (size == 0 || size > SIZE_MAX - 3 * COH_PAGE)
        return CUDA_ERROR_INVALID_VALUE;
    size_t map_len = (size + COH_PAGE - 1) & ~(COH_PAGE - 1);
    CUdeviceptr aside[SAME_ADDRESS_TRIES];
    int n_aside = 0;
    int pinned = (kind & COH_PINNED) != 0, dev = rgpu_current_dev();
    CUresult st = CUDA_ERROR_OUT_OF_MEMORY;
    for (int attempt = 0; attempt < SAME_ADDRESS_TRIES; attempt++) {
        CUdeviceptr base;
        st = pinned ? server_alloc(dev, map_len + COH_PAGE, &base)
                    : cuMemAlloc_v2(&base, map_len + COH_PAGE);
        if (st != CUDA_SUCCESS)
            break;
        uint64_t addr = (base + COH_PAGE - 1) & ~(uint64_t)(COH_PAGE - 1);
        void *host = mmap((void *)(uintptr_t)addr, map_len, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (host == (void *)(uintptr_t)addr) {
            uint8_t *ref = calloc(1, size);
            coh_range r = {addr,  host, size, map_len, ref, base, rgpu_current_ctx(),
                           dev, kind, host_flags, 0, 1, pinned};
            if (!ref || add_range(&r) != 0) {
                free(ref);
                munmap(host, map_len);
                if (pinned)
                    server_free(dev, base);
                else
                    cuMemFree_v2(base);
                st = CUDA_ERROR_OUT_OF_MEMORY;
                break;
            }
            RGPU_DEBUG("%s: %zu bytes at 0x%llx (host and device%s)",
                       kind & COH_MANAGED ? "cuMemAllocManaged" : "cuMemHostAlloc", size,
                       (unsigned long long)addr, pinned ? ", dormant" : "");
            *out = host;
            st = CUDA_SUCCESS;
            break;
        }
        if (host != MAP_FAILED)
            munmap(host, map_len); /* a kernel that ignores MAP_FIXED_NOREPLACE */
        RGPU_DEBUG("address 0x%llx is taken in this process; trying another",
                   (unsigned long long)addr);
        aside[n_aside++] = base;
        st = CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (int i = 0; i < n_aside; i++) {
        if (pinned)
            server_free(dev, aside[i]);
        else
            cuMemFree_v2(aside[i]);
    }
    return st;
}

CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
{
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!dptr || bytesize == 0 ||
        (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST))
        return CUDA_ERROR_INVALID_VALUE;
    void *p;
    CUresult st = alloc_same_address(bytesize, COH_MANAGED, flags, &p);
    if (st == CUDA_SUCCESS)
        *dptr = (CUdeviceptr)(uintptr_t)p;
    return st;
}

CUresult rgpu_coherent_host_alloc(void **pp, size_t bytesize, unsigned flags)
{
    return alloc_same_address(bytesize, COH_HOSTALLOC, flags, pp);
}

int rgpu_coherent_pinned_alloc(void **pp, size_t bytesize, unsigned flags)
{
    if (bytesize > PINNED_MAP_MAX || !rgpu_current_ctx())
        return 0;
    size_t held = 0;
    pthread_mutex_lock(&coh_mu);
    for (size_t i = 0; i < n_ranges; i++)
        if (ranges[i].kind & COH_PINNED)
            held += ranges[i].size;
    pthread_mutex_unlock(&coh_mu);
    if (held + bytesize > PINNED_MAP_TOTAL)
        return 0;
    return alloc_same_address(bytesize, COH_HOSTALLOC | COH_PINNED, flags, pp) == CUDA_SUCCESS;
}

/* Wake the dormant range holding host address a (coh_mu held): kept coherent from now on,
 * the first push sends all of it. */
static void wake_locked(uint64_t a)
{
    long i = find_locked(a, 1);
    if (i >= 0 && ranges[i].dormant) {
        ranges[i].dormant = 0;
        ranges[i].fresh = 1;
        n_dormant--;
        RGPU_DEBUG("page-locked memory at %p is used by the device from now on",
                   (void *)ranges[i].host);
    }
}

void rgpu_coherent_wake(const void *p)
{
    pthread_mutex_lock(&coh_mu);
    if (n_dormant)
        wake_locked((uint64_t)(uintptr_t)p);
    pthread_mutex_unlock(&coh_mu);
}

void rgpu_coherent_wake_params(const uint8_t *params, size_t len)
{
    if (!__atomic_load_n(&n_dormant, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&coh_mu);
    for (size_t off = 0; off + 8 <= len && n_dormant; off += 8) {
        uint64_t v;
        memcpy(&v, params + off, sizeof v);
        wake_locked(v);
    }
    pthread_mutex_unlock(&coh_mu);
}

/* Registered memory: a device copy at a server-chosen address. */
CUresult rgpu_coherent_register(void *p, size_t bytesize, unsigned flags)
{
    CUdeviceptr d;
    CUresult st = cuMemAlloc_v2(&d, bytesize);
    if (st != CUDA_SUCCESS)
        return st;
    uint8_t *ref = calloc(1, bytesize);
    coh_range r = {d,     p, bytesize, 0, ref, d, rgpu_current_ctx(), rgpu_current_dev(),
                   COH_REGISTERED, flags, 0, 1, 0};
    if (!ref || add_range(&r) != 0) {
        free(ref);
        cuMemFree_v2(d);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
}

/* A module's `__managed__` variable at device address `dev`: the host's copy (made once, from
 * the variable's initial contents), which cudart hands to host code. The variable lives as
 * long as its module; its host copy stays (a few bytes) after that. */
CUresult rgpu_coherent_global(uint64_t dev, size_t size, void **host)
{
    pthread_mutex_lock(&coh_mu);
    for (size_t i = 0; i < n_ranges; i++)
        if (ranges[i].dev_addr == dev && ranges[i].size == size) {
            *host = ranges[i].host;
            pthread_mutex_unlock(&coh_mu);
            return CUDA_SUCCESS;
        }
    pthread_mutex_unlock(&coh_mu);
    uint8_t *h = calloc(1, size ? size : 1), *ref = calloc(1, size ? size : 1);
    if (!h || !ref) {
        free(h);
        free(ref);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    coh_range r = {dev, h, size, 0, ref, 0, rgpu_current_ctx(), rgpu_current_dev(),
                   COH_MANAGED | COH_GLOBAL, 0, __atomic_load_n(&device_gen, __ATOMIC_ACQUIRE),
                   0, 0};
    CUresult st = pull_range(&r);
    if (st == CUDA_SUCCESS && add_range(&r) != 0)
        st = CUDA_ERROR_OUT_OF_MEMORY;
    if (st != CUDA_SUCCESS) {
        free(h);
        free(ref);
        return st;
    }
    *host = h;
    return CUDA_SUCCESS;
}

/* Forget the range starting at `p` (a host address, or a device one when !by_host): unmap
 * the host copy we mapped and free the device copy. 0 when there is none. */
int rgpu_coherent_release(uint64_t p, int by_host)
{
    pthread_mutex_lock(&coh_mu);
    long i = find_locked(p, by_host);
    uint64_t base = i < 0 ? 0 : by_host ? (uint64_t)(uintptr_t)ranges[i].host
                                        : ranges[i].dev_addr;
    if (i < 0 || base != p || (!by_host && !(ranges[i].kind & COH_MANAGED))) {
        /* (cuMemFree of page-locked memory is not a free of it) */
        pthread_mutex_unlock(&coh_mu);
        return 0;
    }
    coh_range r = ranges[i];
    if (r.kind & COH_GLOBAL) { /* a module's variable: not ours to free */
        pthread_mutex_unlock(&coh_mu);
        return 0;
    }
    ranges[i] = ranges[--n_ranges];
    n_dormant -= r.dormant ? 1 : 0;
    pthread_mutex_unlock(&coh_mu);
    free(r.ref);
    if (r.kind & COH_PINNED)
        server_free(r.dev, r.server_base);
    else
        cuMemFree_v2(r.server_base);
    if (r.map_len)
        munmap(r.host, r.map_len);
    return 1;
}

/* The device's primary context was reset: its memory is gone on the server, so its ranges
 * end here (a host access to managed memory after that faults, as it would with CUDA;
 * registered memory stays the application's). */
void rgpu_coherent_device_reset(int dev)
{
    pthread_mutex_lock(&coh_mu);
    for (size_t i = 0; i < n_ranges;) {
        coh_range r = ranges[i];
        if (r.dev != dev) {
            i++;
            continue;
        }
        ranges[i] = ranges[--n_ranges];
        n_dormant -= r.dormant ? 1 : 0;
        free(r.ref);
        if (r.map_len)
            munmap(r.host, r.map_len);
        else if (r.kind & COH_GLOBAL)
            free(r.host);
    }
    pthread_mutex_unlock(&coh_mu);
}

/* Device address of host pointer `p` inside a coherent range (0 if none). */
uint64_t rgpu_coherent_device_address(const void *p)
{
    pthread_mutex_lock(&coh_mu);
    long i = find_locked((uint64_t)(uintptr_t)p, 1);
    uint64_t d = i < 0 ? 0 : ranges[i].dev_addr + ((const uint8_t *)p - ranges[i].host);
    pthread_mutex_unlock(&coh_mu);
    return d;
}

/* ---- hints: the copies are made coherent at synchronisation anyway ----------------------- */

static CUresult check_managed(CUdeviceptr p, size_t count)
{
    uint64_t base;
    size_t size;
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!rgpu_coherent_is_managed(p, &base, &size) || count > size - (p - base))
        return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;
}

CUresult cuMemPrefetchAsync_v2(CUdeviceptr devPtr, size_t count, CUmemLocation location,
                               unsigned int flags, CUstream hStream)
{
    (void)location;
    (void)flags;
    if (rgpu_stream_id(hStream) == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    return check_managed(devPtr, count);
}

CUresult cuMemPrefetchAsync_v2_ptsz(CUdeviceptr devPtr, size_t count, CUmemLocation location,
                                    unsigned int flags, CUstream hStream)
{
    return cuMemPrefetchAsync_v2(devPtr, count, location, flags,
                                 hStream ? hStream : CU_STREAM_PER_THREAD);
}

CUresult cuMemPrefetchAsync(CUdeviceptr devPtr, size_t count, CUdevice dstDevice,
                            CUstream hStream)
{
    CUmemLocation loc = {CU_MEM_LOCATION_TYPE_DEVICE, dstDevice};
    return cuMemPrefetchAsync_v2(devPtr, count, loc, 0, hStream);
}

CUresult cuMemPrefetchAsync_ptsz(CUdeviceptr devPtr, size_t count, CUdevice dstDevice,
                                 CUstream hStream)
{
    return cuMemPrefetchAsync(devPtr, count, dstDevice, hStream ? hStream : CU_STREAM_PER_THREAD);
}

CUresult cuMemAdvise_v2(CUdeviceptr devPtr, size_t count, CUmem_advise advice,
                        CUmemLocation location)
{
    (void)location;
    if ((int)advice < CU_MEM_ADVISE_SET_READ_MOSTLY ||
        (int)advice > CU_MEM_ADVISE_UNSET_ACCESSED_BY)
        return CUDA_ERROR_INVALID_VALUE;
    return check_managed(devPtr, count);
}

CUresult cuMemAdvise(CUdeviceptr devPtr, size_t count, CUmem_advise advice, CUdevice device)
{
    CUmemLocation loc = {CU_MEM_LOCATION_TYPE_DEVICE, device};
    return cuMemAdvise_v2(devPtr, count, advice, loc);
}

CUresult cuStreamAttachMemAsync(CUstream hStream, CUdeviceptr dptr, size_t length,
                                unsigned int flags)
{
    (void)flags;
    if (rgpu_stream_id(hStream) == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    return check_managed(dptr, length ? length : 1);
}

CUresult cuStreamAttachMemAsync_ptsz(CUstream hStream, CUdeviceptr dptr, size_t length,
                                     unsigned int flags)
{
    return cuStreamAttachMemAsync(hStream ? hStream : CU_STREAM_PER_THREAD, dptr, length, flags);
}
