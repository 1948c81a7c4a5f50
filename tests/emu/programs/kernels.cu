// Kernels the emulated CUDA device must run; tests/emu/test_programs.py compares each with numpy.
#include <cstdio>
#include <cstdint>

extern "C" __global__ void vectorAdd(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

extern "C" __global__ void saxpy(int n, float a, const float *x, float *y) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        y[i] = a * x[i] + y[i];
}

// Tree reduction in dynamic shared memory: one partial sum per block.
extern "C" __global__ void reduceSum(const float *in, float *out, int n) {
    extern __shared__ float sdata[];
    unsigned tid = threadIdx.x;
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    sdata[tid] = (i < n) ? in[i] : 0.0f;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (tid < s) sdata[tid] += sdata[tid + s];
        __syncthreads();
    }
    if (tid == 0) out[blockIdx.x] = sdata[0];
}

#define TILE 16
// C[M,N] = A[M,K] * B[K,N], row major, 2D grid of 16x16 tiles in static shared memory.
extern "C" __global__ void matmul(const float *A, const float *B, float *C, int M, int N, int K) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    int row = blockIdx.y * TILE + threadIdx.y;
    int col = blockIdx.x * TILE + threadIdx.x;
    float acc = 0.0f;
    for (int t = 0; t < (K + TILE - 1) / TILE; ++t) {
        int ac = t * TILE + threadIdx.x, br = t * TILE + threadIdx.y;
        As[threadIdx.y][threadIdx.x] = (row < M && ac < K) ? A[row * K + ac] : 0.0f;
        Bs[threadIdx.y][threadIdx.x] = (br < K && col < N) ? B[br * N + col] : 0.0f;
        __syncthreads();
        for (int k = 0; k < TILE; ++k) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
        __syncthreads();
    }
    if (row < M && col < N) C[row * N + col] = acc;
}

// Histogram: per-block shared counts with shared atomics, merged with global atomics.
extern "C" __global__ void histogram(const unsigned char *data, int n, unsigned int *bins) {
    __shared__ unsigned int local[256];
    for (int b = threadIdx.x; b < 256; b += blockDim.x) local[b] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        atomicAdd(&local[data[i]], 1u);
    __syncthreads();
    for (int b = threadIdx.x; b < 256; b += blockDim.x)
        if (local[b]) atomicAdd(&bins[b], local[b]);
}

// Data-dependent loop with divergent branches: Collatz step counts plus a switch.
extern "C" __global__ void collatz(const unsigned int *start, int *steps, int *kind, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned long long x = start[i];
    int s = 0;
    while (x != 1 && s < 1000) {
        if (x & 1) x = 3 * x + 1;
        else x >>= 1;
        ++s;
    }
    steps[i] = s;
    int k;
    switch (start[i] % 4) {
        case 0: k = 10; break;
        case 1: k = s * 2; break;
        case 2: k = -s; break;
        default: k = s ^ 0x55; break;
    }
    kind[i] = k;
}

struct Params {
    unsigned char tag;
    short offset;
    float scale[3];
    double bias;
    long long stride;
};

// By-value struct and 64-bit scalar parameters.
extern "C" __global__ void structParams(Params p, long long base, unsigned long long mask,
                                        double *out, long long *out64) {
    int i = threadIdx.x;
    out[i] = p.scale[i % 3] * (double)(i + p.offset) + p.bias + (double)p.tag;
    out64[i] = base + p.stride * i + (long long)(mask >> (i % 64));
}

// Double precision arithmetic (exact IEEE ops only).
extern "C" __global__ void dmath(const double *x, const double *y, double *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = (x[i] * y[i] + x[i]) / (y[i] + 3.0) - sqrt(fabs(x[i]));
}

__constant__ float coeffs[8];
__device__ int counter;

// Polynomial from __constant__ coefficients; counts calls in a __device__ variable.
extern "C" __global__ void poly(const float *x, float *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float acc = 0.0f, xi = x[i];
    for (int k = 7; k >= 0; --k) acc = acc * xi + coeffs[k];
    out[i] = acc;
    atomicAdd(&counter, 1);
}

// Precise (or, built with -use_fast_math, fast) single-precision math functions.
extern "C" __global__ void mathfn(const float *x, float *out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    out[6 * i + 0] = expf(v);
    out[6 * i + 1] = logf(v);
    out[6 * i + 2] = sinf(v);
    out[6 * i + 3] = cosf(v);
    out[6 * i + 4] = sqrtf(v);
    out[6 * i + 5] = powf(v, 1.5f);
}

// Warp-shuffle reduction: one sum per warp.
extern "C" __global__ void warpReduce(const int *in, int *out) {
    int v = in[blockIdx.x * blockDim.x + threadIdx.x];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if ((threadIdx.x & 31) == 0) out[(blockIdx.x * blockDim.x + threadIdx.x) / 32] = v;
}

extern "C" __global__ void hello(int value) {
    if (threadIdx.x < 2) printf("hello from thread %d value %d\n", (int)threadIdx.x, value);
}

// Writes one element past the end of an allocation when asked to.
extern "C" __global__ void writeAt(int *p, long long index) {
    if (threadIdx.x == 0) p[index] = 42;
}

extern "C" __global__ void empty() {}

int main() { return 0; }
