/* Devices, queues, command buffers and the synchronisation points: what cannot be generated
 * because it creates dispatchable objects, records locally, or moves mapped memory. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "rgpu_icd.h"

PFN_vkVoidFunction rgpu_device_proc(const char *name);
PFN_vkVoidFunction rgpu_memory_proc(const char *name);
PFN_vkVoidFunction rgpu_template_proc(const char *name);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* [fn, [args...]] header */
static void body_begin(mp_buf *b, const char *fn, uint32_t nargs)
{
    mp_init(b);
    mp_array(b, 2);
    mp_str(b, fn);
    mp_array(b, nargs);
}

static VkResult call_status(rgpu_server *srv, mp_buf *b)
{
    rgpu_reply r;
    VkResult st = rgpu_vk_call(srv, b, NULL, 0, &r);
    mp_free(b);
    if (st == VK_SUCCESS && r.has_body) {
        int64_t v;
        if (mp_get_i64(&r.doc, mp_array_at(&r.doc, 0, 0), &v) == 0)
            st = (VkResult)v;
    }
    rgpu_reply_free(&r);
    return st;
}

static void batch(rgpu_server *srv, mp_buf *b)
{
    VkResult st = b->oom ? VK_ERROR_OUT_OF_HOST_MEMORY : rgpu_batch(srv->session, b, NULL, 0);
    if (st != VK_SUCCESS)
        RGPU_DEBUG("BATCH not sent (VkResult %d)", (int)st);
    mp_free(b);
}

/* ---- devices and queues ------------------------------------------------------------------- */

static VKAPI_ATTR VkResult VKAPI_CALL icd_CreateDevice(VkPhysicalDevice physicalDevice,
                                                       const VkDeviceCreateInfo *pCreateInfo,
                                                       const VkAllocationCallbacks *pAllocator,
                                                       VkDevice *pDevice)
{
    (void)pAllocator;
    rgpu_gpu *g = rgpu_gpu_of(physicalDevice);
    if (!g)
        return VK_ERROR_INITIALIZATION_FAILED;
    rgpu_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return VK_ERROR_OUT_OF_HOST_MEMORY;
    dev->obj.loader_data = RGPU_LOADER_MAGIC;
    dev->obj.type = RO_DEVICE;
    dev->obj.id = rgpu_new_id();
    dev->obj.srv = g->srv;
    dev->obj.api_version = ((const rgpu_dobj *)physicalDevice)->api_version;
    dev->gpu = g;
    pthread_mutex_init(&dev->mu, NULL);
    rgpu_enc e = {g->srv, 0};
    mp_buf b;
    body_begin(&b, "vkCreateDevice", 4);
    mp_uint(&b, g->pd_id);
    rgpu_encode_struct(&e, &b, rgpu_struct_by_name("VkDeviceCreateInfo"),
                       (const uint8_t *)pCreateInfo);
    mp_nil(&b);
    mp_uint(&b, dev->obj.id);
    VkResult st = call_status(g->srv, &b);
    if (st < 0) {
        pthread_mutex_destroy(&dev->mu);
        free(dev);
        return st;
    }
    dev->obj.dev = dev;
    uint32_t n = pCreateInfo->enabledExtensionCount;
    dev->extensions = calloc(n ? n : 1, sizeof *dev->extensions);
    for (uint32_t i = 0; dev->extensions && i < n; i++)
        if ((dev->extensions[dev->nextensions] = strdup(pCreateInfo->ppEnabledExtensionNames[i])))
            dev->nextensions++;
    *pDevice = (VkDevice)dev;
    return VK_SUCCESS;
}

void rgpu_memory_forget_all(rgpu_device *dev);
static void free_pool_cmdbufs(rgpu_device *dev, uint64_t pool);

