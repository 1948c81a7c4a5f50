/* cuInit without a daemon: CUDA_ERROR_NO_DEVICE, and the shim says how to start one. */
#include <cuda.h>
#include <stdio.h>

int main(void)
{
    CUresult r = cuInit(0);
    int count = -1;
    CUresult c = cuDeviceGetCount(&count);
    printf("cuInit %d cuDeviceGetCount %d\n", (int)r, (int)c);
    return r == CUDA_ERROR_NO_DEVICE ? 0 : 1;
}
