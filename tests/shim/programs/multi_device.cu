// Every device of the pool (GPUs of different servers included) runs its own vector add; the
// device pointers of different servers must never be confused.
#include <cstdlib>
#include "common.h"

__global__ void axpb(float *x, float a, float b, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] = a * x[i] + b;
}

int main()
{
    int count = 0;
    CHECK(cudaGetDeviceCount(&count));
    const int n = 1000;
    float *d[8] = {0};
    float h[n];
    if (count > 8)
        count = 8;
    for (int dev = 0; dev < count; dev++) {
        CHECK(cudaSetDevice(dev));
        for (int i = 0; i < n; i++)
            h[i] = (float)i;
        CHECK(cudaMalloc(&d[dev], sizeof h));
        CHECK(cudaMemcpy(d[dev], h, sizeof h, cudaMemcpyHostToDevice));
        axpb<<<(n + 127) / 128, 128>>>(d[dev], (float)(dev + 2), (float)dev, n);
        CHECK(cudaGetLastError());
    }
    int bad = 0;
    for (int dev = 0; dev < count; dev++) {
        CHECK(cudaSetDevice(dev));
        CHECK(cudaMemcpy(h, d[dev], sizeof h, cudaMemcpyDeviceToHost));
        for (int i = 0; i < n; i++)
            if (h[i] != (float)(dev + 2) * i + dev)
                bad++;
        CHECK(cudaFree(d[dev]));
    }
    // copies between devices (on different servers: staged through the application)
    if (count >= 2) {
        float *a, *b;
        for (int i = 0; i < n; i++)
            h[i] = (float)(7 * i);
        CHECK(cudaSetDevice(1));
        CHECK(cudaMalloc(&b, sizeof h));
        CHECK(cudaMemcpy(b, h, sizeof h, cudaMemcpyHostToDevice));
        CHECK(cudaSetDevice(0));
        CHECK(cudaMalloc(&a, sizeof h));
        CHECK(cudaMemcpyPeer(a, 0, b, 1, sizeof h));
        float back[n];
        CHECK(cudaMemcpy(back, a, sizeof back, cudaMemcpyDeviceToHost));
        for (int i = 0; i < n; i++)
            if (back[i] != h[i])
                bad++;
        CHECK(cudaFree(a));
        CHECK(cudaSetDevice(1));
        CHECK(cudaFree(b));
    }
    printf("devices %d mismatches %d\n", count, bad);
    printf(bad == 0 && count >= 1 ? "PASSED\n" : "FAILED\n");
    return !(bad == 0 && count >= 1);
}
