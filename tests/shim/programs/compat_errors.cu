// Errors a call must return itself, as the driver does, although rgpu queues the work without
// waiting: launches beyond a kernel's own limits (__launch_bounds__, its dynamic shared memory
// limit before and after cudaFuncSetAttribute) through <<<>>>, cudaLaunchKernelEx and graph
// kernel nodes; device-to-device copies and memsets past the end of an allocation. An error
// that does come back later (a memset of an address the shim does not know) is reported by the
// next synchronisation, never by an allocation, which must keep what it allocated.
// With the argument "fault" (or "fault-copy"): a kernel prints, then faults; its lines must
// reach stdout at the synchronisation (or the blocking copy) that reports the fault.
#include <cstring>

#include "common.h"

#define EXPECT(c)                                                      \
    do {                                                               \
        if (!(c)) {                                                    \
            printf("FAIL line %d: %s\n", __LINE__, #c);                \
            return 1;                                                  \
        }                                                              \
    } while (0)
#define EXPECT_ERR(x, want)                                                              \
    do {                                                                                 \
        cudaError_t e_ = (x);                                                            \
        if (e_ != (want)) {                                                              \
            printf("FAIL line %d: %s gave %s, not %s\n", __LINE__, #x, cudaGetErrorName(e_), \
                   cudaGetErrorName(want));                                              \
            return 1;                                                                    \
        }                                                                                \
    } while (0)

__global__ void __launch_bounds__(128) bounded(int *out)
{
    out[blockIdx.x * blockDim.x + threadIdx.x] = threadIdx.x;
}

__global__ void dyn(int *out, int n)
{
    extern __shared__ int buf[];
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        buf[i] = i;
    __syncthreads();
    if (threadIdx.x == 0)
        out[0] = buf[n - 1];
}

__global__ void print_then_fault(int *p)
{
    printf("before the fault %d\n", threadIdx.x);
    __syncthreads();
    if (threadIdx.x == 0)
        p[0] = 1;
}

static int fault(bool copy)
{
    int *d, h = 0;
    CHECK(cudaMalloc(&d, sizeof h));
    print_then_fault<<<1, 2>>>(nullptr);
    /* the fault reaches the app at a synchronisation, or at the blocking copy after it */
    cudaError_t e = copy ? cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost)
                         : cudaDeviceSynchronize();
    fflush(stdout);
    printf("%s: %s\n", copy ? "copy" : "sync", cudaGetErrorName(e));
    return e == cudaErrorIllegalAddress ? 0 : 1;
}

static int launch_bounds(int *d)
{
    bounded<<<1, 256>>>(d);
    EXPECT_ERR(cudaGetLastError(), cudaErrorLaunchOutOfResources);
    bounded<<<2, 128>>>(d);
    EXPECT_ERR(cudaGetLastError(), cudaSuccess);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(1);
    cfg.blockDim = dim3(512);
    EXPECT_ERR(cudaLaunchKernelEx(&cfg, bounded, d), cudaErrorLaunchOutOfResources);
    cfg.blockDim = dim3(64);
    EXPECT_ERR(cudaLaunchKernelEx(&cfg, bounded, d), cudaSuccess);
    cudaFuncAttributes fa;
    CHECK(cudaFuncGetAttributes(&fa, bounded));
    EXPECT(fa.maxThreadsPerBlock == 128);
    CHECK(cudaDeviceSynchronize());
    int h[256];
    CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
    for (int i = 0; i < 256; i++)
        EXPECT(h[i] == i % 128);
    return 0;
}

