/* CUDA arrays, texture objects and surface objects.
 *
 * Arrays and mipmapped arrays are client-chosen ids (the CUarray is a small local record holding
 * the id, device and descriptor, so descriptor queries need no round trip; a mipmapped array's
 * levels get such records when first asked for). Texture and surface objects are not:
 * kernels receive them as 64-bit parameters the device reads, so their values are the server's
 * (a real driver's CUtexObject on NVIDIA) and creating one is a CALL; their descriptions are
 * kept here for cuTexObjectGetResourceDesc and friends.
 *
 * Every copy touching an array goes to the server as one or more cuMemcpy3D_v2 calls (host
 * sides packed, in pieces of at most COPY_PIECE bytes); the linear forms (cuMemcpyHtoA_v2 and
 * the rest) are cut into runs of whole or partial rows first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coherence.h"

#define RK_ARRAY 0x52430101u
#define COPY_PIECE ((size_t)8 << 20)

#define RK_MIPMAP 0x52430102u

struct rgpu_mipmap;

typedef struct {
    uint32_t kind;
    uint64_t id;
    int dev;
    CUDA_ARRAY3D_DESCRIPTOR desc;
    struct rgpu_mipmap *owner; /* a mipmapped array's level: destroyed with it */
} rgpu_array;

/* A mipmapped array; its levels get array records on first cuMipmappedArrayGetLevel. */
typedef struct rgpu_mipmap {
    uint32_t kind;
    uint64_t id;
    int dev;
    CUDA_ARRAY3D_DESCRIPTOR desc;
    unsigned levels;
    pthread_mutex_t mu;
    rgpu_array **level;
} rgpu_mipmap;

static rgpu_mipmap *mipmap_check(CUmipmappedArray h)
{
    rgpu_mipmap *m = (rgpu_mipmap *)h;
    if (!m || (uintptr_t)m < 4096 || m->kind != RK_MIPMAP)
        return NULL;
    return m;
}

static rgpu_array *array_check(CUarray h)
{
    rgpu_array *a = (rgpu_array *)h;
    if (!a || (uintptr_t)a < 4096 || a->kind != RK_ARRAY)
        return NULL;
    return a;
}

static size_t format_size(CUarray_format f)
{
    switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8:
        return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF:
        return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32:
    case CU_AD_FORMAT_SIGNED_INT32:
    case CU_AD_FORMAT_FLOAT:
        return 4;
    default:
        return 0;
    }
}

static size_t array_row_bytes(const rgpu_array *a)
{
    return a->desc.Width * format_size(a->desc.Format) * a->desc.NumChannels;
}

static size_t array_rows(const rgpu_array *a)
{
    return a->desc.Height ? a->desc.Height : 1;
}

static size_t array_slices(const rgpu_array *a)
{
    return a->desc.Depth ? a->desc.Depth : 1;
}

/* ---- arrays ------------------------------------------------------------------------------ */

static CUresult check_format(const CUDA_ARRAY3D_DESCRIPTOR *d, const char *fn)
{
    if (!format_size(d->Format)) {
        rgpu_report_unsupported(fn);
        return CUDA_ERROR_NOT_SUPPORTED; /* NV12, block-compressed, UNORM/SNORM packed */
    }
    if (d->NumChannels != 1 && d->NumChannels != 2 && d->NumChannels != 4)
        return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;
}

static void put_array_desc(mp_buf *b, const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    mp_map(b, 6);
    mp_str(b, "Width");
    mp_uint(b, d->Width);
    mp_str(b, "Height");
    mp_uint(b, d->Height);
    mp_str(b, "Depth");
    mp_uint(b, d->Depth);
    mp_str(b, "Format");
    mp_uint(b, d->Format);
    mp_str(b, "NumChannels");
    mp_uint(b, d->NumChannels);
    mp_str(b, "Flags");
    mp_uint(b, d->Flags);
}

static CUresult array_create(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    if (!pHandle || !d)
        return CUDA_ERROR_INVALID_VALUE;
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult fst = check_format(d, "cuArray3DCreate_v2 (array format)");
    if (fst != CUDA_SUCCESS)
        return fst;
    rgpu_array *a = calloc(1, sizeof *a);
    if (!a)
        return CUDA_ERROR_OUT_OF_MEMORY;
    a->kind = RK_ARRAY;
    a->id = rgpu_new_id();
    a->dev = rgpu_current_dev();
    a->desc = *d;
    mp_buf b;
    rgpu_body_begin(&b, "cuArray3DCreate_v2", 2);
    mp_uint(&b, a->id);
    put_array_desc(&b, d);
    CUresult st = rgpu_status_call(a->dev, &b, 1); /* allocation: its failure is this call's */
    if (st != CUDA_SUCCESS) {
        free(a);
        return st;
    }
    *pHandle = (CUarray)a;
    return CUDA_SUCCESS;
}

