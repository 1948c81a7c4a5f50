/* The loader interface and every instance-level answer: extensions, versions, physical
 * devices and their properties, features, memory, queue families and formats -- all local,
 * from the facts of pool.c; only image-format and sparse queries go to the server. */
#include <stdio.h>
#include <stdlib.h>

#include "rgpu_icd.h"

#define ICD_API_VERSION VK_MAKE_API_VERSION(0, 1, 3, VK_HEADER_VERSION)

static void set_magic(rgpu_dobj *o)
{
    o->loader_data = RGPU_LOADER_MAGIC;
}

rgpu_gpu *rgpu_gpu_of(VkPhysicalDevice pd)
{
    const rgpu_dobj *o = (const rgpu_dobj *)pd;
    for (int i = 0; o && i < rgpu_ngpus; i++)
        if (rgpu_gpus[i].srv == o->srv && rgpu_gpus[i].pd_id == o->id)
            return &rgpu_gpus[i];
    return NULL;
}

/* Copy `n` items into an enumeration's output the Vulkan way (VK_INCOMPLETE when short). */
static VkResult enumerate_out(uint32_t *count, void *out, const void *items, uint32_t n,
                              size_t size)
{
    if (!out) {
        *count = n;
        return VK_SUCCESS;
    }
    uint32_t k = *count < n ? *count : n;
    if (k)
        memcpy(out, items, k * size);
    *count = k;
    return k < n ? VK_INCOMPLETE : VK_SUCCESS;
}

