/* CUDA arrays through the driver API: creation and descriptors, the linear array copies
 * (cuMemcpyHtoA/AtoH/DtoA/AtoD/AtoA and the async forms) with offsets that cross rows,
 * cuMemcpy2D with an array on each side, texture object descriptions read back, and the
 * errors of bad handles, out-of-range copies and unsupported kinds. */
#include <cuda.h>
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

#define EXPECT(cond)                                                                    \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            printf("FAIL line %d: %s\n", __LINE__, #cond);                              \
            return 1;                                                                   \
        }                                                                               \
    } while (0)

enum { W = 24, H = 10, ROW = W * 2 * 2 }; /* 24 x 10 elements of 2 x u16: 96-byte rows */

int main(void)
{
    CUdevice dev;
    CUcontext ctx;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));

    CUDA_ARRAY_DESCRIPTOR d = {W, H, CU_AD_FORMAT_UNSIGNED_INT16, 2};
    CUarray a, b;
    CHECK(cuArrayCreate(&a, &d));
    CUDA_ARRAY3D_DESCRIPTOR d3 = {W, H, 0, CU_AD_FORMAT_UNSIGNED_INT16, 2, 0};
    CHECK(cuArray3DCreate(&b, &d3));
    CUDA_ARRAY_DESCRIPTOR got;
    CHECK(cuArrayGetDescriptor(&got, a));
    EXPECT(got.Width == W && got.Height == H && got.Format == CU_AD_FORMAT_UNSIGNED_INT16 &&
           got.NumChannels == 2);
    CUDA_ARRAY3D_DESCRIPTOR got3;
    CHECK(cuArray3DGetDescriptor(&got3, b));
    EXPECT(got3.Width == W && got3.Height == H && got3.Depth == 0 && got3.NumChannels == 2);

    static unsigned char host[ROW * H], back[ROW * H];
    for (int i = 0; i < ROW * H; i++)
        host[i] = (unsigned char)(i * 7 + 3);
    /* whole array in, then pieces that start and end inside rows */
    CHECK(cuMemcpyHtoA(a, 0, host, sizeof host));
    memset(back, 0, sizeof back);
    CHECK(cuMemcpyAtoH(back, a, 0, sizeof back));
    EXPECT(memcmp(back, host, sizeof host) == 0);
    static unsigned char patch[300];
    for (int i = 0; i < 300; i++)
        patch[i] = (unsigned char)(255 - i);
    CHECK(cuMemcpyHtoA(a, 50, patch, sizeof patch)); /* bytes 50..349: rows 0-3 */
    memcpy(host + 50, patch, sizeof patch);
    CHECK(cuMemcpyAtoH(back, a, 0, sizeof back));
    EXPECT(memcmp(back, host, sizeof host) == 0);
    unsigned char small[10];
    CHECK(cuMemcpyAtoH(small, a, ROW - 4, 10)); /* across one row boundary */
    EXPECT(memcmp(small, host + ROW - 4, 10) == 0);

    /* array -> device -> other array -> host, and array -> array at offsets */
    CUdeviceptr dptr;
    CHECK(cuMemAlloc(&dptr, sizeof host));
    CHECK(cuMemcpyAtoD(dptr, a, 0, sizeof host));
    CHECK(cuMemcpyDtoA(b, 0, dptr, sizeof host));
    memset(back, 0, sizeof back);
    CHECK(cuMemcpyAtoH(back, b, 0, sizeof back));
    EXPECT(memcmp(back, host, sizeof host) == 0);
    CHECK(cuMemcpyAtoA(b, ROW + 8, a, 4, 2 * ROW));
    memcpy(host + ROW + 8, back + 4, 2 * ROW); /* back holds a's bytes */
    CHECK(cuMemcpyAtoH(back, b, 0, sizeof back));
    EXPECT(memcmp(back, host, sizeof host) == 0);

    /* async forms on a stream */
    CUstream s;
    CHECK(cuStreamCreate(&s, 0));
    static unsigned char zeros[ROW * H];
    CHECK(cuMemcpyHtoAAsync(b, 0, zeros, sizeof zeros, s));
    CHECK(cuMemcpyAtoHAsync(back, b, 0, sizeof back, s));
    CHECK(cuStreamSynchronize(s));
    EXPECT(memcmp(back, zeros, sizeof zeros) == 0);

    /* cuMemcpy2D: device -> array with offsets, array -> host */
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_DEVICE;
    c.srcDevice = dptr;
    c.srcPitch = ROW;
    c.srcXInBytes = 8;
    c.srcY = 1;
    c.dstMemoryType = CU_MEMORYTYPE_ARRAY;
    c.dstArray = b;
    c.dstXInBytes = 16;
    c.dstY = 2;
    c.WidthInBytes = 40;
    c.Height = 5;
    CHECK(cuMemcpy2D(&c));
    memset(&c, 0, sizeof c);
    c.srcMemoryType = CU_MEMORYTYPE_ARRAY;
    c.srcArray = b;
    c.dstMemoryType = CU_MEMORYTYPE_HOST;
    c.dstHost = back;
    c.dstPitch = ROW;
    c.WidthInBytes = ROW;
    c.Height = H;
    CHECK(cuMemcpy2D(&c));
    CHECK(cuMemcpyAtoH(host, a, 0, sizeof host)); /* what dptr holds */
    for (int y = 0; y < H; y++)
        for (int x = 0; x < ROW; x++) {
            int inside = x >= 16 && x < 56 && y >= 2 && y < 7;
            unsigned char want = inside ? host[(y - 1) * ROW + x - 8] : 0;
            EXPECT(back[y * ROW + x] == want);
        }

    /* copies larger than one 8 MiB piece: runs of rows (2D), runs of slices (3D) */
    {
        CUDA_ARRAY3D_DESCRIPTOR wide = {8192, 80, 0, CU_AD_FORMAT_FLOAT, 4, 0};
        CUDA_ARRAY3D_DESCRIPTOR vol = {128, 128, 160, CU_AD_FORMAT_FLOAT, 1, 0};
        size_t sizes[2] = {(size_t)8192 * 16 * 80, (size_t)128 * 4 * 128 * 160};
        CUDA_ARRAY3D_DESCRIPTOR *descs[2] = {&wide, &vol};
        for (int k = 0; k < 2; k++) {
            CUarray big;
            CHECK(cuArray3DCreate(&big, descs[k]));
            unsigned *in = malloc(sizes[k]), *out = calloc(1, sizes[k]);
            EXPECT(in && out);
            for (size_t i = 0; i < sizes[k] / 4; i++)
                in[i] = (unsigned)(i * 2654435761u);
            size_t row = descs[k]->Width * 4 * descs[k]->NumChannels;
            CUDA_MEMCPY3D m;
            memset(&m, 0, sizeof m);
            m.srcMemoryType = CU_MEMORYTYPE_HOST;
            m.srcHost = in;
            m.srcPitch = row;
            m.srcHeight = descs[k]->Height;
            m.dstMemoryType = CU_MEMORYTYPE_ARRAY;
            m.dstArray = big;
            m.WidthInBytes = row;
            m.Height = descs[k]->Height;
            m.Depth = descs[k]->Depth ? descs[k]->Depth : 1;
            CHECK(cuMemcpy3D(&m));
            memset(&m, 0, sizeof m);
            m.srcMemoryType = CU_MEMORYTYPE_ARRAY;
            m.srcArray = big;
            m.dstMemoryType = CU_MEMORYTYPE_HOST;
            m.dstHost = out;
            m.dstPitch = row;
            m.dstHeight = descs[k]->Height;
            m.WidthInBytes = row;
            m.Height = descs[k]->Height;
            m.Depth = descs[k]->Depth ? descs[k]->Depth : 1;
            CHECK(cuMemcpy3D(&m));
            EXPECT(memcmp(in, out, sizes[k]) == 0);
            free(in);
            free(out);
            CHECK(cuArrayDestroy(big));
        }
    }

    /* texture object descriptions come back as given */
    CUDA_RESOURCE_DESC rd;
    memset(&rd, 0, sizeof rd);
    rd.resType = CU_RESOURCE_TYPE_ARRAY;
    rd.res.array.hArray = a;
    CUDA_TEXTURE_DESC td;
    memset(&td, 0, sizeof td);
    td.addressMode[0] = CU_TR_ADDRESS_MODE_MIRROR;
    td.filterMode = CU_TR_FILTER_MODE_LINEAR;
    td.flags = CU_TRSF_NORMALIZED_COORDINATES;
    td.borderColor[2] = 0.5f;
    CUtexObject t;
    CHECK(cuTexObjectCreate(&t, &rd, &td, NULL));
    CUDA_RESOURCE_DESC rd2;
    CUDA_TEXTURE_DESC td2;
    CHECK(cuTexObjectGetResourceDesc(&rd2, t));
    CHECK(cuTexObjectGetTextureDesc(&td2, t));
    EXPECT(rd2.resType == CU_RESOURCE_TYPE_ARRAY && rd2.res.array.hArray == a);
    EXPECT(memcmp(&td2, &td, sizeof td) == 0);
    CHECK(cuTexObjectDestroy(t));
    EXPECT(cuTexObjectDestroy(t) == CUDA_ERROR_INVALID_VALUE);

    /* errors */
    EXPECT(cuMemcpyHtoA(a, ROW * H - 4, host, 8) == CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuMemcpyAtoH(back, (CUarray)back, 0, 8) == CUDA_ERROR_INVALID_VALUE);
    CUDA_ARRAY3D_DESCRIPTOR cube = {16, 16, 5, CU_AD_FORMAT_FLOAT, 1, CUDA_ARRAY3D_CUBEMAP};
    CUarray bad;
    EXPECT(cuArray3DCreate(&bad, &cube) == CUDA_ERROR_INVALID_VALUE); /* six faces or none */
    cube.Depth = 6;
    CHECK(cuArray3DCreate(&bad, &cube));
    CHECK(cuArrayDestroy(bad));
    CUDA_ARRAY3D_DESCRIPTOR depth = {16, 16, 0, CU_AD_FORMAT_FLOAT, 1, CUDA_ARRAY3D_DEPTH_TEXTURE};
    EXPECT(cuArray3DCreate(&bad, &depth) == CUDA_ERROR_NOT_SUPPORTED);
    CUDA_ARRAY3D_DESCRIPTOR nv12 = {16, 16, 0, CU_AD_FORMAT_NV12, 1, 0};
    EXPECT(cuArray3DCreate(&bad, &nv12) == CUDA_ERROR_NOT_SUPPORTED);
    /* mipmapped arrays: levels halve, are cached, and go with their array */
    CUmipmappedArray mip;
    CUDA_ARRAY3D_DESCRIPTOR md = {16, 8, 0, CU_AD_FORMAT_FLOAT, 1, 0};
    EXPECT(cuMipmappedArrayCreate(&mip, &md, 6) == CUDA_ERROR_INVALID_VALUE); /* 5 at most */
    CHECK(cuMipmappedArrayCreate(&mip, &md, 3));
    CUarray l2, l2again;
    CHECK(cuMipmappedArrayGetLevel(&l2, mip, 2));
    CHECK(cuMipmappedArrayGetLevel(&l2again, mip, 2));
    EXPECT(l2 == l2again);
    CHECK(cuArray3DGetDescriptor(&got3, l2));
    EXPECT(got3.Width == 4 && got3.Height == 2 && got3.Depth == 0);
    float lv[8] = {1, 2, 3, 4, 5, 6, 7, 8}, lb[8];
    CHECK(cuMemcpyHtoA(l2, 0, lv, sizeof lv));
    CHECK(cuMemcpyAtoH(lb, l2, 0, sizeof lb));
    EXPECT(memcmp(lv, lb, sizeof lv) == 0);
    EXPECT(cuMipmappedArrayGetLevel(&l2, mip, 3) == CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuArrayDestroy(l2) == CUDA_ERROR_INVALID_VALUE);
    CHECK(cuMipmappedArrayDestroy(mip));
    CUsurfObject so;
    EXPECT(cuSurfObjectCreate(&so, &rd) == CUDA_ERROR_INVALID_VALUE); /* no SURFACE_LDST */

    CHECK(cuStreamDestroy(s));
    CHECK(cuMemFree(dptr));
    CHECK(cuArrayDestroy(a));
    CHECK(cuArrayDestroy(b));
    CHECK(cuDevicePrimaryCtxRelease(dev));
    printf("PASSED\n");
    return 0;
}
