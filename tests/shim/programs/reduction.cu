// A shared-memory tree reduction (one partial sum per block, then the host adds them up).
#include <cstdlib>
#include "common.h"

__global__ void reduce(const int *in, int *out, int n)
{
    extern __shared__ int s[];
    unsigned t = threadIdx.x;
    unsigned i = blockIdx.x * blockDim.x * 2 + t;
    int v = 0;
    if (i < n)
        v = in[i];
    if (i + blockDim.x < n)
        v += in[i + blockDim.x];
    s[t] = v;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride)
            s[t] += s[t + stride];
        __syncthreads();
    }
    if (t == 0)
        out[blockIdx.x] = s[0];
}

int main()
{
    const int n = 1 << 15, threads = 128, blocks = (n + threads * 2 - 1) / (threads * 2);
    int *h = (int *)malloc(n * sizeof(int)), *partial = (int *)malloc(blocks * sizeof(int));
    long long expect = 0;
    for (int i = 0; i < n; i++) {
        h[i] = (i * 7) % 13 - 3;
        expect += h[i];
    }
    int *din, *dout;
    CHECK(cudaMalloc(&din, n * sizeof(int)));
    CHECK(cudaMalloc(&dout, blocks * sizeof(int)));
    CHECK(cudaMemcpy(din, h, n * sizeof(int), cudaMemcpyHostToDevice));
    reduce<<<blocks, threads, threads * sizeof(int)>>>(din, dout, n);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(partial, dout, blocks * sizeof(int), cudaMemcpyDeviceToHost));
    long long sum = 0;
    for (int b = 0; b < blocks; b++)
        sum += partial[b];
    printf("reduction sum %lld expected %lld\n", sum, expect);
    CHECK(cudaFree(din));
    CHECK(cudaFree(dout));
    printf(sum == expect ? "PASSED\n" : "FAILED\n");
    return sum != expect;
}