/* Instance extensions: the wire's, without the ones only layers implement. */
static uint32_t instance_extensions(VkExtensionProperties *out)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < rgpu_instance_extension_count; i++) {
        const char *name = rgpu_instance_extensions[i].extensionName;
        if (!strncmp(name, "VK_EXT_validation", 17) || !strcmp(name, "VK_KHR_portability_enumeration"))
            continue;
        if (out)
            out[n] = rgpu_instance_extensions[i];
        n++;
    }
    return n;
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_EnumerateInstanceExtensionProperties(
    const char *pLayerName, uint32_t *pPropertyCount, VkExtensionProperties *pProperties)
{
    if (pLayerName)
        return VK_ERROR_LAYER_NOT_PRESENT;
    VkExtensionProperties all[32];
    uint32_t n = instance_extensions(all);
    return enumerate_out(pPropertyCount, pProperties, all, n, sizeof all[0]);
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_EnumerateInstanceLayerProperties(
    uint32_t *pPropertyCount, VkLayerProperties *pProperties)
{
    (void)pProperties;
    *pPropertyCount = 0;
    return VK_SUCCESS;
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_EnumerateInstanceVersion(uint32_t *pApiVersion)
{
    *pApiVersion = ICD_API_VERSION;
    return VK_SUCCESS;
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_CreateInstance(const VkInstanceCreateInfo *pCreateInfo,
                                                         const VkAllocationCallbacks *pAllocator,
                                                         VkInstance *pInstance)
{
    (void)pAllocator;
    VkResult st = rgpu_pool_init();
    if (st != VK_SUCCESS)
        return VK_ERROR_INITIALIZATION_FAILED;
    for (uint32_t i = 0; i < pCreateInfo->enabledExtensionCount; i++) {
        VkExtensionProperties all[32];
        uint32_t n = instance_extensions(all), k;
        for (k = 0; k < n; k++)
            if (!strcmp(all[k].extensionName, pCreateInfo->ppEnabledExtensionNames[i]))
                break;
        if (k == n)
            return VK_ERROR_EXTENSION_NOT_PRESENT;
    }
    rgpu_instance *inst = calloc(1, sizeof *inst);
    if (!inst)
        return VK_ERROR_OUT_OF_HOST_MEMORY;
    set_magic(&inst->obj);
    inst->obj.type = RO_INSTANCE;
    inst->obj.id = rgpu_new_id();
    inst->api_version = pCreateInfo->pApplicationInfo ? pCreateInfo->pApplicationInfo->apiVersion
                                                      : VK_API_VERSION_1_0;
    inst->pds = calloc(rgpu_ngpus ? (size_t)rgpu_ngpus : 1, sizeof *inst->pds);
    if (!inst->pds) {
        free(inst);
        return VK_ERROR_OUT_OF_HOST_MEMORY;
    }
    for (int i = 0; i < rgpu_ngpus; i++) {
        rgpu_dobj *pd = calloc(1, sizeof *pd);
        if (!pd)
            break;
        set_magic(pd);
        pd->type = RO_PHYSICAL_DEVICE;
        pd->id = rgpu_gpus[i].pd_id;
        pd->srv = rgpu_gpus[i].srv;
        pd->api_version = inst->api_version ? inst->api_version : VK_API_VERSION_1_0;
        inst->pds[inst->npd++] = pd;
    }
    *pInstance = (VkInstance)inst;
    return VK_SUCCESS;
}

static VKAPI_ATTR void VKAPI_CALL icd_DestroyInstance(VkInstance instance,
                                                      const VkAllocationCallbacks *pAllocator)
{
    (void)pAllocator;
    rgpu_instance *inst = (rgpu_instance *)instance;
    if (!inst)
        return;
    for (int i = 0; i < inst->npd; i++)
        free(inst->pds[i]);
    free(inst->pds);
    free(inst);
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_EnumeratePhysicalDevices(
    VkInstance instance, uint32_t *pCount, VkPhysicalDevice *pDevices)
{
    rgpu_instance *inst = (rgpu_instance *)instance;
    return enumerate_out(pCount, pDevices, inst->pds, (uint32_t)inst->npd, sizeof(void *));
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_EnumeratePhysicalDeviceGroups(
    VkInstance instance, uint32_t *pCount, VkPhysicalDeviceGroupProperties *pGroups)
{
    rgpu_instance *inst = (rgpu_instance *)instance;
    uint32_t n = (uint32_t)inst->npd;
    if (!pGroups) {
        *pCount = n;
        return VK_SUCCESS;
    }
    uint32_t k = *pCount < n ? *pCount : n;
    for (uint32_t i = 0; i < k; i++) { /* one device per group: servers share no memory */
        pGroups[i].physicalDeviceCount = 1;
        memset(pGroups[i].physicalDevices, 0, sizeof pGroups[i].physicalDevices);
        pGroups[i].physicalDevices[0] = (VkPhysicalDevice)inst->pds[i];
        pGroups[i].subsetAllocation = VK_FALSE;
    }
    *pCount = k;
    return k < n ? VK_INCOMPLETE : VK_SUCCESS;
}

/* Decode facts member `key` (a struct `sname` in wire form) into `out`. */
static void from_facts(VkPhysicalDevice pd, const char *key, const char *sname, void *out,
                       int member)
{
    rgpu_gpu *g = rgpu_gpu_of(pd);
    if (!g)
        return;
    const rgpu_struct *s = rgpu_struct_by_name(sname);
    int node = rgpu_facts_gpu_field(g, key);
    if (member >= 0) /* a member of a ...2 struct, e.g. properties of Properties2 */
        node = mp_array_at(&g->srv->facts, node, (uint32_t)member);
    if (s && node >= 0)
        rgpu_decode_struct(&g->srv->facts, node, s, out, g->srv);
}

static VKAPI_ATTR void VKAPI_CALL icd_GetPhysicalDeviceProperties(
    VkPhysicalDevice pd, VkPhysicalDeviceProperties *p)
{
    from_facts(pd, "properties", "VkPhysicalDeviceProperties", p, 1);
}

static VKAPI_ATTR void VKAPI_CALL icd_GetPhysicalDeviceProperties2(
    VkPhysicalDevice pd, VkPhysicalDeviceProperties2 *p)
{
    from_facts(pd, "properties", "VkPhysicalDeviceProperties2", p, -1);
}

static VKAPI_ATTR void VKAPI_CALL icd_GetPhysicalDeviceFeatures(
    VkPhysicalDevice pd, VkPhysicalDeviceFeatures *p)
{
    from_facts(pd, "features", "VkPhysicalDeviceFeatures", p, 1);
}

static VKAPI_ATTR void VKAPI_CALL icd_GetPhysicalDeviceFeatures2(
    VkPhysicalDevice pd, VkPhysicalDeviceFeatures2 *p)
{
    from_facts(pd, "features", "VkPhysicalDeviceFeatures2", p, -1);
}

static VKAPI_ATTR void VKAPI_CALL icd_GetPhysicalDeviceMemoryProperties(
    VkPhysicalDevice pd, VkPhysicalDeviceMemoryProperties *p)
{
    from_facts(pd, "memory_properties", "VkPhysicalDeviceMemoryProperties", p, 1);
}

static VKAPI_ATTR void VKAPI_CALL icd_GetPhysicalDeviceMemoryProperties2(
    VkPhysicalDevice pd, VkPhysicalDeviceMemoryProperties2 *p)
{
    from_facts(pd, "memory_properties", "VkPhysicalDeviceMemoryProperties2", p, -1);
}

static int format_node(rgpu_gpu *g, VkFormat format)
{
    for (int i = 0; i < g->nformats; i++)
        if (g->format_keys[i] == (int32_t)format)
            return g->format_nodes[i];
    return -1;
}

static VKAPI_ATTR void VKAPI_CALL icd_GetPhysicalDeviceFormatProperties2(
    VkPhysicalDevice pd, VkFormat format, VkFormatProperties2 *p)
{
    rgpu_gpu *g = rgpu_gpu_of(pd);
    memset(&p->formatProperties, 0, sizeof p->formatProperties);
    if (!g)
        return;
    int node = format_node(g, format);
    if (node >= 0)
        rgpu_decode_struct(&g->srv->facts, node, rgpu_struct_by_name("VkFormatProperties2"),
                           (uint8_t *)p, g->srv);
}

static VKAPI_ATTR void VKAPI_CALL icd_GetPhysicalDeviceFormatProperties(
    VkPhysicalDevice pd, VkFormat format, VkFormatProperties *p)
{
    VkFormatProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_FORMAT_PROPERTIES_2};
    icd_GetPhysicalDeviceFormatProperties2(pd, format, &p2);
    *p = p2.formatProperties;
}

static VKAPI_ATTR void VKAPI_CALL icd_GetPhysicalDeviceQueueFamilyProperties2(
    VkPhysicalDevice pd, uint32_t *pCount, VkQueueFamilyProperties2 *p)
{
    rgpu_gpu *g = rgpu_gpu_of(pd);
    const mp_doc *d = g ? &g->srv->facts : NULL;
    int list = g ? rgpu_facts_gpu_field(g, "queue_families") : -1;
    uint32_t n = list >= 0 ? d->nodes[list].count : 0;
    if (!p) {
        *pCount = n;
        return;
    }
    uint32_t k = 0;
    const rgpu_struct *s = rgpu_struct_by_name("VkQueueFamilyProperties2");
    for (int c = mp_first(d, list); c >= 0 && k < n && k < *pCount; c = mp_next(d, c), k++)
        rgpu_decode_struct(d, c, s, (uint8_t *)&p[k], g->srv);
    *pCount = k;
}

static VKAPI_ATTR void VKAPI_CALL icd_GetPhysicalDeviceQueueFamilyProperties(
    VkPhysicalDevice pd, uint32_t *pCount, VkQueueFamilyProperties *p)
{
    if (!p) {
        icd_GetPhysicalDeviceQueueFamilyProperties2(pd, pCount, NULL);
        return;
    }
    uint32_t n = *pCount;
    VkQueueFamilyProperties2 *tmp = calloc(n ? n : 1, sizeof *tmp);
    if (!tmp) {
        *pCount = 0;
        return;
    }
    for (uint32_t i = 0; i < n; i++)
        tmp[i].sType = VK_STRUCTURE_TYPE_QUEUE_FAMILY_PROPERTIES_2;
    icd_GetPhysicalDeviceQueueFamilyProperties2(pd, pCount, tmp);
    for (uint32_t i = 0; i < *pCount; i++)
        p[i] = tmp[i].queueFamilyProperties;
    free(tmp);
}

/* Device extensions: the device's, limited to those the wire carries. */
static uint32_t device_extensions(rgpu_gpu *g, VkExtensionProperties *out, uint32_t cap)
{
    const mp_doc *d = &g->srv->facts;
    int list = rgpu_facts_gpu_field(g, "extensions");
    if (list < 0 || d->nodes[list].type != MP_ARRAY)
        return 0;
    uint32_t n = 0, k = 0;
    for (int c = mp_first(d, list); c >= 0 && k < d->nodes[list].count; c = mp_next(d, c), k++) {
        char name[VK_MAX_EXTENSION_NAME_SIZE];
        int64_t version = 0;
        mp_get_str(d, mp_array_at(d, c, 0), name, sizeof name);
        mp_get_i64(d, mp_array_at(d, c, 1), &version);
        uint32_t i;
        for (i = 0; i < rgpu_device_extension_count; i++)
            if (!strcmp(rgpu_device_extensions[i].extensionName, name))
                break;
        if (i == rgpu_device_extension_count)
            continue;
        if (out && n < cap) {
            memset(&out[n], 0, sizeof out[n]);
            snprintf(out[n].extensionName, sizeof out[n].extensionName, "%s", name);
            out[n].specVersion = (uint32_t)version;
        }
        n++;
    }
    return n;
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_EnumerateDeviceExtensionProperties(
    VkPhysicalDevice pd, const char *pLayerName, uint32_t *pCount, VkExtensionProperties *p)
{
    if (pLayerName)
        return VK_ERROR_LAYER_NOT_PRESENT;
    rgpu_gpu *g = rgpu_gpu_of(pd);
    if (!g) {
        *pCount = 0;
        return VK_SUCCESS;
    }
    uint32_t n = device_extensions(g, NULL, 0);
    if (!p) {
        *pCount = n;
        return VK_SUCCESS;
    }
    VkExtensionProperties *all = calloc(n ? n : 1, sizeof *all);
    if (!all)
        return VK_ERROR_OUT_OF_HOST_MEMORY;
    device_extensions(g, all, n);
    VkResult st = enumerate_out(pCount, p, all, n, sizeof *all);
    free(all);
    return st;
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_EnumerateDeviceLayerProperties(
    VkPhysicalDevice pd, uint32_t *pCount, VkLayerProperties *p)
{
    (void)pd;
    (void)p;
    *pCount = 0;
    return VK_SUCCESS;
}

static VKAPI_ATTR VkResult VKAPI_CALL icd_GetPhysicalDeviceToolProperties(
    VkPhysicalDevice pd, uint32_t *pCount, VkPhysicalDeviceToolProperties *p)
{
    rgpu_gpu *g = rgpu_gpu_of(pd);
    const mp_doc *d = g ? &g->srv->facts : NULL;
    int list = g ? rgpu_facts_gpu_field(g, "tools") : -1;
    uint32_t n = list >= 0 && d->nodes[list].type == MP_ARRAY ? d->nodes[list].count : 0;
    if (!p) {
        *pCount = n;
        return VK_SUCCESS;
    }
    uint32_t k = 0;
    const rgpu_struct *s = rgpu_struct_by_name("VkPhysicalDeviceToolProperties");
    for (int c = n ? mp_first(d, list) : -1; c >= 0 && k < n && k < *pCount;
         c = mp_next(d, c), k++)
        rgpu_decode_struct(d, c, s, (uint8_t *)&p[k], g->srv);
    *pCount = k;
    return k < n ? VK_INCOMPLETE : VK_SUCCESS;
}

/* ---- proc-address lookup ------------------------------------------------------------------ */

typedef struct {
    const char *name;
    PFN_vkVoidFunction fn;
} named_fn;

#define FN(n, f) {n, (PFN_vkVoidFunction)(f)}
static const named_fn instance_fns[] = {
    FN("vkCreateInstance", icd_CreateInstance),
    FN("vkDestroyInstance", icd_DestroyInstance),
    FN("vkEnumerateInstanceExtensionProperties", icd_EnumerateInstanceExtensionProperties),
    FN("vkEnumerateInstanceLayerProperties", icd_EnumerateInstanceLayerProperties),
    FN("vkEnumerateInstanceVersion", icd_EnumerateInstanceVersion),
    FN("vkEnumeratePhysicalDevices", icd_EnumeratePhysicalDevices),
    FN("vkEnumeratePhysicalDeviceGroups", icd_EnumeratePhysicalDeviceGroups),
    FN("vkEnumeratePhysicalDeviceGroupsKHR", icd_EnumeratePhysicalDeviceGroups),
    FN("vkGetPhysicalDeviceProperties", icd_GetPhysicalDeviceProperties),
    FN("vkGetPhysicalDeviceProperties2", icd_GetPhysicalDeviceProperties2),
    FN("vkGetPhysicalDeviceProperties2KHR", icd_GetPhysicalDeviceProperties2),
    FN("vkGetPhysicalDeviceFeatures", icd_GetPhysicalDeviceFeatures),
    FN("vkGetPhysicalDeviceFeatures2", icd_GetPhysicalDeviceFeatures2),
    FN("vkGetPhysicalDeviceFeatures2KHR", icd_GetPhysicalDeviceFeatures2),
    FN("vkGetPhysicalDeviceMemoryProperties", icd_GetPhysicalDeviceMemoryProperties),
    FN("vkGetPhysicalDeviceMemoryProperties2", icd_GetPhysicalDeviceMemoryProperties2),
    FN("vkGetPhysicalDeviceMemoryProperties2KHR", icd_GetPhysicalDeviceMemoryProperties2),
    FN("vkGetPhysicalDeviceFormatProperties", icd_GetPhysicalDeviceFormatProperties),
    FN("vkGetPhysicalDeviceFormatProperties2", icd_GetPhysicalDeviceFormatProperties2),
    FN("vkGetPhysicalDeviceFormatProperties2KHR", icd_GetPhysicalDeviceFormatProperties2),
    FN("vkGetPhysicalDeviceQueueFamilyProperties", icd_GetPhysicalDeviceQueueFamilyProperties),
    FN("vkGetPhysicalDeviceQueueFamilyProperties2", icd_GetPhysicalDeviceQueueFamilyProperties2),
    FN("vkGetPhysicalDeviceQueueFamilyProperties2KHR",
       icd_GetPhysicalDeviceQueueFamilyProperties2),
    FN("vkEnumerateDeviceExtensionProperties", icd_EnumerateDeviceExtensionProperties),
    FN("vkEnumerateDeviceLayerProperties", icd_EnumerateDeviceLayerProperties),
    FN("vkGetPhysicalDeviceToolProperties", icd_GetPhysicalDeviceToolProperties),
    FN("vkGetPhysicalDeviceToolPropertiesEXT", icd_GetPhysicalDeviceToolProperties),
};

static PFN_vkVoidFunction find_named(const named_fn *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(t[i].name, name))
            return t[i].fn;
    return NULL;
}

static int is_global(const char *name)
{
    return !strcmp(name, "vkCreateInstance") ||
           !strcmp(name, "vkEnumerateInstanceExtensionProperties") ||
           !strcmp(name, "vkEnumerateInstanceLayerProperties") ||
           !strcmp(name, "vkEnumerateInstanceVersion");
}

RGPU_EXPORT VKAPI_ATTR VkResult VKAPI_CALL
vk_icdNegotiateLoaderICDInterfaceVersion(uint32_t *pSupportedVersion);
RGPU_EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL vk_icdGetInstanceProcAddr(VkInstance instance,
                                                                             const char *pName);
RGPU_EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL
vk_icdGetPhysicalDeviceProcAddr(VkInstance instance, const char *pName);

/* Any entry point by name: hand-written special cases first, then the generated ones. */
static PFN_vkVoidFunction lookup(const char *name, int device_only)
{
    PFN_vkVoidFunction fn = rgpu_special_proc(name);
    if (fn)
        return fn;
    if (!device_only) {
        fn = find_named(instance_fns, sizeof instance_fns / sizeof instance_fns[0], name);
        if (fn)
            return fn;
    }
    const rgpu_command_entry *e = rgpu_command_by_name(name);
    if (!e || (device_only && e->level != RGPU_LEVEL_DEVICE))
        return NULL;
    return e->fn;
}

PFN_vkVoidFunction rgpu_device_proc(const char *name);
PFN_vkVoidFunction rgpu_device_proc(const char *name)
{
    return lookup(name, 1);
}

RGPU_EXPORT VKAPI_ATTR VkResult VKAPI_CALL
vk_icdNegotiateLoaderICDInterfaceVersion(uint32_t *pSupportedVersion)
{
    /* 5: the loader checks apiVersion itself; Vulkan >= 1.1 needs >= 5. 6 and 7 add nothing
     * a Linux driver needs (7 would let us stop exporting these three symbols). */
    if (*pSupportedVersion > 7)
        *pSupportedVersion = 7;
    if (*pSupportedVersion < 5)
        return VK_ERROR_INCOMPATIBLE_DRIVER;
    return VK_SUCCESS;
}

RGPU_EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL vk_icdGetInstanceProcAddr(VkInstance instance,
                                                                             const char *pName)
{
    if (!pName)
        return NULL;
    if (!strcmp(pName, "vk_icdNegotiateLoaderICDInterfaceVersion"))
        return (PFN_vkVoidFunction)vk_icdNegotiateLoaderICDInterfaceVersion;
    if (!strcmp(pName, "vk_icdGetPhysicalDeviceProcAddr"))
        return (PFN_vkVoidFunction)vk_icdGetPhysicalDeviceProcAddr;
    if (!strcmp(pName, "vkGetInstanceProcAddr") || !strcmp(pName, "vk_icdGetInstanceProcAddr"))
        return (PFN_vkVoidFunction)vk_icdGetInstanceProcAddr;
    if (!instance && !is_global(pName))
        return NULL;
    return lookup(pName, 0);
}

RGPU_EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL
vk_icdGetPhysicalDeviceProcAddr(VkInstance instance, const char *pName)
{
    (void)instance;
    if (!pName)
        return NULL;
    /* only functions dispatched on a VkPhysicalDevice */
    const rgpu_command_entry *e = rgpu_command_by_name(pName);
    if (!e || !e->cmd->nparams || strcmp(e->cmd->params[0].name, "physicalDevice") != 0)
        return NULL;
    return lookup(pName, 0);
}
