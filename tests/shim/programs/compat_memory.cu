// Memory features of the runtime API that real programs use, each checked against host
// results: managed memory (pointers to managed memory inside managed memory, host writes
// between kernels, copies and memsets into it, attributes and hints, `__managed__`
// variables), mapped page-locked
// memory (cudaHostAllocMapped used through cudaHostGetDevicePointer and directly, registered
// memory, plain cudaMallocHost memory by its own address), pitched allocations with cudaMemcpy2D in every direction and cudaMemset2D, and
// memory pools under cudaMallocAsync.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common.h"

#define EXPECT(c)                                                      \
    do {                                                               \
        if (!(c)) {                                                    \
            printf("FAIL line %d: %s\n", __LINE__, #c);                \
            return 1;                                                  \
        }                                                              \
    } while (0)

__device__ __managed__ int managed_var[16];
__device__ __managed__ float managed_scale = 2.5f;

__global__ void scale_managed_var()
{
    managed_var[threadIdx.x] = (int)(managed_var[threadIdx.x] * managed_scale) + 100;
}

struct Node {
    int *data;
    int n;
};

__global__ void twice_plus_index(int *a, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        a[i] = a[i] * 2 + i;
}

__global__ void sum_nodes(const Node *nodes, int count, int *out)
{
    int i = threadIdx.x;
    if (i < count) {
        int s = 0;
        for (int j = 0; j < nodes[i].n; j++)
            s += nodes[i].data[j];
        out[i] = s;
    }
}

__global__ void increment(float *a, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        a[i] += 1.0f;
}

__global__ void add_one(int *a, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        a[i] += 1;
}

__global__ void add_to_rows(float *a, size_t pitch, int w, int h)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
    if (x < w && y < h)
        ((float *)((char *)a + y * pitch))[x] += 1000.0f;
}

static int managed()
{
    int n = 1000, *a;
    CHECK(cudaMallocManaged(&a, n * sizeof(int)));
    for (int i = 0; i < n; i++)
        a[i] = i;
    twice_plus_index<<<(n + 255) / 256, 256>>>(a, n);
    CHECK(cudaDeviceSynchronize());
    for (int i = 0; i < n; i++)
        EXPECT(a[i] == 3 * i);
    twice_plus_index<<<(n + 255) / 256, 256>>>(a, n);
    CHECK(cudaDeviceSynchronize());
    for (int i = 0; i < n; i++)
        EXPECT(a[i] == 7 * i);
    cudaMemLocation dev0 = {cudaMemLocationTypeDevice, 0};
    CHECK(cudaMemPrefetchAsync(a, n * sizeof(int), dev0, 0));
    CHECK(cudaMemAdvise(a, n * sizeof(int), cudaMemAdviseSetReadMostly, dev0));
    cudaPointerAttributes pa;
    CHECK(cudaPointerGetAttributes(&pa, a + 10));
    EXPECT(pa.type == cudaMemoryTypeManaged);
    int attr = 0;
    CHECK(cudaDeviceGetAttribute(&attr, cudaDevAttrManagedMemory, 0));
    EXPECT(attr == 1);
    CHECK(cudaFree(a));

    int count = 8, *out;
    Node *nodes;
    CHECK(cudaMallocManaged(&nodes, count * sizeof(Node)));
    CHECK(cudaMallocManaged(&out, count * sizeof(int), cudaMemAttachHost));
    for (int i = 0; i < count; i++) {
        CHECK(cudaMallocManaged(&nodes[i].data, (i + 1) * sizeof(int)));
        nodes[i].n = i + 1;
        for (int j = 0; j <= i; j++)
            nodes[i].data[j] = j;
    }
    sum_nodes<<<1, 32>>>(nodes, count, out);
    CHECK(cudaDeviceSynchronize());
    for (int i = 0; i < count; i++)
        EXPECT(out[i] == i * (i + 1) / 2);

    int big = 1 << 20;
    float *f, *h = (float *)malloc(big * sizeof(float));
    CHECK(cudaMallocManaged(&f, big * sizeof(float)));
    for (int i = 0; i < big; i++)
        h[i] = (float)i;
    CHECK(cudaMemcpy(f, h, big * sizeof(float), cudaMemcpyHostToDevice));
    EXPECT(f[12345] == 12345.0f);
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    CHECK(cudaStreamAttachMemAsync(s, f, 0, cudaMemAttachSingle));
    increment<<<big / 256, 256, 0, s>>>(f, big);
    CHECK(cudaStreamSynchronize(s));
    for (int i = 0; i < big; i += 997)
        EXPECT(f[i] == i + 1.0f);
    f[7] = -5.0f;
    increment<<<big / 256, 256, 0, s>>>(f, big);
    CHECK(cudaMemcpyAsync(h, f, big * sizeof(float), cudaMemcpyDeviceToHost, s));
    CHECK(cudaStreamSynchronize(s));
    EXPECT(h[7] == -4.0f && f[7] == -4.0f && h[100] == 102.0f && f[100] == 102.0f);
    CHECK(cudaMemset(f, 0, big * sizeof(float)));
    CHECK(cudaDeviceSynchronize());
    EXPECT(f[5] == 0.0f && f[big - 1] == 0.0f);
    CHECK(cudaFree(f));
    CHECK(cudaStreamDestroy(s));
    free(h);

    EXPECT(managed_scale == 2.5f); /* its initial value, seen by the host */
    for (int i = 0; i < 16; i++)
        managed_var[i] = i;
    scale_managed_var<<<1, 16>>>();
    CHECK(cudaDeviceSynchronize());
    for (int i = 0; i < 16; i++)
        EXPECT(managed_var[i] == (int)(i * 2.5f) + 100);
    managed_scale = 1.0f;
    scale_managed_var<<<1, 16>>>();
    CHECK(cudaDeviceSynchronize());
    for (int i = 0; i < 16; i++)
        EXPECT(managed_var[i] == (int)(i * 2.5f) + 200);
    printf("managed ok\n");
    return 0;
}