static VKAPI_ATTR void VKAPI_CALL icd_DestroyDevice(VkDevice device,
                                                    const VkAllocationCallbacks *pAllocator)
{
    (void)pAllocator;
    rgpu_device *dev = (rgpu_device *)device;
    if (!dev)
        return;
    mp_buf b;
    body_begin(&b, "vkDestroyDevice", 2);
    mp_uint(&b, dev->obj.id);
    mp_nil(&b);
    call_status(dev->obj.srv, &b); /* a CALL: the server has let go of it when this returns */
    rgpu_memory_forget_all(dev);
    free_pool_cmdbufs(dev, 0);
    for (int i = 0; i < dev->nqueues; i++)
        free(dev->queues[i]);
    free(dev->queues);
    for (uint32_t i = 0; i < dev->nextensions; i++)
        free(dev->extensions[i]);
    free(dev->extensions);
    pthread_mutex_destroy(&dev->mu);
    free(dev);
}

typedef struct {
    rgpu_dobj obj;
    uint32_t family, index, flags;
} rgpu_queue;

static VkQueue get_queue(rgpu_device *dev, uint32_t family, uint32_t index, uint32_t flags)
{
    pthread_mutex_lock(&dev->mu);
    for (int i = 0; i < dev->nqueues; i++) {
        rgpu_queue *q = (rgpu_queue *)dev->queues[i];
        if (q->family == family && q->index == index && q->flags == flags) {
            pthread_mutex_unlock(&dev->mu);
            return (VkQueue)q;
        }
    }
    rgpu_queue *q = calloc(1, sizeof *q);
    rgpu_dobj **grown = realloc(dev->queues, (size_t)(dev->nqueues + 1) * sizeof *grown);
    if (!q || !grown) {
        free(q);
        if (grown)
            dev->queues = grown;
        pthread_mutex_unlock(&dev->mu);
        return VK_NULL_HANDLE;
    }
    dev->queues = grown;
    q->obj.loader_data = RGPU_LOADER_MAGIC;
    q->obj.type = RO_QUEUE;
    q->obj.id = rgpu_new_id();
    q->obj.srv = dev->obj.srv;
    q->obj.dev = dev;
    q->family = family;
    q->index = index;
    q->flags = flags;
    dev->queues[dev->nqueues++] = &q->obj;
    pthread_mutex_unlock(&dev->mu);
    mp_buf b;
    body_begin(&b, "vkGetDeviceQueue", 4);
    mp_uint(&b, dev->obj.id);
    mp_uint(&b, family);
    mp_uint(&b, index);
    mp_uint(&b, q->obj.id);
    if (flags) { /* vkGetDeviceQueue2 for protected queues */
        mp_free(&b);
        body_begin(&b, "vkGetDeviceQueue2", 3);
        mp_uint(&b, dev->obj.id);
        mp_array(&b, 4);
        mp_nil(&b);
        mp_uint(&b, flags);
        mp_uint(&b, family);
        mp_uint(&b, index);
        mp_uint(&b, q->obj.id);
    }
    batch(dev->obj.srv, &b);
    return (VkQueue)q;
}

static VKAPI_ATTR void VKAPI_CALL icd_GetDeviceQueue(VkDevice device, uint32_t family,
                                                     uint32_t index, VkQueue *pQueue)
{
    *pQueue = get_queue((rgpu_device *)device, family, index, 0);
}

static VKAPI_ATTR void VKAPI_CALL icd_GetDeviceQueue2(VkDevice device,
                                                      const VkDeviceQueueInfo2 *info,
                                                      VkQueue *pQueue)
{
    *pQueue = get_queue((rgpu_device *)device, info->queueFamilyIndex, info->queueIndex,
                        info->flags);
}

/* Entry points the ICD implements by hand that the generated table does not list. */
static const char *special_origins(const char *name)
{
    if (!strcmp(name, "vkCmdPushDescriptorSetWithTemplateKHR"))
        return "VK_KHR_push_descriptor";
    if (!strcmp(name, "vkUpdateDescriptorSetWithTemplateKHR"))
        return "VK_KHR_descriptor_update_template";
    return "VK_VERSION_1_0";
}

/* As drivers do, a command is handed out only when a core version up to the application's
 * apiVersion (rgpu's ICD is 1.3) or an extension the device was created with provides it:
 * applications test optional features by whether vkGetDeviceProcAddr returns NULL. */
