// Kernels for tests/emu/test_kernel_features.py: CUDA features real programs use whose PTX the
// emulated device once rejected or got wrong. Each kernel names the PTX it exists to exercise.
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <mma.h>
#include <cuda/barrier>
namespace cg = cooperative_groups;

// vote/redux/match/elect .sync with a per-lane membermask (tiles smaller than a warp)
extern "C" __global__ void tiles(const int* in, int* out) {
  cg::thread_block blk = cg::this_thread_block();
  auto t16 = cg::tiled_partition<16>(blk);
  auto t4 = cg::tiled_partition<4>(blk);
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  int v = in[i];
  int* o = out + i * 6;
  o[0] = cg::reduce(t16, v, cg::greater<int>());
  o[1] = cg::reduce(t4, v, cg::plus<int>());
  o[2] = t16.any(v == 3);
  o[3] = t16.all(v > -40);
  o[4] = t4.ballot(v > 0);
  o[5] = t16.match_any(v & 1);
}

// double sin/cos of huge arguments: libdevice's Payne-Hanek reduction uses mad.lo.cc/madc
extern "C" __global__ void dtrig(const double* x, double* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    out[2 * i] = sin(x[i]);
    out[2 * i + 1] = cos(x[i]);
  }
}

// cuda_fp16/cuda_bf16 header code: inline asm with `.reg.b32`, native f16/bf16 min/max/fma on
// sm_80+, bf16 conversions from f64 and integers on sm_90
extern "C" __global__ void halves(const float* x, const float* y, float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  __half a = __float2half(x[i]), b = __float2half(y[i]);
  __nv_bfloat16 c = __float2bfloat16(x[i]), d = __float2bfloat16(y[i]);
  float* o = out + i * 16;
  o[0] = __half2float(__hmax(a, b));
  o[1] = __half2float(__hmin(a, b));
  o[2] = __half2float(__hfma(a, b, a));
  o[3] = __half2float(__float2half_rz(x[i] * 3.3f));
  o[4] = __bfloat162float(__hmax(c, d));
  o[5] = __bfloat162float(__hmin(c, d));
#if __CUDA_ARCH__ >= 800
  o[6] = __bfloat162float(__hfma(c, d, c));
#else
  o[6] = __bfloat162float(__float2bfloat16(fmaf(__bfloat162float(c), __bfloat162float(d), x[i])));
#endif
  o[7] = __bfloat162float(c + d);
  o[8] = __bfloat162float(c * d);
  o[9] = __bfloat162float(c - d);
  o[10] = __bfloat162float(__double2bfloat16((double)x[i] * 1.1));
  o[11] = __bfloat162float(__int2bfloat16_rn(i * 1001 - 70000));
  o[12] = (float)__bfloat162int_rz(__hmul(c, __float2bfloat16(100.f)));
  __nv_bfloat162 p = __halves2bfloat162(c, d);
#if __CUDA_ARCH__ >= 800
  p = __hfma2(p, p, p);
#else
  p = __floats2bfloat162_rn(fmaf(__low2float(p), __low2float(p), __low2float(p)),
                            fmaf(__high2float(p), __high2float(p), __high2float(p)));
#endif
  o[13] = __low2float(p);
  o[14] = __high2float(p);
  o[15] = __hlt(c, d) ? 1.f : 0.f;
}

extern "C" __global__ void halfatomics(__half* h, __half2* h2, __nv_bfloat16* b, __nv_bfloat162* b2) {
  atomicAdd(h, __float2half(1.0f));
  atomicAdd(h2, __floats2half2_rn(1.0f, 2.0f));
  atomicAdd(b, __float2bfloat16(1.0f));
  atomicAdd(b2, __floats2bfloat162_rn(1.0f, 0.5f));
}

// half shuffles (WARP_SZ), packed relu fma, unordered bf16 comparisons (setp.equ.bf16 on sm_90)
extern "C" __global__ void halfwarp(const __half* x, __half* out, int* cmp) {
  int t = threadIdx.x;
  __half v = x[t], w = x[t ^ 3];
  out[t] = __shfl_xor_sync(0xffffffff, v, 1);
  __half2 p = __halves2half2(v, w);
  out[32 + t] = __high2half(__hfma2_relu(p, p, __hneg2(__hadd2(p, p))));
  __nv_bfloat16 b = __float2bfloat16(__half2float(v)), c = __float2bfloat16(__half2float(w));
  cmp[t] = __hequ(b, c) | __hgeu(b, c) << 1 | __hisnan(b) << 2 | __hlt(v, w) << 3 | __hne(b, c) << 4;
}

