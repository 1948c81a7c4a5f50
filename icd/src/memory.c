/* Host-visible memory over a network: the application's mapping is a local shadow of the whole
 * allocation, beside a copy of the bytes as last synchronised with the server (`base`).
 * Applications never flush coherent memory, so before every queue submission the bytes of the
 * shadow that differ from base (found chunk by chunk: a chunk whose hash is unchanged was not
 * written) are written to the server (vkRgpuWriteMemory, fire-and-forget, ordered before the
 * submit), and after every host-observable completion (fence waits, idle waits, semaphore and
 * event polls, invalidates) the server's contents are read back (vkRgpuReadMemory) into every
 * byte the host has not written since. Byte granularity matters: the host may write one
 * sub-allocation while the device writes its neighbour in the same chunk (a ring of frames,
 * VMA blocks), and neither may undo the other. */
#include <stdio.h>
#include <stdlib.h>

#include "rgpu_icd.h"

#define CHUNK (64u << 10)
#define READ_PIECE (64ull << 20)

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001B3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++)
        h = (h ^ p[i]) * 0x100000001B3ull;
    return h;
}

/* CRC-32 (zlib's: reflected 0xEDB88320), slice-by-8: what the server compares chunks with. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

static uint32_t crc32_bytes(const uint8_t *p, size_t n)
{
    pthread_once(&crc_once, crc_init);
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint32_t lo = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                      (uint32_t)p[3] << 24;
        lo ^= c;
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
            crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static size_t chunk_len(const rgpu_memory *m, size_t k)
{
    size_t off = k * CHUNK;
    return m->size - off < CHUNK ? (size_t)(m->size - off) : CHUNK;
}

static rgpu_memory *find(rgpu_device *dev, uint64_t id)
{
    for (rgpu_memory *m = dev->memories; m; m = m->next)
        if (m->id == id)
            return m;
    return NULL;
}

static int host_visible(rgpu_device *dev, uint32_t type_index)
{
    VkPhysicalDeviceMemoryProperties props;
    memset(&props, 0, sizeof props);
    rgpu_gpu *g = dev->gpu;
    int node = mp_array_at(&g->srv->facts, rgpu_facts_gpu_field(g, "memory_properties"), 1);
    rgpu_decode_struct(&g->srv->facts, node, rgpu_struct_by_name("VkPhysicalDeviceMemoryProperties"),
                       (uint8_t *)&props, g->srv);
    return type_index < props.memoryTypeCount &&
           (props.memoryTypes[type_index].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT);
}

/* The server's bytes of chunk k arrived: bytes the host has not written since the last
 * synchronisation take them, the host's own writes stay (sent at the next submit). */
static void merge_chunk(rgpu_memory *m, size_t k, const uint8_t *got)
{
    size_t len = chunk_len(m, k), off = k * CHUNK;
    uint8_t *local = m->shadow + off, *base = m->base + off;
    /* byte by byte even where the host wrote nothing: another thread may start writing */
    for (size_t i = 0; i < len; i++)
        if (local[i] == base[i])
            local[i] = got[i];
    memcpy(base, got, len);
    m->chunk_hash[k] = hash_bytes(base, len);
    m->crc_ok[k] = 0;
}

/* One range of one allocation to read back (at most READ_PIECE bytes, chunk-aligned). `m` is
 * NULL when the allocation was freed while its read-back was on the way. */
struct rd_piece {
    rgpu_memory *m;
    uint64_t id, size, off, n;
};
typedef struct rd_piece rd_piece;

static size_t piece_chunk_len(const rd_piece *p, size_t k)
{
    size_t off = k * CHUNK;
    return p->size - off < CHUNK ? (size_t)(p->size - off) : CHUNK;
}

/* Walk a vkRgpuReadMemories reply: each piece's bitmap of changed chunks, then those chunks.
 * With merge == 0 only checks that the reply's size agrees with its bitmaps. */
