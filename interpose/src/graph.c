/* CUDA graphs, built and replayed in the shim.
 *
 * A graph is a set of nodes (kernel launch, copy, memset, host function, empty) with
 * dependencies, made explicitly (cuGraphAdd*Node) or by stream capture: between
 * cuStreamBeginCapture and cuStreamEndCapture the work an application queues on a capturing
 * stream is recorded as nodes instead of being run, each depending on what the stream queued
 * last; events recorded on a capturing stream and waited for on another fork the capture onto
 * that stream and join it back. Kernel arguments are copied when a node is made, as CUDA does.
 * Instantiation orders a copy of the nodes topologically; cuGraphLaunch queues them, in that
 * order, on the launch stream with the same calls an application would make, so they reach
 * the server in one stream order that honours every dependency.
 *
 * Memory nodes (cuGraphAddMemAllocNode, cudaMallocAsync/cudaFreeAsync in a capture): the
 * address an allocation node hands out must hold for every launch, so the memory is allocated
 * when the node is made and held by the graphs and executable graphs that contain the node
 * until the last of them is destroyed; launches allocate and free nothing, and a free of that
 * address outside a graph leaves it to them. */
#include <stdlib.h>
#include <string.h>

#include "coherence.h"

#define GRAPH_MAGIC 0x52475248u
#define NODE_MAGIC 0x52474e44u
#define EXEC_MAGIC 0x52474558u

typedef struct rgpu_gnode rgpu_gnode;
typedef struct rgpu_graph rgpu_graph;

/* Memory of an allocation node, shared by the node's copies (clones, executable graphs). */
typedef struct graph_mem {
    CUdeviceptr ptr;
    size_t size;
    int refs;
    struct graph_mem *next;
} graph_mem;

struct rgpu_gnode {
    uint32_t magic;
    rgpu_graph *graph;
    CUgraphNodeType type;
    rgpu_gnode **deps;
    size_t ndeps;
    /* CU_GRAPH_NODE_TYPE_KERNEL */
    CUDA_KERNEL_NODE_PARAMS kernel; /* kernelParams point into args/params below */
    uint8_t *params;
    size_t params_len;
    void **args;
    size_t nargs;
    /* CU_GRAPH_NODE_TYPE_MEMCPY */
    CUDA_MEMCPY3D copy;
    /* CU_GRAPH_NODE_TYPE_MEMSET */
    CUDA_MEMSET_NODE_PARAMS memset;
    /* CU_GRAPH_NODE_TYPE_HOST */
    CUDA_HOST_NODE_PARAMS host;
    /* CU_GRAPH_NODE_TYPE_MEM_ALLOC (mem, alloc) and CU_GRAPH_NODE_TYPE_MEM_FREE (free_ptr) */
    graph_mem *mem;
    CUDA_MEM_ALLOC_NODE_PARAMS alloc;
    CUdeviceptr free_ptr;
    /* CU_GRAPH_NODE_TYPE_EVENT_RECORD / _WAIT_EVENT */
    CUevent event;
    /* CU_GRAPH_NODE_TYPE_GRAPH: the node's own copy of the child graph */
    rgpu_graph *child;
    rgpu_gnode *origin; /* in an executable graph: the node it was instantiated from */
    int disabled;       /* in an executable graph: cuGraphNodeSetEnabled(..., 0) */
};

struct rgpu_graph {
    uint32_t magic;
    rgpu_gnode **nodes;
    size_t n, cap;
};

typedef struct {
    uint32_t magic;
    rgpu_gnode **nodes; /* copies, in launch order */
    size_t n;
    unsigned long long flags;
} rgpu_exec;

/* Stream capture: the streams capturing now, each with the nodes its next node depends on,
 * and the events recorded during a capture (for fork and join). */
typedef struct {
    rgpu_graph *graph;
    uint64_t id;
    CUstream origin;
    CUstreamCaptureMode mode;
    int invalidated;
} capture;

typedef struct {
    CUstream stream;
    capture *cap;
    rgpu_gnode **tail;
    size_t ntail;
} capturing_stream;

typedef struct {
    CUevent event;
    capture *cap;
    rgpu_gnode **nodes;
    size_t n;
} captured_event;

static pthread_mutex_t graph_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t mem_mu = PTHREAD_MUTEX_INITIALIZER;
static graph_mem *graph_mems;
static uint64_t graph_mem_used, graph_mem_high;
static capturing_stream *cstreams;
static size_t n_cstreams, cap_cstreams;
static captured_event *cevents;
static size_t n_cevents, cap_cevents;
static uint64_t next_capture_id = 1;