// __int128 division: nvcc's long division reads the carry of subc.cc chains with addc
extern "C" __global__ void int128(const long long* a, long long* out) {
  int t = threadIdx.x;
  __int128 x = (__int128)a[t] * a[t + 1];
  __int128 q = x / 1000003;
  out[2 * t] = (long long)(q >> 64);
  out[2 * t + 1] = (long long)q;
}

// int8 dot products (dp4a/dp2a)
extern "C" __global__ void dots(const int* a, const int* b, int* out) {
  int t = threadIdx.x;
  out[4 * t] = __dp4a(a[t], b[t], 5);
  out[4 * t + 1] = __dp4a((unsigned)a[t], (unsigned)b[t], 7u);
  out[4 * t + 2] = __dp2a_lo(a[t], b[t], 3);
  out[4 * t + 3] = __dp2a_hi((unsigned)a[t], (unsigned)b[t], 1u);
}

// device-side malloc/free and new/delete
struct Cell { int v; Cell* next; };
extern "C" __global__ void heap(int* out) {
  int t = threadIdx.x;
  int* p = (int*)malloc(16 * sizeof(int));
  for (int k = 0; k < 16; k++) p[k] = t * k;
  int s = 0;
  for (int k = 0; k < 16; k++) s += p[k];
  free(p);
  Cell* c = new Cell{t, nullptr};
  out[t] = s + c->v;
  delete c;
}

// recursion whose frames live in local memory, each level reading its caller's frame through a
// pointer, with a different depth in every thread
__device__ int walk(const int* parent, int depth) {
  int mine[3];
  mine[0] = depth;
  mine[1] = parent ? parent[0] + parent[1] : 1;
  mine[2] = parent ? parent[2] * 2 % 1000 : 3;
  if (depth == 0) return mine[1] + mine[2];
  return walk(mine, depth - 1) + mine[0];
}
extern "C" __global__ void recurse(const int* depth, int* out) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  out[t] = walk(nullptr, depth[t]);
}

// atom.add.s32 into a .b32 register with every thread on one address (cuda::atomic_ref and
// inline asm write it so): each thread must get its own ticket
extern "C" __global__ void tickets(int* counter, int* out) {
  int old;
  asm volatile("atom.global.add.s32 %0, [%1], %2;" : "=r"(old) : "l"(counter), "r"(1));
  out[blockIdx.x * blockDim.x + threadIdx.x] = old;
}

// tiles wider than a warp keep their scratch in the system-reserved shared memory of sm_80+
// (%reserved_smem_offset_1)
extern "C" __global__ void widetile(const int* in, int* out) {
#if __CUDA_ARCH__ >= 800
  cg::thread_block blk = cg::this_thread_block();
  auto t64 = cg::tiled_partition<64>(blk);
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = cg::reduce(t64, in[i], cg::plus<int>()) + 1000 * t64.meta_group_rank();
#endif
}

// SIMD intrinsics: video instructions (vabsdiff4, vabsdiff2.add) and, on sm_90, .u16x2/.s16x2
extern "C" __global__ void simd(const unsigned* x, const unsigned* y, unsigned* out) {
  int t = threadIdx.x;
  unsigned a = x[t], b = y[t];
  unsigned* o = out + 6 * t;
  o[0] = __vabsdiffu4(a, b);
  o[1] = __vsadu2(a, b);
  o[2] = __vaddss2(a, b);
  o[3] = __vmins2(a, b);
  o[4] = __vadd2(a, b);
  o[5] = __vsadu4(a, b);
}

// tensor cores through nvcuda::wmma: a tiled half-precision GEMM with float accumulators, one
// warp per 16x16 tile of C, and an int8 product with a column-major B stored column-major
extern "C" __global__ void wmmaGemm(const __half* A, const __half* B, float* C, int M, int N,
                                    int K) {
  using namespace nvcuda;
  int wm = (blockIdx.y * blockDim.y + threadIdx.y) * 16;
  int wn = (blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * 16;
  if (wm >= M || wn >= N) return;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  for (int k = 0; k < K; k += 16) {
    wmma::load_matrix_sync(fa, A + wm * K + k, K);
    wmma::load_matrix_sync(fb, B + k * N + wn, N);
    wmma::mma_sync(acc, fa, fb, acc);
  }
  for (int i = 0; i < acc.num_elements; i++) acc.x[i] *= 0.5f;
  wmma::store_matrix_sync(C + wm * N + wn, acc, N, wmma::mem_row_major);
}
extern "C" __global__ void wmmaInt8(const signed char* a, const signed char* b, int* c) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, signed char, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, signed char, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, int> fc;
  wmma::load_matrix_sync(fc, c, 16, wmma::mem_row_major);
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(c, fc, 16, wmma::mem_col_major);
}