static int walk_reply(const rd_piece *ps, size_t np, const uint8_t *p, size_t len, int merge)
{
    size_t pos = 0;
    for (size_t i = 0; i < np; i++) {
        size_t k0 = (size_t)(ps[i].off / CHUNK), nk = (size_t)((ps[i].n + CHUNK - 1) / CHUNK);
        size_t nbitmap = (nk + 7) / 8;
        if (len - pos < nbitmap)
            return -1;
        const uint8_t *bits = p + pos;
        pos += nbitmap;
        for (size_t c = 0; c < nk; c++) {
            if (!(bits[c >> 3] >> (c & 7) & 1))
                continue;
            size_t clen = piece_chunk_len(&ps[i], k0 + c);
            if (len - pos < clen)
                return -1;
            if (merge && ps[i].m)
                merge_chunk(ps[i].m, k0 + c, p + pos);
            pos += clen;
        }
    }
    return pos == len ? 0 : -1;
}

/* The vkRgpuReadMemories body for the pieces: the CRC-32 of each chunk of base. */
static int encode_read(mp_buf *b, const rd_piece *ps, size_t np)
{
    mp_init(b);
    mp_array(b, 2);
    mp_str(b, "vkRgpuReadMemories");
    mp_array(b, 1);
    mp_array(b, (uint32_t)np);
    for (size_t i = 0; i < np; i++) {
        rgpu_memory *m = ps[i].m;
        size_t k0 = (size_t)(ps[i].off / CHUNK), nk = (size_t)((ps[i].n + CHUNK - 1) / CHUNK);
        uint8_t *crcs = malloc(4 * nk);
        if (!crcs)
            return -1;
        for (size_t c = 0; c < nk; c++) {
            size_t k = k0 + c;
            if (!m->crc_ok[k]) {
                m->crc[k] = crc32_bytes(m->base + k * CHUNK, chunk_len(m, k));
                m->crc_ok[k] = 1;
            }
            for (int j = 0; j < 4; j++)
                crcs[4 * c + (size_t)j] = (uint8_t)(m->crc[k] >> (8 * j));
        }
        mp_array(b, 4);
        mp_uint(b, m->id);
        mp_uint(b, ps[i].off);
        mp_uint(b, ps[i].n);
        mp_bin(b, crcs, 4 * nk);
        free(crcs);
    }
    return b->oom ? -1 : 0;
}

/* Merge a vkRgpuReadMemories reply, after checking its size against its bitmaps. */
static VkResult apply_read(const rd_piece *ps, size_t np, const rgpu_reply *r)
{
    const uint8_t *p = r->bulk ? r->bulk : (const uint8_t *)"";
    if (walk_reply(ps, np, p, r->bulk_len, 0) != 0) {
        RGPU_DEBUG("vkRgpuReadMemories: %zu bytes do not match their bitmaps", r->bulk_len);
        return VK_ERROR_DEVICE_LOST;
    }
    walk_reply(ps, np, p, r->bulk_len, 1);
    return VK_SUCCESS;
}

/* Read back what the device changed, for several ranges in one round trip: the server gets the
 * CRC-32 of each chunk of base and replies with a bitmap of the chunks that differ, then those
 * chunks (vkRgpuReadMemories, docs/VULKAN_ENCODING.md). */
static VkResult read_back(rgpu_device *dev, const rd_piece *ps, size_t np)
{
    mp_buf b;
    if (encode_read(&b, ps, np) != 0) {
        mp_free(&b);
        return VK_ERROR_OUT_OF_HOST_MEMORY;
    }
    rgpu_reply r;
    VkResult st = rgpu_vk_call(dev->obj.srv, &b, NULL, 0, &r);
    mp_free(&b);
    if (st == VK_SUCCESS)
        st = apply_read(ps, np, &r);
    rgpu_reply_free(&r);
    return st;
}

#define READ_CALL_MAX (256ull << 20) /* the server's limit on one reply */

/* The pieces of the given allocations, in order; NULL on allocation failure. */
static rd_piece *pieces_of(rgpu_memory **ms, size_t nm, size_t *np)
{
    size_t n = 0;
    for (size_t i = 0; i < nm; i++)
        n += (size_t)((ms[i]->size + READ_PIECE - 1) / READ_PIECE);
    rd_piece *ps = malloc((n ? n : 1) * sizeof *ps);
    if (!ps)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < nm; i++)
        for (uint64_t off = 0; off < ms[i]->size; off += READ_PIECE)
            ps[k++] = (rd_piece){ms[i], ms[i]->id, ms[i]->size, off,
                                 ms[i]->size - off < READ_PIECE ? ms[i]->size - off : READ_PIECE};
    *np = k;
    return ps;
}

