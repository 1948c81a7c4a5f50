/* Initialisation, versions and device queries. The pool's CUDA-capable GPUs become CUdevice
 * 0..N-1; their facts (name, UUID, memory, every attribute, PCI ids, driver version) are fetched
 * once at cuInit and every query is answered from them, so cudart's ~115 attribute queries per
 * device and the integrity check see exactly the same values. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rgpu_shim.h"

#define MIN_DRIVER_VERSION 13000
#define MAX_ATTRIBUTE 4096

int rgpu_device_count;
rgpu_device *rgpu_devices;
int rgpu_driver_version = MIN_DRIVER_VERSION;
_Atomic int rgpu_initialized;

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
static CUresult init_status = CUDA_ERROR_NOT_INITIALIZED;
static int init_done;
static _Atomic uint64_t next_id = 16; /* ids 0-2 name the special streams */

uint64_t rgpu_new_id(void)
{
    return atomic_fetch_add(&next_id, 1);
}

static int get_int(const mp_doc *d, int map, const char *key, int64_t *v)
{
    return mp_get_i64(d, mp_map_get(d, map, key), v);
}

static CUresult fetch_facts(rgpu_device *dev)
{
    mp_buf b;
    mp_init(&b);
    mp_map(&b, 2);
    mp_str(&b, "op");
    mp_str(&b, "cuda_facts");
    mp_str(&b, "gpu");
    mp_int(&b, dev->pool_index);
    rgpu_reply r;
    CUresult st = rgpu_control(&b, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS) {
        RGPU_DEBUG("cuda_facts for GPU %d failed: %s", dev->pool_index, r.message);
        return st;
    }
    const mp_doc *d = &r.doc;
    int64_t v;
    mp_get_str(d, mp_map_get(d, 0, "name"), dev->name, sizeof dev->name);
    int u = mp_map_get(d, 0, "uuid");
    if (u >= 0 && d->nodes[u].type == MP_BIN && d->nodes[u].count == 16)
        memcpy(dev->uuid, d->nodes[u].v.p, 16);
    if (get_int(d, 0, "total_memory", &v) == 0)
        dev->total_memory = (size_t)v;
    int cc = mp_map_get(d, 0, "compute_capability");
    if (mp_get_i64(d, mp_array_at(d, cc, 0), &v) == 0)
        dev->cc_major = (int)v;
    if (mp_get_i64(d, mp_array_at(d, cc, 1), &v) == 0)
        dev->cc_minor = (int)v;
    if (get_int(d, 0, "pci_domain_id", &v) == 0)
        dev->pci_domain = (int)v;
    if (get_int(d, 0, "pci_bus_id", &v) == 0)
        dev->pci_bus = (int)v;
    if (get_int(d, 0, "pci_device_id", &v) == 0)
        dev->pci_device = (int)v;
    if (get_int(d, 0, "driver_version", &v) == 0 && v > rgpu_driver_version)
        rgpu_driver_version = (int)v;
    int attrs = mp_map_get(d, 0, "attributes");
    if (attrs >= 0 && d->nodes[attrs].type == MP_MAP) {
        dev->attr_count = MAX_ATTRIBUTE;
        dev->attr = calloc(MAX_ATTRIBUTE, sizeof(int));
        if (!dev->attr) {
            rgpu_reply_free(&r);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        uint32_t k = (uint32_t)attrs + 1;
        for (uint32_t i = 0; i < d->nodes[attrs].count; i++) {
            uint32_t val = d->nodes[k].next;
            int64_t key, value;
            if (mp_get_i64(d, (int)k, &key) == 0 && mp_get_i64(d, (int)val, &value) == 0 &&
                key >= 0 && key < MAX_ATTRIBUTE)
                dev->attr[key] = (int)value;
            k = d->nodes[val].next;
        }
    }
    /* The attributes the integrity check hashes must agree with the fields above. */
    if (dev->attr) {
        dev->attr[CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID] = dev->pci_domain;
        dev->attr[CU_DEVICE_ATTRIBUTE_PCI_BUS_ID] = dev->pci_bus;
        dev->attr[CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID] = dev->pci_device;
        /* Memory the host and kernels share is kept coherent by the shim at synchronisation
         * (managed.c), whatever the server's GPU could do locally: managed and mapped memory
         * exist, the host may not touch them while kernels run, and registered memory has a
         * device address of its own. */
        dev->attr[CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY] = 1;
        dev->attr[CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY] = 1;
        dev->attr[CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS] = 0;
        dev->attr[CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS] = 0;
        dev->attr[CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES] = 0;
        dev->attr[CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM] = 0;
        dev->attr[CU_DEVICE_ATTRIBUTE_DIRECT_MANAGED_MEM_ACCESS_FROM_HOST] = 0;
        dev->attr[CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED] = 0;
        /* memory pools are the shim's (pools.c): device-located, not exportable */
        dev->attr[CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED] = 1;
        dev->attr[CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES] = 0;
        dev->attr[CU_DEVICE_ATTRIBUTE_HOST_MEMORY_POOLS_SUPPORTED] = 0;
        dev->attr[CU_DEVICE_ATTRIBUTE_HOST_NUMA_MEMORY_POOLS_SUPPORTED] = 0;
    }
    rgpu_reply_free(&r);
    RGPU_DEBUG("pool GPU %d: %s, sm_%d%d, %zu bytes", dev->pool_index, dev->name, dev->cc_major,
               dev->cc_minor, dev->total_memory);
    return CUDA_SUCCESS;
}

static CUresult do_init(void)
{
    CUresult st = rgpu_connect();
    if (st != CUDA_SUCCESS)
        return st;
    mp_buf b;
    mp_init(&b);
    mp_map(&b, 1);
    mp_str(&b, "op");
    mp_str(&b, "list_gpus");
    rgpu_reply r;
    st = rgpu_control(&b, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    const mp_doc *d = &r.doc;
    uint32_t n = d->n && d->nodes[0].type == MP_ARRAY ? d->nodes[0].count : 0;
    rgpu_devices = calloc(n ? n : 1, sizeof(rgpu_device));
    if (!rgpu_devices) {
        rgpu_reply_free(&r);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    int count = 0;
    for (uint32_t i = 0; i < n; i++) {
        int g = mp_array_at(d, 0, i);
        int cuda = mp_map_get(d, g, "cuda");
        int64_t idx, cidx, is_cuda = 0;
        mp_get_i64(d, cuda, &is_cuda);
        if (!is_cuda || get_int(d, g, "index", &idx) || get_int(d, g, "cuda_index", &cidx))
            continue;
        rgpu_device *dev = &rgpu_devices[count];
        dev->pool_index = (int)idx;
        dev->cuda_index = (int)cidx;
        pthread_mutex_init(&dev->primary_mu, NULL);
        count++;
    }
    rgpu_reply_free(&r);
    for (int i = 0; i < count; i++) {
        st = fetch_facts(&rgpu_devices[i]);
        if (st != CUDA_SUCCESS)
            return st;
    }
    rgpu_device_count = count;
    RGPU_DEBUG("%d CUDA device(s) in the pool, driver version %d", count, rgpu_driver_version);
    if (!count)
        fprintf(stderr, "rgpu: the rgpu daemon's pool has no CUDA GPU (is its server connected? "
                        "see rgpu status); add one with rgpu client -s HOST:PORT -t TOKEN\n");
    return count ? CUDA_SUCCESS : CUDA_ERROR_NO_DEVICE;
}

CUresult rgpu_ensure_init(void)
{
    pthread_mutex_lock(&init_mu);
    if (!init_done) {
        rgpu_log_init();
        init_status = do_init();
        init_done = 1;
        rgpu_initialized = init_status == CUDA_SUCCESS;
    }
    CUresult st = init_status;
    pthread_mutex_unlock(&init_mu);
    return st;
}

CUresult rgpu_device_session(int devno, rgpu_session **out)
{
    if (devno < 0 || devno >= rgpu_device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    rgpu_device *dev = &rgpu_devices[devno];
    rgpu_lock();
    if (dev->session) {
        *out = dev->session;
        rgpu_unlock();
        return CUDA_SUCCESS;
    }
    mp_buf b;
    mp_init(&b);
    mp_map(&b, 2);
    mp_str(&b, "op");
    mp_str(&b, "open_session");
    mp_str(&b, "gpu");
    mp_int(&b, dev->pool_index);
    rgpu_reply r;
    CUresult st = rgpu_control(&b, &r);
    mp_free(&b);
    if (st == CUDA_SUCCESS) {
        int64_t sid = 0;
        if (mp_get_i64(&r.doc, mp_map_get(&r.doc, 0, "session"), &sid) != 0 || sid <= 0) {
            st = CUDA_ERROR_UNKNOWN;
        } else {
            /* One session per server: devices of the same server share it. */
            rgpu_session *s = NULL;
            for (int i = 0; i < rgpu_device_count; i++)
                if (rgpu_devices[i].session && rgpu_devices[i].session->id == (uint32_t)sid)
                    s = rgpu_devices[i].session;
            if (!s) {
                s = calloc(1, sizeof *s);
                if (!s)
                    st = CUDA_ERROR_OUT_OF_MEMORY;
                else
                    s->id = (uint32_t)sid;
            }
            dev->session = s;
            *out = s;
            RGPU_DEBUG("device %d: session %u", devno, (unsigned)sid);
        }
        rgpu_reply_free(&r);
    } else {
        RGPU_DEBUG("open_session for GPU %d failed: %s", dev->pool_index, r.message);
    }
    rgpu_unlock();
    return st;
}

/* ---- the driver API ---------------------------------------------------------------------- */

#define CHECK_INIT()                                                                           \
    do {                                                                                       \
        if (!rgpu_initialized)                                                                 \
            return CUDA_ERROR_NOT_INITIALIZED;                                                 \
    } while (0)
#define CHECK_DEV(d)                                                                           \
    do {                                                                                       \
        CHECK_INIT();                                                                          \
        if ((d) < 0 || (d) >= rgpu_device_count)                                               \
            return CUDA_ERROR_INVALID_DEVICE;                                                  \
    } while (0)

CUresult cuInit(unsigned int Flags)
{
    if (Flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    return rgpu_ensure_init();
}

CUresult cuDriverGetVersion(int *driverVersion)
{
    if (!driverVersion)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_ensure_init(); /* cudart asks before cuInit; the facts carry the version */
    *driverVersion = rgpu_driver_version;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice *device, int ordinal)
{
    CHECK_INIT();
    if (!device)
        return CUDA_ERROR_INVALID_VALUE;
    if (ordinal < 0 || ordinal >= rgpu_device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int *count)
{
    CHECK_INIT();
    if (!count)
        return CUDA_ERROR_INVALID_VALUE;
    *count = rgpu_device_count;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
    CHECK_DEV(dev);
    if (!name || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, (size_t)len, "%s", rgpu_devices[dev].name);
    return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    CHECK_DEV(dev);
    if (!bytes)
        return CUDA_ERROR_INVALID_VALUE;
    *bytes = rgpu_devices[dev].total_memory;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev)
{
    CHECK_DEV(dev);
    if (!pi)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_device *d = &rgpu_devices[dev];
    if ((int)attrib <= 0 || (int)attrib >= CU_DEVICE_ATTRIBUTE_MAX || !d->attr ||
        (int)attrib >= d->attr_count)
        return CUDA_ERROR_INVALID_VALUE;
    *pi = d->attr[attrib];
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev)
{
    CHECK_DEV(dev);
    if (!uuid)
        return CUDA_ERROR_INVALID_VALUE;
    memcpy(uuid->bytes, rgpu_devices[dev].uuid, 16);
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev)
{
    return cuDeviceGetUuid(uuid, dev);
}

CUresult cuDeviceGetPCIBusId(char *pciBusId, int len, CUdevice dev)
{
    CHECK_DEV(dev);
    if (!pciBusId || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_device *d = &rgpu_devices[dev];
    snprintf(pciBusId, (size_t)len, "%04x:%02x:%02x.0", (unsigned)d->pci_domain,
             (unsigned)d->pci_bus, (unsigned)d->pci_device);
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetByPCIBusId(CUdevice *dev, const char *pciBusId)
{
    CHECK_INIT();
    if (!dev || !pciBusId)
        return CUDA_ERROR_INVALID_VALUE;
    unsigned dom = 0, bus = 0, devno = 0, fn = 0;
    if (sscanf(pciBusId, "%x:%x:%x.%x", &dom, &bus, &devno, &fn) < 3) {
        dom = 0;
        if (sscanf(pciBusId, "%x:%x.%x", &bus, &devno, &fn) < 2)
            return CUDA_ERROR_INVALID_VALUE;
    }
    for (int i = 0; i < rgpu_device_count; i++) {
        rgpu_device *d = &rgpu_devices[i];
        if ((unsigned)d->pci_domain == dom && (unsigned)d->pci_bus == bus &&
            (unsigned)d->pci_device == devno) {
            *dev = i;
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_INVALID_DEVICE;
}

CUresult cuDeviceComputeCapability(int *major, int *minor, CUdevice dev)
{
    CHECK_DEV(dev);
    if (!major || !minor)
        return CUDA_ERROR_INVALID_VALUE;
    *major = rgpu_devices[dev].cc_major;
    *minor = rgpu_devices[dev].cc_minor;
    return CUDA_SUCCESS;
}

static int attr_of(CUdevice dev, CUdevice_attribute a)
{
    int v = 0;
    cuDeviceGetAttribute(&v, a, dev);
    return v;
}

CUresult cuDeviceGetProperties(CUdevprop *prop, CUdevice dev)
{
    CHECK_DEV(dev);
    if (!prop)
        return CUDA_ERROR_INVALID_VALUE;
    memset(prop, 0, sizeof *prop);
    prop->maxThreadsPerBlock = attr_of(dev, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
    prop->maxThreadsDim[0] = attr_of(dev, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X);
    prop->maxThreadsDim[1] = attr_of(dev, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y);
    prop->maxThreadsDim[2] = attr_of(dev, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z);
    prop->maxGridSize[0] = attr_of(dev, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X);
    prop->maxGridSize[1] = attr_of(dev, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y);
    prop->maxGridSize[2] = attr_of(dev, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z);
    prop->sharedMemPerBlock = attr_of(dev, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK);
    prop->totalConstantMemory = attr_of(dev, CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY);
    prop->SIMDWidth = attr_of(dev, CU_DEVICE_ATTRIBUTE_WARP_SIZE);
    prop->memPitch = attr_of(dev, CU_DEVICE_ATTRIBUTE_MAX_PITCH);
    prop->regsPerBlock = attr_of(dev, CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK);
    prop->clockRate = attr_of(dev, CU_DEVICE_ATTRIBUTE_CLOCK_RATE);
    prop->textureAlign = attr_of(dev, CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT);
    return CUDA_SUCCESS;
}

CUresult cuDeviceCanAccessPeer(int *canAccessPeer, CUdevice dev, CUdevice peerDev)
{
    CHECK_DEV(dev);
    if (!canAccessPeer || peerDev < 0 || peerDev >= rgpu_device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    *canAccessPeer = 0;
    return CUDA_SUCCESS;
}

CUresult cuModuleGetLoadingMode(CUmoduleLoadingMode *mode)
{
    if (!mode)
        return CUDA_ERROR_INVALID_VALUE;
    *mode = CU_MODULE_LAZY_LOADING;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetExecAffinitySupport(int *pi, CUexecAffinityType type, CUdevice dev)
{
    CHECK_DEV(dev);
    (void)type;
    if (!pi)
        return CUDA_ERROR_INVALID_VALUE;
    *pi = 0; /* execution affinity (SM partitions) is not offered */
    return CUDA_SUCCESS;
}

/* Profiler markers: there is no profiler attached to a remote GPU here; they succeed. */
CUresult cuProfilerStart(void)
{
    return CUDA_SUCCESS;
}

CUresult cuProfilerStop(void)
{
    return CUDA_SUCCESS;
}
