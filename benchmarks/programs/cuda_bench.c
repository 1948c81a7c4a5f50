/* CUDA driver API benchmark for benchmarks/cuda.py, built with gcc against the shim's own
 * declarations (interpose/generated/cuda_api.h) and linked with -lcuda (the shim).
 *
 * Usage: cuda_bench RTT_N LAUNCH_N MAX_MIB (a 0 skips that part)
 *
 * Prints one JSON object: the per-call times of cuCtxSynchronize and cuMemGetInfo_v2 (each a
 * CALL answered by the server: median and p99 in microseconds), LAUNCH_N back-to-back launches
 * of an empty PTX kernel on the legacy stream followed by one cuCtxSynchronize (the time the
 * launch loop took to return and the time until the synchronize returned), and synchronous
 * cuMemcpyHtoD_v2 / cuMemcpyDtoH_v2 of 1, 4, 16, ... MiB up to MAX_MIB (MB/s, the median of
 * several copies for the small sizes). The copied bytes are checked. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_api.h"

#define CHECK(x)                                                                        \
    do {                                                                                \
        CUresult r_ = (x);                                                              \
        if (r_ != CUDA_SUCCESS) {                                                       \
            const char *n_ = "?";                                                       \
            cuGetErrorName(r_, &n_);                                                    \
            fprintf(stderr, "cuda_bench: %s failed: %s (%d)\n", #x, n_, (int)r_);      \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static const char *ptx =
    ".version 7.0\n"
    ".target sm_52\n"
    ".address_size 64\n"
    "\n"
    ".visible .entry empty()\n"
    "{\n"
    "    ret;\n"
    "}\n";

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double q)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)(q * (n - 1) + 0.5);
    return v[i];
}

typedef CUresult (*call_fn)(void);

static CUresult mem_info(void)
{
    size_t f = 0, t = 0;
    return cuMemGetInfo_v2(&f, &t);
}

static void rtt(const char *name, call_fn fn, int n)
{
    double *t = malloc(sizeof *t * (size_t)n);
    if (!t)
        exit(1);
    for (int i = 0; i < 100; i++)
        CHECK(fn());
    for (int i = 0; i < n; i++) {
        double t0 = now_us();
        CHECK(fn());
        t[i] = now_us() - t0;
    }
    double med = pct(t, n, 0.5), p99 = pct(t, n, 0.99);
    printf(",\n  \"%s\": {\"n\": %d, \"median_us\": %.1f, \"p99_us\": %.1f}", name, n, med,
           p99);
    free(t);
}

static CUresult ctx_sync(void)
{
    return cuCtxSynchronize();
}

static void launches(CUfunction fn, int n)
{
    /* warm up (parameter layout, the PTX machine), then n in a row and one synchronize */
    for (int i = 0; i < 20; i++)
        CHECK(cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
    CHECK(cuCtxSynchronize());
    double t0 = now_us();
    for (int i = 0; i < n; i++)
        CHECK(cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
    double t_issue = now_us() - t0;
    CHECK(cuCtxSynchronize());
    double t_done = now_us() - t0;
    printf(",\n  \"launch\": {\"n\": %d, \"issue_s\": %.6f, \"total_s\": %.6f, "
           "\"issue_per_s\": %.0f, \"completed_per_s\": %.0f}",
           n, t_issue / 1e6, t_done / 1e6, n / (t_issue / 1e6), n / (t_done / 1e6));
    fflush(stdout);
}

static void copies(size_t max_mib)
{
    size_t max_bytes = max_mib << 20;
    uint8_t *host = malloc(max_bytes), *back = malloc(max_bytes);
    if (!host || !back) {
        fprintf(stderr, "cuda_bench: out of host memory\n");
        exit(1);
    }
    for (size_t i = 0; i < max_bytes; i += 8) {
        uint64_t v = (uint64_t)i * 0x9E3779B97F4A7C15ull;
        memcpy(host + i, &v, 8);
    }
    memset(back, 0, max_bytes);
    CUdeviceptr d;
    CHECK(cuMemAlloc_v2(&d, max_bytes));
    CHECK(cuMemcpyHtoD_v2(d, host, 1 << 20)); /* warm-up */
    CHECK(cuMemcpyDtoH_v2(back, d, 1 << 20));
    printf(",\n  \"copy\": [");
    for (size_t mib = 1; mib <= max_mib; mib *= 4) {
        size_t bytes = mib << 20;
        int reps = mib >= 64 ? 1 : (int)(64 / mib) > 8 ? 8 : (int)(64 / mib);
        double up[8], down[8];
        for (int r = 0; r < reps; r++) {
            double a = now_us();
            CHECK(cuMemcpyHtoD_v2(d, host, bytes));
            double b = now_us();
            CHECK(cuMemcpyDtoH_v2(back, d, bytes));
            double c = now_us();
            up[r] = (double)bytes / (b - a); /* bytes per µs = MB/s */
            down[r] = (double)bytes / (c - b);
        }
        if (memcmp(host, back, bytes) != 0) {
            fprintf(stderr, "cuda_bench: %zu MiB came back different\n", mib);
            exit(1);
        }
        printf("%s\n    {\"mib\": %zu, \"reps\": %d, \"htod_mb_s\": %.1f, \"dtoh_mb_s\": %.1f}",
               mib == 1 ? "" : ",", mib, reps, pct(up, reps, 0.5), pct(down, reps, 0.5));
        fflush(stdout);
        memset(back, 0, bytes);
    }
    printf("\n  ]");
    CHECK(cuMemFree_v2(d));
    free(host);
    free(back);
}

int main(int argc, char **argv)
{
    int rtt_n = argc > 1 ? atoi(argv[1]) : 1000;
    int launch_n = argc > 2 ? atoi(argv[2]) : 5000;
    size_t max_mib = argc > 3 ? (size_t)atol(argv[3]) : 256;

    double t_init = now_us();
    CHECK(cuInit(0));
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUcontext ctx;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, ptx));
    CUfunction fn;
    CHECK(cuModuleGetFunction(&fn, mod, "empty"));
    CHECK(cuCtxSynchronize());
    double init_ms = (now_us() - t_init) / 1e3;
    char name[256] = "?";
    cuDeviceGetName(name, sizeof name, dev);

    printf("{\n  \"device\": \"%s\",\n  \"init_ms\": %.1f", name, init_ms);
    if (rtt_n > 0) {
        rtt("cuCtxSynchronize", ctx_sync, rtt_n);
        rtt("cuMemGetInfo_v2", mem_info, rtt_n);
    }
    if (launch_n > 0)
        launches(fn, launch_n);
    if (max_mib > 0)
        copies(max_mib);
    printf("\n}\n");
    CHECK(cuModuleUnload(mod));
    CHECK(cuDevicePrimaryCtxRelease_v2(dev));
    return 0;
}