/* Read back every range of the given allocations, in as few round trips as the limit allows. */
static VkResult sync_down_many(rgpu_device *dev, rgpu_memory **ms, size_t nm)
{
    size_t np = 0;
    rd_piece *ps = pieces_of(ms, nm, &np);
    if (!ps)
        return VK_ERROR_OUT_OF_HOST_MEMORY;
    VkResult st = VK_SUCCESS;
    size_t first = 0;
    uint64_t total = 0;
    for (size_t i = 0; i <= np && st == VK_SUCCESS; i++) {
        if (i == np || (i > first && total + ps[i].n > READ_CALL_MAX)) {
            if (i > first)
                st = read_back(dev, ps + first, i - first);
            first = i;
            total = 0;
        }
        if (i < np)
            total += ps[i].n;
    }
    free(ps);
    return st;
}

/* The mapped allocations of a device (caller holds dev->mu); NULL with *n == 0 when none. */
static rgpu_memory **mapped_memories(rgpu_device *dev, size_t *n, int *oom)
{
    *n = 0;
    *oom = 0;
    for (rgpu_memory *m = dev->memories; m; m = m->next)
        *n += m->shadow != NULL;
    if (!*n)
        return NULL;
    rgpu_memory **ms = malloc(*n * sizeof *ms);
    if (!ms) {
        *oom = 1;
        return NULL;
    }
    size_t k = 0;
    for (rgpu_memory *m = dev->memories; m; m = m->next)
        if (m->shadow)
            ms[k++] = m;
    return ms;
}

int rgpu_readback_begin(rgpu_device *dev, rgpu_readback *rb)
{
    memset(rb, 0, sizeof *rb);
    pthread_mutex_lock(&dev->mu);
    size_t nm = 0, np = 0;
    int oom;
    rgpu_memory **ms = mapped_memories(dev, &nm, &oom);
    rd_piece *ps = ms ? pieces_of(ms, nm, &np) : NULL;
    free(ms);
    uint64_t total = 0;
    for (size_t i = 0; i < np; i++)
        total += ps[i].n;
    int ok = ps && np && total <= READ_CALL_MAX && encode_read(&rb->body, ps, np) == 0;
    pthread_mutex_unlock(&dev->mu);
    if (!ok) {
        mp_free(&rb->body);
        free(ps);
        memset(rb, 0, sizeof *rb);
        return 0;
    }
    rb->pieces = ps;
    rb->npieces = np;
    return 1;
}

VkResult rgpu_readback_end(rgpu_device *dev, rgpu_readback *rb, const rgpu_reply *r)
{
    VkResult st = VK_SUCCESS;
    if (r) {
        pthread_mutex_lock(&dev->mu);
        /* the allocations by id again: another thread may have freed one meanwhile */
        for (size_t i = 0; i < rb->npieces; i++) {
            rgpu_memory *m = find(dev, rb->pieces[i].id);
            rb->pieces[i].m = m && m->shadow && m->size == rb->pieces[i].size ? m : NULL;
        }
        st = r->status != VK_SUCCESS ? r->status : apply_read(rb->pieces, rb->npieces, r);
        pthread_mutex_unlock(&dev->mu);
    }
    mp_free(&rb->body);
    free(rb->pieces);
    memset(rb, 0, sizeof *rb);
    return st;
}

static VkResult sync_down(rgpu_device *dev, rgpu_memory *m)
{
    return sync_down_many(dev, &m, 1);
}

static void write_remote(rgpu_device *dev, rgpu_memory *m, size_t off, size_t n)
{
    mp_buf b;
    mp_init(&b);
    mp_array(&b, 3);
    mp_str(&b, "vkRgpuWriteMemory");
    mp_array(&b, 2);
    mp_uint(&b, m->id);
    mp_uint(&b, off);
    mp_uint(&b, 2); /* bulk_index: the data is the third argument */
    VkResult st = rgpu_batch(dev->obj.srv->session, &b, m->base + off, n);
    if (st != VK_SUCCESS)
        RGPU_DEBUG("vkRgpuWriteMemory not sent (VkResult %d)", (int)st);
    mp_free(&b);
}