static int grow(void **arr, size_t *cap, size_t n, size_t item)
{
    if (n < *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 8;
    void *p = realloc(*arr, c * item);
    if (!p)
        return -1;
    *arr = p;
    *cap = c;
    return 0;
}

static rgpu_graph *graph_check(CUgraph h)
{
    rgpu_graph *g = (rgpu_graph *)h;
    return g && g->magic == GRAPH_MAGIC ? g : NULL;
}

static rgpu_gnode *node_check(CUgraphNode h)
{
    rgpu_gnode *n = (rgpu_gnode *)h;
    return n && n->magic == NODE_MAGIC && n->graph ? n : NULL;
}

static rgpu_exec *exec_check(CUgraphExec h)
{
    rgpu_exec *e = (rgpu_exec *)h;
    return e && e->magic == EXEC_MAGIC ? e : NULL;
}

/* ---- memory of allocation nodes ---------------------------------------------------------- */

static CUresult graph_mem_new(size_t size, graph_mem **out)
{
    graph_mem *m = calloc(1, sizeof *m);
    if (!m)
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult st = cuMemAlloc_v2(&m->ptr, size);
    if (st != CUDA_SUCCESS) {
        free(m);
        return st;
    }
    m->size = size;
    m->refs = 1;
    pthread_mutex_lock(&mem_mu);
    m->next = graph_mems;
    graph_mems = m;
    graph_mem_used += size;
    if (graph_mem_used > graph_mem_high)
        graph_mem_high = graph_mem_used;
    pthread_mutex_unlock(&mem_mu);
    *out = m;
    return CUDA_SUCCESS;
}

static void graph_mem_ref(graph_mem *m)
{
    if (m)
        __atomic_add_fetch(&m->refs, 1, __ATOMIC_ACQ_REL);
}

static void graph_mem_unref(graph_mem *m)
{
    if (!m || __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    pthread_mutex_lock(&mem_mu);
    for (graph_mem **p = &graph_mems; *p; p = &(*p)->next)
        if (*p == m) {
            *p = m->next;
            break;
        }
    graph_mem_used -= m->size;
    pthread_mutex_unlock(&mem_mu);
    cuMemFree_v2(m->ptr); /* no longer a graph's: really freed */
    free(m);
}

int rgpu_graph_owns(CUdeviceptr p)
{
    if (!__atomic_load_n(&graph_mems, __ATOMIC_ACQUIRE))
        return 0;
    pthread_mutex_lock(&mem_mu);
    int yes = 0;
    for (graph_mem *m = graph_mems; m && !yes; m = m->next)
        yes = m->ptr == p;
    pthread_mutex_unlock(&mem_mu);
    return yes;
}

CUresult cuDeviceGraphMemTrim(CUdevice device)
{
    /* memory not held by a graph was freed already: nothing to give back */
    return device >= 0 && device < rgpu_device_count ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

CUresult cuDeviceGetGraphMemAttribute(CUdevice device, CUgraphMem_attribute attr, void *value)
{
    if (device < 0 || device >= rgpu_device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    if (!value)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&mem_mu);
    CUresult st = CUDA_SUCCESS;
    switch (attr) {
    case CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT:
    case CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT:
        *(cuuint64_t *)value = graph_mem_used;
        break;
    case CU_GRAPH_MEM_ATTR_USED_MEM_HIGH:
    case CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH:
        *(cuuint64_t *)value = graph_mem_high;
        break;
    default:
        st = CUDA_ERROR_INVALID_VALUE;
    }
    pthread_mutex_unlock(&mem_mu);
    return st;
}

CUresult cuDeviceSetGraphMemAttribute(CUdevice device, CUgraphMem_attribute attr, void *value)
{
    if (device < 0 || device >= rgpu_device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    if (!value || (attr != CU_GRAPH_MEM_ATTR_USED_MEM_HIGH &&
                   attr != CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH) || *(cuuint64_t *)value != 0)
        return CUDA_ERROR_INVALID_VALUE; /* only the high marks, and only back to zero */
    pthread_mutex_lock(&mem_mu);
    graph_mem_high = graph_mem_used;
    pthread_mutex_unlock(&mem_mu);
    return CUDA_SUCCESS;
}

CUresult cuGraphDestroy(CUgraph hGraph);
CUresult cuGraphClone(CUgraph *phGraphClone, CUgraph originalGraph);

static void node_free(rgpu_gnode *n)
{
    if (!n)
        return;
    graph_mem_unref(n->mem);
    if (n->child)
        cuGraphDestroy((CUgraph)n->child);
    n->magic = 0;
    free(n->deps);
    free(n->params);
    free(n->args);
    free(n);
}

/* ---- node contents ----------------------------------------------------------------------- */

/* Copy a launch's arguments (kernelParams or the extra buffer) into the node, by the kernel's
 * parameter layout. */
static CUresult set_kernel(rgpu_gnode *n, const CUDA_KERNEL_NODE_PARAMS *p)
{
    CUfunction f = p->func ? p->func : (CUfunction)p->kern;
    if (!f)
        return CUDA_ERROR_INVALID_VALUE;
    /* a node the launch would refuse is refused when added or set, as by the driver */
    CUresult st = rgpu_check_launch(f, rgpu_current_dev(), p->gridDimX, p->gridDimY,
                                    p->gridDimZ, p->blockDimX, p->blockDimY, p->blockDimZ,
                                    p->sharedMemBytes);
    if (st != CUDA_SUCCESS)
        return st;
    uint8_t *buf = NULL;
    size_t len = 0, nargs = 0;
    void **args = NULL;
    if (p->extra) {
        void *src = NULL;
        int have = 0;
        for (int i = 0; p->extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
            if (p->extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER) {
                src = p->extra[i + 1];
            } else if (p->extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE) {
                len = *(size_t *)p->extra[i + 1];
                have = 1;
            } else {
                return CUDA_ERROR_INVALID_VALUE;
            }
        }
        if (!have || (len && !src))
            return CUDA_ERROR_INVALID_VALUE;
        buf = malloc(len ? len : 1);
        if (!buf)
            return CUDA_ERROR_OUT_OF_MEMORY;
        if (len)
            memcpy(buf, src, len);
    } else {
        size_t off, size;
        while (cuFuncGetParamInfo(f, nargs, &off, &size) == CUDA_SUCCESS) {
            if (off + size > len)
                len = off + size;
            nargs++;
        }
        if (nargs && !p->kernelParams)
            return CUDA_ERROR_INVALID_VALUE;
        buf = calloc(1, len ? len : 1);
        args = calloc(nargs ? nargs : 1, sizeof *args);
        if (!buf || !args) {
            free(buf);
            free(args);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        for (size_t i = 0; i < nargs; i++) {
            cuFuncGetParamInfo(f, i, &off, &size);
            if (size)
                memcpy(buf + off, p->kernelParams[i], size);
            args[i] = buf + off;
        }
    }
    free(n->params);
    free(n->args);
    n->kernel = *p;
    n->kernel.func = f;
    n->kernel.kernelParams = p->extra ? NULL : args;
    n->kernel.extra = NULL;
    n->params = buf;
    n->params_len = len;
    n->args = args;
    n->nargs = nargs;
    n->type = CU_GRAPH_NODE_TYPE_KERNEL;
    return CUDA_SUCCESS;
}

static CUresult node_copy_contents(rgpu_gnode *dst, const rgpu_gnode *src)
{
    dst->type = src->type;
    dst->copy = src->copy;
    dst->memset = src->memset;
    dst->host = src->host;
    dst->alloc = src->alloc;
    dst->free_ptr = src->free_ptr;
    dst->mem = src->mem;
    graph_mem_ref(dst->mem);
    dst->event = src->event;
    if (src->child) {
        CUgraph c;
        CUresult st = cuGraphClone(&c, (CUgraph)src->child);
        if (st != CUDA_SUCCESS)
            return st;
        dst->child = (rgpu_graph *)c;
    }
    if (src->type != CU_GRAPH_NODE_TYPE_KERNEL)
        return CUDA_SUCCESS;
    CUDA_KERNEL_NODE_PARAMS p = src->kernel;
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, src->params, CU_LAUNCH_PARAM_BUFFER_SIZE,
                     (void *)&src->params_len, CU_LAUNCH_PARAM_END};
    if (!src->args) {
        p.kernelParams = NULL;
        p.extra = extra;
    }
    return set_kernel(dst, &p);
}

static CUresult run_graph(rgpu_graph *g, CUstream s);

/* Queue one node's work on `s`, as the application would have. */
static CUresult run_node(rgpu_gnode *n, CUstream s)
{
    switch (n->type) {
    case CU_GRAPH_NODE_TYPE_EVENT_RECORD:
        return cuEventRecord(n->event, s);
    case CU_GRAPH_NODE_TYPE_WAIT_EVENT:
        return cuStreamWaitEvent(s, n->event, 0);
    case CU_GRAPH_NODE_TYPE_GRAPH:
        return run_graph(n->child, s);
    case CU_GRAPH_NODE_TYPE_KERNEL: {
        const CUDA_KERNEL_NODE_PARAMS *k = &n->kernel;
        void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, n->params, CU_LAUNCH_PARAM_BUFFER_SIZE,
                         &n->params_len, CU_LAUNCH_PARAM_END};
        return cuLaunchKernel(k->func, k->gridDimX, k->gridDimY, k->gridDimZ, k->blockDimX,
                              k->blockDimY, k->blockDimZ, k->sharedMemBytes, s, NULL, extra);
    }
    case CU_GRAPH_NODE_TYPE_MEMCPY:
        return cuMemcpy3DAsync_v2(&n->copy, s);
    case CU_GRAPH_NODE_TYPE_MEMSET: {
        const CUDA_MEMSET_NODE_PARAMS *m = &n->memset;
        size_t pitch = m->height > 1 ? m->pitch : m->width * m->elementSize;
        switch (m->elementSize) {
        case 1:
            return cuMemsetD2D8Async(m->dst, pitch, (unsigned char)m->value, m->width, m->height,
                                     s);
        case 2:
            return cuMemsetD2D16Async(m->dst, pitch, (unsigned short)m->value, m->width,
                                      m->height, s);
        case 4:
            return cuMemsetD2D32Async(m->dst, pitch, m->value, m->width, m->height, s);
        default:
            return CUDA_ERROR_INVALID_VALUE;
        }
    }
    case CU_GRAPH_NODE_TYPE_HOST:
        return cuLaunchHostFunc(s, n->host.fn, n->host.userData);
    case CU_GRAPH_NODE_TYPE_MEM_FREE:
        /* memory from outside the graph is freed by the launch (a second launch frees it
         * again, which CUDA leaves undefined); a graph's own stays for later launches */
        if (!rgpu_graph_owns(n->free_ptr))
            return cuMemFreeAsync(n->free_ptr, s);
        return CUDA_SUCCESS;
    case CU_GRAPH_NODE_TYPE_EMPTY:
    case CU_GRAPH_NODE_TYPE_MEM_ALLOC: /* allocated for the graph's lifetime */
        return CUDA_SUCCESS;
    default:
        return CUDA_ERROR_NOT_SUPPORTED;
    }
}

/* ---- graphs and nodes -------------------------------------------------------------------- */

/* A new node of `g` depending on deps (all of g); the caller fills in its contents. */
static CUresult node_new(rgpu_graph *g, const CUgraphNode *deps, size_t ndeps, rgpu_gnode **out)
{
    if (ndeps && !deps)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < ndeps; i++) {
        rgpu_gnode *d = node_check(deps[i]);
        if (!d || d->graph != g)
            return CUDA_ERROR_INVALID_VALUE;
    }
    rgpu_gnode *n = calloc(1, sizeof *n);
    if (!n)
        return CUDA_ERROR_OUT_OF_MEMORY;
    n->deps = calloc(ndeps ? ndeps : 1, sizeof *n->deps);
    if (!n->deps || grow((void **)&g->nodes, &g->cap, g->n, sizeof *g->nodes) != 0) {
        free(n->deps);
        free(n);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (size_t i = 0; i < ndeps; i++)
        n->deps[i] = (rgpu_gnode *)deps[i];
    n->ndeps = ndeps;
    n->magic = NODE_MAGIC;
    n->graph = g;
    n->type = CU_GRAPH_NODE_TYPE_EMPTY;
    g->nodes[g->n++] = n;
    *out = n;
    return CUDA_SUCCESS;
}

static void node_unlink(rgpu_graph *g, rgpu_gnode *n)
{
    for (size_t i = 0; i < g->n; i++) {
        if (g->nodes[i] == n) {
            memmove(&g->nodes[i], &g->nodes[i + 1], (g->n - i - 1) * sizeof *g->nodes);
            g->n--;
            break;
        }
    }
    for (size_t i = 0; i < g->n; i++) {
        rgpu_gnode *m = g->nodes[i];
        size_t k = 0;
        for (size_t j = 0; j < m->ndeps; j++)
            if (m->deps[j] != n)
                m->deps[k++] = m->deps[j];
        m->ndeps = k;
    }
}

CUresult cuGraphCreate(CUgraph *phGraph, unsigned int flags)
{
    if (!phGraph || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_graph *g = calloc(1, sizeof *g);
    if (!g)
        return CUDA_ERROR_OUT_OF_MEMORY;
    g->magic = GRAPH_MAGIC;
    *phGraph = (CUgraph)g;
    return CUDA_SUCCESS;
}

CUresult cuGraphDestroy(CUgraph hGraph)
{
    rgpu_graph *g = graph_check(hGraph);
    if (!g)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < g->n; i++)
        node_free(g->nodes[i]);
    free(g->nodes);
    g->magic = 0;
    free(g);
    return CUDA_SUCCESS;
}

CUresult cuGraphDestroyNode(CUgraphNode hNode)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n)
        return CUDA_ERROR_INVALID_VALUE;
    node_unlink(n->graph, n);
    node_free(n);
    return CUDA_SUCCESS;
}

CUresult cuGraphAddKernelNode_v2(CUgraphNode *phGraphNode, CUgraph hGraph,
                                 const CUgraphNode *dependencies, size_t numDependencies,
                                 const CUDA_KERNEL_NODE_PARAMS *nodeParams)
{
    rgpu_graph *g = graph_check(hGraph);
    if (!g || !phGraphNode || !nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_gnode *n;
    CUresult st = node_new(g, dependencies, numDependencies, &n);
    if (st != CUDA_SUCCESS)
        return st;
    st = set_kernel(n, nodeParams);
    if (st != CUDA_SUCCESS) {
        node_unlink(g, n);
        node_free(n);
        return st;
    }
    *phGraphNode = (CUgraphNode)n;
    return CUDA_SUCCESS;
}

CUresult cuGraphKernelNodeGetParams_v2(CUgraphNode hNode, CUDA_KERNEL_NODE_PARAMS *nodeParams)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || n->type != CU_GRAPH_NODE_TYPE_KERNEL || !nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    *nodeParams = n->kernel;
    return CUDA_SUCCESS;
}

CUresult cuGraphKernelNodeSetParams_v2(CUgraphNode hNode, const CUDA_KERNEL_NODE_PARAMS *nodeParams)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || n->type != CU_GRAPH_NODE_TYPE_KERNEL || !nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    return set_kernel(n, nodeParams);
}

static CUresult add_simple(CUgraphNode *out, CUgraph hGraph, const CUgraphNode *deps, size_t nd,
                           rgpu_gnode **n)
{
    rgpu_graph *g = graph_check(hGraph);
    if (!g || !out)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult st = node_new(g, deps, nd, n);
    if (st == CUDA_SUCCESS)
        *out = (CUgraphNode)*n;
    return st;
}

CUresult cuGraphAddMemcpyNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                              const CUgraphNode *dependencies, size_t numDependencies,
                              const CUDA_MEMCPY3D *copyParams, CUcontext ctx)
{
    (void)ctx;
    if (!copyParams)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_gnode *n;
    CUresult st = add_simple(phGraphNode, hGraph, dependencies, numDependencies, &n);
    if (st == CUDA_SUCCESS) {
        n->type = CU_GRAPH_NODE_TYPE_MEMCPY;
        n->copy = *copyParams;
    }
    return st;
}

CUresult cuGraphMemcpyNodeGetParams(CUgraphNode hNode, CUDA_MEMCPY3D *nodeParams)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || n->type != CU_GRAPH_NODE_TYPE_MEMCPY || !nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    *nodeParams = n->copy;
    return CUDA_SUCCESS;
}

