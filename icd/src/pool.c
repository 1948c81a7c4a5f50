/* The pool as this process sees it: the daemon's Vulkan-capable GPUs (CONTROL list_gpus), one
 * server session per server (open_session), one VkInstance of the ICD's own on each server and
 * that server's physical-device facts (vkRgpuGetPhysicalDeviceFacts), fetched once and kept
 * for the life of the process: every instance and physical-device query is answered from them. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "rgpu_icd.h"

rgpu_gpu *rgpu_gpus;
int rgpu_ngpus;

static rgpu_server *servers[64];
static int nservers;
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static int pool_state; /* 0 not tried, 1 ready, -1 failed */
static VkResult pool_error;
static _Atomic uint64_t next_id = 0x10000;

uint64_t rgpu_new_id(void)
{
    return atomic_fetch_add(&next_id, 1);
}

static VkResult control_simple(const char *op, const char *key, int64_t value, rgpu_reply *out)
{
    mp_buf b;
    mp_init(&b);
    mp_map(&b, key ? 2 : 1);
    mp_str(&b, "op");
    mp_str(&b, op);
    if (key) {
        mp_str(&b, key);
        mp_int(&b, value);
    }
    VkResult st = rgpu_control(&b, out);
    mp_free(&b);
    return st;
}

/* The ICD's instance on a server: Vulkan 1.3 (the facts need >= 1.1), no layers/extensions. */
static VkResult server_instance(rgpu_server *srv)
{
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "rgpu ICD",
                             .pEngineName = "rgpu",
                             .apiVersion = VK_API_VERSION_1_3};
    VkInstanceCreateInfo info = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                 .pApplicationInfo = &app};
    srv->instance_id = rgpu_new_id();
    rgpu_enc e = {srv, 0};
    mp_buf b;
    mp_init(&b);
    mp_array(&b, 2);
    mp_str(&b, "vkCreateInstance");
    mp_array(&b, 3);
    rgpu_encode_struct(&e, &b, rgpu_struct_by_name("VkInstanceCreateInfo"), (uint8_t *)&info);
    mp_nil(&b);
    mp_uint(&b, srv->instance_id);
    rgpu_reply r;
    VkResult st = rgpu_vk_call(srv, &b, NULL, 0, &r);
    mp_free(&b);
    rgpu_reply_free(&r);
    if (st != VK_SUCCESS)
        return st;

    mp_init(&b);
    mp_array(&b, 2);
    mp_str(&b, "vkRgpuGetPhysicalDeviceFacts");
    mp_array(&b, 1);
    mp_uint(&b, srv->instance_id);
    st = rgpu_vk_call(srv, &b, NULL, 0, &r);
    mp_free(&b);
    if (st != VK_SUCCESS) {
        rgpu_reply_free(&r);
        return st;
    }
    /* keep the decoded reply: [VK_SUCCESS, facts] */
    srv->facts = r.doc;
    srv->facts_src = r.doc_src;
    r.doc.nodes = NULL;
    r.doc_src = NULL;
    rgpu_reply_free(&r);
    srv->facts_root = mp_array_at(&srv->facts, 0, 1);
    if (srv->facts_root < 0 || srv->facts.nodes[srv->facts_root].type != MP_MAP)
        return VK_ERROR_INITIALIZATION_FAILED;
    return VK_SUCCESS;
}

static rgpu_server *server_for(uint32_t session, uint64_t server_id, VkResult *st)
{
    for (int i = 0; i < nservers; i++)
        if (servers[i]->session == session)
            return servers[i];
    if (nservers == (int)(sizeof servers / sizeof servers[0])) {
        *st = VK_ERROR_INITIALIZATION_FAILED;
        return NULL;
    }
    rgpu_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        *st = VK_ERROR_OUT_OF_HOST_MEMORY;
        return NULL;
    }
    srv->session = session;
    srv->server_id = server_id;
    *st = server_instance(srv);
    if (*st != VK_SUCCESS) {
        free(srv);
        return NULL;
    }
    servers[nservers++] = srv;
    return srv;
}

static int find_device(rgpu_server *srv, int vulkan_index, uint64_t *pd_id)
{
    const mp_doc *d = &srv->facts;
    int list = mp_map_get(d, srv->facts_root, "physical_devices");
    if (list < 0 || d->nodes[list].type != MP_ARRAY)
        return -1;
    uint32_t k = 0;
    for (int c = mp_first(d, list); c >= 0 && k < d->nodes[list].count; c = mp_next(d, c), k++) {
        int64_t id;
        if (mp_get_i64(d, mp_map_get(d, c, "id"), &id) != 0)
            continue;
        if ((uint64_t)(id & 0xffffffff) == (uint64_t)vulkan_index + 1) {
            *pd_id = (uint64_t)id;
            return c;
        }
    }
    return -1;
}