/* The bytes the host changed in one chunk: up to MAX_RUNS runs go as plain writes; past that
 * (the host rewrote most of it) the span from the first to the last changed byte goes as one
 * write with a mask of the changed bytes, so bytes the host left alone are never sent back
 * over what the device may have written there. */
#define MAX_RUNS 32

/* Both send from base after copying the host's bytes into it: another thread may go on
 * writing the shadow meanwhile, and what it writes after the copy must differ from base (and
 * so be sent by the next synchronisation), never land in base unsent. */
static void send_run(rgpu_device *dev, rgpu_memory *m, size_t off, size_t n)
{
    memcpy(m->base + off, m->shadow + off, n);
    write_remote(dev, m, off, n);
}

static void send_masked(rgpu_device *dev, rgpu_memory *m, size_t off, size_t n)
{
    uint8_t *mask = calloc((n + 7) / 8, 1);
    if (!mask) {
        RGPU_DEBUG("vkRgpuWriteMemory: no memory for a mask of %zu bytes", n);
        return;
    }
    const uint8_t *s = m->shadow + off;
    uint8_t *b = m->base + off;
    for (size_t i = 0; i < n; i++) {
        uint8_t v = s[i];
        if (v != b[i]) {
            mask[i >> 3] |= (uint8_t)(1u << (i & 7));
            b[i] = v;
        }
    }
    mp_buf body;
    mp_init(&body);
    mp_array(&body, 3);
    mp_str(&body, "vkRgpuWriteMemory");
    mp_array(&body, 3);
    mp_uint(&body, m->id);
    mp_uint(&body, off);
    mp_bin(&body, mask, (n + 7) / 8);
    mp_uint(&body, 2); /* bulk_index: the data is the third argument, the mask the fourth */
    VkResult st = rgpu_batch(dev->obj.srv->session, &body, m->base + off, n);
    if (st != VK_SUCCESS)
        RGPU_DEBUG("vkRgpuWriteMemory not sent (VkResult %d)", (int)st);
    mp_free(&body);
    free(mask);
}

static void sync_chunk_up(rgpu_device *dev, rgpu_memory *m, size_t k)
{
    size_t start = k * CHUNK, end = start + chunk_len(m, k);
    const uint8_t *s = m->shadow, *b = m->base;
    size_t run_off[MAX_RUNS], run_len[MAX_RUNS];
    int runs = 0, many = 0;
    size_t i = start;
    while (i < end) {
        while (i < end && s[i] == b[i]) { /* skip equal bytes, 8 at a time where aligned */
            if (!(i & 7) && i + 8 <= end && !memcmp(s + i, b + i, 8))
                i += 8;
            else
                i++;
        }
        if (i >= end)
            break;
        if (runs == MAX_RUNS) {
            many = 1;
            break;
        }
        size_t j = i;
        while (j < end && s[j] != b[j])
            j++;
        run_off[runs] = i;
        run_len[runs++] = j - i;
        i = j;
    }
    if (many) {
        size_t last = end;
        while (last > run_off[0] && s[last - 1] == b[last - 1])
            last--;
        send_masked(dev, m, run_off[0], last - run_off[0]);
    } else {
        for (int r = 0; r < runs; r++)
            send_run(dev, m, run_off[r], run_len[r]);
    }
    if (runs)
        m->crc_ok[k] = 0;
    m->chunk_hash[k] = hash_bytes(m->base + start, end - start);
}

/* Write every byte changed since the last synchronisation. */
static void sync_up(rgpu_device *dev, rgpu_memory *m)
{
    for (size_t k = 0; k < m->nchunks; k++)
        if (hash_bytes(m->shadow + k * CHUNK, chunk_len(m, k)) != m->chunk_hash[k])
            sync_chunk_up(dev, m, k);
}

VkResult rgpu_sync_to_server(rgpu_device *dev)
{
    if (!dev)
        return VK_SUCCESS;
    pthread_mutex_lock(&dev->mu);
    for (rgpu_memory *m = dev->memories; m; m = m->next)
        if (m->shadow)
            sync_up(dev, m);
    pthread_mutex_unlock(&dev->mu);
    return VK_SUCCESS;
}