// cooperative groups' grid-wide barrier (a cooperative launch; %envreg1:%envreg2 is its
// barrier word): every block reads what the next block wrote before the barrier
extern "C" __global__ void gridsync(int* p) {
  cg::grid_group g = cg::this_grid();
  unsigned long long i = g.thread_rank();
  p[i] = (int)i;
  g.sync();
  p[i] += 1000 * p[(i + blockDim.x) % g.size()];
}

// __fns, a struct returned by value from a non-inlined function, printf's conversions
struct Triple { double a; int b; float c[3]; };
__device__ __noinline__ Triple triple(int i) { return Triple{i * 1.5, i * i, {(float)i, -1.f, 0.5f}}; }
extern "C" __global__ void assorted(int* nth, double* sums, const char* s) {
  int t = threadIdx.x;
  nth[t] = __fns(0xF0F0F0F0u, t % 32, t % 8 - 3);
  Triple r = triple(t);
  sums[t] = r.a + r.b + r.c[0] + r.c[1] + r.c[2];
  if (t == 0)
    printf("[%8.3f|%-6d|%05d|%+d|%x|%X|%o|%llu|%lld|%.2e|%g|%c|%s|%%|%6s|%p]\n", 3.14159f, 42,
           42, 42, 255, 255, 8, 18446744073709551611ull, -77ll, 12345.678, 1e-10, 'z', s, "ab",
           (void*)0x1234);
}

// sm_80+: float -> tf32 conversion; sm_90: vector atomics on float2/float4
extern "C" __global__ void newer(const float* x, unsigned* tf, float2* p2, float4* p4) {
#if __CUDA_ARCH__ >= 800
  tf[threadIdx.x] = __float_as_uint(nvcuda::wmma::__float_to_tf32(x[threadIdx.x]));
#endif
#if __CUDA_ARCH__ >= 900
  atomicAdd(p2, make_float2(1.f, 2.f));
  atomicAdd(p4, make_float4(1.f, 2.f, 3.f, 4.f));
#endif
}

// Blelloch scan with bank-conflict padding: nvcc addresses shared memory as [%r+-4]
#define PAD(n) ((n) >> 5)
extern "C" __global__ void scan(const float* in, float* out, int n) {
  extern __shared__ float temp[];
  int t = threadIdx.x, off = 1;
  int ai = t, bi = t + n / 2;
  temp[ai + PAD(ai)] = in[ai];
  temp[bi + PAD(bi)] = in[bi];
  for (int d = n >> 1; d > 0; d >>= 1) {
    __syncthreads();
    if (t < d) {
      int a = off * (2 * t + 1) - 1, b = off * (2 * t + 2) - 1;
      temp[b + PAD(b)] += temp[a + PAD(a)];
    }
    off *= 2;
  }
  if (t == 0) temp[n - 1 + PAD(n - 1)] = 0;
  for (int d = 1; d < n; d *= 2) {
    off >>= 1;
    __syncthreads();
    if (t < d) {
      int a = off * (2 * t + 1) - 1, b = off * (2 * t + 2) - 1;
      float x = temp[a + PAD(a)];
      temp[a + PAD(a)] = temp[b + PAD(b)];
      temp[b + PAD(b)] += x;
    }
  }
  __syncthreads();
  out[ai] = temp[ai + PAD(ai)];
  out[bi] = temp[bi + PAD(bi)];
}

// sm_90 bulk copies (TMA) completing an mbarrier transaction: through libcu++ (copy, then
// arrive.expect_tx), and by hand with the arrival first, so the copy completes the phase
extern "C" __global__ void bulkcopy(const float* in, float* out) {
#if __CUDA_ARCH__ >= 900
  using barrier = cuda::barrier<cuda::thread_scope_block>;
  __shared__ alignas(16) float tile[256];
  __shared__ alignas(16) float tile2[256];
#pragma nv_diag_suppress static_var_with_dynamic_init
  __shared__ barrier bar;
  __shared__ alignas(8) unsigned long long raw;
  int t = threadIdx.x;
  if (t == 0) {
    init(&bar, blockDim.x);
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"((unsigned)__cvta_generic_to_shared(&raw)));
  }
  __syncthreads();
  barrier::arrival_token tok;
  if (t == 0) {
    cuda::device::memcpy_async_tx(tile, in + blockIdx.x * 256, cuda::aligned_size_t<16>(sizeof(tile)), bar);
    tok = cuda::device::barrier_arrive_tx(bar, 1, sizeof(tile));
    unsigned b = (unsigned)__cvta_generic_to_shared(&raw);
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;"
                 :: "r"(b), "r"((unsigned)sizeof(tile2)));
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 :: "r"((unsigned)__cvta_generic_to_shared(tile2)), "l"(in + (blockIdx.x ^ 1) * 256),
                    "r"((unsigned)sizeof(tile2)), "r"(b) : "memory");
  } else {
    tok = bar.arrive();
  }
  bar.wait(std::move(tok));
  unsigned done = 0;
  while (!done)
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0; selp.u32 %0, 1, 0, p; }"
                 : "=r"(done) : "r"((unsigned)__cvta_generic_to_shared(&raw)));
  out[blockIdx.x * 256 + t] = tile[255 - t] * 3 + tile2[t];