static void index_formats(rgpu_gpu *g)
{
    const mp_doc *d = &g->srv->facts;
    int list = mp_map_get(d, g->facts_node, "formats");
    if (list < 0 || d->nodes[list].type != MP_ARRAY)
        return;
    uint32_t n = d->nodes[list].count;
    g->format_keys = calloc(n ? n : 1, sizeof *g->format_keys);
    g->format_nodes = calloc(n ? n : 1, sizeof *g->format_nodes);
    if (!g->format_keys || !g->format_nodes)
        return;
    uint32_t k = 0;
    for (int c = mp_first(d, list); c >= 0 && k < n; c = mp_next(d, c), k++) {
        int64_t fmt = -1;
        mp_get_i64(d, mp_array_at(d, c, 0), &fmt);
        g->format_keys[k] = (int32_t)fmt;
        g->format_nodes[k] = mp_array_at(d, c, 1);
    }
    g->nformats = (int)k;
}

static VkResult pool_init_locked(void)
{
    VkResult st = rgpu_connect();
    if (st != VK_SUCCESS)
        return st;
    rgpu_reply r;
    st = control_simple("list_gpus", NULL, 0, &r);
    if (st != VK_SUCCESS) {
        fprintf(stderr, "rgpu: the rgpu daemon did not list its GPUs (%s)\n",
                r.message[0] ? r.message : "no answer");
        return VK_ERROR_INITIALIZATION_FAILED;
    }
    const mp_doc *d = &r.doc;
    uint32_t n = d->n && d->nodes[0].type == MP_ARRAY ? d->nodes[0].count : 0;
    rgpu_gpus = calloc(n ? n : 1, sizeof *rgpu_gpus);
    if (!rgpu_gpus) {
        rgpu_reply_free(&r);
        return VK_ERROR_OUT_OF_HOST_MEMORY;
    }
    uint32_t k = 0;
    for (int c = mp_first(d, 0); c >= 0 && k < n; c = mp_next(d, c), k++) {
        int64_t vulkan = 0, index = -1, vindex = -1, server_id = 0;
        mp_get_i64(d, mp_map_get(d, c, "vulkan"), &vulkan);
        mp_get_i64(d, mp_map_get(d, c, "index"), &index);
        mp_get_i64(d, mp_map_get(d, c, "vulkan_index"), &vindex);
        mp_get_i64(d, mp_map_get(d, c, "server_id"), &server_id);
        if (!vulkan || index < 0 || vindex < 0)
            continue;
        rgpu_reply s;
        VkResult os = control_simple("open_session", "gpu", index, &s);
        if (os != VK_SUCCESS) {
            fprintf(stderr, "rgpu: cannot open a session for pool GPU %lld: %s\n",
                    (long long)index, s.message[0] ? s.message : "no answer");
            continue;
        }
        int64_t session = 0;
        mp_get_i64(&s.doc, mp_map_get(&s.doc, 0, "session"), &session);
        rgpu_reply_free(&s);
        VkResult ss;
        rgpu_server *srv = server_for((uint32_t)session, (uint64_t)server_id, &ss);
        if (!srv) {
            fprintf(stderr, "rgpu: pool GPU %lld: the server's Vulkan facts are unavailable "
                    "(VkResult %d)\n", (long long)index, (int)ss);
            continue;
        }
        rgpu_gpu *g = &rgpu_gpus[rgpu_ngpus];
        g->pool_index = (int)index;
        g->vulkan_index = (int)vindex;
        g->srv = srv;
        g->facts_node = find_device(srv, (int)vindex, &g->pd_id);
        if (g->facts_node < 0)
            continue;
        index_formats(g);
        rgpu_ngpus++;
    }
    rgpu_reply_free(&r);
    RGPU_DEBUG("%d Vulkan GPU(s) in the pool", rgpu_ngpus);
    return VK_SUCCESS;
}

VkResult rgpu_pool_init(void)
{
    pthread_mutex_lock(&pool_mu);
    if (pool_state == 0) {
        pool_error = pool_init_locked();
        pool_state = pool_error == VK_SUCCESS ? 1 : -1;
    }
    VkResult st = pool_error;
    pthread_mutex_unlock(&pool_mu);
    return st;
}

/* The loader unloads the driver after the last vkDestroyInstance (and may load it again). */
__attribute__((destructor)) static void pool_fini(void)
{
    for (int i = 0; i < rgpu_ngpus; i++) {
        free(rgpu_gpus[i].format_keys);
        free(rgpu_gpus[i].format_nodes);
    }
    free(rgpu_gpus);
    rgpu_gpus = NULL;
    rgpu_ngpus = 0;
    for (int i = 0; i < nservers; i++) {
        mp_doc_free(&servers[i]->facts);
        free(servers[i]->facts_src);
        free(servers[i]);
    }
    nservers = 0;
    pool_state = 0;
}

int rgpu_facts_gpu_field(rgpu_gpu *g, const char *key)
{
    return mp_map_get(&g->srv->facts, g->facts_node, key);
}

void *rgpu_handle_from_id(const char *type, uint64_t id, rgpu_server *srv)
{
    (void)type;
    (void)id;
    (void)srv;
    return NULL; /* physical-device handles are answered locally (groups) */
}