static int mapped()
{
    int n = 1024;
    size_t sz = n * sizeof(float);
    CHECK(cudaSetDeviceFlags(cudaDeviceMapHost));
    int can = 0;
    CHECK(cudaDeviceGetAttribute(&can, cudaDevAttrCanMapHostMemory, 0));
    EXPECT(can == 1);
    float *h, *dh;
    CHECK(cudaHostAlloc(&h, sz, cudaHostAllocMapped));
    for (int i = 0; i < n; i++)
        h[i] = (float)i;
    CHECK(cudaHostGetDevicePointer(&dh, h, 0));
    increment<<<n / 256, 256>>>(dh, n);
    CHECK(cudaDeviceSynchronize());
    for (int i = 0; i < n; i++)
        EXPECT(h[i] == i + 1.0f);
    increment<<<n / 256, 256>>>(h, n); // unified addressing: the host pointer itself
    CHECK(cudaDeviceSynchronize());
    for (int i = 0; i < n; i++)
        EXPECT(h[i] == i + 2.0f);
    CHECK(cudaFreeHost(h));

    float *r = (float *)malloc(sz), *dr;
    for (int i = 0; i < n; i++)
        r[i] = (float)i;
    CHECK(cudaHostRegister(r, sz, cudaHostRegisterMapped));
    CHECK(cudaHostGetDevicePointer(&dr, r, 0));
    increment<<<n / 256, 256>>>(dr, n);
    CHECK(cudaDeviceSynchronize());
    for (int i = 0; i < n; i++)
        EXPECT(r[i] == i + 1.0f);
    CHECK(cudaHostUnregister(r));
    free(r);

    float *pinned, *d;
    CHECK(cudaMallocHost(&pinned, sz));
    CHECK(cudaMalloc(&d, sz));
    for (int i = 0; i < n; i++)
        pinned[i] = (float)i;
    CHECK(cudaMemcpy(d, pinned, sz, cudaMemcpyHostToDevice));
    increment<<<n / 256, 256>>>(d, n);
    CHECK(cudaMemcpy(pinned, d, sz, cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++)
        EXPECT(pinned[i] == i + 1.0f);
    CHECK(cudaFreeHost(pinned));
    CHECK(cudaFree(d));

    /* unified addressing: plain cudaMallocHost memory is usable by kernels through its own
     * address, also after a while of being only a copy staging buffer */
    int *zc;
    CHECK(cudaMallocHost(&zc, n * sizeof(int)));
    cudaPointerAttributes pa;
    CHECK(cudaPointerGetAttributes(&pa, zc));
    EXPECT(pa.type == cudaMemoryTypeHost && pa.devicePointer == zc && pa.hostPointer == zc);
    int *dz;
    CHECK(cudaMalloc(&dz, n * sizeof(int)));
    for (int i = 0; i < n; i++)
        zc[i] = i;
    CHECK(cudaMemcpy(dz, zc, n * sizeof(int), cudaMemcpyHostToDevice));
    for (int i = 0; i < n; i++)
        zc[i] = 2 * i;
    add_one<<<n / 256, 256>>>(zc, n);
    CHECK(cudaDeviceSynchronize());
    for (int i = 0; i < n; i++)
        EXPECT(zc[i] == 2 * i + 1);
    CHECK(cudaMemcpy(zc, dz, n * sizeof(int), cudaMemcpyDeviceToHost)); /* the host's copy */
    add_one<<<n / 256, 256>>>(zc, n);
    CHECK(cudaDeviceSynchronize());
    for (int i = 0; i < n; i++)
        EXPECT(zc[i] == i + 1);
    int *dzc;
    CHECK(cudaHostGetDevicePointer(&dzc, zc, 0));
    EXPECT(dzc == zc);
    CHECK(cudaFree(dz));
    CHECK(cudaFreeHost(zc));

    /* each such buffer also holds device memory: 256 MiB of them at most, the rest are
     * host memory only (and still page-locked host memory for copies) */
    void *big[5];
    int on_device = 0;
    for (int i = 0; i < 5; i++) {
        CHECK(cudaMallocHost(&big[i], (size_t)64 << 20));
        CHECK(cudaPointerGetAttributes(&pa, big[i]));
        EXPECT(pa.type == cudaMemoryTypeHost && pa.hostPointer == big[i]);
        on_device += pa.devicePointer == big[i];
    }
    EXPECT(on_device == 4);
    for (int i = 0; i < 5; i++)
        CHECK(cudaFreeHost(big[i]));
    printf("mapped ok\n");
    return 0;
}

static int pitched()
{
    int w = 100, h = 37;
    size_t row = w * sizeof(float), pitch, pitch2;
    float *d, *d2;
    CHECK(cudaMallocPitch(&d, &pitch, row, h));
    CHECK(cudaMallocPitch(&d2, &pitch2, row, h));
    EXPECT(pitch >= row);
    float *hs = (float *)malloc(row * h), *hd = (float *)malloc(row * h),
          *hh = (float *)malloc(row * h);
    for (int i = 0; i < w * h; i++)
        hs[i] = (float)i;
    CHECK(cudaMemset2D(d, pitch, 0, row, h));
    CHECK(cudaMemcpy2D(d, pitch, hs, row, row, h, cudaMemcpyHostToDevice));
    add_to_rows<<<dim3(1, h), 128>>>(d, pitch, w, h);
    CHECK(cudaMemcpy2D(d2, pitch2, d, pitch, row, h, cudaMemcpyDeviceToDevice));
    CHECK(cudaMemcpy2D(hd, row, d2, pitch2, row, h, cudaMemcpyDeviceToHost));
    for (int i = 0; i < w * h; i++)
        EXPECT(hd[i] == i + 1000.0f);
    CHECK(cudaMemcpy2D(hh, row, hd, row, row, h, cudaMemcpyHostToHost));
    EXPECT(memcmp(hh, hd, row * h) == 0);
    CHECK(cudaMemcpy2D(hh, row, d, pitch, row, h, cudaMemcpyDefault));
    EXPECT(memcmp(hh, hd, row * h) == 0);
    CHECK(cudaMemset2D(d, pitch, 0xff, 8, 3));
    CHECK(cudaMemcpy2D(hd, row, d, pitch, row, h, cudaMemcpyDeviceToHost));
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint32_t u;
            memcpy(&u, &hd[y * w + x], 4);
            if (y < 3 && x < 2)
                EXPECT(u == 0xffffffffu);
            else
                EXPECT(hd[y * w + x] == y * w + x + 1000.0f);
        }
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    CHECK(cudaMemcpy2DAsync(d, pitch, hs, row, row, h, cudaMemcpyHostToDevice, s));
    CHECK(cudaMemset2DAsync(d2, pitch2, 0, row, h, s));
    CHECK(cudaMemcpy2DAsync(hd, row, d, pitch, row, h, cudaMemcpyDeviceToHost, s));
    CHECK(cudaStreamSynchronize(s));
    EXPECT(memcmp(hs, hd, row * h) == 0);
    free(hs);
    free(hd);
    free(hh);
    printf("pitched ok\n");
    return 0;
}