CUresult cuGraphMemcpyNodeSetParams(CUgraphNode hNode, const CUDA_MEMCPY3D *nodeParams)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || n->type != CU_GRAPH_NODE_TYPE_MEMCPY || !nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    n->copy = *nodeParams;
    return CUDA_SUCCESS;
}

static int memset_ok(const CUDA_MEMSET_NODE_PARAMS *p)
{
    return p && (p->elementSize == 1 || p->elementSize == 2 || p->elementSize == 4) &&
           p->dst && p->height >= 1;
}

CUresult cuGraphAddMemsetNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                              const CUgraphNode *dependencies, size_t numDependencies,
                              const CUDA_MEMSET_NODE_PARAMS *memsetParams, CUcontext ctx)
{
    (void)ctx;
    if (!memset_ok(memsetParams))
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_gnode *n;
    CUresult st = add_simple(phGraphNode, hGraph, dependencies, numDependencies, &n);
    if (st == CUDA_SUCCESS) {
        n->type = CU_GRAPH_NODE_TYPE_MEMSET;
        n->memset = *memsetParams;
    }
    return st;
}

CUresult cuGraphMemsetNodeGetParams(CUgraphNode hNode, CUDA_MEMSET_NODE_PARAMS *nodeParams)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || n->type != CU_GRAPH_NODE_TYPE_MEMSET || !nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    *nodeParams = n->memset;
    return CUDA_SUCCESS;
}

CUresult cuGraphMemsetNodeSetParams(CUgraphNode hNode, const CUDA_MEMSET_NODE_PARAMS *nodeParams)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || n->type != CU_GRAPH_NODE_TYPE_MEMSET || !memset_ok(nodeParams))
        return CUDA_ERROR_INVALID_VALUE;
    n->memset = *nodeParams;
    return CUDA_SUCCESS;
}

CUresult cuGraphAddHostNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                            const CUgraphNode *dependencies, size_t numDependencies,
                            const CUDA_HOST_NODE_PARAMS *nodeParams)
{
    if (!nodeParams || !nodeParams->fn)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_gnode *n;
    CUresult st = add_simple(phGraphNode, hGraph, dependencies, numDependencies, &n);
    if (st == CUDA_SUCCESS) {
        n->type = CU_GRAPH_NODE_TYPE_HOST;
        n->host = *nodeParams;
    }
    return st;
}

CUresult cuGraphHostNodeGetParams(CUgraphNode hNode, CUDA_HOST_NODE_PARAMS *nodeParams)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || n->type != CU_GRAPH_NODE_TYPE_HOST || !nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    *nodeParams = n->host;
    return CUDA_SUCCESS;
}

CUresult cuGraphHostNodeSetParams(CUgraphNode hNode, const CUDA_HOST_NODE_PARAMS *nodeParams)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || n->type != CU_GRAPH_NODE_TYPE_HOST || !nodeParams || !nodeParams->fn)
        return CUDA_ERROR_INVALID_VALUE;
    n->host = *nodeParams;
    return CUDA_SUCCESS;
}

CUresult cuGraphAddEmptyNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                             const CUgraphNode *dependencies, size_t numDependencies)
{
    rgpu_gnode *n;
    return add_simple(phGraphNode, hGraph, dependencies, numDependencies, &n);
}

CUresult cuGraphAddMemAllocNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                                const CUgraphNode *dependencies, size_t numDependencies,
                                CUDA_MEM_ALLOC_NODE_PARAMS *nodeParams)
{
    if (!nodeParams || nodeParams->bytesize == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (nodeParams->poolProps.allocType != CU_MEM_ALLOCATION_TYPE_PINNED ||
        nodeParams->poolProps.location.type != CU_MEM_LOCATION_TYPE_DEVICE) {
        rgpu_report_unsupported("cuGraphAddMemAllocNode (memory not located on a device)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    rgpu_gnode *n;
    CUresult st = add_simple(phGraphNode, hGraph, dependencies, numDependencies, &n);
    if (st != CUDA_SUCCESS)
        return st;
    st = graph_mem_new(nodeParams->bytesize, &n->mem);
    if (st != CUDA_SUCCESS) {
        node_unlink(n->graph, n);
        node_free(n);
        return st;
    }
    n->type = CU_GRAPH_NODE_TYPE_MEM_ALLOC;
    nodeParams->dptr = n->mem->ptr;
    n->alloc = *nodeParams;
    n->alloc.accessDescs = NULL; /* the caller's array need not outlive the call */
    n->alloc.accessDescCount = 0;
    return CUDA_SUCCESS;
}

CUresult cuGraphMemAllocNodeGetParams(CUgraphNode hNode, CUDA_MEM_ALLOC_NODE_PARAMS *params_out)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || n->type != CU_GRAPH_NODE_TYPE_MEM_ALLOC || !params_out)
        return CUDA_ERROR_INVALID_VALUE;
    *params_out = n->alloc;
    return CUDA_SUCCESS;
}

CUresult cuGraphAddMemFreeNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                               const CUgraphNode *dependencies, size_t numDependencies,
                               CUdeviceptr dptr)
{
    if (!rgpu_range_device(dptr, NULL))
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_gnode *n;
    CUresult st = add_simple(phGraphNode, hGraph, dependencies, numDependencies, &n);
    if (st == CUDA_SUCCESS) {
        n->type = CU_GRAPH_NODE_TYPE_MEM_FREE;
        n->free_ptr = dptr;
    }
    return st;
}

CUresult cuGraphMemFreeNodeGetParams(CUgraphNode hNode, CUdeviceptr *dptr_out)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || n->type != CU_GRAPH_NODE_TYPE_MEM_FREE || !dptr_out)
        return CUDA_ERROR_INVALID_VALUE;
    *dptr_out = n->free_ptr;
    return CUDA_SUCCESS;
}

CUresult cuGraphAddChildGraphNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                                  const CUgraphNode *dependencies, size_t numDependencies,
                                  CUgraph childGraph)
{
    if (!graph_check(childGraph) || childGraph == hGraph)
        return CUDA_ERROR_INVALID_VALUE;
    CUgraph c;
    CUresult st = cuGraphClone(&c, childGraph); /* the node keeps its own copy, as in CUDA */
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_gnode *n;
    st = add_simple(phGraphNode, hGraph, dependencies, numDependencies, &n);
    if (st != CUDA_SUCCESS) {
        cuGraphDestroy(c);
        return st;
    }
    n->type = CU_GRAPH_NODE_TYPE_GRAPH;
    n->child = (rgpu_graph *)c;
    return CUDA_SUCCESS;
}

CUresult cuGraphChildGraphNodeGetGraph(CUgraphNode hNode, CUgraph *phGraph)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || n->type != CU_GRAPH_NODE_TYPE_GRAPH || !phGraph)
        return CUDA_ERROR_INVALID_VALUE;
    *phGraph = (CUgraph)n->child;
    return CUDA_SUCCESS;
}

static CUresult add_event_node(CUgraphNode *out, CUgraph g, const CUgraphNode *deps, size_t nd,
                               CUevent e, CUgraphNodeType type)
{
    if (!e)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_gnode *n;
    CUresult st = add_simple(out, g, deps, nd, &n);
    if (st == CUDA_SUCCESS) {
        n->type = type;
        n->event = e;
    }
    return st;
}

CUresult cuGraphAddEventRecordNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                                   const CUgraphNode *dependencies, size_t numDependencies,
                                   CUevent event)
{
    return add_event_node(phGraphNode, hGraph, dependencies, numDependencies, event,
                          CU_GRAPH_NODE_TYPE_EVENT_RECORD);
}

CUresult cuGraphAddEventWaitNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                                 const CUgraphNode *dependencies, size_t numDependencies,
                                 CUevent event)
{
    return add_event_node(phGraphNode, hGraph, dependencies, numDependencies, event,
                          CU_GRAPH_NODE_TYPE_WAIT_EVENT);
}

static CUresult event_of(CUgraphNode h, CUgraphNodeType type, CUevent *out)
{
    rgpu_gnode *n = node_check(h);
    if (!n || n->type != type || !out)
        return CUDA_ERROR_INVALID_VALUE;
    *out = n->event;
    return CUDA_SUCCESS;
}

static CUresult set_event_of(rgpu_gnode *n, CUgraphNodeType type, CUevent e)
{
    if (!n || n->type != type || !e)
        return CUDA_ERROR_INVALID_VALUE;
    n->event = e;
    return CUDA_SUCCESS;
}

CUresult cuGraphEventRecordNodeGetEvent(CUgraphNode hNode, CUevent *event_out)
{
    return event_of(hNode, CU_GRAPH_NODE_TYPE_EVENT_RECORD, event_out);
}

CUresult cuGraphEventWaitNodeGetEvent(CUgraphNode hNode, CUevent *event_out)
{
    return event_of(hNode, CU_GRAPH_NODE_TYPE_WAIT_EVENT, event_out);
}

CUresult cuGraphEventRecordNodeSetEvent(CUgraphNode hNode, CUevent event)
{
    return set_event_of(node_check(hNode), CU_GRAPH_NODE_TYPE_EVENT_RECORD, event);
}

CUresult cuGraphEventWaitNodeSetEvent(CUgraphNode hNode, CUevent event)
{
    return set_event_of(node_check(hNode), CU_GRAPH_NODE_TYPE_WAIT_EVENT, event);
}

CUresult cuGraphNodeGetType(CUgraphNode hNode, CUgraphNodeType *type)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || !type)
        return CUDA_ERROR_INVALID_VALUE;
    *type = n->type;
    return CUDA_SUCCESS;
}

/* The documented count-then-fill protocol of the graph queries. */
static void fill_nodes(CUgraphNode *out, size_t *num, rgpu_gnode **items, size_t n)
{
    if (out) {
        for (size_t i = 0; i < *num; i++)
            out[i] = i < n ? (CUgraphNode)items[i] : NULL;
        if (*num > n)
            *num = n;
    } else {
        *num = n;
    }
}

CUresult cuGraphGetNodes(CUgraph hGraph, CUgraphNode *nodes, size_t *numNodes)
{
    rgpu_graph *g = graph_check(hGraph);
    if (!g || !numNodes)
        return CUDA_ERROR_INVALID_VALUE;
    fill_nodes(nodes, numNodes, g->nodes, g->n);
    return CUDA_SUCCESS;
}

CUresult cuGraphGetRootNodes(CUgraph hGraph, CUgraphNode *rootNodes, size_t *numRootNodes)
{
    rgpu_graph *g = graph_check(hGraph);
    if (!g || !numRootNodes)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_gnode **roots = calloc(g->n ? g->n : 1, sizeof *roots);
    if (!roots)
        return CUDA_ERROR_OUT_OF_MEMORY;
    size_t k = 0;
    for (size_t i = 0; i < g->n; i++)
        if (g->nodes[i]->ndeps == 0)
            roots[k++] = g->nodes[i];
    fill_nodes(rootNodes, numRootNodes, roots, k);
    free(roots);
    return CUDA_SUCCESS;
}

