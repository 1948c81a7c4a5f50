// CUB block/warp collectives compiled by test_ptx_cub.py (real-world PTX: shfl, vote, bar).
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/warp/warp_reduce.cuh>
extern "C" __global__ void cubBlock(const int* in, int* sums, int* scans, int* wsums) {
  typedef cub::BlockReduce<int, 128> BR;
  typedef cub::BlockScan<int, 128> BS;
  typedef cub::WarpReduce<int> WR;
  __shared__ typename BR::TempStorage tr;
  __shared__ typename BS::TempStorage ts;
  __shared__ typename WR::TempStorage tw[4];
  int v = in[blockIdx.x * 128 + threadIdx.x];
  int s = BR(tr).Sum(v);
  if (threadIdx.x == 0) sums[blockIdx.x] = s;
  int x;
  BS(ts).ExclusiveSum(v, x);
  scans[blockIdx.x * 128 + threadIdx.x] = x;
  int w = WR(tw[threadIdx.x / 32]).Sum(v);
  __syncwarp();
  if (threadIdx.x % 32 == 0) wsums[blockIdx.x * 4 + threadIdx.x / 32] = w;
}
