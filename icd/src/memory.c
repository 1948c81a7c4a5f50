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

/* Read [0, size) of the allocation from the server into `dst`. */
static VkResult read_remote(rgpu_device *dev, rgpu_memory *m, uint8_t *dst)
{
    for (uint64_t off = 0; off < m->size; off += READ_PIECE) {
        uint64_t n = m->size - off < READ_PIECE ? m->size - off : READ_PIECE;
        mp_buf b;
        mp_init(&b);
        mp_array(&b, 2);
        mp_str(&b, "vkRgpuReadMemory");
        mp_array(&b, 3);
        mp_uint(&b, m->id);
        mp_uint(&b, off);
        mp_uint(&b, n);
        rgpu_reply r;
        VkResult st = rgpu_vk_call(dev->obj.srv, &b, NULL, 0, &r);
        mp_free(&b);
        if (st != VK_SUCCESS) {
            rgpu_reply_free(&r);
            return st;
        }
        if (r.bulk_len != n) {
            RGPU_DEBUG("vkRgpuReadMemory returned %zu bytes, not %llu", r.bulk_len,
                       (unsigned long long)n);
            rgpu_reply_free(&r);
            return VK_ERROR_DEVICE_LOST;
        }
        memcpy(dst + off, r.bulk, (size_t)n);
        rgpu_reply_free(&r);
    }
    return VK_SUCCESS;
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
    VkResult st = rgpu_batch(dev->obj.srv->session, &b, m->shadow + off, n);
    if (st != VK_SUCCESS)
        RGPU_DEBUG("vkRgpuWriteMemory not sent (VkResult %d)", (int)st);
    mp_free(&b);
}

/* Runs of bytes the host changed in one chunk, sent one by one; past MAX_RUNS runs the rest of
 * the chunk goes as one span (the host rewrote it almost whole). */
#define MAX_RUNS 32

static void send_run(rgpu_device *dev, rgpu_memory *m, size_t off, size_t n)
{
    write_remote(dev, m, off, n);
    memcpy(m->base + off, m->shadow + off, n);
}

static void sync_chunk_up(rgpu_device *dev, rgpu_memory *m, size_t k)
{
    size_t start = k * CHUNK, end = start + chunk_len(m, k);
    const uint8_t *s = m->shadow, *b = m->base;
    int runs = 0;
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
        size_t j = i;
        if (++runs > MAX_RUNS) {
            j = end;
            while (j > i && s[j - 1] == b[j - 1])
                j--;
        } else {
            while (j < end && s[j] != b[j])
                j++;
        }
        send_run(dev, m, i, j - i);
        i = j;
    }
    m->chunk_hash[k] = hash_bytes(m->base + start, end - start);
}

/* Write every byte changed since the last synchronisation. */
static void sync_up(rgpu_device *dev, rgpu_memory *m)
{
    for (size_t k = 0; k < m->nchunks; k++)
        if (hash_bytes(m->shadow + k * CHUNK, chunk_len(m, k)) != m->chunk_hash[k])
            sync_chunk_up(dev, m, k);
}

static VkResult sync_down(rgpu_device *dev, rgpu_memory *m)
{
    uint8_t *fresh = malloc(m->size ? (size_t)m->size : 1);
    if (!fresh)
        return VK_ERROR_OUT_OF_HOST_MEMORY;
    VkResult st = read_remote(dev, m, fresh);
    if (st == VK_SUCCESS) {
        for (size_t k = 0; k < m->nchunks; k++) {
            size_t len = chunk_len(m, k), off = k * CHUNK;
            uint8_t *local = m->shadow + off, *base = m->base + off;
            const uint8_t *got = fresh + off;
            if (hash_bytes(local, len) == m->chunk_hash[k]) {
                memcpy(local, got, len); /* untouched by the host: the server's bytes */
            } else {
                /* the host wrote some bytes since: those win (sent at the next submit),
                 * every other byte takes the server's value */
                for (size_t i = 0; i < len; i++)
                    if (local[i] == base[i])
                        local[i] = got[i];
            }
            memcpy(base, got, len);
            m->chunk_hash[k] = hash_bytes(base, len);
        }
    }
    free(fresh);
    return st;
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
    VkResult st = VK_SUCCESS;
    pthread_mutex_lock(&dev->mu);
    for (rgpu_memory *m = dev->memories; m && st == VK_SUCCESS; m = m->next)
        if (m->shadow)
            st = sync_down(dev, m);
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
        m->shadow = aligned_alloc(4096, ((size_t)m->size + 4095) & ~(size_t)4095);
        m->base = malloc(m->size ? (size_t)m->size : 1);
        m->chunk_hash = calloc(m->nchunks ? m->nchunks : 1, sizeof *m->chunk_hash);
        if (m->shadow && m->base && m->chunk_hash)
            st = read_remote(dev, m, m->shadow);
        else
            st = VK_ERROR_OUT_OF_HOST_MEMORY;
        if (st != VK_SUCCESS) {
            free(m->shadow);
            free(m->base);
            free(m->chunk_hash);
            m->shadow = m->base = NULL;
            m->chunk_hash = NULL;
        } else {
            memcpy(m->base, m->shadow, (size_t)m->size);
            for (size_t k = 0; k < m->nchunks; k++)
                m->chunk_hash[k] = hash_bytes(m->base + k * CHUNK, chunk_len(m, k));
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