static int dynamic_shared(int *d)
{
    const int n = 15000; /* 60000 bytes: above the 48 KiB default, within the opt-in maximum */
    dyn<<<1, 64, n * 4>>>(d, n);
    EXPECT_ERR(cudaGetLastError(), cudaErrorInvalidValue);
    dyn<<<1, 64, 1 << 20>>>(d, n); /* above the device's opt-in maximum */
    EXPECT_ERR(cudaGetLastError(), cudaErrorInvalidValue);
    /* the common pattern: the launch fails, the attribute is raised, the launch is retried */
    EXPECT_ERR(cudaFuncSetAttribute(dyn, cudaFuncAttributeMaxDynamicSharedMemorySize, n * 4),
               cudaSuccess);
    CHECK(cudaMemset(d, 0, 4));
    dyn<<<1, 64, n * 4>>>(d, n);
    EXPECT_ERR(cudaGetLastError(), cudaSuccess);
    int h = 0;
    CHECK(cudaMemcpy(&h, d, 4, cudaMemcpyDeviceToHost));
    EXPECT(h == n - 1);
    /* lowered again: the shim's cached limit follows */
    CHECK(cudaFuncSetAttribute(dyn, cudaFuncAttributeMaxDynamicSharedMemorySize, 1024));
    dyn<<<1, 64, 2048>>>(d, 512);
    EXPECT_ERR(cudaGetLastError(), cudaErrorInvalidValue);
    dyn<<<1, 64, 1024>>>(d, 256);
    EXPECT_ERR(cudaGetLastError(), cudaSuccess);
    CHECK(cudaDeviceSynchronize());
    return 0;
}

static int graph_node(int *d)
{
    cudaGraph_t g;
    CHECK(cudaGraphCreate(&g, 0));
    void *args[] = {&d};
    cudaKernelNodeParams p = {};
    p.func = (void *)bounded;
    p.gridDim = dim3(1);
    p.blockDim = dim3(256);
    p.kernelParams = args;
    cudaGraphNode_t node;
    EXPECT(cudaGraphAddKernelNode(&node, g, nullptr, 0, &p) != cudaSuccess);
    (void)cudaGetLastError();
    p.blockDim = dim3(128);
    CHECK(cudaGraphAddKernelNode(&node, g, nullptr, 0, &p));
    CHECK(cudaGraphDestroy(g));
    return 0;
}