CUresult cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *pAllocateArray)
{
    if (!pAllocateArray)
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_ARRAY3D_DESCRIPTOR d;
    memset(&d, 0, sizeof d);
    d.Width = pAllocateArray->Width;
    d.Height = pAllocateArray->Height;
    d.Format = pAllocateArray->Format;
    d.NumChannels = pAllocateArray->NumChannels;
    return array_create(pHandle, &d);
}

CUresult cuArray3DCreate_v2(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *pAllocateArray)
{
    return array_create(pHandle, pAllocateArray);
}

CUresult cuArrayDestroy(CUarray hArray)
{
    rgpu_array *a = array_check(hArray);
    if (!a)
        return CUDA_ERROR_INVALID_HANDLE;
    if (a->owner)
        return CUDA_ERROR_INVALID_VALUE; /* a level: cuMipmappedArrayDestroy frees it */
    CUresult st = CUDA_SUCCESS;
    if (!rgpu_connection_dead()) {
        mp_buf b;
        rgpu_body_begin(&b, "cuArrayDestroy", 1);
        mp_uint(&b, a->id);
        st = rgpu_status_call(a->dev, &b, 0);
    }
    a->kind = 0;
    free(a);
    return st;
}

CUresult cuArrayGetDescriptor_v2(CUDA_ARRAY_DESCRIPTOR *pArrayDescriptor, CUarray hArray)
{
    rgpu_array *a = array_check(hArray);
    if (!a)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!pArrayDescriptor)
        return CUDA_ERROR_INVALID_VALUE;
    pArrayDescriptor->Width = a->desc.Width;
    pArrayDescriptor->Height = a->desc.Height;
    pArrayDescriptor->Format = a->desc.Format;
    pArrayDescriptor->NumChannels = a->desc.NumChannels;
    return CUDA_SUCCESS;
}

CUresult cuArray3DGetDescriptor_v2(CUDA_ARRAY3D_DESCRIPTOR *pArrayDescriptor, CUarray hArray)
{
    rgpu_array *a = array_check(hArray);
    if (!a)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!pArrayDescriptor)
        return CUDA_ERROR_INVALID_VALUE;
    *pArrayDescriptor = a->desc;
    return CUDA_SUCCESS;
}

/* ---- mipmapped arrays -------------------------------------------------------------------- */