static int provided(const rgpu_device *dev, const char *origins)
{
    const char *p = origins;
    while (*p) {
        const char *end = strchr(p, ' ');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 14 && !strncmp(p, "VK_VERSION_1_", 13)) { /* VK_VERSION_1_<minor> */
            uint32_t api = dev && dev->obj.api_version ? dev->obj.api_version
                                                       : VK_API_VERSION_1_0;
            if (VK_API_VERSION_MAJOR(api) > 1 ||
                (uint32_t)(p[13] - '0') <= VK_API_VERSION_MINOR(api))
                return 1;
        }
        for (uint32_t i = 0; dev && i < dev->nextensions; i++)
            if (strlen(dev->extensions[i]) == len && !strncmp(dev->extensions[i], p, len))
                return 1;
        p += len;
        while (*p == ' ')
            p++;
    }
    return 0;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL icd_GetDeviceProcAddr(VkDevice device,
                                                                      const char *pName)
{
    if (!pName)
        return NULL;
    if (!strcmp(pName, "vkGetDeviceProcAddr"))
        return (PFN_vkVoidFunction)icd_GetDeviceProcAddr;
    const rgpu_command_entry *e = rgpu_command_by_name(pName);
    if (device && !provided((const rgpu_device *)device, e ? e->origins : special_origins(pName)))
        return NULL;
    return rgpu_device_proc(pName);
}

/* ---- command buffers ---------------------------------------------------------------------- */

static void cmdbuf_free(rgpu_cmdbuf *cb)
{
    mp_free(&cb->stream);
    mp_free(&cb->begin);
    free(cb);
}

static void unlink_cmdbuf(rgpu_device *dev, rgpu_cmdbuf *cb)
{
    pthread_mutex_lock(&dev->mu);
    for (rgpu_cmdbuf **pp = &dev->cmdbufs; *pp; pp = &(*pp)->next)
        if (*pp == cb) {
            *pp = cb->next;
            break;
        }
    pthread_mutex_unlock(&dev->mu);
}

/* Free the command buffers of `pool` (every pool when 0). */
static void free_pool_cmdbufs(rgpu_device *dev, uint64_t pool)
{
    pthread_mutex_lock(&dev->mu);
    rgpu_cmdbuf **pp = &dev->cmdbufs;
    while (*pp) {
        rgpu_cmdbuf *cb = *pp;
        if (!pool || cb->pool == pool) {
            *pp = cb->next;
            cmdbuf_free(cb);
        } else {
            pp = &cb->next;
        }
    }
    pthread_mutex_unlock(&dev->mu);
}