VkResult rgpu_sync_from_server(rgpu_device *dev)
{
    if (!dev)
        return VK_SUCCESS;
    pthread_mutex_lock(&dev->mu);
    size_t n;
    int oom;
    rgpu_memory **ms = mapped_memories(dev, &n, &oom);
    VkResult st = oom ? VK_ERROR_OUT_OF_HOST_MEMORY
                      : n ? sync_down_many(dev, ms, n) : VK_SUCCESS;
    free(ms);
    pthread_mutex_unlock(&dev->mu);
    return st;
}

void rgpu_memory_forget_all(rgpu_device *dev);
void rgpu_memory_forget_all(rgpu_device *dev)
{
    rgpu_memory *m = dev->memories;
    while (m) {
        rgpu_memory *next = m->next;
        free(m->shadow);
        free(m->base);
        free(m->chunk_hash);
        free(m->crc);
        free(m->crc_ok);
        free(m);
        m = next;
    }
    dev->memories = NULL;
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_AllocateMemory(VkDevice device,
                                                         const VkMemoryAllocateInfo *info,
                                                         const VkAllocationCallbacks *pAllocator,
                                                         VkDeviceMemory *pMemory)
{
    rgpu_device *dev = (rgpu_device *)device;
    uint64_t a[4] = {(uint64_t)(uintptr_t)device, (uint64_t)(uintptr_t)info,
                     (uint64_t)(uintptr_t)pAllocator, (uint64_t)(uintptr_t)pMemory};
    VkResult st = (VkResult)rgpu_forward(rgpu_command_by_name("vkAllocateMemory")->cmd, a);
    if (st != VK_SUCCESS)
        return st;
    if (host_visible(dev, info->memoryTypeIndex)) {
        rgpu_memory *m = calloc(1, sizeof *m);
        if (!m)
            return VK_ERROR_OUT_OF_HOST_MEMORY;
        m->id = (uint64_t)*pMemory;
        m->size = info->allocationSize;
        pthread_mutex_lock(&dev->mu);
        m->next = dev->memories;
        dev->memories = m;
        pthread_mutex_unlock(&dev->mu);
    }
    return VK_SUCCESS;
}

static VKAPI_ATTR void VKAPI_CALL icd_FreeMemory(VkDevice device, VkDeviceMemory memory,
                                                 const VkAllocationCallbacks *pAllocator)
{
    rgpu_device *dev = (rgpu_device *)device;
    if (!memory)
        return;
    pthread_mutex_lock(&dev->mu);
    for (rgpu_memory **pp = &dev->memories; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == (uint64_t)memory) {
            rgpu_memory *m = *pp;
            *pp = m->next;
            free(m->shadow);
            free(m->base);
            free(m->chunk_hash);
            free(m->crc);
            free(m->crc_ok);
            free(m);
            break;
        }
    }
    pthread_mutex_unlock(&dev->mu);
    uint64_t a[3] = {(uint64_t)(uintptr_t)device, (uint64_t)memory,
                     (uint64_t)(uintptr_t)pAllocator};
    rgpu_forward(rgpu_command_by_name("vkFreeMemory")->cmd, a);
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_MapMemory(VkDevice device, VkDeviceMemory memory,
                                                    VkDeviceSize offset, VkDeviceSize size,
                                                    VkMemoryMapFlags flags, void **ppData)
{
    (void)flags;
    rgpu_device *dev = (rgpu_device *)device;
    pthread_mutex_lock(&dev->mu);
    rgpu_memory *m = find(dev, (uint64_t)memory);
    VkResult st = VK_SUCCESS;
    if (!m || offset >= m->size ||
        (size != VK_WHOLE_SIZE && (size == 0 || offset + size > m->size))) {
        st = VK_ERROR_MEMORY_MAP_FAILED;
    } else if (!m->shadow) {
        m->nchunks = (size_t)((m->size + CHUNK - 1) / CHUNK);
        /* start from zeros (what fresh memory holds on most drivers) and fetch the chunks
         * that differ */
        size_t bytes = ((size_t)m->size + 4095) & ~(size_t)4095;
        m->shadow = aligned_alloc(4096, bytes);
        m->base = calloc(1, m->size ? (size_t)m->size : 1);
        size_t nk = m->nchunks ? m->nchunks : 1;
        m->chunk_hash = calloc(nk, sizeof *m->chunk_hash);
        m->crc = calloc(nk, sizeof *m->crc);
        m->crc_ok = calloc(nk, 1);
        st = VK_ERROR_OUT_OF_HOST_MEMORY;
        if (m->shadow && m->base && m->chunk_hash && m->crc && m->crc_ok) {
            memset(m->shadow, 0, bytes);
            uint32_t zero_crc = crc32_bytes(m->base, m->size < CHUNK ? (size_t)m->size : CHUNK);
            for (size_t k = 0; k < m->nchunks; k++) {
                size_t len = chunk_len(m, k);
                m->chunk_hash[k] = hash_bytes(m->base + k * CHUNK, len);
                m->crc[k] = len == CHUNK || k == 0 ? zero_crc : crc32_bytes(m->base + k * CHUNK, len);
                m->crc_ok[k] = 1;
            }
            st = sync_down(dev, m);
        }
        if (st != VK_SUCCESS) {
            free(m->shadow);
            free(m->base);
            free(m->chunk_hash);
            free(m->crc);
            free(m->crc_ok);
            m->shadow = m->base = m->crc_ok = NULL;
            m->chunk_hash = NULL;
            m->crc = NULL;
        }
    }
    if (st == VK_SUCCESS) {
        m->mapped = 1;
        *ppData = m->shadow + offset;
    }
    pthread_mutex_unlock(&dev->mu);
    return st;
}

static VKAPI_ATTR void VKAPI_CALL icd_UnmapMemory(VkDevice device, VkDeviceMemory memory)
{
    rgpu_device *dev = (rgpu_device *)device;
    pthread_mutex_lock(&dev->mu);
    rgpu_memory *m = find(dev, (uint64_t)memory);
    if (m && m->shadow) {
        sync_up(dev, m); /* the shadow stays: the next map sees the same bytes */
        m->mapped = 0;
    }
    pthread_mutex_unlock(&dev->mu);
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_FlushMappedMemoryRanges(
    VkDevice device, uint32_t n, const VkMappedMemoryRange *ranges)
{
    rgpu_device *dev = (rgpu_device *)device;
    pthread_mutex_lock(&dev->mu);
    for (uint32_t i = 0; i < n; i++) {
        rgpu_memory *m = find(dev, (uint64_t)ranges[i].memory);
        if (m && m->shadow)
            sync_up(dev, m);
    }
    pthread_mutex_unlock(&dev->mu);
    return VK_SUCCESS;
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_InvalidateMappedMemoryRanges(
    VkDevice device, uint32_t n, const VkMappedMemoryRange *ranges)
{
    rgpu_device *dev = (rgpu_device *)device;
    VkResult st = VK_SUCCESS;
    pthread_mutex_lock(&dev->mu);
    for (uint32_t i = 0; i < n && st == VK_SUCCESS; i++) {
        rgpu_memory *m = find(dev, (uint64_t)ranges[i].memory);
        if (m && m->shadow)
            st = sync_down(dev, m);
    }
    pthread_mutex_unlock(&dev->mu);
    return st;
}

PFN_vkVoidFunction rgpu_memory_proc(const char *name);
PFN_vkVoidFunction rgpu_memory_proc(const char *name)
{
    static const struct {
        const char *name;
        PFN_vkVoidFunction fn;
    } fns[] = {
        {"vkAllocateMemory", (PFN_vkVoidFunction)icd_AllocateMemory},
        {"vkFreeMemory", (PFN_vkVoidFunction)icd_FreeMemory},
        {"vkMapMemory", (PFN_vkVoidFunction)icd_MapMemory},
        {"vkUnmapMemory", (PFN_vkVoidFunction)icd_UnmapMemory},
        {"vkFlushMappedMemoryRanges", (PFN_vkVoidFunction)icd_FlushMappedMemoryRanges},
        {"vkInvalidateMappedMemoryRanges", (PFN_vkVoidFunction)icd_InvalidateMappedMemoryRanges},
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        if (!strcmp(fns[i].name, name))
            return fns[i].fn;
    return NULL;
}
