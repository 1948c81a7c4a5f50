// Kernels compiled with `nvcc -ptx` by test_ptx_nvcc.py and run on the PTX machine.
#include <cstdio>
#include <cstdint>

extern "C" __global__ void vectorAdd(const float* a, const float* b, float* c, int n) {
  int i = blockDim.x * blockIdx.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

extern "C" __global__ void saxpy(int n, float a, const float* x, float* y) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
    y[i] = a * x[i] + y[i];
}

extern "C" __global__ void reduceSum(const float* in, float* out, int n) {
  extern __shared__ float s[];
  unsigned t = threadIdx.x;
  unsigned i = blockIdx.x * blockDim.x + t;
  s[t] = i < n ? in[i] : 0.f;
  __syncthreads();
  for (unsigned k = blockDim.x / 2; k > 0; k >>= 1) {
    if (t < k) s[t] += s[t + k];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

#define TILE 16
extern "C" __global__ void matmul(const float* A, const float* B, float* C, int M, int N, int K) {
  __shared__ float As[TILE][TILE];
  __shared__ float Bs[TILE][TILE];
  int row = blockIdx.y * TILE + threadIdx.y, col = blockIdx.x * TILE + threadIdx.x;
  float acc = 0;
  for (int t = 0; t < (K + TILE - 1) / TILE; ++t) {
    As[threadIdx.y][threadIdx.x] =
        (row < M && t * TILE + threadIdx.x < K) ? A[row * K + t * TILE + threadIdx.x] : 0;
    Bs[threadIdx.y][threadIdx.x] =
        (col < N && t * TILE + threadIdx.y < K) ? B[(t * TILE + threadIdx.y) * N + col] : 0;
    __syncthreads();
    for (int k = 0; k < TILE; ++k) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
    __syncthreads();
  }
  if (row < M && col < N) C[row * N + col] = acc;
}

extern "C" __global__ void histogram(const unsigned char* data, int n, unsigned* hist,
                                     float* fsum, unsigned long long* umax, int* casv) {
  __shared__ unsigned local[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) local[i] = 0;
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    atomicAdd(&local[data[i]], 1u);
    atomicAdd(fsum, (float)data[i]);
    atomicMax(umax, (unsigned long long)data[i] * 1000003ull);
    atomicCAS(casv, 0, i + 1);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 256; i += blockDim.x) atomicAdd(&hist[i], local[i]);
}

extern "C" __global__ void collatz(const unsigned* start, unsigned* steps, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  unsigned long long x = start[i];
  unsigned s = 0;
  while (x != 1) {
    if (x & 1) x = 3 * x + 1; else x >>= 1;
    ++s;
  }
  int k = s % 4;
  switch (k) {
    case 0: s += 1000; break;
    case 1: s += 2000; break;
    case 2: s *= 2; break;
    default: s = ~s; break;
  }
  steps[i] = s;
}

struct Params {
  unsigned char tag;
  unsigned short id;
  float scale[3];
  double offset;
  long long stride;
  int* base;
};

extern "C" __global__ void structs(Params p, long long* out, int n) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  long long local[4];
  for (int k = 0; k < 4; ++k) local[k] = p.base[(i * p.stride + k) % n];
  long long idx = i * p.stride + (long long)p.id;
  out[i] = idx + local[i % 4] + p.tag + (long long)(p.scale[i % 3] * 10.0f) +
           (long long)p.offset + (i << 33);
}

extern "C" __global__ void dmath(const double* x, double* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = sqrt(x[i]) * 1.5 + x[i] / 3.0 - fma(x[i], x[i], 0.25) + exp(x[i] * 0.01);
}

__constant__ float coeffs[4] = {1.0f, -2.0f, 0.5f, 3.0f};
__device__ unsigned counter = 0;

extern "C" __global__ void poly(const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    float v = x[i];
    y[i] = ((coeffs[3] * v + coeffs[2]) * v + coeffs[1]) * v + coeffs[0];
    atomicAdd(&counter, 1u);
  }
}

extern "C" __global__ void mathfn(const float* x, float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    float v = x[i];
    out[5 * i + 0] = expf(v);
    out[5 * i + 1] = sinf(v);
    out[5 * i + 2] = logf(fabsf(v) + 1.0f);
    out[5 * i + 3] = powf(fabsf(v) + 0.5f, 1.7f);
    out[5 * i + 4] = sqrtf(fabsf(v));
  }
}

extern "C" __global__ void warpReduce(const int* in, int* out, unsigned* ballots) {
  int v = in[blockIdx.x * blockDim.x + threadIdx.x];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
  int lane = threadIdx.x & 31;
  unsigned b = __ballot_sync(0xffffffff, (in[blockIdx.x * blockDim.x + threadIdx.x] & 1) != 0);
  int any = __any_sync(0xffffffff, lane == 5);
  int all = __all_sync(0xffffffff, lane < 32);
  int x = __shfl_xor_sync(0xffffffff, lane, 1) + __shfl_up_sync(0xffffffff, lane, 2) +
          __shfl_sync(0xffffffff, lane, 7);
  if (lane == 0) {
    out[(blockIdx.x * blockDim.x + threadIdx.x) / 32] = v;
    ballots[(blockIdx.x * blockDim.x + threadIdx.x) / 32] = b + __popc(b) + any + all;
  }
  if (lane == 3) ballots[1000 + (blockIdx.x * blockDim.x + threadIdx.x) / 32] = x;
}

__device__ __noinline__ int helper(int a, int b) { return a * 3 + b; }

extern "C" __global__ void printer(int x, const int* vals) {
  int t = threadIdx.x;
  if (t % 2 == 0)
    printf("t=%d x=%5d v=%x f=%.3f s=%s c=%c %lld|%-4u|\n", t, x, vals[t], vals[t] * 0.5,
           "ok", 'A' + t, (long long)helper(t, x) << 33, (unsigned)t);
}