static VKAPI_ATTR void VKAPI_CALL icd_DestroyCommandPool(VkDevice device, VkCommandPool pool,
                                                        const VkAllocationCallbacks *pAllocator)
{
    (void)pAllocator;
    rgpu_device *dev = (rgpu_device *)device;
    if (!pool)
        return;
    free_pool_cmdbufs(dev, (uint64_t)pool);
    mp_buf b;
    body_begin(&b, "vkDestroyCommandPool", 3);
    mp_uint(&b, dev->obj.id);
    mp_uint(&b, (uint64_t)pool);
    mp_nil(&b);
    batch(dev->obj.srv, &b);
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_AllocateCommandBuffers(
    VkDevice device, const VkCommandBufferAllocateInfo *info, VkCommandBuffer *out)
{
    rgpu_device *dev = (rgpu_device *)device;
    uint32_t n = info->commandBufferCount;
    for (uint32_t i = 0; i < n; i++) {
        rgpu_cmdbuf *cb = calloc(1, sizeof *cb);
        if (!cb) {
            for (uint32_t k = 0; k < i; k++)
                free(out[k]);
            return VK_ERROR_OUT_OF_HOST_MEMORY;
        }
        cb->obj.loader_data = RGPU_LOADER_MAGIC;
        cb->obj.type = RO_COMMAND_BUFFER;
        cb->obj.id = rgpu_new_id();
        cb->obj.srv = dev->obj.srv;
        cb->obj.dev = dev;
        cb->pool = (uint64_t)info->commandPool;
        mp_init(&cb->stream);
        mp_init(&cb->begin);
        out[i] = (VkCommandBuffer)cb;
    }
    pthread_mutex_lock(&dev->mu);
    for (uint32_t i = 0; i < n; i++) {
        rgpu_cmdbuf *cb = (rgpu_cmdbuf *)out[i];
        cb->next = dev->cmdbufs;
        dev->cmdbufs = cb;
    }
    pthread_mutex_unlock(&dev->mu);
    rgpu_enc e = {dev->obj.srv, 0};
    mp_buf b;
    body_begin(&b, "vkAllocateCommandBuffers", 3);
    mp_uint(&b, dev->obj.id);
    rgpu_encode_struct(&e, &b, rgpu_struct_by_name("VkCommandBufferAllocateInfo"),
                       (const uint8_t *)info);
    mp_array(&b, n);
    for (uint32_t i = 0; i < n; i++)
        mp_uint(&b, ((rgpu_dobj *)out[i])->id);
    VkResult st = call_status(dev->obj.srv, &b);
    if (st < 0) {
        for (uint32_t i = 0; i < n; i++) {
            unlink_cmdbuf(dev, (rgpu_cmdbuf *)out[i]);
            cmdbuf_free((rgpu_cmdbuf *)out[i]);
            out[i] = VK_NULL_HANDLE;
        }
        return st;
    }
    return VK_SUCCESS;
}

static VKAPI_ATTR void VKAPI_CALL icd_FreeCommandBuffers(VkDevice device, VkCommandPool pool,
                                                         uint32_t n, const VkCommandBuffer *cbs)
{
    rgpu_device *dev = (rgpu_device *)device;
    mp_buf b;
    body_begin(&b, "vkFreeCommandBuffers", 4);
    mp_uint(&b, dev->obj.id);
    mp_uint(&b, (uint64_t)pool);
    mp_uint(&b, n);
    mp_array(&b, n);
    for (uint32_t i = 0; i < n; i++)
        mp_uint(&b, cbs[i] ? ((rgpu_dobj *)cbs[i])->id : 0);
    batch(dev->obj.srv, &b);
    for (uint32_t i = 0; i < n; i++)
        if (cbs[i]) {
            unlink_cmdbuf(dev, (rgpu_cmdbuf *)cbs[i]);
            cmdbuf_free((rgpu_cmdbuf *)cbs[i]);
        }
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_BeginCommandBuffer(VkCommandBuffer commandBuffer,
                                                             const VkCommandBufferBeginInfo *info)
{
    rgpu_cmdbuf *cb = (rgpu_cmdbuf *)commandBuffer;
    cb->stream.len = 0;
    cb->stream.oom = 0;
    cb->ncommands = 0;
    cb->begin.len = 0;
    cb->begin.oom = 0;
    rgpu_enc e = {cb->obj.srv, 0};
    if (info)
        rgpu_encode_struct(&e, &cb->begin, rgpu_struct_by_name("VkCommandBufferBeginInfo"),
                           (const uint8_t *)info);
    else
        mp_nil(&cb->begin);
    cb->recording = 1;
    return cb->begin.oom ? VK_ERROR_OUT_OF_HOST_MEMORY : VK_SUCCESS;
}

/* Streams up to this size travel inside the CALL body (which the daemon may coalesce with
 * other BATCH calls); larger ones as its bulk segment. */
#define STREAM_INLINE_MAX (4u << 20)

/* The recorded stream goes to the server as one BATCH call; its errors surface at the next
 * call of the session (the vkQueueSubmit that uses it). */
static VKAPI_ATTR VkResult VKAPI_CALL icd_EndCommandBuffer(VkCommandBuffer commandBuffer)
{
    rgpu_cmdbuf *cb = (rgpu_cmdbuf *)commandBuffer;
    if (cb->stream.oom || cb->begin.oom)
        return VK_ERROR_OUT_OF_HOST_MEMORY;
    mp_buf b;
    cb->recording = 0;
    if (cb->stream.len <= STREAM_INLINE_MAX) {
        body_begin(&b, "vkRgpuSubmitCommandBuffer", 3);
        mp_uint(&b, cb->obj.id);
        mp_array(&b, cb->ncommands);
        mp_raw(&b, cb->stream.data, cb->stream.len);
        mp_raw(&b, cb->begin.data, cb->begin.len);
        batch(cb->obj.srv, &b);
        return VK_SUCCESS;
    }
    /* larger than a frame's body: the entries travel as the bulk segment (split into frames) */
    mp_init(&b);
    mp_array(&b, 3);
    mp_str(&b, "vkRgpuSubmitCommandBuffer");
    mp_array(&b, 2);
    mp_uint(&b, cb->obj.id);
    mp_raw(&b, cb->begin.data, cb->begin.len);
    mp_uint(&b, 1); /* bulk_index: the stream is the second argument */
    VkResult st = b.oom ? VK_ERROR_OUT_OF_HOST_MEMORY
                        : rgpu_batch(cb->obj.srv->session, &b, cb->stream.data, cb->stream.len);
    mp_free(&b);
    return st == VK_ERROR_OUT_OF_HOST_MEMORY ? st : VK_SUCCESS;
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_ResetCommandBuffer(VkCommandBuffer commandBuffer,
                                                             VkCommandBufferResetFlags flags)
{
    rgpu_cmdbuf *cb = (rgpu_cmdbuf *)commandBuffer;
    cb->stream.len = 0;
    cb->ncommands = 0;
    mp_buf b;
    body_begin(&b, "vkResetCommandBuffer", 2);
    mp_uint(&b, cb->obj.id);
    mp_uint(&b, flags);
    batch(cb->obj.srv, &b);
    return VK_SUCCESS;
}

/* ---- VK_EXT_multi_draw ---------------------------------------------------------------------- */

/* pVertexInfo / pIndexInfo are arrays with the application's stride; the wire carries packed
 * arrays, so they are recorded packed with the stride of the struct itself. */
static VKAPI_ATTR void VKAPI_CALL icd_CmdDrawMultiEXT(VkCommandBuffer commandBuffer,
                                                     uint32_t drawCount,
                                                     const VkMultiDrawInfoEXT *pVertexInfo,
                                                     uint32_t instanceCount,
                                                     uint32_t firstInstance, uint32_t stride)
{
    VkMultiDrawInfoEXT *packed = calloc(drawCount ? drawCount : 1, sizeof *packed);
    if (!packed) {
        ((rgpu_cmdbuf *)commandBuffer)->stream.oom = 1;
        return;
    }
    for (uint32_t i = 0; i < drawCount; i++)
        memcpy(&packed[i], (const uint8_t *)pVertexInfo + (size_t)i * stride, sizeof *packed);
    uint64_t a[6] = {(uint64_t)(uintptr_t)commandBuffer, drawCount, (uint64_t)(uintptr_t)packed,
                     instanceCount, firstInstance, sizeof *packed};
    rgpu_forward(rgpu_command_by_name("vkCmdDrawMultiEXT")->cmd, a);
    free(packed);
}

static VKAPI_ATTR void VKAPI_CALL icd_CmdDrawMultiIndexedEXT(
    VkCommandBuffer commandBuffer, uint32_t drawCount, const VkMultiDrawIndexedInfoEXT *pIndexInfo,
    uint32_t instanceCount, uint32_t firstInstance, uint32_t stride, const int32_t *pVertexOffset)
{
    VkMultiDrawIndexedInfoEXT *packed = calloc(drawCount ? drawCount : 1, sizeof *packed);
    if (!packed) {
        ((rgpu_cmdbuf *)commandBuffer)->stream.oom = 1;
        return;
    }
    for (uint32_t i = 0; i < drawCount; i++)
        memcpy(&packed[i], (const uint8_t *)pIndexInfo + (size_t)i * stride, sizeof *packed);
    uint64_t a[7] = {(uint64_t)(uintptr_t)commandBuffer, drawCount, (uint64_t)(uintptr_t)packed,
                     instanceCount, firstInstance, sizeof *packed,
                     (uint64_t)(uintptr_t)pVertexOffset};
    rgpu_forward(rgpu_command_by_name("vkCmdDrawMultiIndexedEXT")->cmd, a);
    free(packed);
}

/* ---- submission and waits ----------------------------------------------------------------- */

/* vkQueueSubmit(2) and vkResetFences return only a VkResult: they go as BATCH calls (no round
 * trip), and a failure comes back with the session's next reply -- the fence wait or status
 * query that follows them -- as the errors of recorded command buffers do. */

static uint64_t forward_named(const char *name, const uint64_t *args)
{
    const rgpu_command_entry *e = rgpu_command_by_name(name);
    return rgpu_forward(e->cmd, args);
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_QueueSubmit(VkQueue queue, uint32_t n,
                                                      const VkSubmitInfo *submits, VkFence fence)
{
    rgpu_dobj *q = (rgpu_dobj *)queue;
    VkResult st = rgpu_sync_to_server(q->dev);
    if (st != VK_SUCCESS)
        return st;
    uint64_t a[4] = {(uint64_t)(uintptr_t)queue, n, (uint64_t)(uintptr_t)submits,
                     (uint64_t)fence};
    return rgpu_forward_async(rgpu_command_by_name("vkQueueSubmit")->cmd, a);
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_QueueSubmit2(VkQueue queue, uint32_t n,
                                                       const VkSubmitInfo2 *submits,
                                                       VkFence fence)
{
    rgpu_dobj *q = (rgpu_dobj *)queue;
    VkResult st = rgpu_sync_to_server(q->dev);
    if (st != VK_SUCCESS)
        return st;
    uint64_t a[4] = {(uint64_t)(uintptr_t)queue, n, (uint64_t)(uintptr_t)submits,
                     (uint64_t)fence};
    return rgpu_forward_async(rgpu_command_by_name("vkQueueSubmit2")->cmd, a);
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_ResetFences(VkDevice device, uint32_t n,
                                                      const VkFence *fences)
{
    uint64_t a[3] = {(uint64_t)(uintptr_t)device, n, (uint64_t)(uintptr_t)fences};
    return rgpu_forward_async(rgpu_command_by_name("vkResetFences")->cmd, a);
}

/* A wait whose only output is its VkResult, with the read-back of mapped memory sent right
 * behind it (rgpu_call_pair): one round trip instead of two. The read-back's result is used
 * only when the wait succeeded; on VK_SUCCESS the memory is up to date. */
static VkResult wait_then_read(rgpu_device *dev, const char *name, const uint64_t *args)
{
    const rgpu_command *cmd = rgpu_command_by_name(name)->cmd;
    rgpu_readback rb;
    mp_buf b;
    if (!rgpu_readback_begin(dev, &rb) || rgpu_encode_call(cmd, args, &b) != 0) {
        if (rb.npieces) {
            mp_free(&b);
            rgpu_readback_end(dev, &rb, NULL);
        }
        VkResult st = (VkResult)rgpu_forward(cmd, args);
        return st == VK_SUCCESS ? rgpu_sync_from_server(dev) : st;
    }
    rgpu_reply r1, r2;
    VkResult st = rgpu_call_pair(dev->obj.srv->session, &b, &r1, &rb.body, &r2);
    mp_free(&b);
    if (st == VK_SUCCESS && r1.has_body) {
        int64_t v;
        if (mp_get_i64(&r1.doc, mp_array_at(&r1.doc, 0, 0), &v) == 0)
            st = (VkResult)v;
    }
    VkResult read = rgpu_readback_end(dev, &rb, st == VK_SUCCESS ? &r2 : NULL);
    rgpu_reply_free(&r1);
    rgpu_reply_free(&r2);
    return st == VK_SUCCESS ? read : st;
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_QueueWaitIdle(VkQueue queue)
{
    rgpu_dobj *q = (rgpu_dobj *)queue;
    uint64_t a[1] = {(uint64_t)(uintptr_t)queue};
    return wait_then_read(q->dev, "vkQueueWaitIdle", a);
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_DeviceWaitIdle(VkDevice device)
{
    uint64_t a[1] = {(uint64_t)(uintptr_t)device};
    return wait_then_read((rgpu_device *)device, "vkDeviceWaitIdle", a);
}

/* A wait is a series of server-side waits of at most WAIT_SLICE_NS each (the server itself caps
 * one at 5 s), repeated with the time the application has left: the connection is shared by
 * the application's threads, so between slices another thread can submit the work this one is
 * waiting for. */
#define WAIT_SLICE_NS 100000000ull
static VKAPI_ATTR VkResult VKAPI_CALL icd_WaitForFences(VkDevice device, uint32_t n,
                                                        const VkFence *fences, VkBool32 waitAll,
                                                        uint64_t timeout)
{
    double deadline = now_s() + (double)timeout / 1e9;
    VkResult st;
    for (;;) {
        double left = deadline - now_s();
        uint64_t t = timeout == UINT64_MAX ? UINT64_MAX
                     : left > 0 ? (uint64_t)(left * 1e9) : 0;
        t = t < WAIT_SLICE_NS ? t : WAIT_SLICE_NS;
        uint64_t a[5] = {(uint64_t)(uintptr_t)device, n, (uint64_t)(uintptr_t)fences, waitAll,
                         t};
        if (!timeout) { /* a poll: no read-back unless the fences are signalled */
            st = (VkResult)forward_named("vkWaitForFences", a);
            return st == VK_SUCCESS ? rgpu_sync_from_server((rgpu_device *)device) : st;
        }
        st = wait_then_read((rgpu_device *)device, "vkWaitForFences", a);
        if (st != VK_TIMEOUT || (timeout != UINT64_MAX && now_s() >= deadline))
            break;
    }
    return st;
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_GetFenceStatus(VkDevice device, VkFence fence)
{
    uint64_t a[2] = {(uint64_t)(uintptr_t)device, (uint64_t)fence};
    VkResult st = (VkResult)forward_named("vkGetFenceStatus", a);
    return st == VK_SUCCESS ? rgpu_sync_from_server((rgpu_device *)device) : st;
}

/* With VK_QUERY_RESULT_WAIT_BIT the server waits in slices (a wait must not hold the session,
 * where another thread's vkSetEvent may be what the query waits for) and answers VK_NOT_READY
 * when a slice ends: asked again until the results are there, as the application expects. */
static VKAPI_ATTR VkResult VKAPI_CALL icd_GetQueryPoolResults(
    VkDevice device, VkQueryPool queryPool, uint32_t firstQuery, uint32_t queryCount,
    size_t dataSize, void *pData, VkDeviceSize stride, VkQueryResultFlags flags)
{
    uint64_t a[8] = {(uint64_t)(uintptr_t)device, (uint64_t)queryPool, firstQuery, queryCount,
                     dataSize, (uint64_t)(uintptr_t)pData, stride, flags};
    VkResult st;
    do
        st = (VkResult)forward_named("vkGetQueryPoolResults", a);
    while (st == VK_NOT_READY && (flags & VK_QUERY_RESULT_WAIT_BIT));
    return st;
}

/* Polling a timeline semaphore or an event is host synchronisation too: once it shows new
 * work done, the host may read what that work wrote, so mapped memory is read back. */
static VKAPI_ATTR VkResult VKAPI_CALL icd_GetSemaphoreCounterValue(VkDevice device,
                                                                   VkSemaphore semaphore,
                                                                   uint64_t *pValue)
{
    rgpu_device *dev = (rgpu_device *)device;
    uint64_t a[3] = {(uint64_t)(uintptr_t)device, (uint64_t)semaphore, (uint64_t)(uintptr_t)pValue};
    VkResult st = (VkResult)forward_named("vkGetSemaphoreCounterValue", a);
    if (st != VK_SUCCESS)
        return st;
    int fresh = 1;
    pthread_mutex_lock(&dev->mu);
    unsigned n = sizeof dev->seen_semaphore / sizeof dev->seen_semaphore[0];
    unsigned k = 0;
    while (k < n && dev->seen_semaphore[k] != (uint64_t)semaphore)
        k++;
    if (k == n)
        k = dev->seen_next++ % n;
    else
        fresh = dev->seen_value[k] != *pValue;
    dev->seen_semaphore[k] = (uint64_t)semaphore;
    dev->seen_value[k] = *pValue;
    pthread_mutex_unlock(&dev->mu);
    return fresh ? rgpu_sync_from_server(dev) : VK_SUCCESS;
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_GetEventStatus(VkDevice device, VkEvent event)
{
    uint64_t a[2] = {(uint64_t)(uintptr_t)device, (uint64_t)event};
    VkResult st = (VkResult)forward_named("vkGetEventStatus", a);
    if (st != VK_EVENT_SET)
        return st;
    VkResult synced = rgpu_sync_from_server((rgpu_device *)device);
    return synced == VK_SUCCESS ? st : synced;
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_WaitSemaphores(VkDevice device,
                                                         const VkSemaphoreWaitInfo *info,
                                                         uint64_t timeout)
{
    double deadline = now_s() + (double)timeout / 1e9;
    VkResult st;
    for (;;) {
        double left = deadline - now_s();
        uint64_t t = timeout == UINT64_MAX ? UINT64_MAX
                     : left > 0 ? (uint64_t)(left * 1e9) : 0;
        t = t < WAIT_SLICE_NS ? t : WAIT_SLICE_NS;
        uint64_t a[3] = {(uint64_t)(uintptr_t)device, (uint64_t)(uintptr_t)info, t};
        if (!timeout) {
            st = (VkResult)forward_named("vkWaitSemaphores", a);
            return st == VK_SUCCESS ? rgpu_sync_from_server((rgpu_device *)device) : st;
        }
        st = wait_then_read((rgpu_device *)device, "vkWaitSemaphores", a);
        if (st != VK_TIMEOUT || (timeout != UINT64_MAX && now_s() >= deadline))
            break;
    }
    return st;
}

#define FN(n, f) {n, (PFN_vkVoidFunction)(f)}
static const struct {
    const char *name;
    PFN_vkVoidFunction fn;
} device_fns[] = {
    FN("vkCreateDevice", icd_CreateDevice),
    FN("vkDestroyDevice", icd_DestroyDevice),
    FN("vkGetDeviceQueue", icd_GetDeviceQueue),
    FN("vkGetDeviceQueue2", icd_GetDeviceQueue2),
    FN("vkGetDeviceProcAddr", icd_GetDeviceProcAddr),
    FN("vkAllocateCommandBuffers", icd_AllocateCommandBuffers),
    FN("vkFreeCommandBuffers", icd_FreeCommandBuffers),
    FN("vkDestroyCommandPool", icd_DestroyCommandPool),
    FN("vkBeginCommandBuffer", icd_BeginCommandBuffer),
    FN("vkEndCommandBuffer", icd_EndCommandBuffer),
    FN("vkResetCommandBuffer", icd_ResetCommandBuffer),
    FN("vkQueueSubmit", icd_QueueSubmit),
    FN("vkQueueSubmit2", icd_QueueSubmit2),
    FN("vkQueueSubmit2KHR", icd_QueueSubmit2),
    FN("vkResetFences", icd_ResetFences),
    FN("vkCmdDrawMultiEXT", icd_CmdDrawMultiEXT),
    FN("vkCmdDrawMultiIndexedEXT", icd_CmdDrawMultiIndexedEXT),
    FN("vkQueueWaitIdle", icd_QueueWaitIdle),
    FN("vkDeviceWaitIdle", icd_DeviceWaitIdle),
    FN("vkWaitForFences", icd_WaitForFences),
    FN("vkGetFenceStatus", icd_GetFenceStatus),
    FN("vkWaitSemaphores", icd_WaitSemaphores),
    FN("vkWaitSemaphoresKHR", icd_WaitSemaphores),
    FN("vkGetSemaphoreCounterValue", icd_GetSemaphoreCounterValue),
    FN("vkGetSemaphoreCounterValueKHR", icd_GetSemaphoreCounterValue),
    FN("vkGetEventStatus", icd_GetEventStatus),
    FN("vkGetQueryPoolResults", icd_GetQueryPoolResults),
};

PFN_vkVoidFunction rgpu_special_proc(const char *name)
{
    for (size_t i = 0; i < sizeof device_fns / sizeof device_fns[0]; i++)
        if (!strcmp(device_fns[i].name, name))
            return device_fns[i].fn;
    PFN_vkVoidFunction fn = rgpu_memory_proc(name);
    return fn ? fn : rgpu_template_proc(name);
}