__global__ void fill(int *a, int n, int v)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        a[i] = v + i;
}

static int pools()
{
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    int n = 5000, *d, *h = (int *)malloc(n * sizeof(int));
    cudaMemPool_t pool;
    CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
    uint64_t threshold = UINT64_MAX, got = 0;
    CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &got));
    EXPECT(got == threshold);
    CHECK(cudaMallocAsync(&d, n * sizeof(int), s));
    CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &got));
    EXPECT(got >= n * sizeof(int));
    fill<<<(n + 255) / 256, 256, 0, s>>>(d, n, 5);
    CHECK(cudaMemcpyAsync(h, d, n * sizeof(int), cudaMemcpyDeviceToHost, s));
    CHECK(cudaFreeAsync(d, s));
    CHECK(cudaStreamSynchronize(s));
    for (int i = 0; i < n; i++)
        EXPECT(h[i] == 5 + i);
    CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &got));
    EXPECT(got == 0);
    cudaMemPoolProps props = {};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = 0;
    cudaMemPool_t mine, current;
    CHECK(cudaMemPoolCreate(&mine, &props));
    CHECK(cudaMallocFromPoolAsync((void **)&d, n * sizeof(int), mine, s));
    fill<<<(n + 255) / 256, 256, 0, s>>>(d, n, 9);
    CHECK(cudaMemcpyAsync(h, d, n * sizeof(int), cudaMemcpyDeviceToHost, s));
    CHECK(cudaFreeAsync(d, s));
    CHECK(cudaStreamSynchronize(s));
    for (int i = 0; i < n; i++)
        EXPECT(h[i] == 9 + i);
    CHECK(cudaMemPoolTrimTo(mine, 0));
    CHECK(cudaMemPoolDestroy(mine));
    CHECK(cudaDeviceGetMemPool(&current, 0));
    EXPECT(current == pool);
    free(h);
    printf("pools ok\n");
    return 0;
}

int main()
{
    if (managed() || mapped() || pitched() || pools())
        return 1;
    printf("PASSED\n");
    return 0;
}
