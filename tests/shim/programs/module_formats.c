/* Module images of every shape the shim sizes from their headers: a fatbin file, a cubin (ELF)
 * and PTX text, each through cuModuleLoadData (and the fatbin through cuModuleLoadFatBinary),
 * plus device queries and error strings answered by the shim. Usage: FATBIN CUBIN PTX */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf)
        buf[len] = 0;
    *n = (size_t)len;
    return buf;
}

static int run_twice(CUmodule mod, const char *what)
{
    CUfunction fn;
    CUresult r = cuModuleGetFunction(&fn, mod, "twice");
    if (r != CUDA_SUCCESS) {
        printf("%s: cuModuleGetFunction %d\n", what, (int)r);
        return 1;
    }
    float h[64];
    for (int i = 0; i < 64; i++)
        h[i] = (float)i;
    CUdeviceptr d;
    int n = 64;
    void *params[] = {&d, &n};
    if (cuMemAlloc(&d, sizeof h) || cuMemcpyHtoD(d, h, sizeof h) ||
        cuLaunchKernel(fn, 1, 1, 1, 64, 1, 1, 0, NULL, params, NULL) ||
        cuMemcpyDtoH(h, d, sizeof h) || cuMemFree(d)) {
        printf("%s: launch failed\n", what);
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < 64; i++)
        bad += h[i] != 2.0f * i;
    printf("%s: mismatches %d\n", what, bad);
    return bad != 0;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    size_t nf, nc, np;
    void *fatbin = slurp(argv[1], &nf), *cubin = slurp(argv[2], &nc), *ptx = slurp(argv[3], &np);
    if (!fatbin || !cubin || !ptx)
        return 2;
    CUdevice dev;
    CUcontext ctx;
    int bad = 0;
    if (cuInit(0) || cuDeviceGet(&dev, 0) || cuDevicePrimaryCtxRetain(&ctx, dev) ||
        cuCtxSetCurrent(ctx)) {
        printf("FAIL init\n");
        return 1;
    }
    /* device facts, answered locally */
    char bus[32];
    CUdevice again = -1;
    CUuuid uuid;
    size_t total = 0;
    int major = 0;
    cuDeviceGetPCIBusId(bus, sizeof bus, dev);
    cuDeviceGetByPCIBusId(&again, bus);
    cuDeviceGetUuid(&uuid, dev);
    cuDeviceTotalMem(&total, dev);
    cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
    printf("bus %s roundtrip %d total>0 %d major %d\n", bus, again == dev, total > 0, major);
    bad += again != dev || total == 0 || major == 0;
    /* error names and strings */
    const char *name = NULL, *text = NULL;
    cuGetErrorName(CUDA_ERROR_ILLEGAL_ADDRESS, &name);
    cuGetErrorString(CUDA_ERROR_ILLEGAL_ADDRESS, &text);
    printf("error %s: %s\n", name, text);
    bad += !name || strcmp(name, "CUDA_ERROR_ILLEGAL_ADDRESS") != 0 || !text;
    CUmodule m;
    CUresult r = cuModuleLoadData(&m, fatbin);
    printf("fatbin load %d\n", (int)r);
    bad += r != CUDA_SUCCESS || run_twice(m, "fatbin");
    r = cuModuleLoadFatBinary(&m, fatbin);
    printf("fatbinary load %d\n", (int)r);
    bad += r != CUDA_SUCCESS || run_twice(m, "fatbinary");
    r = cuModuleLoadData(&m, ptx);
    printf("ptx load %d\n", (int)r);
    bad += r != CUDA_SUCCESS || run_twice(m, "ptx");
    /* from files: a module from the PTX file, a library from the fatbin file */
    r = cuModuleLoad(&m, argv[3]);
    printf("ptx file load %d\n", (int)r);
    bad += r != CUDA_SUCCESS || run_twice(m, "ptx file");
    CUlibrary lib;
    CUkernel kern;
    r = cuLibraryLoadFromFile(&lib, argv[1], NULL, NULL, 0, NULL, NULL, 0);
    printf("fatbin library load %d\n", (int)r);
    if (r == CUDA_SUCCESS && cuLibraryGetKernel(&kern, lib, "twice") == CUDA_SUCCESS) {
        CUfunction f;
        bad += cuKernelGetFunction(&f, kern) != CUDA_SUCCESS;
        CUmodule lm;
        bad += cuLibraryGetModule(&lm, lib) != CUDA_SUCCESS || run_twice(lm, "library module");
        bad += cuLibraryUnload(lib) != CUDA_SUCCESS;
    } else {
        bad++;
    }
    r = cuModuleLoad(&m, "/nonexistent/kernels.ptx");
    printf("missing file %d\n", (int)r);
    bad += r != CUDA_ERROR_FILE_NOT_FOUND;
    /* a SASS-only cubin: shipped whole; a PTX-only device refuses it as having no binary */
    r = cuModuleLoadData(&m, cubin);
    printf("cubin load %d\n", (int)r);
    if (r == CUDA_SUCCESS)
        bad += run_twice(m, "cubin");
    else
        bad += r != CUDA_ERROR_NO_BINARY_FOR_GPU;
    cuDevicePrimaryCtxRelease(dev);
    printf(bad ? "FAILED\n" : "PASSED\n");
    return bad != 0;
}