CUresult cuMipmappedArrayCreate(CUmipmappedArray *pHandle,
                                const CUDA_ARRAY3D_DESCRIPTOR *pMipmappedArrayDesc,
                                unsigned int numMipmapLevels)
{
    const CUDA_ARRAY3D_DESCRIPTOR *d = pMipmappedArrayDesc;
    if (!pHandle || !d || numMipmapLevels == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult st = check_format(d, "cuMipmappedArrayCreate (array format)");
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_mipmap *m = calloc(1, sizeof *m);
    rgpu_array **level = calloc(numMipmapLevels, sizeof *level);
    if (!m || !level) {
        free(m);
        free(level);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    m->kind = RK_MIPMAP;
    m->id = rgpu_new_id();
    m->dev = rgpu_current_dev();
    m->desc = *d;
    m->levels = numMipmapLevels;
    m->level = level;
    pthread_mutex_init(&m->mu, NULL);
    mp_buf b;
    rgpu_body_begin(&b, "cuMipmappedArrayCreate", 3);
    mp_uint(&b, m->id);
    put_array_desc(&b, d);
    mp_uint(&b, numMipmapLevels);
    st = rgpu_status_call(m->dev, &b, 1);
    if (st != CUDA_SUCCESS) {
        pthread_mutex_destroy(&m->mu);
        free(level);
        free(m);
        return st;
    }
    *pHandle = (CUmipmappedArray)m;
    return CUDA_SUCCESS;
}

static size_t halve(size_t v, unsigned level)
{
    size_t h = level < 8 * sizeof v ? v >> level : 0;
    return h ? h : 1;
}

CUresult cuMipmappedArrayGetLevel(CUarray *pLevelArray, CUmipmappedArray hMipmappedArray,
                                  unsigned int level)
{
    rgpu_mipmap *m = mipmap_check(hMipmappedArray);
    if (!m)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!pLevelArray || level >= m->levels)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult st = CUDA_SUCCESS;
    pthread_mutex_lock(&m->mu);
    rgpu_array *a = m->level[level];
    if (!a) {
        a = calloc(1, sizeof *a);
        if (!a) {
            pthread_mutex_unlock(&m->mu);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        a->kind = RK_ARRAY;
        a->id = rgpu_new_id();
        a->dev = m->dev;
        a->owner = m;
        a->desc = m->desc;
        a->desc.Width = halve(m->desc.Width, level);
        a->desc.Height = m->desc.Height ? halve(m->desc.Height, level) : 0;
        if (m->desc.Depth && !(m->desc.Flags & (CUDA_ARRAY3D_LAYERED | CUDA_ARRAY3D_CUBEMAP)))
            a->desc.Depth = halve(m->desc.Depth, level);
        mp_buf b;
        rgpu_body_begin(&b, "cuMipmappedArrayGetLevel", 3);
        mp_uint(&b, a->id);
        mp_uint(&b, m->id);
        mp_uint(&b, level);
        st = rgpu_status_call(m->dev, &b, 1);
        if (st == CUDA_SUCCESS) {
            m->level[level] = a;
        } else {
            free(a);
            a = NULL;
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (a)
        *pLevelArray = (CUarray)a;
    return st;
}

CUresult cuMipmappedArrayDestroy(CUmipmappedArray hMipmappedArray)
{
    rgpu_mipmap *m = mipmap_check(hMipmappedArray);
    if (!m)
        return CUDA_ERROR_INVALID_HANDLE;
    CUresult st = CUDA_SUCCESS;
    if (!rgpu_connection_dead()) {
        mp_buf b;
        rgpu_body_begin(&b, "cuMipmappedArrayDestroy", 1);
        mp_uint(&b, m->id);
        st = rgpu_status_call(m->dev, &b, 0);
    }
    for (unsigned i = 0; i < m->levels; i++) {
        if (m->level[i]) {
            m->level[i]->kind = 0;
            free(m->level[i]);
        }
    }
    m->kind = 0;
    pthread_mutex_destroy(&m->mu);
    free(m->level);
    free(m);
    return st;
}

/* ---- copies ------------------------------------------------------------------------------ */

static void put_side(mp_buf *b, const char *p, CUmemorytype t, size_t x, size_t y, size_t z,
                     uint64_t device, uint64_t array, size_t pitch, size_t height)
{
    char key[24];
    static const char *names[] = {"XInBytes", "Y", "Z", "MemoryType", "Device", "Array",
                                  "Pitch", "Height"};
    uint64_t vals[] = {x, y, z, (uint64_t)t, device, array, pitch, height};
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof key, "%s%s", p, names[i]);
        mp_str(b, key);
        mp_uint(b, vals[i]);
    }
}

/* One piece: rows [y0, y0+ny) of slices [z0, z0+nz) of the copy; host sides packed. */
static CUresult copy_piece(const CUDA_MEMCPY3D *c, CUmemorytype st_, CUmemorytype dt,
                           const uint8_t *src_host, uint8_t *dst_host, size_t z0, size_t nz,
                           size_t y0, size_t ny, uint64_t sid, int async, int dev)
{
    size_t w = c->WidthInBytes;
    size_t n = w * ny * nz;
    uint8_t *packed = NULL;
    if (src_host) {
        packed = malloc(n ? n : 1);
        if (!packed)
            return CUDA_ERROR_OUT_OF_MEMORY;
        size_t sh = c->srcHeight ? c->srcHeight : c->Height;
        for (size_t z = 0; z < nz; z++)
            for (size_t r = 0; r < ny; r++)
                memcpy(packed + (z * ny + r) * w,
                       src_host + ((c->srcZ + z0 + z) * sh + c->srcY + y0 + r) * c->srcPitch +
                           c->srcXInBytes,
                       w);
    }
    const char *fn = async ? "cuMemcpy3DAsync_v2" : "cuMemcpy3D_v2";
    mp_buf b;
    if (packed)
        rgpu_body_begin_bulk(&b, fn, async ? 2 : 1);
    else
        rgpu_body_begin(&b, fn, async ? 2 : 1);
    mp_map(&b, 19);
    const rgpu_array *sa = array_check(c->srcArray), *da = array_check(c->dstArray);
    if (src_host)
        put_side(&b, "src", CU_MEMORYTYPE_HOST, 0, 0, 0, 0, 0, w, ny);
    else
        put_side(&b, "src", st_, c->srcXInBytes, c->srcY + y0, c->srcZ + z0, c->srcDevice,
                 sa ? sa->id : 0, c->srcPitch, c->srcHeight);
    if (dst_host)
        put_side(&b, "dst", CU_MEMORYTYPE_HOST, 0, 0, 0, 0, 0, w, ny);
    else
        put_side(&b, "dst", dt, c->dstXInBytes, c->dstY + y0, c->dstZ + z0, c->dstDevice,
                 da ? da->id : 0, c->dstPitch, c->dstHeight);
    mp_str(&b, "WidthInBytes");
    mp_uint(&b, w);
    mp_str(&b, "Height");
    mp_uint(&b, ny);
    mp_str(&b, "Depth");
    mp_uint(&b, nz);
    if (async)
        mp_uint(&b, sid);
    if (packed)
        mp_uint(&b, async ? 2 : 1); /* bulk_index: host_data follows */
    CUresult st;
    if (dst_host || !async) {
        rgpu_reply r;
        st = rgpu_simple_call(dev, &b, packed, packed ? n : 0, &r);
        if (st == CUDA_SUCCESS) {
            if (dst_host) {
                if (r.bulk_len != n) {
                    st = CUDA_ERROR_UNKNOWN;
                } else {
                    size_t dh = c->dstHeight ? c->dstHeight : c->Height;
                    for (size_t z = 0; z < nz; z++)
                        for (size_t row = 0; row < ny; row++)
                            memcpy(dst_host +
                                       ((c->dstZ + z0 + z) * dh + c->dstY + y0 + row) *
                                           c->dstPitch +
                                       c->dstXInBytes,
                                   r.bulk + (z * ny + row) * w, w);
                }
            }
            rgpu_reply_free(&r);
        }
    } else {
        st = rgpu_simple_batch(dev, &b, packed, packed ? n : 0);
    }
    mp_free(&b);
    free(packed);
    return st;
}

static CUmemorytype resolve_type(CUmemorytype t, uint64_t p)
{
    if (t == CU_MEMORYTYPE_UNIFIED)
        return rgpu_range_device(p, NULL) ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
    return t;
}

CUresult rgpu_copy3d_array(const CUDA_MEMCPY3D *in, CUstream stream, int async)
{
    if (!in)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t sid = rgpu_stream_id(stream);
    if (sid == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    CUDA_MEMCPY3D c = *in;
    CUmemorytype st_ = resolve_type(c.srcMemoryType, c.srcDevice);
    CUmemorytype dt = resolve_type(c.dstMemoryType, c.dstDevice);
    if (c.srcMemoryType == CU_MEMORYTYPE_UNIFIED && st_ == CU_MEMORYTYPE_HOST)
        c.srcHost = (const void *)(uintptr_t)c.srcDevice;
    if (c.dstMemoryType == CU_MEMORYTYPE_UNIFIED && dt == CU_MEMORYTYPE_HOST)
        c.dstHost = (void *)(uintptr_t)c.dstDevice;
    const rgpu_array *sa = NULL, *da = NULL;
    if (st_ == CU_MEMORYTYPE_ARRAY && !(sa = array_check(c.srcArray)))
        return CUDA_ERROR_INVALID_VALUE;
    if (dt == CU_MEMORYTYPE_ARRAY && !(da = array_check(c.dstArray)))
        return CUDA_ERROR_INVALID_VALUE;
    size_t w = c.WidthInBytes, h = c.Height ? c.Height : 1, d = c.Depth ? c.Depth : 1;
    if (w == 0)
        return CUDA_SUCCESS;
    const uint8_t *src_host = st_ == CU_MEMORYTYPE_HOST ? (const uint8_t *)c.srcHost : NULL;
    uint8_t *dst_host = dt == CU_MEMORYTYPE_HOST ? (uint8_t *)c.dstHost : NULL;
    if ((st_ == CU_MEMORYTYPE_HOST && !src_host) || (dt == CU_MEMORYTYPE_HOST && !dst_host))
        return CUDA_ERROR_INVALID_VALUE;
    if ((src_host && c.srcPitch < w) || (dst_host && c.dstPitch < w))
        return CUDA_ERROR_INVALID_VALUE;
    if (d > 1 && ((!sa && !c.srcHeight) || (!da && !c.dstHeight)))
        return CUDA_ERROR_INVALID_VALUE; /* linear sides of a 3D copy need their slice height */
    if (src_host && dst_host)
        return CUDA_ERROR_INVALID_VALUE; /* not reached: one side is an array */
    if (async && rgpu_capturing(stream))
        return rgpu_capture_copy(stream, in);
    int dev = sa ? sa->dev : da ? da->dev : rgpu_current_dev();
    if (!sa && !src_host && c.srcDevice)
        rgpu_range_device(c.srcDevice, &dev);
    else if (!da && !dst_host && c.dstDevice)
        rgpu_range_device(c.dstDevice, &dev);
    CUresult st = rgpu_coherent_push();
    if (st != CUDA_SUCCESS)
        return st;
    if (!dst_host)
        rgpu_coherent_device_wrote(0);
    /* pieces: whole slices while a slice fits, else runs of rows of one slice */
    size_t slice = w * h;
    for (size_t z = 0; z < d && st == CUDA_SUCCESS;) {
        if (slice <= COPY_PIECE) {
            size_t nz = COPY_PIECE / slice;
            nz = nz > d - z ? d - z : nz;
            st = copy_piece(&c, st_, dt, src_host, dst_host, z, nz, 0, h, sid, async, dev);
            z += nz;
        } else {
            size_t rows = COPY_PIECE / w ? COPY_PIECE / w : 1;
            for (size_t y = 0; y < h && st == CUDA_SUCCESS; y += rows) {
                size_t ny = rows > h - y ? h - y : rows;
                st = copy_piece(&c, st_, dt, src_host, dst_host, z, 1, y, ny, sid, async, dev);
            }
            z++;
        }
    }
    return st == CUDA_SUCCESS && !async ? rgpu_coherent_after_blocking_copy() : st;
}

/* Linear byte ranges of arrays (cuMemcpyHtoA_v2 and friends): runs of whole rows where both
 * sides allow it, else partial rows. `s`/`d` describe each side: an array (with a byte offset
 * into its rows and slices) or linear host/device memory. */
typedef struct {
    CUmemorytype type;
    const rgpu_array *a;
    uint64_t device;
    uint8_t *host;
    size_t off;
} linear_side;

static void side_pos(const linear_side *s, size_t *x, size_t *y, size_t *z, size_t *row_left,
                     size_t *rows_left)
{
    if (!s->a) {
        *x = *y = *z = 0;
        *row_left = SIZE_MAX;
        *rows_left = SIZE_MAX;
        return;
    }
    size_t row = array_row_bytes(s->a), rows = array_rows(s->a);
    *x = s->off % row;
    *y = (s->off / row) % rows;
    *z = s->off / (row * rows);
    *row_left = row - *x;
    *rows_left = rows - *y;
}

static CUresult linear_copy(linear_side s, linear_side d, size_t n, CUstream stream, int async)
{
    if ((s.a && s.off + n > array_row_bytes(s.a) * array_rows(s.a) * array_slices(s.a)) ||
        (d.a && d.off + n > array_row_bytes(d.a) * array_rows(d.a) * array_slices(d.a)))
        return CUDA_ERROR_INVALID_VALUE;
    CUresult st = CUDA_SUCCESS;
    while (n > 0 && st == CUDA_SUCCESS) {
        size_t sx, sy, sz, srl, srows, dx, dy, dz, drl, drows;
        side_pos(&s, &sx, &sy, &sz, &srl, &srows);
        side_pos(&d, &dx, &dy, &dz, &drl, &drows);
        CUDA_MEMCPY3D c;
        memset(&c, 0, sizeof c);
        size_t w, h = 1;
        size_t srow = s.a ? array_row_bytes(s.a) : 0, drow = d.a ? array_row_bytes(d.a) : 0;
        /* whole rows on both sides: one 2D copy of as many rows as both slices hold */
        if (sx == 0 && dx == 0 && (!s.a || !d.a || srow == drow)) {
            w = s.a ? srow : drow;
            if (n >= w) {
                h = n / w;
                h = h < srows ? h : srows;
                h = h < drows ? h : drows;
            } else {
                w = n;
            }
        } else {
            w = n < srl ? n : srl;
            w = w < drl ? w : drl;
        }
        size_t len = w * h;
        c.WidthInBytes = w;
        c.Height = h;
        c.Depth = 1;
        c.srcMemoryType = s.type;
        c.srcXInBytes = sx;
        c.srcY = sy;
        c.srcZ = sz;
        c.srcArray = s.a ? (CUarray)s.a : NULL;
        c.srcDevice = s.a ? 0 : s.device;
        c.srcHost = s.host;
        c.srcPitch = s.a ? 0 : w;
        c.srcHeight = h;
        c.dstMemoryType = d.type;
        c.dstXInBytes = dx;
        c.dstY = dy;
        c.dstZ = dz;
        c.dstArray = d.a ? (CUarray)d.a : NULL;
        c.dstDevice = d.a ? 0 : d.device;
        c.dstHost = d.host;
        c.dstPitch = d.a ? 0 : w;
        c.dstHeight = h;
        st = rgpu_copy3d_array(&c, stream, async);
        n -= len;
        if (s.a)
            s.off += len;
        else if (s.host)
            s.host += len;
        else
            s.device += len;
        if (d.a)
            d.off += len;
        else if (d.host)
            d.host += len;
        else
            d.device += len;
    }
    return st;
}

static linear_side arr_side(CUarray a, size_t off)
{
    linear_side s = {CU_MEMORYTYPE_ARRAY, array_check(a), 0, NULL, off};
    return s;
}

static linear_side host_side(const void *p)
{
    linear_side s = {CU_MEMORYTYPE_HOST, NULL, 0, (uint8_t *)(uintptr_t)p, 0};
    return s;
}

static linear_side dev_side(CUdeviceptr p)
{
    linear_side s = {CU_MEMORYTYPE_DEVICE, NULL, p, NULL, 0};
    return s;
}

#define NEED_ARRAY(h)                                                                           \
    do {                                                                                        \
        if (!array_check(h))                                                                    \
            return CUDA_ERROR_INVALID_VALUE;                                                    \
    } while (0)

CUresult cuMemcpyHtoA_v2(CUarray dstArray, size_t dstOffset, const void *srcHost,
                         size_t ByteCount)
{
    NEED_ARRAY(dstArray);
    return linear_copy(host_side(srcHost), arr_side(dstArray, dstOffset), ByteCount, NULL, 0);
}

CUresult cuMemcpyAtoH_v2(void *dstHost, CUarray srcArray, size_t srcOffset, size_t ByteCount)
{
    NEED_ARRAY(srcArray);
    return linear_copy(arr_side(srcArray, srcOffset), host_side(dstHost), ByteCount, NULL, 0);
}

CUresult cuMemcpyDtoA_v2(CUarray dstArray, size_t dstOffset, CUdeviceptr srcDevice,
                         size_t ByteCount)
{
    NEED_ARRAY(dstArray);
    return linear_copy(dev_side(srcDevice), arr_side(dstArray, dstOffset), ByteCount, NULL, 0);
}

CUresult cuMemcpyAtoD_v2(CUdeviceptr dstDevice, CUarray srcArray, size_t srcOffset,
                         size_t ByteCount)
{
    NEED_ARRAY(srcArray);
    return linear_copy(arr_side(srcArray, srcOffset), dev_side(dstDevice), ByteCount, NULL, 0);
}

CUresult cuMemcpyAtoA_v2(CUarray dstArray, size_t dstOffset, CUarray srcArray, size_t srcOffset,
                         size_t ByteCount)
{
    NEED_ARRAY(dstArray);
    NEED_ARRAY(srcArray);
    return linear_copy(arr_side(srcArray, srcOffset), arr_side(dstArray, dstOffset), ByteCount,
                       NULL, 0);
}

CUresult cuMemcpyHtoAAsync_v2(CUarray dstArray, size_t dstOffset, const void *srcHost,
                              size_t ByteCount, CUstream hStream)
{
    NEED_ARRAY(dstArray);
    return linear_copy(host_side(srcHost), arr_side(dstArray, dstOffset), ByteCount, hStream, 1);
}

CUresult cuMemcpyAtoHAsync_v2(void *dstHost, CUarray srcArray, size_t srcOffset, size_t ByteCount,
                              CUstream hStream)
{
    NEED_ARRAY(srcArray);
    return linear_copy(arr_side(srcArray, srcOffset), host_side(dstHost), ByteCount, hStream, 1);
}

CUresult cuMemcpyHtoA_v2_ptds(CUarray dstArray, size_t dstOffset, const void *srcHost,
                              size_t ByteCount)
{
    return cuMemcpyHtoA_v2(dstArray, dstOffset, srcHost, ByteCount);
}

CUresult cuMemcpyAtoH_v2_ptds(void *dstHost, CUarray srcArray, size_t srcOffset,
                              size_t ByteCount)
{
    return cuMemcpyAtoH_v2(dstHost, srcArray, srcOffset, ByteCount);
}

CUresult cuMemcpyDtoA_v2_ptds(CUarray dstArray, size_t dstOffset, CUdeviceptr srcDevice,
                              size_t ByteCount)
{
    return cuMemcpyDtoA_v2(dstArray, dstOffset, srcDevice, ByteCount);
}

CUresult cuMemcpyAtoD_v2_ptds(CUdeviceptr dstDevice, CUarray srcArray, size_t srcOffset,
                              size_t ByteCount)
{
    return cuMemcpyAtoD_v2(dstDevice, srcArray, srcOffset, ByteCount);
}

CUresult cuMemcpyAtoA_v2_ptds(CUarray dstArray, size_t dstOffset, CUarray srcArray,
                              size_t srcOffset, size_t ByteCount)
{
    return cuMemcpyAtoA_v2(dstArray, dstOffset, srcArray, srcOffset, ByteCount);
}

CUresult cuMemcpyHtoAAsync_v2_ptsz(CUarray dstArray, size_t dstOffset, const void *srcHost,
                                   size_t ByteCount, CUstream hStream)
{
    return cuMemcpyHtoAAsync_v2(dstArray, dstOffset, srcHost, ByteCount,
                                hStream ? hStream : CU_STREAM_PER_THREAD);
}

CUresult cuMemcpyAtoHAsync_v2_ptsz(void *dstHost, CUarray srcArray, size_t srcOffset,
                                   size_t ByteCount, CUstream hStream)
{
    return cuMemcpyAtoHAsync_v2(dstHost, srcArray, srcOffset, ByteCount,
                                hStream ? hStream : CU_STREAM_PER_THREAD);
}

/* ---- texture and surface objects -------------------------------------------------------- */

typedef struct {
    uint64_t handle;
    int dev;
    int surface;
    CUDA_RESOURCE_DESC res;
    CUDA_TEXTURE_DESC tex;
    CUDA_RESOURCE_VIEW_DESC view;
} rgpu_texobj;

static pthread_mutex_t objs_mu = PTHREAD_MUTEX_INITIALIZER;
static rgpu_texobj *objs;
static size_t nobjs, capobjs;

static int obj_add(const rgpu_texobj *o)
{
    pthread_mutex_lock(&objs_mu);
    if (nobjs == capobjs) {
        size_t cap = capobjs ? capobjs * 2 : 32;
        rgpu_texobj *p = realloc(objs, cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&objs_mu);
            return -1;
        }
        objs = p;
        capobjs = cap;
    }
    objs[nobjs++] = *o;
    pthread_mutex_unlock(&objs_mu);
    return 0;
}

/* Copy out (and with `remove`, drop) the object `handle` of the given kind; 0 if none. */
static int obj_find(uint64_t handle, int surface, rgpu_texobj *out, int remove)
{
    int found = 0;
    pthread_mutex_lock(&objs_mu);
    for (size_t i = 0; i < nobjs; i++) {
        if (objs[i].handle == handle && objs[i].surface == surface) {
            if (out)
                *out = objs[i];
            if (remove)
                objs[i] = objs[--nobjs];
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&objs_mu);
    return found;
}

static int all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

/* The resource description as a map; *dev is the device it lives on. */
static CUresult put_resource(mp_buf *b, const CUDA_RESOURCE_DESC *r, int *dev)
{
    switch (r->resType) {
    case CU_RESOURCE_TYPE_ARRAY: {
        const rgpu_array *a = array_check(r->res.array.hArray);
        if (!a)
            return CUDA_ERROR_INVALID_HANDLE;
        *dev = a->dev;
        mp_map(b, 3);
        mp_str(b, "resType");
        mp_uint(b, r->resType);
        mp_str(b, "hArray");
        mp_uint(b, a->id);
        break;
    }
    case CU_RESOURCE_TYPE_LINEAR:
        rgpu_range_device(r->res.linear.devPtr, dev);
        mp_map(b, 6);
        mp_str(b, "resType");
        mp_uint(b, r->resType);
        mp_str(b, "devPtr");
        mp_uint(b, r->res.linear.devPtr);
        mp_str(b, "format");
        mp_uint(b, r->res.linear.format);
        mp_str(b, "numChannels");
        mp_uint(b, r->res.linear.numChannels);
        mp_str(b, "sizeInBytes");
        mp_uint(b, r->res.linear.sizeInBytes);
        break;
    case CU_RESOURCE_TYPE_PITCH2D:
        rgpu_range_device(r->res.pitch2D.devPtr, dev);
        mp_map(b, 8);
        mp_str(b, "resType");
        mp_uint(b, r->resType);
        mp_str(b, "devPtr");
        mp_uint(b, r->res.pitch2D.devPtr);
        mp_str(b, "format");
        mp_uint(b, r->res.pitch2D.format);
        mp_str(b, "numChannels");
        mp_uint(b, r->res.pitch2D.numChannels);
        mp_str(b, "width");
        mp_uint(b, r->res.pitch2D.width);
        mp_str(b, "height");
        mp_uint(b, r->res.pitch2D.height);
        mp_str(b, "pitchInBytes");
        mp_uint(b, r->res.pitch2D.pitchInBytes);
        break;
    case CU_RESOURCE_TYPE_MIPMAPPED_ARRAY: {
        const rgpu_mipmap *m = mipmap_check(r->res.mipmap.hMipmappedArray);
        if (!m)
            return CUDA_ERROR_INVALID_HANDLE;
        *dev = m->dev;
        mp_map(b, 3);
        mp_str(b, "resType");
        mp_uint(b, r->resType);
        mp_str(b, "hMipmappedArray");
        mp_uint(b, m->id);
        break;
    }
    default:
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (r->flags != 0)
        return CUDA_ERROR_INVALID_VALUE; /* "must be set to zero" */
    mp_str(b, "flags");
    mp_uint(b, 0);
    return CUDA_SUCCESS;
}

static void put_texture(mp_buf *b, const CUDA_TEXTURE_DESC *t)
{
    mp_map(b, 9);
    mp_str(b, "addressMode");
    mp_array(b, 3);
    for (int i = 0; i < 3; i++)
        mp_uint(b, t->addressMode[i]);
    mp_str(b, "filterMode");
    mp_uint(b, t->filterMode);
    mp_str(b, "flags");
    mp_uint(b, t->flags);
    mp_str(b, "maxAnisotropy");
    mp_uint(b, t->maxAnisotropy);
    mp_str(b, "mipmapFilterMode");
    mp_uint(b, t->mipmapFilterMode);
    mp_str(b, "mipmapLevelBias");
    mp_double(b, t->mipmapLevelBias);
    mp_str(b, "minMipmapLevelClamp");
    mp_double(b, t->minMipmapLevelClamp);
    mp_str(b, "maxMipmapLevelClamp");
    mp_double(b, t->maxMipmapLevelClamp);
    mp_str(b, "borderColor");
    mp_array(b, 4);
    for (int i = 0; i < 4; i++)
        mp_double(b, t->borderColor[i]);
}

static void put_view(mp_buf *b, const CUDA_RESOURCE_VIEW_DESC *v)
{
    mp_map(b, 8);
    mp_str(b, "format");
    mp_uint(b, v->format);
    mp_str(b, "width");
    mp_uint(b, v->width);
    mp_str(b, "height");
    mp_uint(b, v->height);
    mp_str(b, "depth");
    mp_uint(b, v->depth);
    mp_str(b, "firstMipmapLevel");
    mp_uint(b, v->firstMipmapLevel);
    mp_str(b, "lastMipmapLevel");
    mp_uint(b, v->lastMipmapLevel);
    mp_str(b, "firstLayer");
    mp_uint(b, v->firstLayer);
    mp_str(b, "lastLayer");
    mp_uint(b, v->lastLayer);
}

static CUresult object_create(uint64_t *out, const CUDA_RESOURCE_DESC *r,
                              const CUDA_TEXTURE_DESC *t, const CUDA_RESOURCE_VIEW_DESC *v)
{
    if (!out || !r || (!t && v))
        return CUDA_ERROR_INVALID_VALUE;
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    int surface = t == NULL;
    int has_view = v && !all_zero(v, sizeof *v);
    mp_buf b;
    if (surface)
        rgpu_body_begin(&b, "cuSurfObjectCreate", 1);
    else
        rgpu_body_begin(&b, "cuTexObjectCreate", 3);
    int dev = rgpu_current_dev();
    CUresult st = put_resource(&b, r, &dev);
    if (st != CUDA_SUCCESS) {
        mp_free(&b);
        return st;
    }
    if (!surface) {
        put_texture(&b, t);
        if (has_view)
            put_view(&b, v);
        else
            mp_nil(&b);
    }
    rgpu_reply rep;
    st = rgpu_simple_call(dev, &b, NULL, 0, &rep);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    int64_t h = 0;
    if (rgpu_reply_i64(&rep, &h) != 0 || h == 0)
        st = CUDA_ERROR_UNKNOWN;
    rgpu_reply_free(&rep);
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_texobj o;
    memset(&o, 0, sizeof o);
    o.handle = (uint64_t)h;
    o.dev = dev;
    o.surface = surface;
    o.res = *r;
    if (t)
        o.tex = *t;
    if (has_view)
        o.view = *v;
    if (obj_add(&o) != 0)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *out = (uint64_t)h;
    return CUDA_SUCCESS;
}

static CUresult object_destroy(uint64_t handle, int surface)
{
    rgpu_texobj o;
    if (!obj_find(handle, surface, &o, 1))
        return CUDA_ERROR_INVALID_VALUE;
    if (rgpu_connection_dead())
        return CUDA_SUCCESS;
    mp_buf b;
    rgpu_body_begin(&b, surface ? "cuSurfObjectDestroy" : "cuTexObjectDestroy", 1);
    mp_uint(&b, handle);
    return rgpu_status_call(o.dev, &b, 0);
}

CUresult cuTexObjectCreate(CUtexObject *pTexObject, const CUDA_RESOURCE_DESC *pResDesc,
                           const CUDA_TEXTURE_DESC *pTexDesc,
                           const CUDA_RESOURCE_VIEW_DESC *pResViewDesc)
{
    if (!pTexObject || !pTexDesc)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t h = 0;
    CUresult st = object_create(&h, pResDesc, pTexDesc, pResViewDesc);
    if (st == CUDA_SUCCESS)
        *pTexObject = (CUtexObject)h;
    return st;
}

CUresult cuTexObjectDestroy(CUtexObject texObject)
{
    return object_destroy(texObject, 0);
}

CUresult cuTexObjectGetResourceDesc(CUDA_RESOURCE_DESC *pResDesc, CUtexObject texObject)
{
    rgpu_texobj o;
    if (!pResDesc)
        return CUDA_ERROR_INVALID_VALUE;
    if (!obj_find(texObject, 0, &o, 0))
        return CUDA_ERROR_INVALID_VALUE;
    *pResDesc = o.res;
    return CUDA_SUCCESS;
}

CUresult cuTexObjectGetTextureDesc(CUDA_TEXTURE_DESC *pTexDesc, CUtexObject texObject)
{
    rgpu_texobj o;
    if (!pTexDesc)
        return CUDA_ERROR_INVALID_VALUE;
    if (!obj_find(texObject, 0, &o, 0))
        return CUDA_ERROR_INVALID_VALUE;
    *pTexDesc = o.tex;
    return CUDA_SUCCESS;
}

CUresult cuTexObjectGetResourceViewDesc(CUDA_RESOURCE_VIEW_DESC *pResViewDesc,
                                        CUtexObject texObject)
{
    rgpu_texobj o;
    if (!pResViewDesc)
        return CUDA_ERROR_INVALID_VALUE;
    if (!obj_find(texObject, 0, &o, 0))
        return CUDA_ERROR_INVALID_VALUE;
    *pResViewDesc = o.view;
    return CUDA_SUCCESS;
}

CUresult cuSurfObjectCreate(CUsurfObject *pSurfObject, const CUDA_RESOURCE_DESC *pResDesc)
{
    if (!pSurfObject || !pResDesc || pResDesc->resType != CU_RESOURCE_TYPE_ARRAY)
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t h = 0;
    CUresult st = object_create(&h, pResDesc, NULL, NULL);
    if (st == CUDA_SUCCESS)
        *pSurfObject = (CUsurfObject)h;
    return st;
}

CUresult cuSurfObjectDestroy(CUsurfObject surfObject)
{
    return object_destroy(surfObject, 1);
}

CUresult cuSurfObjectGetResourceDesc(CUDA_RESOURCE_DESC *pResDesc, CUsurfObject surfObject)
{
    rgpu_texobj o;
    if (!pResDesc)
        return CUDA_ERROR_INVALID_VALUE;
    if (!obj_find(surfObject, 1, &o, 0))
        return CUDA_ERROR_INVALID_VALUE;
    *pResDesc = o.res;
    return CUDA_SUCCESS;
}
