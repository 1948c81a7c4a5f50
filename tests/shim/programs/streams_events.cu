// Two streams with async copies, kernels, events, a cross-stream wait and an elapsed time.
#include <cstdlib>
#include "common.h"

__global__ void scale(float *x, float f, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] *= f;
}

__global__ void add(const float *a, float *b, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        b[i] += a[i];
}

static void CUDART_CB mark(void *flag)
{
    *(int *)flag = 1;
}

int main()
{
    const int n = 4096;
    size_t bytes = n * sizeof(float);
    float *ha, *hb;
    CHECK(cudaMallocHost(&ha, bytes));
    CHECK(cudaMallocHost(&hb, bytes));
    for (int i = 0; i < n; i++) {
        ha[i] = (float)i;
        hb[i] = 1.0f;
    }
    float *da, *db;
    CHECK(cudaMalloc(&da, bytes));
    CHECK(cudaMalloc(&db, bytes));
    cudaStream_t s1, s2;
    CHECK(cudaStreamCreate(&s1));
    CHECK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    cudaEvent_t start, stop, a_ready;
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));
    CHECK(cudaEventCreateWithFlags(&a_ready, cudaEventDisableTiming));
    CHECK(cudaEventRecord(start, s1));
    CHECK(cudaMemcpyAsync(da, ha, bytes, cudaMemcpyHostToDevice, s1));
    scale<<<n / 256, 256, 0, s1>>>(da, 2.0f, n);
    CHECK(cudaEventRecord(a_ready, s1));
    CHECK(cudaMemcpyAsync(db, hb, bytes, cudaMemcpyHostToDevice, s2));
    CHECK(cudaStreamWaitEvent(s2, a_ready, 0));
    add<<<n / 256, 256, 0, s2>>>(da, db, n);
    CHECK(cudaMemcpyAsync(hb, db, bytes, cudaMemcpyDeviceToHost, s2));
    CHECK(cudaEventRecord(stop, s2));
    CHECK(cudaStreamSynchronize(s2));
    CHECK(cudaEventSynchronize(stop));
    float ms = -1;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    int bad = 0;
    for (int i = 0; i < n; i++)
        if (hb[i] != 2.0f * i + 1.0f)
            bad++;
    CHECK(cudaStreamQuery(s1));
    // stream-ordered allocation and a host function in stream order
    int *tmp, host_ran = 0;
    CHECK(cudaMallocAsync(&tmp, 1024, s1));
    CHECK(cudaMemsetAsync(tmp, 0, 1024, s1));
    CHECK(cudaLaunchHostFunc(s1, mark, &host_ran));
    CHECK(cudaFreeAsync(tmp, s1));
    CHECK(cudaStreamSynchronize(s1));
    if (!host_ran)
        bad++;
    printf("streams mismatches %d elapsed_ms_nonnegative %d\n", bad, ms >= 0.0f);
    CHECK(cudaEventDestroy(start));
    CHECK(cudaEventDestroy(stop));
    CHECK(cudaEventDestroy(a_ready));
    CHECK(cudaStreamDestroy(s1));
    CHECK(cudaStreamDestroy(s2));
    CHECK(cudaFree(da));
    CHECK(cudaFree(db));
    CHECK(cudaFreeHost(ha));
    CHECK(cudaFreeHost(hb));
    bool ok = bad == 0 && ms >= 0.0f;
    printf(ok ? "PASSED\n" : "FAILED\n");
    return !ok;
}
