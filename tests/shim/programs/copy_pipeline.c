/* Large copies in pieces, several in flight through the shared-memory region: sync and async,
 * both directions, unaligned sizes, and a copy that runs off the end of its allocation part of
 * the way through (an error, after which the context still works). */
#include <cuda.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                        \
    do {                                                                                \
        CUresult r_ = (x);                                                              \
        if (r_ != CUDA_SUCCESS) {                                                       \
            const char *n_ = "?";                                                       \
            cuGetErrorName(r_, &n_);                                                    \
            printf("FAIL %s: %s (%d)\n", #x, n_, (int)r_);                              \
            return 1;                                                                   \
        }                                                                               \
    } while (0)

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

int main(void)
{
    const size_t big = ((size_t)37 << 20) + 4099; /* many pieces, the last one short */
    const size_t small = (size_t)12 << 20;
    CUdevice dev;
    CUcontext ctx;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuCtxCreate(&ctx, NULL, 0, dev));
    uint8_t *a = malloc(big), *b = malloc(big);
    if (!a || !b)
        return 2;
    CUdeviceptr d, e;
    CHECK(cuMemAlloc(&d, big));
    CHECK(cuMemAlloc(&e, small));

    fill(a, big, 1);
    memset(b, 0, big);
    CHECK(cuMemcpyHtoD(d, a, big));
    CHECK(cuMemcpyDtoH(b, d, big));
    int sync_bad = memcmp(a, b, big) != 0;

    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    fill(a, big, 2);
    memset(b, 0, big);
    CHECK(cuMemcpyHtoDAsync(d, a, big, s));
    CHECK(cuMemcpyDtoHAsync(b, d, big, s));
    CHECK(cuStreamSynchronize(s));
    int async_bad = memcmp(a, b, big) != 0;

    /* 37 MiB into a 12 MiB allocation: the first pieces fit, a later one does not */
    CUresult over_up = cuMemcpyHtoD(e, a, big);
    CUresult over_down = cuMemcpyDtoH(b, e, big);
    /* the context still works, and the copies before and after agree */
    fill(a, small, 3);
    CHECK(cuMemcpyHtoD(e, a, small));
    memset(b, 0, small);
    CHECK(cuMemcpyDtoH(b, e, small));
    int after_bad = memcmp(a, b, small) != 0;
    CHECK(cuCtxSynchronize());

    const char *up_name = "?", *down_name = "?";
    cuGetErrorName(over_up, &up_name);
    cuGetErrorName(over_down, &down_name);
    printf("sync mismatches %d async mismatches %d after mismatches %d\n", sync_bad, async_bad,
           after_bad);
    printf("overrun up %s down %s\n", up_name, down_name);
    int ok = !sync_bad && !async_bad && !after_bad && over_up != CUDA_SUCCESS &&
             over_down != CUDA_SUCCESS;
    CHECK(cuMemFree(d));
    CHECK(cuMemFree(e));
    CHECK(cuCtxDestroy(ctx));
    free(a);
    free(b);
    puts(ok ? "PASSED" : "FAILED");
    return ok ? 0 : 1;
}
