// Keeps the GPU busy (launch, synchronise, copy back) until an error stops it; the test kills
// the server meanwhile and expects a CUDA error, not a hang.
#include <cstdio>

__global__ void bump(int *x)
{
    atomicAdd(x, 1);
}

int main()
{
    int *d;
    cudaError_t e = cudaMalloc(&d, sizeof(int));
    if (e != cudaSuccess) {
        printf("ERROR %s\n", cudaGetErrorName(e));
        return 2;
    }
    for (int i = 0; i < 1000000; i++) {
        bump<<<1, 1>>>(d);
        e = cudaDeviceSynchronize();
        int h = 0;
        if (e == cudaSuccess)
            e = cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost);
        if (e != cudaSuccess) {
            printf("ERROR %s after %d iterations\n", cudaGetErrorName(e), i);
            fflush(stdout);
            return 2;
        }
        if (i == 2) {
            printf("running\n");
            fflush(stdout);
        }
    }
    printf("finished without an error\n");
    return 0;
}
