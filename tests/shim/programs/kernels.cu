// Device code only, built by the test into a fatbin, a cubin and PTX for module_formats.c.
extern "C" __global__ void twice(float *x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] *= 2.0f;
}
