// Thrust (CUB underneath): a radix sort, a reduction and a transform. CUB picks its tuning
// policy from cudaFuncGetAttributes(...).ptxVersion and refuses to run ("invalid device
// function") when that names an architecture the program was not built for.
#include <cstdio>
#include <thrust/device_vector.h>
#include <thrust/host_vector.h>
#include <thrust/reduce.h>
#include <thrust/sort.h>
#include <thrust/transform.h>

struct twice {
    __host__ __device__ int operator()(int x) const { return 2 * x; }
};

int main() {
    const int n = 4096;
    thrust::host_vector<int> h(n);
    for (int i = 0; i < n; i++) h[i] = (i * 7919) % n;
    thrust::device_vector<int> d = h;
    thrust::sort(d.begin(), d.end());
    thrust::transform(d.begin(), d.end(), d.begin(), twice());
    long sum = thrust::reduce(d.begin(), d.end(), 0L);
    thrust::host_vector<int> back = d;
    int bad = 0;
    for (int i = 0; i < n; i++) bad += back[i] != 2 * i;
    bool ok = bad == 0 && sum == (long)n * (n - 1);
    printf("thrust sort/transform/reduce of %d ints: sum %ld, %d bad\n", n, sum, bad);
    printf(ok ? "PASSED\n" : "FAILED\n");
    return ok ? 0 : 1;
}