#include <cuda_fp16.h>
#include <cooperative_groups.h>
namespace cg = cooperative_groups;

extern "C" __global__ void intrinsics(const unsigned* a, const long long* b, unsigned* out,
                                      long long* out64, float* outf, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  unsigned x = a[i];
  long long y = b[i];
  out[8 * i + 0] = __brev(x);
  out[8 * i + 1] = __ffs(x);
  out[8 * i + 2] = __clz(x) + __popcll((unsigned long long)y);
  out[8 * i + 3] = __umulhi(x, 0x9E3779B9u);
  out[8 * i + 4] = __byte_perm(x, 0x11223344u, 0x5140);
  out[8 * i + 5] = __funnelshift_l(x, 0xDEADBEEFu, i & 31);
  out[8 * i + 6] = (x >> (i % 7)) & ((1u << (i % 13)) - 1u);
  out[8 * i + 7] = __sad((int)x, i * 1000, 7);
  out64[3 * i + 0] = y / (long long)(i - n / 2 == 0 ? 3 : i - n / 2);
  out64[3 * i + 1] = y % 1000003;
  out64[3 * i + 2] = __mul64hi(y, 0x123456789ABCDEFll);
  __half h = __float2half((float)(x % 1000) / 7.0f);
  __half h2 = __hadd(h, __float2half(0.5f));
  outf[4 * i + 0] = __half2float(__hmul(h2, h));
  outf[4 * i + 1] = __fdividef((float)x, 3.0f);
  outf[4 * i + 2] = __saturatef((float)(int)(x % 5) - 2.0f);
  outf[4 * i + 3] = rintf((float)(y % 1000) / 8.0f);
}

extern "C" __global__ void groups(const int* in, int* out, unsigned* counts) {
  cg::thread_block block = cg::this_thread_block();
  cg::thread_block_tile<16> tile = cg::tiled_partition<16>(block);
  int v = in[blockIdx.x * blockDim.x + threadIdx.x];
  for (int o = tile.size() / 2; o > 0; o /= 2) v += tile.shfl_down(v, o);
  if (tile.thread_rank() == 0) out[(blockIdx.x * blockDim.x + threadIdx.x) / 16] = v;
  int any_neg = __syncthreads_or(in[blockIdx.x * blockDim.x + threadIdx.x] < 0);
  int cnt = __syncthreads_count(in[blockIdx.x * blockDim.x + threadIdx.x] > 0);
  int all_small = __syncthreads_and(in[blockIdx.x * blockDim.x + threadIdx.x] < 100000);
  if (threadIdx.x == 0) {
    counts[3 * blockIdx.x + 0] = any_neg;
    counts[3 * blockIdx.x + 1] = cnt;
    counts[3 * blockIdx.x + 2] = all_small;
  }
  unsigned peers = __match_any_sync(0xffffffff, in[blockIdx.x * blockDim.x + threadIdx.x] & 3);
  if (threadIdx.x == 5) counts[1000 + blockIdx.x] = peers;
  atomicInc(&counts[2000], 10u);
  atomicDec(&counts[2001], 7u);
}

#include <cuda_bf16.h>

extern "C" __global__ void halves(const float* x, float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  __half2 h = __floats2half2_rn(x[i], 2.0f * x[i]);
  __half2 g = __hfma2(h, h, __float2half2_rn(0.25f));
  __half2 k = __hmul2(__hadd2(g, h), __hsub2(g, h));
  out[4 * i + 0] = __low2float(k);
  out[4 * i + 1] = __high2float(k);
  out[4 * i + 2] = __hlt(__low2half(h), __high2half(h)) ? 1.0f : 0.0f;
  __nv_bfloat16 b = __float2bfloat16(x[i]);
  out[4 * i + 3] = __bfloat162float(b) * 2.0f;
}

struct Node { int value; Node* next; };

extern "C" __global__ void misc(const float4* v4, float4* o4, const Node* const* heads,
                                int* listsum, double* dsum, float* fx, int n) {
  extern __shared__ float dyn[];
  __shared__ int stat[8];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (threadIdx.x < 8) stat[threadIdx.x] = threadIdx.x * 3;
  dyn[threadIdx.x] = (float)threadIdx.x;
  __syncthreads();
  if (i >= n) return;
  float4 a = __ldg(&v4[i]);
  float4 r;
  r.x = fminf(a.x, a.y) + fmaxf(a.z, a.w);
  r.y = truncf(a.x * 3.7f) + roundf(a.y * 2.5f) + floorf(-a.z) + ceilf(a.w);
  r.z = fmodf(a.x * 10.0f, 3.0f) + remainderf(a.y * 10.0f, 3.0f) + copysignf(a.z, -a.w);
  int e;
  float m = frexpf(a.x * 100.0f + 1.0f, &e);
  r.w = ldexpf(m, e + 1) + (float)__float_as_int(a.y) * 0.0f + dyn[(threadIdx.x + 1) % blockDim.x] +
        (float)stat[i % 8];
  o4[i] = r;
  int s = 0;
  for (const Node* p = heads[i % 4]; p != nullptr; p = p->next) s += p->value;
  int local[16];
  for (int k = 0; k < 16; ++k) local[k] = k * i;
  listsum[i] = s + local[(i * 7) % 16] + (int)(char)(i * 37) + (int)(short)(i * 3001);
  atomicAdd(dsum, (double)a.x);
  fx[i] = __int_as_float(__float_as_int(a.w) ^ 0x80000000) + (float)__double2int_rn(2.5 + i) +
          (float)__float2uint_rz(a.z * 100.0f);
}