static void zero_edges(CUgraphEdgeData *e, size_t n)
{
    if (e)
        memset(e, 0, n * sizeof *e);
}

CUresult cuGraphNodeGetDependencies_v2(CUgraphNode hNode, CUgraphNode *dependencies,
                                       CUgraphEdgeData *edgeData, size_t *numDependencies)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || !numDependencies)
        return CUDA_ERROR_INVALID_VALUE;
    fill_nodes(dependencies, numDependencies, n->deps, n->ndeps);
    if (dependencies)
        zero_edges(edgeData, *numDependencies);
    return CUDA_SUCCESS;
}

CUresult cuGraphNodeGetDependentNodes_v2(CUgraphNode hNode, CUgraphNode *dependentNodes,
                                         CUgraphEdgeData *edgeData, size_t *numDependentNodes)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || !numDependentNodes)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_graph *g = n->graph;
    rgpu_gnode **out = calloc(g->n ? g->n : 1, sizeof *out);
    if (!out)
        return CUDA_ERROR_OUT_OF_MEMORY;
    size_t k = 0;
    for (size_t i = 0; i < g->n; i++)
        for (size_t j = 0; j < g->nodes[i]->ndeps; j++)
            if (g->nodes[i]->deps[j] == n) {
                out[k++] = g->nodes[i];
                break;
            }
    fill_nodes(dependentNodes, numDependentNodes, out, k);
    if (dependentNodes)
        zero_edges(edgeData, *numDependentNodes);
    free(out);
    return CUDA_SUCCESS;
}

CUresult cuGraphGetEdges_v2(CUgraph hGraph, CUgraphNode *from, CUgraphNode *to,
                            CUgraphEdgeData *edgeData, size_t *numEdges)
{
    rgpu_graph *g = graph_check(hGraph);
    if (!g || !numEdges || (!from) != (!to))
        return CUDA_ERROR_INVALID_VALUE;
    size_t k = 0;
    for (size_t i = 0; i < g->n; i++)
        for (size_t j = 0; j < g->nodes[i]->ndeps; j++) {
            if (from && k < *numEdges) {
                from[k] = (CUgraphNode)g->nodes[i]->deps[j];
                to[k] = (CUgraphNode)g->nodes[i];
                if (edgeData)
                    memset(&edgeData[k], 0, sizeof edgeData[k]);
            }
            k++;
        }
    if (from) {
        for (size_t i = k; i < *numEdges; i++)
            from[i] = to[i] = NULL;
        if (*numEdges > k)
            *numEdges = k;
    } else {
        *numEdges = k;
    }
    return CUDA_SUCCESS;
}

CUresult cuGraphAddDependencies_v2(CUgraph hGraph, const CUgraphNode *from, const CUgraphNode *to,
                                   const CUgraphEdgeData *edgeData, size_t numDependencies)
{
    (void)edgeData;
    rgpu_graph *g = graph_check(hGraph);
    if (!g || (numDependencies && (!from || !to)))
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < numDependencies; i++) {
        rgpu_gnode *a = node_check(from[i]), *b = node_check(to[i]);
        if (!a || !b || a->graph != g || b->graph != g || a == b)
            return CUDA_ERROR_INVALID_VALUE;
        rgpu_gnode **d = realloc(b->deps, (b->ndeps + 1) * sizeof *d);
        if (!d)
            return CUDA_ERROR_OUT_OF_MEMORY;
        b->deps = d;
        b->deps[b->ndeps++] = a;
    }
    return CUDA_SUCCESS;
}

CUresult cuGraphRemoveDependencies_v2(CUgraph hGraph, const CUgraphNode *from,
                                      const CUgraphNode *to, const CUgraphEdgeData *edgeData,
                                      size_t numDependencies)
{
    (void)edgeData;
    rgpu_graph *g = graph_check(hGraph);
    if (!g || (numDependencies && (!from || !to)))
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < numDependencies; i++) {
        rgpu_gnode *a = node_check(from[i]), *b = node_check(to[i]);
        if (!a || !b || b->graph != g)
            return CUDA_ERROR_INVALID_VALUE;
        size_t k = 0;
        for (size_t j = 0; j < b->ndeps; j++)
            if (b->deps[j] != a)
                b->deps[k++] = b->deps[j];
        if (k == b->ndeps)
            return CUDA_ERROR_INVALID_VALUE; /* no such edge */
        b->ndeps = k;
    }
    return CUDA_SUCCESS;
}

/* A copy of g with the same edges; each copy's `origin` is the node it was cloned from. */
CUresult cuGraphClone(CUgraph *phGraphClone, CUgraph originalGraph)
{
    rgpu_graph *g = graph_check(originalGraph);
    if (!g || !phGraphClone)
        return CUDA_ERROR_INVALID_VALUE;
    CUgraph h;
    CUresult st = cuGraphCreate(&h, 0);
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_graph *c = (rgpu_graph *)h;
    for (size_t i = 0; i < g->n && st == CUDA_SUCCESS; i++) {
        rgpu_gnode *n;
        st = node_new(c, NULL, 0, &n);
        if (st == CUDA_SUCCESS) {
            n->origin = g->nodes[i];
            st = node_copy_contents(n, g->nodes[i]);
        }
    }
    for (size_t i = 0; i < g->n && st == CUDA_SUCCESS; i++) {
        rgpu_gnode *src = g->nodes[i], *dst = c->nodes[i];
        free(dst->deps);
        dst->deps = calloc(src->ndeps ? src->ndeps : 1, sizeof *dst->deps);
        if (!dst->deps) {
            st = CUDA_ERROR_OUT_OF_MEMORY;
            break;
        }
        for (size_t j = 0; j < src->ndeps; j++)
            for (size_t k = 0; k < g->n; k++)
                if (g->nodes[k] == src->deps[j])
                    dst->deps[dst->ndeps++] = c->nodes[k];
    }
    if (st != CUDA_SUCCESS) {
        cuGraphDestroy(h);
        return st;
    }
    *phGraphClone = h;
    return CUDA_SUCCESS;
}

CUresult cuGraphNodeFindInClone(CUgraphNode *phNode, CUgraphNode hOriginalNode,
                                CUgraph hClonedGraph)
{
    rgpu_graph *c = graph_check(hClonedGraph);
    if (!c || !phNode || !hOriginalNode)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < c->n; i++)
        if ((CUgraphNode)c->nodes[i]->origin == hOriginalNode) {
            *phNode = (CUgraphNode)c->nodes[i];
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_INVALID_VALUE;
}

/* ---- executable graphs ------------------------------------------------------------------- */

static void exec_clear(rgpu_exec *e)
{
    for (size_t i = 0; i < e->n; i++)
        node_free(e->nodes[i]);
    free(e->nodes);
    e->nodes = NULL;
    e->n = 0;
}

