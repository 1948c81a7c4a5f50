// Runtime behaviour real programs rely on: kernel printf reaching stdout (at a device
// synchronisation and at a blocking copy), launch-configuration errors as
// cudaErrorInvalidConfiguration through cudaPeekAtLastError/cudaGetLastError, occupancy
// queries and function attributes, dynamic shared memory above 48 KiB after
// cudaFuncSetAttribute, host callbacks and events across streams, device properties, and a
// cooperative launch whose blocks meet at grid.sync().
#include <cooperative_groups.h>
#include <cstdlib>
#include <unistd.h>

#include "common.h"

namespace cg = cooperative_groups;

#define EXPECT(c)                                                      \
    do {                                                               \
        if (!(c)) {                                                    \
            printf("FAIL line %d: %s\n", __LINE__, #c);                \
            return 1;                                                  \
        }                                                              \
    } while (0)

__global__ void say(int v, float f)
{
    if (threadIdx.x < 2)
        printf("device says %d %d %.2f %s\n", threadIdx.x, v, f, "hi");
}

__global__ void reverse(float *a)
{
    extern __shared__ float s[];
    s[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    a[blockIdx.x * blockDim.x + threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

__global__ void add(int *a, int n, int v)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        a[i] += v;
}

__global__ void reverse_grid(int *a, int *out, int n)
{
    cg::grid_group grid = cg::this_grid();
    int i = (int)grid.thread_rank();
    if (i < n)
        a[i] = i;
    grid.sync(); /* every block's writes are visible after this */
    if (i < n)
        out[i] = a[n - 1 - i];
}

static int cooperative()
{
    int supported = 0, n = 1024, *a, *out, h[1024];
    CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrCooperativeLaunch, 0));
    EXPECT(supported == 1);
    CHECK(cudaMalloc(&a, n * sizeof(int)));
    CHECK(cudaMalloc(&out, n * sizeof(int)));
    void *args[] = {&a, &out, &n};
    CHECK(cudaLaunchCooperativeKernel((void *)reverse_grid, dim3(4), dim3(256), args, 0, 0));
    CHECK(cudaMemcpy(h, out, sizeof h, cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++)
        EXPECT(h[i] == n - 1 - i);
    EXPECT(cudaLaunchCooperativeKernel((void *)reverse_grid, dim3(1 << 20), dim3(256), args, 0,
                                       0) == cudaErrorCooperativeLaunchTooLarge);
    CHECK(cudaFree(a));
    CHECK(cudaFree(out));
    printf("cooperative ok\n");
    return 0;
}

static int printf_output()
{
    say<<<1, 32>>>(7, 1.5f);
    CHECK(cudaDeviceSynchronize());
    fflush(stdout);
    printf("after sync\n");
    int *d, x = 0;
    CHECK(cudaMalloc(&d, sizeof(int)));
    say<<<1, 32>>>(8, 2.5f);
    CHECK(cudaMemcpy(&x, d, sizeof(int), cudaMemcpyDeviceToHost));
    fflush(stdout);
    printf("after copy\n");
    CHECK(cudaFree(d));
    return 0;
}

static int launch_errors()
{
    int *d;
    CHECK(cudaMalloc(&d, 4096 * sizeof(int)));
    add<<<1, 4096>>>(d, 4096, 1);
    EXPECT(cudaPeekAtLastError() == cudaErrorInvalidConfiguration);
    EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration);
    EXPECT(cudaGetLastError() == cudaSuccess);
    add<<<dim3(1, 1, 1 << 20), 1>>>(d, 1, 1);
    EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration);
    void *huge;
    EXPECT(cudaMalloc(&huge, (size_t)1 << 50) == cudaErrorMemoryAllocation);
    EXPECT(cudaGetLastError() == cudaErrorMemoryAllocation);
    EXPECT(cudaSetDevice(99) == cudaErrorInvalidDevice);
    cudaGetLastError();
    add<<<16, 256>>>(d, 4096, 1);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaFree(d));
    printf("errors ok\n");
    return 0;
}