#endif
}

// the CUDA samples' reduce7: the last warp-level reduction runs on the block's first 8 lanes
// only, with an 8-lane mask, and shuffles down from lanes that do not take part (whose register,
// the loop's, still holds their first-level partial sums)
__device__ __forceinline__ int warpSum(unsigned mask, int v) {
  for (int o = warpSize / 2; o > 0; o /= 2) v += __shfl_down_sync(mask, v, o);
  return v;
}
extern "C" __global__ void lastwarp(const int* in, int* out) {
  __shared__ int s[8];
  int t = threadIdx.x;
  int v = warpSum(0xffffffff, in[blockIdx.x * 256 + t]);
  if ((t & 31) == 0) s[t >> 5] = v;
  __syncthreads();
  unsigned m = __ballot_sync(0xffffffff, t < 8);
  if (t < 8) v = warpSum(m, s[t]);
  if (t == 0) out[blockIdx.x] = v;
}

// a 1-byte static shared variable before the dynamic array (threadFenceReduction's amLast): the
// dynamic array starts aligned after it and the launch's bytes must all fit
extern "C" __global__ void oddstatic(const float* in, float* out) {
  extern __shared__ float dyn[];
  __shared__ bool positive;
  int t = threadIdx.x;
  if (t == 0) positive = in[0] >= 0.f;
  dyn[t] = in[t];
  __syncthreads();
  out[t] = dyn[blockDim.x - 1 - t] + (positive ? 1.f : 0.f);
}

// FP8 (cuda_fp8.h): software conversions before sm_89, cvt.rn.satfinite.e4m3x2/e5m2x2 after
extern "C" __global__ void fp8(const float* x, float* back, unsigned char* raw) {
  int t = threadIdx.x;
  __nv_fp8_e4m3 a(x[t]);
  __nv_fp8_e5m2 b(x[t]);
  raw[2 * t] = a.__x;
  raw[2 * t + 1] = b.__x;
  back[2 * t] = (float)a;
  back[2 * t + 1] = (float)b;
}

// __managed__ variables (.global .attribute(.managed)) and device tables holding string pointers
__managed__ int managedCount;
__managed__ float managedScale[2] = {0.5f, 2.0f};
struct Named { int id; const char* name; };
__device__ Named names[2] = {{7, "seven"}, {9, "nine"}};
extern "C" __global__ void managed(float* out) {
  int t = threadIdx.x;
  atomicAdd(&managedCount, 1);
  out[t] = managedScale[t % 2] * names[t % 2].id + names[t % 2].name[1];
}

// a single-pass scan: each block spins until its predecessor publishes its inclusive sum, the
// pattern of decoupled look-back (blocks of one batch wait on each other)
extern "C" __global__ void chainscan(const int* in, int* out, volatile int* flags,
                                     volatile int* sums, int* ticket) {
  __shared__ int bid, prefix, s[64];
  if (threadIdx.x == 0) bid = atomicAdd(ticket, 1);
  __syncthreads();
  int b = bid, i = b * 64 + threadIdx.x;
  s[threadIdx.x] = in[i];
  __syncthreads();
  for (int o = 1; o < 64; o <<= 1) {
    int v = threadIdx.x >= o ? s[threadIdx.x - o] : 0;
    __syncthreads();
    s[threadIdx.x] += v;
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    int p = 0;
    if (b > 0) {
      while (flags[b - 1] == 0) {}
      p = sums[b - 1];
    }
    sums[b] = p + s[63];
    __threadfence();
    flags[b] = 1;
    prefix = p;
  }
  __syncthreads();
  out[i] = s[threadIdx.x] + prefix;
}

// assert(): a call of __assertfail with the expression, file and line
#include <cassert>
extern "C" __global__ void asserting(const int* x) {
    assert(x[threadIdx.x] >= 0);
}
