// cudaMemcpyToSymbol into __constant__ memory and a __device__ global, read back by a kernel
// and with cudaMemcpyFromSymbol.
#include "common.h"

__constant__ float coeffs[4];
__device__ int counter;

__global__ void poly(float *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float x = (float)i;
        out[i] = coeffs[0] + x * (coeffs[1] + x * (coeffs[2] + x * coeffs[3]));
        atomicAdd(&counter, 1);
    }
}

int main()
{
    const int n = 300;
    float h_coeffs[4] = {1.0f, 0.5f, 0.25f, 0.0f};
    CHECK(cudaMemcpyToSymbol(coeffs, h_coeffs, sizeof h_coeffs));
    int zero = 0;
    CHECK(cudaMemcpyToSymbol(counter, &zero, sizeof zero));
    float *d;
    CHECK(cudaMalloc(&d, n * sizeof(float)));
    poly<<<(n + 127) / 128, 128>>>(d, n);
    CHECK(cudaGetLastError());
    float out[n];
    CHECK(cudaMemcpy(out, d, sizeof out, cudaMemcpyDeviceToHost));
    int count = -1;
    CHECK(cudaMemcpyFromSymbol(&count, counter, sizeof count));
    int bad = 0;
    for (int i = 0; i < n; i++) {
        float x = (float)i, want = 1.0f + x * (0.5f + x * 0.25f);
        if (out[i] != want)
            bad++;
    }
    printf("constant mismatches %d counter %d\n", bad, count);
    CHECK(cudaFree(d));
    bool ok = bad == 0 && count == n;
    printf(ok ? "PASSED\n" : "FAILED\n");
    return !ok;
}
