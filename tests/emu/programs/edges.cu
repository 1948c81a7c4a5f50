// Kernels for the PTX machine's edge cases (test_edges.py): IEEE directed rounding where exact
// zeros, overflow and underflow decide the result, NaN through half-precision conversions,
// recursion as deep as the stack size limit allows, and faulting accesses with no allocation.
#include <cuda_fp16.h>

// out[i*16 + k]: the k-th operation on (a[i], b[i], c[i])
__global__ void directed64(const double *a, const double *b, const double *c, double *out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    double x = a[i], y = b[i], z = c[i];
    double *o = out + 16 * i;
    o[0] = __dadd_rd(x, y);
    o[1] = __dadd_ru(x, y);
    o[2] = __dadd_rz(x, y);
    o[3] = __dmul_rd(x, y);
    o[4] = __dmul_ru(x, y);
    o[5] = __dmul_rz(x, y);
    o[6] = __ddiv_rd(x, y);
    o[7] = __ddiv_ru(x, y);
    o[8] = __ddiv_rz(x, y);
    o[9] = __fma_rd(x, y, z);
    o[10] = __fma_ru(x, y, z);
    o[11] = __fma_rz(x, y, z);
    o[12] = __fma_rn(x, y, z);
    o[13] = __drcp_rz(x);
    o[14] = __dsqrt_rd(fabs(x));
    o[15] = __dsqrt_ru(fabs(x));
}

// exact zero sums: out[i*6 + k]
__global__ void zero_sums(const float *a, const double *d, float *fo, double *dout, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    float x = a[i];
    double y = d[i];
    fo[3 * i + 0] = __fadd_rd(x, -x);
    fo[3 * i + 1] = __fsub_rd(x, x);
    fo[3 * i + 2] = __fmaf_rd(x, 1.0f, -x);
    dout[3 * i + 0] = __dadd_rd(y, -y);
    dout[3 * i + 1] = __dsub_rd(y, y);
    dout[3 * i + 2] = __fma_rd(y, 1.0, -y);
}

// NaN through conversions to and from half: out[i*4 + k] bit patterns
__global__ void half_nans(const float *f, const double *d, const unsigned short *h, unsigned *out,
                          int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    out[4 * i + 0] = __half_as_ushort(__float2half(f[i]));
    out[4 * i + 1] = __half_as_ushort(__double2half(d[i]));
    out[4 * i + 2] = __float_as_uint(__half2float(__ushort_as_half(h[i])));
    __half2 two = __floats2half2_rn(f[i], 1.0f);
    out[4 * i + 3] = __half_as_ushort(__high2half(two)) << 16 | __half_as_ushort(__low2half(two));
}

__device__ int walk(int n)
{
    volatile int loc[4];
    loc[n & 3] = n;
    if (n == 0)
        return loc[0];
    return walk(n - 1) + loc[n & 3];
}

__global__ void deep(int n, int *out)
{
    out[threadIdx.x] = walk(n);
}

__global__ void touch(int *p)
{
    p[threadIdx.x] += 1;
}

// Lanes 1..31 wait on a flag lane 0 of the same warp sets after its own work; the wait loop has
// an if inside (legal under independent thread scheduling, sm_70 on).
__global__ void intrawarp_wait(int *out, int nap)
{
    __shared__ volatile int flag;
    if (threadIdx.x == 0)
        flag = 0;
    __syncwarp();
    if (threadIdx.x != 0) {
        while (flag == 0) {
            if (nap)
                __nanosleep(100);
        }
        out[threadIdx.x] = flag;
    } else {
        out[0] = 7;
        flag = 7;
    }
}