static int occupancy()
{
    int blocks = 0, grid = 0, block = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, reverse, 256, 256 * 4));
    EXPECT(blocks > 0);
    CHECK(cudaOccupancyMaxPotentialBlockSize(&grid, &block, add, 0, 0));
    EXPECT(grid > 0 && block > 0 && block % 32 == 0);
    size_t dyn = 0;
    CHECK(cudaOccupancyAvailableDynamicSMemPerBlock(&dyn, reverse, 1, 256));
    EXPECT(dyn > 0);
    cudaFuncAttributes fa;
    CHECK(cudaFuncGetAttributes(&fa, reverse));
    EXPECT(fa.maxThreadsPerBlock > 0 && fa.ptxVersion > 0);
    CHECK(cudaFuncSetAttribute(reverse, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024));
    CHECK(cudaFuncGetAttributes(&fa, reverse));
    EXPECT(fa.maxDynamicSharedSizeBytes == 64 * 1024);
    int tpb = 1024;
    float *d, *h = (float *)malloc(4 * tpb * sizeof(float));
    CHECK(cudaMalloc(&d, 4 * tpb * sizeof(float)));
    reverse<<<4, tpb, 48 * 1024 + 4096>>>(d);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(h, d, 4 * tpb * sizeof(float), cudaMemcpyDeviceToHost));
    for (int i = 0; i < 4 * tpb; i++)
        EXPECT(h[i] == tpb - 1 - (i % tpb));
    CHECK(cudaFree(d));
    free(h);
    printf("occupancy ok\n");
    return 0;
}

static int calls = 0, order[2];
static void CUDART_CB host_fn(void *arg) { order[calls++] = (int)(long)arg; }
static void CUDART_CB callback(cudaStream_t, cudaError_t st, void *arg)
{
    if (st == cudaSuccess)
        order[calls++] = (int)(long)arg;
}

static int streams()
{
    int n = 1 << 16, *d, *h;
    CHECK(cudaMallocHost(&h, n * sizeof(int)));
    CHECK(cudaMalloc(&d, n * sizeof(int)));
    cudaStream_t s1, s2;
    cudaEvent_t e;
    CHECK(cudaStreamCreate(&s1));
    CHECK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    CHECK(cudaMemsetAsync(d, 0, n * sizeof(int), s1));
    add<<<n / 256, 256, 0, s1>>>(d, n, 20);
    CHECK(cudaLaunchHostFunc(s1, host_fn, (void *)1));
    CHECK(cudaEventRecord(e, s1));
    CHECK(cudaStreamWaitEvent(s2, e, 0));
    add<<<n / 256, 256, 0, s2>>>(d, n, 3);
    CHECK(cudaStreamAddCallback(s2, callback, (void *)2, 0));
    CHECK(cudaMemcpyAsync(h, d, n * sizeof(int), cudaMemcpyDeviceToHost, s2));
    cudaError_t q = cudaStreamQuery(s2);
    EXPECT(q == cudaSuccess || q == cudaErrorNotReady);
    CHECK(cudaStreamSynchronize(s2));
    EXPECT(cudaStreamQuery(s2) == cudaSuccess);
    CHECK(cudaEventSynchronize(e));
    EXPECT(cudaEventQuery(e) == cudaSuccess);
    for (int i = 0; i < n; i++)
        EXPECT(h[i] == 23);
    for (int i = 0; i < 200 && calls < 2; i++)
        usleep(10000);
    EXPECT(calls == 2 && order[0] == 1 && order[1] == 2);
    CHECK(cudaStreamDestroy(s1));
    CHECK(cudaStreamDestroy(s2));
    CHECK(cudaEventDestroy(e));
    CHECK(cudaFreeHost(h));
    CHECK(cudaFree(d));
    printf("streams ok\n");
    return 0;
}

static int properties()
{
    int count = 0, v = 0;
    CHECK(cudaGetDeviceCount(&count));
    EXPECT(count >= 1);
    CHECK(cudaSetDevice(0));
    cudaDeviceProp p;
    CHECK(cudaGetDeviceProperties(&p, 0));
    EXPECT(p.warpSize == 32 && p.maxThreadsPerBlock >= 512 && p.multiProcessorCount > 0);
    EXPECT(p.totalGlobalMem > 0 && p.managedMemory == 1 && p.canMapHostMemory == 1);
    EXPECT(p.concurrentManagedAccess == 0 && p.unifiedAddressing == 1);
    CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0));
    EXPECT(v == p.multiProcessorCount);
    size_t free_b = 0, total = 0, free2 = 0;
    CHECK(cudaMemGetInfo(&free_b, &total));
    EXPECT(free_b > 0 && free_b <= total);
    void *x;
    CHECK(cudaMalloc(&x, 1 << 20));
    CHECK(cudaMemGetInfo(&free2, &total));
    EXPECT(free2 < free_b);
    cudaPointerAttributes pa;
    CHECK(cudaPointerGetAttributes(&pa, x));
    EXPECT(pa.type == cudaMemoryTypeDevice && pa.device == 0 && pa.devicePointer == x);
    CHECK(cudaFree(x));
    printf("properties ok: %s, %d SMs\n", p.name, p.multiProcessorCount);
    return 0;
}

int main()
{
    if (printf_output() || launch_errors() || occupancy() || streams() || properties() ||
        cooperative())
        return 1;
    printf("PASSED\n");
    return 0;
}