static int copy_ranges()
{
    char *a, *b;
    CHECK(cudaMalloc(&a, 4096));
    CHECK(cudaMalloc(&b, 4096));
    CHECK(cudaMemset(a, 0x11, 4096));
    CHECK(cudaMemset(b, 0x22, 4096));
    EXPECT_ERR(cudaMemcpy(b, a, 1 << 20, cudaMemcpyDeviceToDevice), cudaErrorInvalidValue);
    EXPECT_ERR(cudaMemcpy(b + 2048, a, 4096, cudaMemcpyDeviceToDevice), cudaErrorInvalidValue);
    EXPECT_ERR(cudaMemset(a, 0x33, 1 << 20), cudaErrorInvalidValue);
    EXPECT_ERR(cudaMemsetAsync(a + 4000, 0x33, 97), cudaErrorInvalidValue);
    EXPECT_ERR(cudaMemcpyAsync(b, a + 1, 4096, cudaMemcpyDeviceToDevice), cudaErrorInvalidValue);
    EXPECT_ERR(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_ERR(cudaMemcpy(b, a, 4096, cudaMemcpyDeviceToDevice), cudaSuccess);
    EXPECT_ERR(cudaMemset(a + 4095, 0x44, 1), cudaSuccess);
    unsigned char h[4096];
    CHECK(cudaMemcpy(h, b, 4096, cudaMemcpyDeviceToHost));
    for (int i = 0; i < 4096; i++)
        EXPECT(h[i] == 0x11);
    CHECK(cudaMemcpy(h, a, 4096, cudaMemcpyDeviceToHost));
    EXPECT(h[4094] == 0x11 && h[4095] == 0x44);
    CHECK(cudaFree(a));
    CHECK(cudaFree(b));
    return 0;
}

static int deferred_error()
{
    size_t free0, free1, total;
    CHECK(cudaMemGetInfo(&free0, &total));
    for (int i = 0; i < 4; i++) {
        /* an address no allocation holds: only the server can tell, after the call returned */
        EXPECT_ERR(cudaMemsetAsync((void *)0x1000, 0, 64), cudaSuccess);
        void *p = nullptr;
        EXPECT_ERR(cudaMalloc(&p, 64 << 20), cudaSuccess); /* never the memset's error */
        EXPECT(p != nullptr);
        EXPECT_ERR(cudaFuncSetAttribute(dyn, cudaFuncAttributeMaxDynamicSharedMemorySize, 4096),
                   cudaSuccess);
        EXPECT_ERR(cudaDeviceSynchronize(), cudaErrorInvalidValue);
        EXPECT_ERR(cudaGetLastError(), cudaErrorInvalidValue);
        EXPECT_ERR(cudaDeviceSynchronize(), cudaSuccess);
        CHECK(cudaFree(p));
    }
    CHECK(cudaMemGetInfo(&free1, &total));
    EXPECT(free1 == free0); /* nothing leaked */
    /* with managed memory, the launch's own coherence copies do not report it either */
    int *m;
    CHECK(cudaMallocManaged(&m, 64 * sizeof(int)));
    m[5] = -1;
    EXPECT_ERR(cudaMemsetAsync((void *)0x1000, 0, 64), cudaSuccess);
    bounded<<<1, 64>>>(m);
    EXPECT_ERR(cudaGetLastError(), cudaSuccess);
    EXPECT_ERR(cudaDeviceSynchronize(), cudaErrorInvalidValue);
    EXPECT_ERR(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT(m[5] == 5 && m[63] == 63);
    CHECK(cudaFree(m));
    return 0;
}

__global__ void churn(unsigned *out, int iters)
{
    unsigned v = threadIdx.x;
    for (int i = 0; i < iters; i++)
        v = v * 1664525u + 1013904223u;
    out[threadIdx.x] = v;
}

/* While a long kernel runs, cudaStreamQuery and the query of an event recorded after it say
 * cudaErrorNotReady at once (they do not wait for the kernel); "not ready" is no failure: an
 * error pending from before is still reported by the synchronisation after. */
static int busy_queries()
{
    unsigned *o;
    CHECK(cudaMalloc(&o, 256 * sizeof(unsigned)));
    cudaStream_t s;
    cudaEvent_t e;
    CHECK(cudaStreamCreate(&s));
    CHECK(cudaEventCreate(&e));
    churn<<<1, 256, 0, s>>>(o, 10);
    CHECK(cudaStreamSynchronize(s));
    EXPECT_ERR(cudaMemsetAsync((void *)0x1000, 0, 64, s), cudaSuccess); /* fails on the server */
    churn<<<1, 256, 0, s>>>(o, 1000000); /* about a second on the emulated device */
    CHECK(cudaEventRecord(e, s));
    EXPECT_ERR(cudaStreamQuery(s), cudaErrorNotReady);
    EXPECT_ERR(cudaEventQuery(e), cudaErrorNotReady);
    EXPECT_ERR(cudaStreamSynchronize(s), cudaErrorInvalidValue); /* the memset's, kept */
    EXPECT_ERR(cudaGetLastError(), cudaErrorInvalidValue);
    EXPECT_ERR(cudaEventQuery(e), cudaSuccess);
    EXPECT_ERR(cudaStreamQuery(s), cudaSuccess);
    CHECK(cudaEventDestroy(e));
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(o));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strncmp(argv[1], "fault", 5))
        return fault(!strcmp(argv[1], "fault-copy"));
    int *d;
    CHECK(cudaMalloc(&d, 1 << 16));
    if (launch_bounds(d))
        return 1;
    printf("launch bounds ok\n");
    if (dynamic_shared(d))
        return 1;
    printf("dynamic shared memory ok\n");
    if (graph_node(d))
        return 1;
    printf("graph node ok\n");
    if (copy_ranges())
        return 1;
    printf("copy ranges ok\n");
    if (deferred_error())
        return 1;
    printf("deferred error ok\n");
    if (busy_queries())
        return 1;
    printf("busy queries ok\n");
    CHECK(cudaFree(d));
    printf("PASSED\n");
    return 0;
}