/* Copies of g's nodes in an order where every node follows its dependencies. */
static CUresult exec_build(rgpu_exec *e, rgpu_graph *g)
{
    size_t n = g->n;
    rgpu_gnode **order = calloc(n ? n : 1, sizeof *order);
    char *placed = calloc(n ? n : 1, 1);
    if (!order || !placed) {
        free(order);
        free(placed);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    size_t k = 0;
    while (k < n) {
        size_t before = k;
        for (size_t i = 0; i < n; i++) {
            if (placed[i])
                continue;
            int ready = 1;
            for (size_t j = 0; j < g->nodes[i]->ndeps && ready; j++)
                for (size_t m = 0; m < n; m++)
                    if (g->nodes[m] == g->nodes[i]->deps[j] && !placed[m]) {
                        ready = 0;
                        break;
                    }
            if (ready) {
                placed[i] = 1;
                order[k++] = g->nodes[i];
            }
        }
        if (k == before) { /* a cycle */
            free(order);
            free(placed);
            return CUDA_ERROR_INVALID_VALUE;
        }
    }
    free(placed);
    rgpu_gnode **copies = calloc(n ? n : 1, sizeof *copies);
    if (!copies) {
        free(order);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    CUresult st = CUDA_SUCCESS;
    for (size_t i = 0; i < n && st == CUDA_SUCCESS; i++) {
        copies[i] = calloc(1, sizeof *copies[i]);
        if (!copies[i]) {
            st = CUDA_ERROR_OUT_OF_MEMORY;
            break;
        }
        copies[i]->magic = NODE_MAGIC;
        copies[i]->origin = order[i];
        st = node_copy_contents(copies[i], order[i]);
    }
    free(order);
    if (st != CUDA_SUCCESS) {
        for (size_t i = 0; i < n; i++)
            node_free(copies[i]);
        free(copies);
        return st;
    }
    exec_clear(e);
    e->nodes = copies;
    e->n = n;
    return CUDA_SUCCESS;
}

CUresult cuGraphInstantiateWithFlags(CUgraphExec *phGraphExec, CUgraph hGraph,
                                     unsigned long long flags)
{
    rgpu_graph *g = graph_check(hGraph);
    if (!g || !phGraphExec)
        return CUDA_ERROR_INVALID_VALUE;
    if (flags & (CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH)) {
        rgpu_report_unsupported("cuGraphInstantiateWithFlags (device launch)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    rgpu_exec *e = calloc(1, sizeof *e);
    if (!e)
        return CUDA_ERROR_OUT_OF_MEMORY;
    e->magic = EXEC_MAGIC;
    e->flags = flags;
    CUresult st = exec_build(e, g);
    if (st != CUDA_SUCCESS) {
        free(e);
        return st;
    }
    *phGraphExec = (CUgraphExec)e;
    return CUDA_SUCCESS;
}

CUresult cuGraphInstantiateWithParams(CUgraphExec *phGraphExec, CUgraph hGraph,
                                      CUDA_GRAPH_INSTANTIATE_PARAMS *instantiateParams)
{
    if (!instantiateParams)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult st = cuGraphInstantiateWithFlags(phGraphExec, hGraph,
                                              instantiateParams->flags &
                                                  ~(cuuint64_t)CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD);
    instantiateParams->hErrNode_out = NULL;
    instantiateParams->result_out =
        st == CUDA_SUCCESS ? CUDA_GRAPH_INSTANTIATE_SUCCESS : CUDA_GRAPH_INSTANTIATE_ERROR;
    return st;
}

CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *phGraphExec, CUgraph hGraph,
                                           CUDA_GRAPH_INSTANTIATE_PARAMS *instantiateParams)
{
    return cuGraphInstantiateWithParams(phGraphExec, hGraph, instantiateParams);
}

CUresult cuGraphExecGetFlags(CUgraphExec hGraphExec, cuuint64_t *flags)
{
    rgpu_exec *e = exec_check(hGraphExec);
    if (!e || !flags)
        return CUDA_ERROR_INVALID_VALUE;
    *flags = e->flags;
    return CUDA_SUCCESS;
}

CUresult cuGraphExecDestroy(CUgraphExec hGraphExec)
{
    rgpu_exec *e = exec_check(hGraphExec);
    if (!e)
        return CUDA_ERROR_INVALID_VALUE;
    exec_clear(e);
    e->magic = 0;
    free(e);
    return CUDA_SUCCESS;
}

static CUresult capture_node(CUstream s, CUresult (*fill)(rgpu_gnode *, const void *),
                             const void *arg);
static CUresult fill_child(rgpu_gnode *n, const void *arg);

/* A child graph's nodes, in dependency order, on `s`. */
static CUresult run_graph(rgpu_graph *g, CUstream s)
{
    rgpu_exec e = {EXEC_MAGIC, NULL, 0, 0};
    CUresult st = exec_build(&e, g);
    for (size_t i = 0; i < e.n && st == CUDA_SUCCESS; i++)
        st = run_node(e.nodes[i], s);
    exec_clear(&e);
    return st;
}

CUresult cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream)
{
    rgpu_exec *e = exec_check(hGraphExec);
    if (!e)
        return CUDA_ERROR_INVALID_VALUE;
    if (rgpu_stream_id(hStream) == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    if (rgpu_capturing(hStream))
        return capture_node(hStream, fill_child, e); /* a child-graph node */
    CUresult st = CUDA_SUCCESS;
    for (size_t i = 0; i < e->n && st == CUDA_SUCCESS; i++)
        if (!e->nodes[i]->disabled)
            st = run_node(e->nodes[i], hStream);
    return st;
}

CUresult cuGraphLaunch_ptsz(CUgraphExec hGraphExec, CUstream hStream)
{
    return cuGraphLaunch(hGraphExec, hStream ? hStream : CU_STREAM_PER_THREAD);
}

CUresult cuGraphUpload(CUgraphExec hGraphExec, CUstream hStream)
{
    if (!exec_check(hGraphExec))
        return CUDA_ERROR_INVALID_VALUE;
    return rgpu_stream_id(hStream) == UINT64_MAX ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS;
}

CUresult cuGraphUpload_ptsz(CUgraphExec hGraphExec, CUstream hStream)
{
    return cuGraphUpload(hGraphExec, hStream ? hStream : CU_STREAM_PER_THREAD);
}

static rgpu_gnode *exec_node(rgpu_exec *e, CUgraphNode hNode, CUgraphNodeType type)
{
    for (size_t i = 0; i < e->n; i++)
        if ((CUgraphNode)e->nodes[i]->origin == hNode)
            return e->nodes[i]->type == type ? e->nodes[i] : NULL;
    return NULL;
}

CUresult cuGraphExecKernelNodeSetParams_v2(CUgraphExec hGraphExec, CUgraphNode hNode,
                                           const CUDA_KERNEL_NODE_PARAMS *nodeParams)
{
    rgpu_exec *e = exec_check(hGraphExec);
    rgpu_gnode *n = e ? exec_node(e, hNode, CU_GRAPH_NODE_TYPE_KERNEL) : NULL;
    if (!n || !nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    return set_kernel(n, nodeParams);
}

CUresult cuGraphExecMemcpyNodeSetParams(CUgraphExec hGraphExec, CUgraphNode hNode,
                                        const CUDA_MEMCPY3D *copyParams, CUcontext ctx)
{
    (void)ctx;
    rgpu_exec *e = exec_check(hGraphExec);
    rgpu_gnode *n = e ? exec_node(e, hNode, CU_GRAPH_NODE_TYPE_MEMCPY) : NULL;
    if (!n || !copyParams)
        return CUDA_ERROR_INVALID_VALUE;
    n->copy = *copyParams;
    return CUDA_SUCCESS;
}

CUresult cuGraphExecMemsetNodeSetParams(CUgraphExec hGraphExec, CUgraphNode hNode,
                                        const CUDA_MEMSET_NODE_PARAMS *memsetParams,
                                        CUcontext ctx)
{
    (void)ctx;
    rgpu_exec *e = exec_check(hGraphExec);
    rgpu_gnode *n = e ? exec_node(e, hNode, CU_GRAPH_NODE_TYPE_MEMSET) : NULL;
    if (!n || !memset_ok(memsetParams))
        return CUDA_ERROR_INVALID_VALUE;
    n->memset = *memsetParams;
    return CUDA_SUCCESS;
}

static rgpu_gnode *exec_node_any(rgpu_exec *e, CUgraphNode hNode)
{
    for (size_t i = 0; e && i < e->n; i++)
        if ((CUgraphNode)e->nodes[i]->origin == hNode)
            return e->nodes[i];
    return NULL;
}

CUresult cuGraphNodeSetEnabled(CUgraphExec hGraphExec, CUgraphNode hNode, unsigned int isEnabled)
{
    rgpu_gnode *n = exec_node_any(exec_check(hGraphExec), hNode);
    if (!n || (n->type != CU_GRAPH_NODE_TYPE_KERNEL && n->type != CU_GRAPH_NODE_TYPE_MEMCPY &&
               n->type != CU_GRAPH_NODE_TYPE_MEMSET))
        return CUDA_ERROR_INVALID_VALUE; /* the node types CUDA lets one disable */
    n->disabled = !isEnabled;
    return CUDA_SUCCESS;
}

CUresult cuGraphNodeGetEnabled(CUgraphExec hGraphExec, CUgraphNode hNode, unsigned int *isEnabled)
{
    rgpu_gnode *n = exec_node_any(exec_check(hGraphExec), hNode);
    if (!n || !isEnabled)
        return CUDA_ERROR_INVALID_VALUE;
    *isEnabled = !n->disabled;
    return CUDA_SUCCESS;
}

/* ---- the generic node API (CUgraphNodeParams) -------------------------------------------- */

CUresult cuGraphAddNode_v2(CUgraphNode *phGraphNode, CUgraph hGraph,
                           const CUgraphNode *dependencies, const CUgraphEdgeData *dependencyData,
                           size_t numDependencies, CUgraphNodeParams *nodeParams)
{
    if (!nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; dependencyData && i < numDependencies; i++)
        if (dependencyData[i].type != CU_GRAPH_DEPENDENCY_TYPE_DEFAULT) {
            rgpu_report_unsupported("cuGraphAddNode_v2 (programmatic dependencies)");
            return CUDA_ERROR_NOT_SUPPORTED;
        }
    const CUgraphNode *deps = dependencies;
    size_t nd = numDependencies;
    CUgraphNodeParams *p = nodeParams;
    switch (p->type) {
    case CU_GRAPH_NODE_TYPE_KERNEL:
        return cuGraphAddKernelNode_v2(phGraphNode, hGraph, deps, nd,
                                       (const CUDA_KERNEL_NODE_PARAMS *)&p->kernel);
    case CU_GRAPH_NODE_TYPE_MEMCPY:
        return cuGraphAddMemcpyNode(phGraphNode, hGraph, deps, nd, &p->memcpy.copyParams,
                                    p->memcpy.copyCtx);
    case CU_GRAPH_NODE_TYPE_MEMSET: {
        CUDA_MEMSET_NODE_PARAMS m = {p->memset.dst,   p->memset.pitch, p->memset.value,
                                     p->memset.elementSize, p->memset.width,
                                     p->memset.height};
        return cuGraphAddMemsetNode(phGraphNode, hGraph, deps, nd, &m, p->memset.ctx);
    }
    case CU_GRAPH_NODE_TYPE_HOST: {
        CUDA_HOST_NODE_PARAMS h = {p->host.fn, p->host.userData};
        return cuGraphAddHostNode(phGraphNode, hGraph, deps, nd, &h);
    }
    case CU_GRAPH_NODE_TYPE_GRAPH:
        return cuGraphAddChildGraphNode(phGraphNode, hGraph, deps, nd, p->graph.graph);
    case CU_GRAPH_NODE_TYPE_EVENT_RECORD:
        return cuGraphAddEventRecordNode(phGraphNode, hGraph, deps, nd, p->eventRecord.event);
    case CU_GRAPH_NODE_TYPE_WAIT_EVENT:
        return cuGraphAddEventWaitNode(phGraphNode, hGraph, deps, nd, p->eventWait.event);
    case CU_GRAPH_NODE_TYPE_EMPTY:
        return cuGraphAddEmptyNode(phGraphNode, hGraph, deps, nd);
    case CU_GRAPH_NODE_TYPE_MEM_ALLOC: {
        CUDA_MEM_ALLOC_NODE_PARAMS a;
        memset(&a, 0, sizeof a);
        a.poolProps = p->alloc.poolProps;
        a.bytesize = p->alloc.bytesize;
        CUresult st = cuGraphAddMemAllocNode(phGraphNode, hGraph, deps, nd, &a);
        if (st == CUDA_SUCCESS)
            p->alloc.dptr = a.dptr;
        return st;
    }
    case CU_GRAPH_NODE_TYPE_MEM_FREE:
        return cuGraphAddMemFreeNode(phGraphNode, hGraph, deps, nd, p->free.dptr);
    default:
        rgpu_report_unsupported("cuGraphAddNode_v2 (this node type)");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
}

CUresult cuGraphNodeSetParams(CUgraphNode hNode, CUgraphNodeParams *nodeParams)
{
    rgpu_gnode *n = node_check(hNode);
    if (!n || !nodeParams || nodeParams->type != n->type)
        return CUDA_ERROR_INVALID_VALUE;
    CUgraphNodeParams *p = nodeParams;
    switch (p->type) {
    case CU_GRAPH_NODE_TYPE_KERNEL:
        return set_kernel(n, (const CUDA_KERNEL_NODE_PARAMS *)&p->kernel);
    case CU_GRAPH_NODE_TYPE_MEMCPY:
        n->copy = p->memcpy.copyParams;
        return CUDA_SUCCESS;
    case CU_GRAPH_NODE_TYPE_MEMSET: {
        CUDA_MEMSET_NODE_PARAMS m = {p->memset.dst,   p->memset.pitch, p->memset.value,
                                     p->memset.elementSize, p->memset.width,
                                     p->memset.height};
        return cuGraphMemsetNodeSetParams(hNode, &m);
    }
    case CU_GRAPH_NODE_TYPE_HOST: {
        CUDA_HOST_NODE_PARAMS h = {p->host.fn, p->host.userData};
        return cuGraphHostNodeSetParams(hNode, &h);
    }
    case CU_GRAPH_NODE_TYPE_EVENT_RECORD:
        return set_event_of(n, p->type, p->eventRecord.event);
    case CU_GRAPH_NODE_TYPE_WAIT_EVENT:
        return set_event_of(n, p->type, p->eventWait.event);
    default:
        return CUDA_ERROR_INVALID_VALUE; /* CUDA allows no other changes here either */
    }
}

CUresult cuGraphExecNodeSetParams(CUgraphExec hGraphExec, CUgraphNode hNode,
                                  CUgraphNodeParams *nodeParams)
{
    rgpu_gnode *n = exec_node_any(exec_check(hGraphExec), hNode);
    if (!n || !nodeParams || nodeParams->type != n->type)
        return CUDA_ERROR_INVALID_VALUE;
    CUgraphNodeParams *p = nodeParams;
    switch (p->type) {
    case CU_GRAPH_NODE_TYPE_KERNEL:
        return set_kernel(n, (const CUDA_KERNEL_NODE_PARAMS *)&p->kernel);
    case CU_GRAPH_NODE_TYPE_MEMCPY:
        n->copy = p->memcpy.copyParams;
        return CUDA_SUCCESS;
    case CU_GRAPH_NODE_TYPE_MEMSET: {
        CUDA_MEMSET_NODE_PARAMS m = {p->memset.dst,   p->memset.pitch, p->memset.value,
                                     p->memset.elementSize, p->memset.width,
                                     p->memset.height};
        if (!memset_ok(&m))
            return CUDA_ERROR_INVALID_VALUE;
        n->memset = m;
        return CUDA_SUCCESS;
    }
    case CU_GRAPH_NODE_TYPE_HOST:
        if (!p->host.fn)
            return CUDA_ERROR_INVALID_VALUE;
        n->host.fn = p->host.fn;
        n->host.userData = p->host.userData;
        return CUDA_SUCCESS;
    case CU_GRAPH_NODE_TYPE_GRAPH:
        return cuGraphExecChildGraphNodeSetParams(hGraphExec, hNode, p->graph.graph);
    case CU_GRAPH_NODE_TYPE_EVENT_RECORD:
        return set_event_of(n, p->type, p->eventRecord.event);
    case CU_GRAPH_NODE_TYPE_WAIT_EVENT:
        return set_event_of(n, p->type, p->eventWait.event);
    default:
        return CUDA_ERROR_INVALID_VALUE;
    }
}

CUresult cuGraphExecEventRecordNodeSetEvent(CUgraphExec hGraphExec, CUgraphNode hNode,
                                           CUevent event)
{
    rgpu_exec *e = exec_check(hGraphExec);
    return set_event_of(e ? exec_node(e, hNode, CU_GRAPH_NODE_TYPE_EVENT_RECORD) : NULL,
                        CU_GRAPH_NODE_TYPE_EVENT_RECORD, event);
}

CUresult cuGraphExecEventWaitNodeSetEvent(CUgraphExec hGraphExec, CUgraphNode hNode,
                                         CUevent event)
{
    rgpu_exec *e = exec_check(hGraphExec);
    return set_event_of(e ? exec_node(e, hNode, CU_GRAPH_NODE_TYPE_WAIT_EVENT) : NULL,
                        CU_GRAPH_NODE_TYPE_WAIT_EVENT, event);
}

CUresult cuGraphExecChildGraphNodeSetParams(CUgraphExec hGraphExec, CUgraphNode hNode,
                                            CUgraph childGraph)
{
    rgpu_exec *e = exec_check(hGraphExec);
    rgpu_gnode *n = e ? exec_node(e, hNode, CU_GRAPH_NODE_TYPE_GRAPH) : NULL;
    if (!n || !graph_check(childGraph))
        return CUDA_ERROR_INVALID_VALUE;
    CUgraph c;
    CUresult st = cuGraphClone(&c, childGraph);
    if (st != CUDA_SUCCESS)
        return st;
    cuGraphDestroy((CUgraph)n->child);
    n->child = (rgpu_graph *)c;
    return CUDA_SUCCESS;
}

CUresult cuGraphExecHostNodeSetParams(CUgraphExec hGraphExec, CUgraphNode hNode,
                                      const CUDA_HOST_NODE_PARAMS *nodeParams)
{
    rgpu_exec *e = exec_check(hGraphExec);
    rgpu_gnode *n = e ? exec_node(e, hNode, CU_GRAPH_NODE_TYPE_HOST) : NULL;
    if (!n || !nodeParams || !nodeParams->fn)
        return CUDA_ERROR_INVALID_VALUE;
    n->host = *nodeParams;
    return CUDA_SUCCESS;
}

/* The executable graph takes the graph's current nodes and parameters (the topology may
 * differ: replay needs no precomputed resources, so any graph is an update). */
CUresult cuGraphExecUpdate_v2(CUgraphExec hGraphExec, CUgraph hGraph,
                              CUgraphExecUpdateResultInfo *resultInfo)
{
    rgpu_exec *e = exec_check(hGraphExec);
    rgpu_graph *g = graph_check(hGraph);
    if (!e || !g)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult st = exec_build(e, g);
    if (resultInfo) {
        resultInfo->result =
            st == CUDA_SUCCESS ? CU_GRAPH_EXEC_UPDATE_SUCCESS : CU_GRAPH_EXEC_UPDATE_ERROR;
        resultInfo->errorNode = NULL;
        resultInfo->errorFromNode = NULL;
    }
    return st == CUDA_SUCCESS ? st : CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE;
}

/* ---- stream capture ---------------------------------------------------------------------- */

static long cstream_index(CUstream s)
{
    for (size_t i = 0; i < n_cstreams; i++)
        if (cstreams[i].stream == s)
            return (long)i;
    return -1;
}

int rgpu_capturing(CUstream s)
{
    if (!__atomic_load_n(&n_cstreams, __ATOMIC_ACQUIRE))
        return 0;
    pthread_mutex_lock(&graph_mu);
    int yes = cstream_index(s) >= 0;
    pthread_mutex_unlock(&graph_mu);
    return yes;
}

/* A call CUDA forbids on a capturing stream (a synchronisation): the capture is invalidated
 * and cuStreamEndCapture will say so; the call fails with the returned code. */
CUresult rgpu_capture_invalidate(CUstream s)
{
    pthread_mutex_lock(&graph_mu);
    long i = cstream_index(s);
    if (i >= 0)
        cstreams[i].cap->invalidated = 1;
    pthread_mutex_unlock(&graph_mu);
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
}

static int set_tail(capturing_stream *cs, rgpu_gnode **nodes, size_t n)
{
    rgpu_gnode **t = malloc((n ? n : 1) * sizeof *t);
    if (!t)
        return -1;
    if (n)
        memcpy(t, nodes, n * sizeof *t);
    free(cs->tail);
    cs->tail = t;
    cs->ntail = n;
    return 0;
}

static int is_legacy(CUstream s)
{
    return s == NULL || s == CU_STREAM_LEGACY;
}

static CUresult begin_capture(CUstream s, CUstreamCaptureMode mode)
{
    if (rgpu_stream_id(s) == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    if (is_legacy(s))
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    if ((int)mode < CU_STREAM_CAPTURE_MODE_GLOBAL || (int)mode > CU_STREAM_CAPTURE_MODE_RELAXED)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&graph_mu);
    CUresult st = CUDA_SUCCESS;
    capture *c = NULL;
    CUgraph g = NULL;
    if (cstream_index(s) >= 0)
        st = CUDA_ERROR_ILLEGAL_STATE;
    else if (grow((void **)&cstreams, &cap_cstreams, n_cstreams, sizeof *cstreams) != 0 ||
             !(c = calloc(1, sizeof *c)) || cuGraphCreate(&g, 0) != CUDA_SUCCESS)
        st = CUDA_ERROR_OUT_OF_MEMORY;
    if (st == CUDA_SUCCESS) {
        c->graph = (rgpu_graph *)g;
        c->id = next_capture_id++;
        c->origin = s;
        c->mode = mode;
        cstreams[n_cstreams++] = (capturing_stream){s, c, NULL, 0};
        RGPU_DEBUG("cuStreamBeginCapture: capture %llu", (unsigned long long)c->id);
    } else {
        free(c);
    }
    pthread_mutex_unlock(&graph_mu);
    return st;
}

CUresult cuStreamBeginCapture_v2(CUstream hStream, CUstreamCaptureMode mode)
{
    return begin_capture(hStream, mode);
}

CUresult cuStreamBeginCapture_v2_ptsz(CUstream hStream, CUstreamCaptureMode mode)
{
    return begin_capture(hStream ? hStream : CU_STREAM_PER_THREAD, mode);
}

static CUresult end_capture(CUstream s, CUgraph *phGraph)
{
    if (!phGraph)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&graph_mu);
    long i = cstream_index(s);
    if (i < 0 || cstreams[i].cap->origin != s) {
        pthread_mutex_unlock(&graph_mu);
        return CUDA_ERROR_ILLEGAL_STATE;
    }
    capture *c = cstreams[i].cap;
    for (size_t k = 0; k < n_cstreams;) { /* every stream of this capture stops capturing */
        if (cstreams[k].cap == c) {
            free(cstreams[k].tail);
            cstreams[k] = cstreams[--n_cstreams];
        } else {
            k++;
        }
    }
    for (size_t k = 0; k < n_cevents;) {
        if (cevents[k].cap == c) {
            free(cevents[k].nodes);
            cevents[k] = cevents[--n_cevents];
        } else {
            k++;
        }
    }
    pthread_mutex_unlock(&graph_mu);
    CUresult st = c->invalidated ? CUDA_ERROR_STREAM_CAPTURE_INVALIDATED : CUDA_SUCCESS;
    if (st == CUDA_SUCCESS) {
        *phGraph = (CUgraph)c->graph;
    } else {
        cuGraphDestroy((CUgraph)c->graph);
        *phGraph = NULL;
    }
    free(c);
    return st;
}

CUresult cuStreamEndCapture(CUstream hStream, CUgraph *phGraph)
{
    return end_capture(hStream, phGraph);
}

CUresult cuStreamEndCapture_ptsz(CUstream hStream, CUgraph *phGraph)
{
    return end_capture(hStream ? hStream : CU_STREAM_PER_THREAD, phGraph);
}

CUresult cuStreamIsCapturing(CUstream hStream, CUstreamCaptureStatus *captureStatus)
{
    if (!captureStatus)
        return CUDA_ERROR_INVALID_VALUE;
    if (rgpu_stream_id(hStream) == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&graph_mu);
    long i = cstream_index(hStream);
    *captureStatus = i < 0                          ? CU_STREAM_CAPTURE_STATUS_NONE
                     : cstreams[i].cap->invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED
                                                    : CU_STREAM_CAPTURE_STATUS_ACTIVE;
    pthread_mutex_unlock(&graph_mu);
    return CUDA_SUCCESS;
}

CUresult cuStreamIsCapturing_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus)
{
    return cuStreamIsCapturing(hStream ? hStream : CU_STREAM_PER_THREAD, captureStatus);
}

CUresult cuStreamGetCaptureInfo_v3(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                   cuuint64_t *id_out, CUgraph *graph_out,
                                   const CUgraphNode **dependencies_out,
                                   const CUgraphEdgeData **edgeData_out,
                                   size_t *numDependencies_out)
{
    if (!captureStatus_out)
        return CUDA_ERROR_INVALID_VALUE;
    if (rgpu_stream_id(hStream) == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&graph_mu);
    long i = cstream_index(hStream);
    capturing_stream *cs = i >= 0 ? &cstreams[i] : NULL;
    *captureStatus_out = !cs                    ? CU_STREAM_CAPTURE_STATUS_NONE
                         : cs->cap->invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED
                                                : CU_STREAM_CAPTURE_STATUS_ACTIVE;
    if (id_out)
        *id_out = cs ? cs->cap->id : 0;
    if (graph_out)
        *graph_out = cs ? (CUgraph)cs->cap->graph : NULL;
    /* the array stays valid until the stream's capture changes, as documented */
    if (dependencies_out)
        *dependencies_out = cs ? (const CUgraphNode *)cs->tail : NULL;
    if (edgeData_out)
        *edgeData_out = NULL;
    if (numDependencies_out)
        *numDependencies_out = cs ? cs->ntail : 0;
    pthread_mutex_unlock(&graph_mu);
    return CUDA_SUCCESS;
}

CUresult cuStreamGetCaptureInfo_v3_ptsz(CUstream hStream, CUstreamCaptureStatus *status,
                                        cuuint64_t *id, CUgraph *graph,
                                        const CUgraphNode **deps, const CUgraphEdgeData **edges,
                                        size_t *ndeps)
{
    return cuStreamGetCaptureInfo_v3(hStream ? hStream : CU_STREAM_PER_THREAD, status, id, graph,
                                     deps, edges, ndeps);
}

/* A node for work queued on capturing stream s, after the stream's tail; it becomes the tail.
 * `fill` sets its contents. */
static CUresult capture_node(CUstream s, CUresult (*fill)(rgpu_gnode *, const void *),
                             const void *arg)
{
    pthread_mutex_lock(&graph_mu);
    long i = cstream_index(s);
    if (i < 0) {
        pthread_mutex_unlock(&graph_mu);
        return CUDA_ERROR_ILLEGAL_STATE;
    }
    capturing_stream *cs = &cstreams[i];
    if (cs->cap->invalidated) {
        pthread_mutex_unlock(&graph_mu);
        return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    }
    rgpu_gnode *n;
    CUresult st = node_new(cs->cap->graph, (const CUgraphNode *)cs->tail, cs->ntail, &n);
    if (st == CUDA_SUCCESS) {
        st = fill(n, arg);
        if (st != CUDA_SUCCESS) {
            node_unlink(cs->cap->graph, n);
            node_free(n);
        } else if (set_tail(cs, &n, 1) != 0) {
            st = CUDA_ERROR_OUT_OF_MEMORY;
        }
    }
    if (st != CUDA_SUCCESS)
        cs->cap->invalidated = 1;
    pthread_mutex_unlock(&graph_mu);
    return st;
}

static CUresult fill_kernel(rgpu_gnode *n, const void *arg)
{
    return set_kernel(n, (const CUDA_KERNEL_NODE_PARAMS *)arg);
}

static CUresult fill_copy(rgpu_gnode *n, const void *arg)
{
    n->type = CU_GRAPH_NODE_TYPE_MEMCPY;
    n->copy = *(const CUDA_MEMCPY3D *)arg;
    return CUDA_SUCCESS;
}

static CUresult fill_memset(rgpu_gnode *n, const void *arg)
{
    n->type = CU_GRAPH_NODE_TYPE_MEMSET;
    n->memset = *(const CUDA_MEMSET_NODE_PARAMS *)arg;
    return CUDA_SUCCESS;
}

static CUresult fill_host(rgpu_gnode *n, const void *arg)
{
    n->type = CU_GRAPH_NODE_TYPE_HOST;
    n->host = *(const CUDA_HOST_NODE_PARAMS *)arg;
    return CUDA_SUCCESS;
}

CUresult rgpu_capture_kernel(CUstream s, const CUDA_KERNEL_NODE_PARAMS *p)
{
    return capture_node(s, fill_kernel, p);
}

CUresult rgpu_capture_copy(CUstream s, const CUDA_MEMCPY3D *c)
{
    return capture_node(s, fill_copy, c);
}

CUresult rgpu_capture_memset(CUstream s, const CUDA_MEMSET_NODE_PARAMS *m)
{
    return capture_node(s, fill_memset, m);
}

/* An executable graph launched into a capture: a child graph of its nodes, in their order. */
static CUresult fill_child(rgpu_gnode *n, const void *arg)
{
    const rgpu_exec *e = arg;
    CUgraph c;
    CUresult st = cuGraphCreate(&c, 0);
    rgpu_gnode *prev = NULL;
    for (size_t i = 0; i < e->n && st == CUDA_SUCCESS; i++) {
        rgpu_gnode *m;
        CUgraphNode dep = (CUgraphNode)prev;
        st = node_new((rgpu_graph *)c, prev ? &dep : NULL, prev ? 1 : 0, &m);
        if (st == CUDA_SUCCESS)
            st = node_copy_contents(m, e->nodes[i]);
        prev = m;
    }
    if (st != CUDA_SUCCESS) {
        cuGraphDestroy(c);
        return st;
    }
    n->type = CU_GRAPH_NODE_TYPE_GRAPH;
    n->child = (rgpu_graph *)c;
    return CUDA_SUCCESS;
}

static CUresult fill_event(rgpu_gnode *n, const void *arg)
{
    const rgpu_gnode *tmpl = arg;
    n->type = tmpl->type;
    n->event = tmpl->event;
    return CUDA_SUCCESS;
}

static CUresult fill_alloc(rgpu_gnode *n, const void *arg)
{
    size_t size = *(const size_t *)arg;
    CUresult st = graph_mem_new(size, &n->mem);
    if (st != CUDA_SUCCESS)
        return st;
    n->type = CU_GRAPH_NODE_TYPE_MEM_ALLOC;
    memset(&n->alloc, 0, sizeof n->alloc);
    n->alloc.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    n->alloc.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    n->alloc.poolProps.location.id = rgpu_current_dev();
    n->alloc.bytesize = size;
    n->alloc.dptr = n->mem->ptr;
    return CUDA_SUCCESS;
}

static CUresult fill_free(rgpu_gnode *n, const void *arg)
{
    n->type = CU_GRAPH_NODE_TYPE_MEM_FREE;
    n->free_ptr = *(const CUdeviceptr *)arg;
    return CUDA_SUCCESS;
}

/* cudaMallocAsync / cudaFreeAsync on a capturing stream. */
CUresult rgpu_capture_alloc(CUstream s, CUdeviceptr *dptr, size_t size)
{
    if (!dptr || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult st = capture_node(s, fill_alloc, &size);
    if (st != CUDA_SUCCESS)
        return st;
    pthread_mutex_lock(&graph_mu);
    long i = cstream_index(s);
    *dptr = i >= 0 && cstreams[i].ntail ? cstreams[i].tail[0]->alloc.dptr : 0;
    pthread_mutex_unlock(&graph_mu);
    return *dptr ? CUDA_SUCCESS : CUDA_ERROR_ILLEGAL_STATE;
}

CUresult rgpu_capture_free(CUstream s, CUdeviceptr dptr)
{
    if (!rgpu_range_device(dptr, NULL))
        return CUDA_ERROR_INVALID_VALUE;
    return capture_node(s, fill_free, &dptr);
}

CUresult rgpu_capture_host(CUstream s, CUhostFn fn, void *userData)
{
    CUDA_HOST_NODE_PARAMS h = {fn, userData};
    return capture_node(s, fill_host, &h);
}

/* A linear copy as a 3D copy node's parameters. */
void rgpu_linear_copy3d(CUDA_MEMCPY3D *c, CUmemorytype dt, uint64_t dst, CUmemorytype st,
                        uint64_t src, size_t n)
{
    memset(c, 0, sizeof *c);
    c->srcMemoryType = st;
    if (st == CU_MEMORYTYPE_HOST)
        c->srcHost = (const void *)(uintptr_t)src;
    else
        c->srcDevice = (CUdeviceptr)src;
    c->dstMemoryType = dt;
    if (dt == CU_MEMORYTYPE_HOST)
        c->dstHost = (void *)(uintptr_t)dst;
    else
        c->dstDevice = (CUdeviceptr)dst;
    c->srcPitch = c->dstPitch = n;
    c->srcHeight = c->dstHeight = 1;
    c->WidthInBytes = n;
    c->Height = 1;
    c->Depth = 1;
}

/* cuEventRecord on a capturing stream: the event now stands for the stream's tail (no node),
 * or, with CU_EVENT_RECORD_EXTERNAL, an event-record node. */
int rgpu_capture_event_record(CUevent e, CUstream s, unsigned flags)
{
    if (!__atomic_load_n(&n_cstreams, __ATOMIC_ACQUIRE))
        return 0;
    if (flags & CU_EVENT_RECORD_EXTERNAL) {
        if (!rgpu_capturing(s))
            return 0;
        rgpu_gnode tmpl = {.type = CU_GRAPH_NODE_TYPE_EVENT_RECORD, .event = e};
        capture_node(s, fill_event, &tmpl); /* a failure invalidates the capture */
        return 1;
    }
    pthread_mutex_lock(&graph_mu);
    long i = cstream_index(s);
    if (i < 0) {
        pthread_mutex_unlock(&graph_mu);
        return 0;
    }
    capturing_stream *cs = &cstreams[i];
    size_t k;
    for (k = 0; k < n_cevents; k++)
        if (cevents[k].event == e)
            break;
    if (k == n_cevents) {
        if (grow((void **)&cevents, &cap_cevents, n_cevents, sizeof *cevents) != 0) {
            cs->cap->invalidated = 1;
            pthread_mutex_unlock(&graph_mu);
            return 1;
        }
        memset(&cevents[n_cevents++], 0, sizeof *cevents);
    }
    captured_event *ce = &cevents[k];
    rgpu_gnode **nodes = malloc((cs->ntail ? cs->ntail : 1) * sizeof *nodes);
    if (!nodes) {
        cs->cap->invalidated = 1;
    } else {
        if (cs->ntail)
            memcpy(nodes, cs->tail, cs->ntail * sizeof *nodes);
        free(ce->nodes);
        *ce = (captured_event){e, cs->cap, nodes, cs->ntail};
    }
    pthread_mutex_unlock(&graph_mu);
    return 1;
}

/* cuStreamWaitEvent for an event recorded in a capture: the waiting stream joins the capture
 * (fork) or adds the event's nodes to its tail (join). 0 when the event is not captured. */
int rgpu_capture_wait_event(CUstream s, CUevent e, unsigned flags)
{
    if ((flags & CU_EVENT_WAIT_EXTERNAL) && rgpu_capturing(s)) {
        rgpu_gnode tmpl = {.type = CU_GRAPH_NODE_TYPE_WAIT_EVENT, .event = e};
        capture_node(s, fill_event, &tmpl);
        return 1;
    }
    if (!__atomic_load_n(&n_cevents, __ATOMIC_ACQUIRE))
        return 0;
    pthread_mutex_lock(&graph_mu);
    captured_event *ce = NULL;
    for (size_t k = 0; k < n_cevents; k++)
        if (cevents[k].event == e)
            ce = &cevents[k];
    if (!ce) {
        pthread_mutex_unlock(&graph_mu);
        return 0;
    }
    long i = cstream_index(s);
    if (i < 0) {
        if (grow((void **)&cstreams, &cap_cstreams, n_cstreams, sizeof *cstreams) == 0) {
            cstreams[n_cstreams] = (capturing_stream){s, ce->cap, NULL, 0};
            if (set_tail(&cstreams[n_cstreams], ce->nodes, ce->n) == 0)
                n_cstreams++;
            else
                ce->cap->invalidated = 1;
        } else {
            ce->cap->invalidated = 1;
        }
    } else if (cstreams[i].cap == ce->cap) {
        capturing_stream *cs = &cstreams[i];
        rgpu_gnode **t = malloc((cs->ntail + ce->n + 1) * sizeof *t);
        if (!t) {
            cs->cap->invalidated = 1;
        } else {
            size_t n = 0;
            for (size_t a = 0; a < cs->ntail; a++)
                t[n++] = cs->tail[a];
            for (size_t b = 0; b < ce->n; b++) {
                int dup = 0;
                for (size_t a = 0; a < n; a++)
                    dup |= t[a] == ce->nodes[b];
                if (!dup)
                    t[n++] = ce->nodes[b];
            }
            free(cs->tail);
            cs->tail = t;
            cs->ntail = n;
        }
    } else {
        cstreams[i].cap->invalidated = 1; /* captures may not be merged */
    }
    pthread_mutex_unlock(&graph_mu);
    return 1;
}

/* ---- earlier versions of the graph entry points (cuGetProcAddress hands them to programs
 * built against older toolkits): each is its newest variant with the defaults it implied ---- */

static CUDA_KERNEL_NODE_PARAMS kernel_params_v2(const CUDA_KERNEL_NODE_PARAMS_v1 *p)
{
    CUDA_KERNEL_NODE_PARAMS q;
    memset(&q, 0, sizeof q);
    q.func = p->func;
    q.gridDimX = p->gridDimX;
    q.gridDimY = p->gridDimY;
    q.gridDimZ = p->gridDimZ;
    q.blockDimX = p->blockDimX;
    q.blockDimY = p->blockDimY;
    q.blockDimZ = p->blockDimZ;
    q.sharedMemBytes = p->sharedMemBytes;
    q.kernelParams = p->kernelParams;
    q.extra = p->extra;
    return q;
}

CUresult cuGraphAddKernelNode(CUgraphNode *phGraphNode, CUgraph hGraph,
                              const CUgraphNode *dependencies, size_t numDependencies,
                              const CUDA_KERNEL_NODE_PARAMS_v1 *nodeParams)
{
    if (!nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_KERNEL_NODE_PARAMS q = kernel_params_v2(nodeParams);
    return cuGraphAddKernelNode_v2(phGraphNode, hGraph, dependencies, numDependencies, &q);
}

CUresult cuGraphKernelNodeGetParams(CUgraphNode hNode, CUDA_KERNEL_NODE_PARAMS_v1 *nodeParams)
{
    CUDA_KERNEL_NODE_PARAMS q;
    if (!nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult st = cuGraphKernelNodeGetParams_v2(hNode, &q);
    if (st == CUDA_SUCCESS)
        *nodeParams = (CUDA_KERNEL_NODE_PARAMS_v1){q.func,      q.gridDimX,  q.gridDimY,
                                                   q.gridDimZ,  q.blockDimX, q.blockDimY,
                                                   q.blockDimZ, q.sharedMemBytes,
                                                   q.kernelParams, q.extra};
    return st;
}

CUresult cuGraphKernelNodeSetParams(CUgraphNode hNode, const CUDA_KERNEL_NODE_PARAMS_v1 *nodeParams)
{
    if (!nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_KERNEL_NODE_PARAMS q = kernel_params_v2(nodeParams);
    return cuGraphKernelNodeSetParams_v2(hNode, &q);
}

CUresult cuGraphExecKernelNodeSetParams(CUgraphExec hGraphExec, CUgraphNode hNode,
                                        const CUDA_KERNEL_NODE_PARAMS_v1 *nodeParams)
{
    if (!nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_KERNEL_NODE_PARAMS q = kernel_params_v2(nodeParams);
    return cuGraphExecKernelNodeSetParams_v2(hGraphExec, hNode, &q);
}

CUresult cuGraphInstantiate_v2(CUgraphExec *phGraphExec, CUgraph hGraph, CUgraphNode *phErrorNode,
                               char *logBuffer, size_t bufferSize)
{
    CUresult st = cuGraphInstantiateWithFlags(phGraphExec, hGraph, 0);
    if (phErrorNode)
        *phErrorNode = NULL;
    if (logBuffer && bufferSize)
        logBuffer[0] = '\0';
    return st;
}

CUresult cuGraphInstantiate(CUgraphExec *phGraphExec, CUgraph hGraph, CUgraphNode *phErrorNode,
                            char *logBuffer, size_t bufferSize)
{
    return cuGraphInstantiate_v2(phGraphExec, hGraph, phErrorNode, logBuffer, bufferSize);
}

CUresult cuGraphExecUpdate(CUgraphExec hGraphExec, CUgraph hGraph, CUgraphNode *hErrorNode_out,
                           CUgraphExecUpdateResult *updateResult_out)
{
    CUgraphExecUpdateResultInfo info;
    CUresult st = cuGraphExecUpdate_v2(hGraphExec, hGraph, &info);
    if (hErrorNode_out)
        *hErrorNode_out = NULL;
    if (updateResult_out)
        *updateResult_out = info.result;
    return st;
}

CUresult cuGraphGetEdges(CUgraph hGraph, CUgraphNode *from, CUgraphNode *to, size_t *numEdges)
{
    return cuGraphGetEdges_v2(hGraph, from, to, NULL, numEdges);
}

CUresult cuGraphNodeGetDependencies(CUgraphNode hNode, CUgraphNode *dependencies,
                                    size_t *numDependencies)
{
    return cuGraphNodeGetDependencies_v2(hNode, dependencies, NULL, numDependencies);
}

CUresult cuGraphNodeGetDependentNodes(CUgraphNode hNode, CUgraphNode *dependentNodes,
                                      size_t *numDependentNodes)
{
    return cuGraphNodeGetDependentNodes_v2(hNode, dependentNodes, NULL, numDependentNodes);
}

CUresult cuGraphAddDependencies(CUgraph hGraph, const CUgraphNode *from, const CUgraphNode *to,
                                size_t numDependencies)
{
    return cuGraphAddDependencies_v2(hGraph, from, to, NULL, numDependencies);
}

CUresult cuGraphRemoveDependencies(CUgraph hGraph, const CUgraphNode *from, const CUgraphNode *to,
                                   size_t numDependencies)
{
    return cuGraphRemoveDependencies_v2(hGraph, from, to, NULL, numDependencies);
}

CUresult cuGraphAddNode(CUgraphNode *phGraphNode, CUgraph hGraph, const CUgraphNode *dependencies,
                        size_t numDependencies, CUgraphNodeParams *nodeParams)
{
    return cuGraphAddNode_v2(phGraphNode, hGraph, dependencies, NULL, numDependencies, nodeParams);
}

CUresult cuStreamBeginCapture(CUstream hStream)
{
    return begin_capture(hStream, CU_STREAM_CAPTURE_MODE_GLOBAL);
}

CUresult cuStreamBeginCapture_ptsz(CUstream hStream)
{
    return begin_capture(hStream ? hStream : CU_STREAM_PER_THREAD, CU_STREAM_CAPTURE_MODE_GLOBAL);
}

CUresult cuStreamGetCaptureInfo_v2(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                   cuuint64_t *id_out, CUgraph *graph_out,
                                   const CUgraphNode **dependencies_out,
                                   size_t *numDependencies_out)
{
    return cuStreamGetCaptureInfo_v3(hStream, captureStatus_out, id_out, graph_out,
                                     dependencies_out, NULL, numDependencies_out);
}

CUresult cuStreamGetCaptureInfo_v2_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                        cuuint64_t *id_out, CUgraph *graph_out,
                                        const CUgraphNode **dependencies_out,
                                        size_t *numDependencies_out)
{
    return cuStreamGetCaptureInfo_v3(hStream ? hStream : CU_STREAM_PER_THREAD, captureStatus_out,
                                     id_out, graph_out, dependencies_out, NULL,
                                     numDependencies_out);
}

CUresult cuStreamGetCaptureInfo(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                cuuint64_t *id_out)
{
    return cuStreamGetCaptureInfo_v3(hStream, captureStatus_out, id_out, NULL, NULL, NULL, NULL);
}

CUresult cuStreamGetCaptureInfo_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                     cuuint64_t *id_out)
{
    return cuStreamGetCaptureInfo_v3(hStream ? hStream : CU_STREAM_PER_THREAD, captureStatus_out,
                                     id_out, NULL, NULL, NULL, NULL);
}
