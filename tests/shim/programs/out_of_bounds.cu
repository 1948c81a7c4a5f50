// A kernel that writes far outside its allocation: the launch itself succeeds, the next
// synchronising call reports cudaErrorIllegalAddress (a sticky error).
#include "common.h"

__global__ void scribble(int *p, long long offset)
{
    p[offset + threadIdx.x] = 42;
}

int main()
{
    int *d;
    CHECK(cudaMalloc(&d, 256 * sizeof(int)));
    // a block larger than the device takes fails at the launch itself, not later
    scribble<<<1, 4096>>>(d, 0);
    cudaError_t config = cudaGetLastError();
    printf("oversized block %s\n", cudaGetErrorName(config));
    scribble<<<1, 32>>>(d, 1LL << 40);
    cudaError_t launch = cudaGetLastError();
    cudaError_t sync = cudaDeviceSynchronize();
    printf("launch %s sync %s\n", cudaGetErrorName(launch), cudaGetErrorName(sync));
    cudaError_t after = cudaMemcpy(d, d, 4, cudaMemcpyDeviceToDevice);
    printf("after %s\n", cudaGetErrorName(after));
    bool ok = config != cudaSuccess && launch == cudaSuccess && sync == cudaErrorIllegalAddress;
    printf(ok ? "PASSED\n" : "FAILED\n");
    return !ok;
}
