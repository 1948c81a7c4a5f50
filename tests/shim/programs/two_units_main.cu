// Two translation units: the executable's .nv_fatbin holds two containers back to back, and the
// first unit's registration must ship the chain (the shim follows it inside the segment).
#include <cstdio>

__global__ void first(int *p)
{
    *p = 1;
}

void launch_second(int *d);

int main()
{
    int *d, h = 0;
    if (cudaMalloc(&d, sizeof(int)) != cudaSuccess)
        return 1;
    first<<<1, 1>>>(d);
    launch_second(d);
    cudaError_t e = cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost);
    printf("two units %s h=%d\n", cudaGetErrorName(e), h);
    printf(e == cudaSuccess && h == 2 ? "PASSED\n" : "FAILED\n");
    return !(e == cudaSuccess && h == 2);
}
