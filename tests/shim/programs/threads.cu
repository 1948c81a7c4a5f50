// Several host threads share the shim's one connection: each has its own stream, buffers and
// kernels, and checks its own results.
#include <thread>
#include <vector>
#include "common.h"

__global__ void fill(int *p, int base, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        p[i] = base + i * 3;
}

static int worker(int id, int *errors)
{
    const int n = 2048;
    cudaStream_t s;
    CHECK(cudaSetDevice(0));
    CHECK(cudaStreamCreate(&s));
    int *d, *h;
    CHECK(cudaMalloc(&d, n * sizeof(int)));
    CHECK(cudaMallocHost(&h, n * sizeof(int)));
    for (int round = 0; round < 5; round++) {
        int base = id * 100000 + round * 1000;
        fill<<<(n + 127) / 128, 128, 0, s>>>(d, base, n);
        CHECK(cudaMemcpyAsync(h, d, n * sizeof(int), cudaMemcpyDeviceToHost, s));
        CHECK(cudaStreamSynchronize(s));
        for (int i = 0; i < n; i++)
            if (h[i] != base + i * 3)
                (*errors)++;
    }
    CHECK(cudaFree(d));
    CHECK(cudaFreeHost(h));
    CHECK(cudaStreamDestroy(s));
    return 0;
}

int main()
{
    const int nthreads = 6;
    std::vector<std::thread> threads;
    int errors[nthreads] = {0}, rcs[nthreads] = {0};
    for (int t = 0; t < nthreads; t++)
        threads.emplace_back([t, &errors, &rcs] { rcs[t] = worker(t, &errors[t]); });
    int bad = 0;
    for (int t = 0; t < nthreads; t++) {
        threads[t].join();
        bad += errors[t] + rcs[t];
    }
    printf("threads mismatches %d\n", bad);
    printf(bad ? "FAILED\n" : "PASSED\n");
    return bad != 0;
}
