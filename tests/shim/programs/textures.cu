// CUDA arrays, texture objects and surface objects through the runtime API, in the style of
// cuda-samples (simpleTexture, simpleSurfaceWrite, simpleTexture3D, the mipmap levels of
// bindlessTexture), each result checked
// against a reference computed here on the host. Prints "<section> ok" per section and PASSED;
// exits 1 on the first mismatch.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common.h"

#define EXPECT(cond, ...)                                                               \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            printf("FAIL " __VA_ARGS__);                                                \
            printf("\n");                                                               \
            return 1;                                                                   \
        }                                                                               \
    } while (0)

// ---- a host model of the texture unit (CUDA programming guide, texture fetching) ------
static float weight(float frac) { return std::round(frac * 256.0f) / 256.0f; }

static int wrap_index(int i, int n) { return ((i % n) + n) % n; }

static float bilinear_wrap(const std::vector<float> &img, int w, int h, float u, float v)
{
    float xb = u * w - 0.5f, yb = v * h - 0.5f;
    int i = (int)std::floor(xb), j = (int)std::floor(yb);
    float a = weight(xb - i), b = weight(yb - j);
    auto t = [&](int x, int y) { return img[wrap_index(y, h) * w + wrap_index(x, w)]; };
    return (1 - a) * (1 - b) * t(i, j) + a * (1 - b) * t(i + 1, j) + (1 - a) * b * t(i, j + 1) +
           a * b * t(i + 1, j + 1);
}

// ---- kernels ------------------------------------------------------------------------------
__global__ void rotate(float *out, int w, int h, float theta, cudaTextureObject_t tex)
{
    unsigned x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= (unsigned)w || y >= (unsigned)h)
        return;
    float u = (float)x / (float)w - 0.5f, v = (float)y / (float)h - 0.5f;
    float tu = u * cosf(theta) - v * sinf(theta) + 0.5f;
    float tv = v * cosf(theta) + u * sinf(theta) + 0.5f;
    out[y * w + x] = tex2D<float>(tex, tu, tv);
}

__global__ void fetch_linear(float *out, float4 *out4, int n, cudaTextureObject_t t,
                             cudaTextureObject_t t4)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        out[i] = 2.0f * tex1Dfetch<float>(t, i);
        out4[i] = tex1Dfetch<float4>(t4, i);
    }
}

__global__ void read_pitch(float *out, int w, int h, cudaTextureObject_t t)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x < w + 4 && y < h + 4) // past the edge: clamped
        out[y * (w + 4) + x] = tex2D<float>(t, x + 0.5f, y + 0.5f);
}

__global__ void surface_scale(cudaSurfaceObject_t s, int w, int h, int d)
{
    int x = threadIdx.x + blockIdx.x * blockDim.x, y = blockIdx.y, z = blockIdx.z;
    if (x >= w || y >= h || z >= d)
        return;
    float v = surf3Dread<float>(s, x * (int)sizeof(float), y, z);
    surf3Dwrite(v * 3.0f + (float)z, s, x * (int)sizeof(float), y, z);
}

__global__ void layered_surface(cudaSurfaceObject_t s, int w, int h, int layers)
{
    int x = threadIdx.x, y = threadIdx.y;
    for (int l = 0; l < layers; l++) {
        uchar4 c = surf2DLayeredread<uchar4>(s, x * 4, y, l);
        surf2DLayeredwrite(make_uchar4(c.w, c.z, c.y, (unsigned char)(c.x + l)), s, x * 4, y, l);
    }
}

__global__ void read_ints(int *out, unsigned *bytes, int w, int h, cudaTextureObject_t t,
                          cudaTextureObject_t tb, int nb)
{
    int x = threadIdx.x, y = blockIdx.x;
    if (x < w && y < h)
        out[y * w + x] = tex2D<int>(t, x + 0.5f, y + 0.5f);
    if (y == 0)
        for (int i = x; i < nb + 4; i += blockDim.x)
            bytes[i] = tex1D<unsigned char>(tb, (float)(i - 2) + 0.5f);
}

__global__ void read_volume(float *out, int w, int h, int d, cudaTextureObject_t t)
{
    int x = threadIdx.x, y = blockIdx.x, z = blockIdx.y;
    out[(z * h + y) * w + x] = tex3D<float>(t, x + 0.5f, y + 0.5f, z + 0.5f);
}

__global__ void read_lod(float *out, const float *lods, int n, cudaTextureObject_t t)
{
    int i = threadIdx.x;
    if (i < n)
        out[i] = tex2DLod<float>(t, 0.3f, 0.6f, lods[i]);
    if (i == 0) // a footprint 4 level-0 texels wide: level 2
        out[n] = tex2DGrad<float>(t, 0.3f, 0.6f, make_float2(4.0f / 32, 0),
                                  make_float2(0, 1.0f / 32));
}

__global__ void double_texels(float *out, cudaTextureObject_t t, int w)
{
    int i = threadIdx.x;
    out[i] = 2.0f * tex2D<float>(t, i % w + 0.5f, i / w + 0.5f);
}

__global__ void read_cube(float *out, const float4 *dirs, cudaTextureObject_t t)
{
    float4 d = dirs[threadIdx.x];
    out[threadIdx.x] = texCubemap<float>(t, d.x, d.y, d.z);
}

// ---- sections -------------------------------------------------------------------------------
static int simple_texture()
{
    const int w = 64, h = 48;
    const float theta = 0.5f;
    std::vector<float> img(w * h), out(w * h), back(w * h);
    for (int i = 0; i < w * h; i++)
        img[i] = (float)((i * 37) % 101) / 100.0f;
    cudaChannelFormatDesc fmt = cudaCreateChannelDesc<float>();
    cudaArray_t arr, copy;
    CHECK(cudaMallocArray(&arr, &fmt, w, h));
    CHECK(cudaMallocArray(&copy, &fmt, w, h));
    CHECK(cudaMemcpy2DToArray(arr, 0, 0, img.data(), w * sizeof(float), w * sizeof(float), h,
                              cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy2DArrayToArray(copy, 0, 0, arr, 0, 0, w * sizeof(float), h));
    CHECK(cudaMemcpy2DFromArray(back.data(), w * sizeof(float), copy, 0, 0, w * sizeof(float), h,
                                cudaMemcpyDeviceToHost));
    EXPECT(memcmp(back.data(), img.data(), w * h * sizeof(float)) == 0, "array round trip");
    cudaChannelFormatDesc got;
    cudaExtent extent;
    unsigned flags;
    CHECK(cudaArrayGetInfo(&got, &extent, &flags, arr));
    EXPECT(got.x == 32 && got.f == cudaChannelFormatKindFloat && extent.width == (size_t)w &&
               extent.height == (size_t)h && extent.depth == 0,
           "cudaArrayGetInfo %d %zu %zu %zu", got.x, extent.width, extent.height, extent.depth);

    cudaResourceDesc res = {};
    res.resType = cudaResourceTypeArray;
    res.res.array.array = copy;
    cudaTextureDesc td = {};
    td.addressMode[0] = td.addressMode[1] = cudaAddressModeWrap;
    td.filterMode = cudaFilterModeLinear;
    td.readMode = cudaReadModeElementType;
    td.normalizedCoords = 1;
    cudaTextureObject_t tex;
    CHECK(cudaCreateTextureObject(&tex, &res, &td, nullptr));
    cudaTextureDesc td_back;
    CHECK(cudaGetTextureObjectTextureDesc(&td_back, tex));
    EXPECT(td_back.filterMode == cudaFilterModeLinear && td_back.normalizedCoords == 1,
           "texture description read back");
    float *d_out;
    CHECK(cudaMalloc(&d_out, w * h * sizeof(float)));
    dim3 block(8, 8), grid(w / 8, h / 8);
    rotate<<<grid, block>>>(d_out, w, h, theta, tex);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(out.data(), d_out, w * h * sizeof(float), cudaMemcpyDeviceToHost));
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float u = (float)x / (float)w - 0.5f, v = (float)y / (float)h - 0.5f;
            float tu = u * cosf(theta) - v * sinf(theta) + 0.5f;
            float tv = v * cosf(theta) + u * sinf(theta) + 0.5f;
            float want = bilinear_wrap(img, w, h, tu, tv);
            EXPECT(std::fabs(out[y * w + x] - want) < 0.01f, "rotate (%d,%d): %f vs %f", x, y,
                   out[y * w + x], want);
        }
    CHECK(cudaDestroyTextureObject(tex));
    CHECK(cudaFreeArray(arr));
    CHECK(cudaFreeArray(copy));
    CHECK(cudaFree(d_out));
    printf("rotate ok\n");
    return 0;
}

static int linear_texture()
{
    const int n = 1000;
    std::vector<float> data(n), out(n);
    std::vector<uchar4> colours(n);
    std::vector<float4> out4(n);
    for (int i = 0; i < n; i++) {
        data[i] = 0.25f * (float)i - 7.0f;
        colours[i] = make_uchar4(i & 255, (i * 3) & 255, 255, 0);
    }
    float *d_data;
    uchar4 *d_col;
    float *d_out;
    float4 *d_out4;
    CHECK(cudaMalloc(&d_data, n * sizeof(float)));
    CHECK(cudaMalloc(&d_col, n * sizeof(uchar4)));
    CHECK(cudaMalloc(&d_out, n * sizeof(float)));
    CHECK(cudaMalloc(&d_out4, n * sizeof(float4)));
    CHECK(cudaMemcpy(d_data, data.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d_col, colours.data(), n * sizeof(uchar4), cudaMemcpyHostToDevice));
    cudaResourceDesc res = {};
    res.resType = cudaResourceTypeLinear;
    res.res.linear.devPtr = d_data;
    res.res.linear.desc = cudaCreateChannelDesc<float>();
    res.res.linear.sizeInBytes = n * sizeof(float);
    cudaTextureDesc td = {};
    td.readMode = cudaReadModeElementType;
    cudaTextureObject_t t, t4;
    CHECK(cudaCreateTextureObject(&t, &res, &td, nullptr));
    res.res.linear.devPtr = d_col;
    res.res.linear.desc = cudaCreateChannelDesc<uchar4>();
    res.res.linear.sizeInBytes = n * sizeof(uchar4);
    td.readMode = cudaReadModeNormalizedFloat;
    CHECK(cudaCreateTextureObject(&t4, &res, &td, nullptr));
    fetch_linear<<<(n + 127) / 128, 128>>>(d_out, d_out4, n, t, t4);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(out.data(), d_out, n * sizeof(float), cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(out4.data(), d_out4, n * sizeof(float4), cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++) {
        EXPECT(out[i] == 2.0f * data[i], "tex1Dfetch %d: %f", i, out[i]);
        float4 want = make_float4(colours[i].x / 255.0f, colours[i].y / 255.0f, 1.0f, 0.0f);
        EXPECT(std::fabs(out4[i].x - want.x) < 1e-6f && std::fabs(out4[i].y - want.y) < 1e-6f &&
                   out4[i].z == 1.0f && out4[i].w == 0.0f,
               "normalized tex1Dfetch %d: %f %f %f %f", i, out4[i].x, out4[i].y, out4[i].z,
               out4[i].w);
    }
    cudaResourceDesc res_back;
    CHECK(cudaGetTextureObjectResourceDesc(&res_back, t));
    EXPECT(res_back.resType == cudaResourceTypeLinear && res_back.res.linear.devPtr == d_data &&
               res_back.res.linear.sizeInBytes == n * sizeof(float),
           "resource description read back");
    CHECK(cudaDestroyTextureObject(t));
    CHECK(cudaDestroyTextureObject(t4));
    CHECK(cudaFree(d_data));
    CHECK(cudaFree(d_col));
    CHECK(cudaFree(d_out));
    CHECK(cudaFree(d_out4));
    printf("linear ok\n");
    return 0;
}

static int pitch_texture()
{
    const int w = 100, h = 37, ow = w + 4, oh = h + 4;
    std::vector<float> img(w * h), out(ow * oh);
    for (int i = 0; i < w * h; i++)
        img[i] = (float)i * 0.5f;
    float *d_img, *d_out;
    size_t pitch;
    CHECK(cudaMallocPitch(&d_img, &pitch, w * sizeof(float), h));
    CHECK(cudaMemcpy2D(d_img, pitch, img.data(), w * sizeof(float), w * sizeof(float), h,
                       cudaMemcpyHostToDevice));
    CHECK(cudaMalloc(&d_out, ow * oh * sizeof(float)));
    cudaResourceDesc res = {};
    res.resType = cudaResourceTypePitch2D;
    res.res.pitch2D.devPtr = d_img;
    res.res.pitch2D.desc = cudaCreateChannelDesc<float>();
    res.res.pitch2D.width = w;
    res.res.pitch2D.height = h;
    res.res.pitch2D.pitchInBytes = pitch;
    cudaTextureDesc td = {};
    td.addressMode[0] = td.addressMode[1] = cudaAddressModeClamp;
    td.filterMode = cudaFilterModePoint;
    td.readMode = cudaReadModeElementType;
    cudaTextureObject_t t;
    CHECK(cudaCreateTextureObject(&t, &res, &td, nullptr));
    read_pitch<<<dim3((ow + 15) / 16, (oh + 15) / 16), dim3(16, 16)>>>(d_out, w, h, t);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(out.data(), d_out, ow * oh * sizeof(float), cudaMemcpyDeviceToHost));
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            float want = img[(y < h ? y : h - 1) * w + (x < w ? x : w - 1)];
            EXPECT(out[y * ow + x] == want, "pitch2D (%d,%d): %f vs %f", x, y, out[y * ow + x],
                   want);
        }
    CHECK(cudaDestroyTextureObject(t));
    CHECK(cudaFree(d_img));
    CHECK(cudaFree(d_out));
    printf("pitch2d ok\n");
    return 0;
}

static int surfaces()
{
    const int w = 32, h = 16, d = 4;
    std::vector<float> vol(w * h * d), back(w * h * d);
    for (int i = 0; i < w * h * d; i++)
        vol[i] = (float)(i % 97) - 40.0f;
    cudaChannelFormatDesc fmt = cudaCreateChannelDesc<float>();
    cudaArray_t arr;
    CHECK(cudaMalloc3DArray(&arr, &fmt, make_cudaExtent(w, h, d), cudaArraySurfaceLoadStore));
    cudaMemcpy3DParms p = {};
    p.srcPtr = make_cudaPitchedPtr(vol.data(), w * sizeof(float), w, h);
    p.dstArray = arr;
    p.extent = make_cudaExtent(w, h, d);
    p.kind = cudaMemcpyHostToDevice;
    CHECK(cudaMemcpy3D(&p));
    cudaResourceDesc res = {};
    res.resType = cudaResourceTypeArray;
    res.res.array.array = arr;
    cudaSurfaceObject_t s;
    CHECK(cudaCreateSurfaceObject(&s, &res));
    surface_scale<<<dim3(1, h, d), w>>>(s, w, h, d);
    CHECK(cudaGetLastError());
    cudaMemcpy3DParms q = {};
    q.srcArray = arr;
    q.dstPtr = make_cudaPitchedPtr(back.data(), w * sizeof(float), w, h);
    q.extent = make_cudaExtent(w, h, d);
    q.kind = cudaMemcpyDeviceToHost;
    CHECK(cudaMemcpy3D(&q));
    for (int z = 0; z < d; z++)
        for (int i = 0; i < w * h; i++)
            EXPECT(back[z * w * h + i] == vol[z * w * h + i] * 3.0f + (float)z,
                   "surface %d,%d: %f", z, i, back[z * w * h + i]);
    CHECK(cudaDestroySurfaceObject(s));
    CHECK(cudaFreeArray(arr));

    // 2D layered uchar4 surface, filled and read back with the async 3D copy
    const int lw = 8, lh = 4, layers = 3;
    std::vector<uchar4> pix(lw * lh * layers), pback(lw * lh * layers);
    for (int i = 0; i < lw * lh * layers; i++)
        pix[i] = make_uchar4(i, i + 1, i + 2, i + 3);
    cudaChannelFormatDesc cfmt = cudaCreateChannelDesc<uchar4>();
    CHECK(cudaMalloc3DArray(&arr, &cfmt, make_cudaExtent(lw, lh, layers),
                            cudaArrayLayered | cudaArraySurfaceLoadStore));
    cudaStream_t stream;
    CHECK(cudaStreamCreate(&stream));
    p = {};
    p.srcPtr = make_cudaPitchedPtr(pix.data(), lw * sizeof(uchar4), lw, lh);
    p.dstArray = arr;
    p.extent = make_cudaExtent(lw, lh, layers);
    p.kind = cudaMemcpyHostToDevice;
    CHECK(cudaMemcpy3DAsync(&p, stream));
    res.res.array.array = arr;
    CHECK(cudaCreateSurfaceObject(&s, &res));
    layered_surface<<<1, dim3(lw, lh), 0, stream>>>(s, lw, lh, layers);
    q = {};
    q.srcArray = arr;
    q.dstPtr = make_cudaPitchedPtr(pback.data(), lw * sizeof(uchar4), lw, lh);
    q.extent = make_cudaExtent(lw, lh, layers);
    q.kind = cudaMemcpyDeviceToHost;
    CHECK(cudaMemcpy3DAsync(&q, stream));
    CHECK(cudaStreamSynchronize(stream));
    for (int l = 0; l < layers; l++)
        for (int i = 0; i < lw * lh; i++) {
            uchar4 a = pix[l * lw * lh + i], b = pback[l * lw * lh + i];
            EXPECT(b.x == a.w && b.y == a.z && b.z == a.y && b.w == (unsigned char)(a.x + l),
                   "layered surface %d,%d", l, i);
        }
    CHECK(cudaDestroySurfaceObject(s));
    CHECK(cudaStreamDestroy(stream));
    CHECK(cudaFreeArray(arr));
    printf("surface ok\n");
    return 0;
}

static int integer_textures()
{
    const int w = 20, h = 6, nb = 50;
    std::vector<int> vals(w * h), out(w * h);
    std::vector<unsigned char> bytes(nb);
    std::vector<unsigned> bout(nb + 4);
    for (int i = 0; i < w * h; i++)
        vals[i] = (i % 2 ? -1 : 1) * i * 1000003;
    for (int i = 0; i < nb; i++)
        bytes[i] = (unsigned char)(200 - i);
    cudaChannelFormatDesc ifmt = cudaCreateChannelDesc<int>();
    cudaChannelFormatDesc bfmt = cudaCreateChannelDesc<unsigned char>();
    cudaArray_t arr, barr;
    CHECK(cudaMallocArray(&arr, &ifmt, w, h));
    CHECK(cudaMallocArray(&barr, &bfmt, nb, 0));
    CHECK(cudaMemcpy2DToArray(arr, 0, 0, vals.data(), w * sizeof(int), w * sizeof(int), h,
                              cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy2DToArray(barr, 0, 0, bytes.data(), nb, nb, 1, cudaMemcpyHostToDevice));
    cudaResourceDesc res = {};
    res.resType = cudaResourceTypeArray;
    res.res.array.array = arr;
    cudaTextureDesc td = {};
    td.filterMode = cudaFilterModePoint;
    td.readMode = cudaReadModeElementType;
    cudaTextureObject_t t, tb;
    CHECK(cudaCreateTextureObject(&t, &res, &td, nullptr));
    res.res.array.array = barr;
    td.addressMode[0] = cudaAddressModeBorder;
    CHECK(cudaCreateTextureObject(&tb, &res, &td, nullptr));

    // linear filtering of values read as integers is refused
    cudaTextureObject_t bad = 0;
    td.filterMode = cudaFilterModeLinear;
    res.res.array.array = arr;
    EXPECT(cudaCreateTextureObject(&bad, &res, &td, nullptr) != cudaSuccess,
           "linear filtering of integers was accepted");
    cudaGetLastError();
    cudaSurfaceObject_t bad_surface = 0;
    EXPECT(cudaCreateSurfaceObject(&bad_surface, &res) != cudaSuccess,
           "a surface over an array without cudaArraySurfaceLoadStore was accepted");
    cudaGetLastError();

    int *d_out;
    unsigned *d_bytes;
    CHECK(cudaMalloc(&d_out, w * h * sizeof(int)));
    CHECK(cudaMalloc(&d_bytes, (nb + 4) * sizeof(unsigned)));
    read_ints<<<h, 32>>>(d_out, d_bytes, w, h, t, tb, nb);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(out.data(), d_out, w * h * sizeof(int), cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(bout.data(), d_bytes, (nb + 4) * sizeof(unsigned), cudaMemcpyDeviceToHost));
    for (int i = 0; i < w * h; i++)
        EXPECT(out[i] == vals[i], "int texel %d: %d vs %d", i, out[i], vals[i]);
    for (int i = 0; i < nb + 4; i++) {
        unsigned want = i < 2 || i >= nb + 2 ? 0u : bytes[i - 2];
        EXPECT(bout[i] == want, "byte texel %d: %u vs %u", i, bout[i], want);
    }
    CHECK(cudaDestroyTextureObject(t));
    CHECK(cudaDestroyTextureObject(tb));
    CHECK(cudaFreeArray(arr));
    CHECK(cudaFreeArray(barr));
    CHECK(cudaFree(d_out));
    CHECK(cudaFree(d_bytes));
    printf("integer ok\n");
    return 0;
}

static int copies_3d()
{
    const int w = 12, h = 9, d = 5;
    std::vector<float> vol(w * h * d), back(w * h * d, -1.0f), tex(w * h * d);
    for (int i = 0; i < w * h * d; i++)
        vol[i] = (float)i + 0.25f;
    cudaChannelFormatDesc fmt = cudaCreateChannelDesc<float>();
    cudaArray_t arr;
    CHECK(cudaMalloc3DArray(&arr, &fmt, make_cudaExtent(w, h, d)));
    // host -> array in two boxes: slices 0-1, then slices 2-4 from an offset in the host volume
    cudaMemcpy3DParms p = {};
    p.srcPtr = make_cudaPitchedPtr(vol.data(), w * sizeof(float), w, h);
    p.dstArray = arr;
    p.extent = make_cudaExtent(w, h, 2);
    p.kind = cudaMemcpyHostToDevice;
    CHECK(cudaMemcpy3D(&p));
    p.srcPos = make_cudaPos(0, 0, 2);
    p.dstPos = make_cudaPos(0, 0, 2);
    p.extent = make_cudaExtent(w, h, d - 2);
    CHECK(cudaMemcpy3D(&p));
    // array -> pitched device memory -> host
    cudaPitchedPtr dev;
    CHECK(cudaMalloc3D(&dev, make_cudaExtent(w * sizeof(float), h, d)));
    cudaMemcpy3DParms q = {};
    q.srcArray = arr;
    q.dstPtr = dev;
    q.extent = make_cudaExtent(w, h, d);
    q.kind = cudaMemcpyDeviceToDevice;
    CHECK(cudaMemcpy3D(&q));
    cudaMemcpy3DParms r = {};
    r.srcPtr = dev;
    r.dstPtr = make_cudaPitchedPtr(back.data(), w * sizeof(float), w, h);
    r.extent = make_cudaExtent(w * sizeof(float), h, d);
    r.kind = cudaMemcpyDeviceToHost;
    CHECK(cudaMemcpy3D(&r));
    EXPECT(memcmp(back.data(), vol.data(), vol.size() * sizeof(float)) == 0, "3D round trip");
    // a sub-box back to the host at an offset
    std::vector<float> box(w * h * d, 0.0f);
    cudaMemcpy3DParms s = {};
    s.srcArray = arr;
    s.srcPos = make_cudaPos(3, 2, 1);
    s.dstPtr = make_cudaPitchedPtr(box.data(), w * sizeof(float), w, h);
    s.dstPos = make_cudaPos(3, 2, 1); // with an array in the copy, x counts its elements
    s.extent = make_cudaExtent(4, 5, 3);
    s.kind = cudaMemcpyDeviceToHost;
    CHECK(cudaMemcpy3D(&s));
    for (int z = 0; z < d; z++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                bool inside = x >= 3 && x < 7 && y >= 2 && y < 7 && z >= 1 && z < 4;
                float want = inside ? vol[(z * h + y) * w + x] : 0.0f;
                EXPECT(box[(z * h + y) * w + x] == want, "sub-box (%d,%d,%d): %f vs %f", x, y, z,
                       box[(z * h + y) * w + x], want);
            }
    // and a 3D texture over it, read at texel centres
    cudaResourceDesc res = {};
    res.resType = cudaResourceTypeArray;
    res.res.array.array = arr;
    cudaTextureDesc td = {};
    td.filterMode = cudaFilterModeLinear;
    td.readMode = cudaReadModeElementType;
    cudaTextureObject_t t;
    CHECK(cudaCreateTextureObject(&t, &res, &td, nullptr));
    float *d_out;
    CHECK(cudaMalloc(&d_out, w * h * d * sizeof(float)));
    read_volume<<<dim3(h, d), w>>>(d_out, w, h, d, t);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(tex.data(), d_out, w * h * d * sizeof(float), cudaMemcpyDeviceToHost));
    EXPECT(memcmp(tex.data(), vol.data(), vol.size() * sizeof(float)) == 0, "tex3D");
    CHECK(cudaDestroyTextureObject(t));
    CHECK(cudaFree(dev.ptr));
    CHECK(cudaFree(d_out));
    CHECK(cudaFreeArray(arr));
    printf("memcpy3d ok\n");
    return 0;
}

static int mipmaps()
{
    const int levels = 5, size = 32;
    cudaChannelFormatDesc fmt = cudaCreateChannelDesc<float>();
    cudaMipmappedArray_t mip;
    CHECK(cudaMallocMipmappedArray(&mip, &fmt, make_cudaExtent(size, size, 0), levels));
    for (int l = 0; l < levels; l++) { // level l holds the constant 10 * l
        cudaArray_t level;
        CHECK(cudaGetMipmappedArrayLevel(&level, mip, l));
        int side = size >> l;
        std::vector<float> v(side * side, 10.0f * l);
        CHECK(cudaMemcpy2DToArray(level, 0, 0, v.data(), side * sizeof(float),
                                  side * sizeof(float), side, cudaMemcpyHostToDevice));
    }
    cudaResourceDesc res = {};
    res.resType = cudaResourceTypeMipmappedArray;
    res.res.mipmap.mipmap = mip;
    cudaTextureDesc td = {};
    td.filterMode = cudaFilterModeLinear;
    td.mipmapFilterMode = cudaFilterModeLinear;
    td.maxMipmapLevelClamp = levels - 1;
    td.normalizedCoords = 1;
    td.readMode = cudaReadModeElementType;
    cudaTextureObject_t t;
    CHECK(cudaCreateTextureObject(&t, &res, &td, nullptr));
    const int n = 8;
    float lods[n] = {0.0f, 0.5f, 1.0f, 2.25f, 3.75f, 4.0f, 9.0f, -1.0f};
    float want[n + 1] = {0.0f, 5.0f, 10.0f, 22.5f, 37.5f, 40.0f, 40.0f, 0.0f, 20.0f};
    float *d_lods, *d_out, out[n + 1];
    CHECK(cudaMalloc(&d_lods, sizeof lods));
    CHECK(cudaMalloc(&d_out, sizeof out));
    CHECK(cudaMemcpy(d_lods, lods, sizeof lods, cudaMemcpyHostToDevice));
    read_lod<<<1, 32>>>(d_out, d_lods, n, t);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(out, d_out, sizeof out, cudaMemcpyDeviceToHost));
    for (int i = 0; i <= n; i++)
        EXPECT(std::fabs(out[i] - want[i]) < 0.05f, "mipmap %d: %f vs %f", i, out[i], want[i]);
    CHECK(cudaDestroyTextureObject(t));
    CHECK(cudaFreeMipmappedArray(mip));
    CHECK(cudaFree(d_lods));
    CHECK(cudaFree(d_out));
    printf("mipmap ok\n");
    return 0;
}

// simpleCubemapTexture-like: six faces of distinct values, read back through directions
// aimed at each face's texel centres.
static int cubemap()
{
    const int w = 8;
    std::vector<float> faces(6 * w * w);
    for (int i = 0; i < 6 * w * w; i++)
        faces[i] = (float)i;
    cudaChannelFormatDesc fmt = cudaCreateChannelDesc<float>();
    cudaArray_t arr;
    CHECK(cudaMalloc3DArray(&arr, &fmt, make_cudaExtent(w, w, 6), cudaArrayCubemap));
    cudaMemcpy3DParms p = {};
    p.srcPtr = make_cudaPitchedPtr(faces.data(), w * sizeof(float), w, w);
    p.dstArray = arr;
    p.extent = make_cudaExtent(w, w, 6);
    p.kind = cudaMemcpyHostToDevice;
    CHECK(cudaMemcpy3D(&p));
    cudaResourceDesc res = {};
    res.resType = cudaResourceTypeArray;
    res.res.array.array = arr;
    cudaTextureDesc td = {};
    td.normalizedCoords = 1;
    td.filterMode = cudaFilterModeLinear; // at texel centres: the texel itself
    cudaTextureObject_t t;
    CHECK(cudaCreateTextureObject(&t, &res, &td, nullptr));
    // per face, the direction through texel (i, j): s and t from the programming guide's table
    std::vector<float4> dirs(6 * w * w);
    for (int f = 0; f < 6; f++)
        for (int j = 0; j < w; j++)
            for (int i = 0; i < w; i++) {
                float s = 2.0f * (i + 0.5f) / w - 1.0f, tt = 2.0f * (j + 0.5f) / w - 1.0f;
                float4 d;
                switch (f) {
                case 0: d = make_float4(1, -tt, -s, 0); break;
                case 1: d = make_float4(-1, -tt, s, 0); break;
                case 2: d = make_float4(s, 1, tt, 0); break;
                case 3: d = make_float4(s, -1, -tt, 0); break;
                case 4: d = make_float4(s, -tt, 1, 0); break;
                default: d = make_float4(-s, -tt, -1, 0); break;
                }
                dirs[(f * w + j) * w + i] = d;
            }
    float4 *d_dirs;
    float *d_out;
    std::vector<float> out(6 * w * w);
    CHECK(cudaMalloc(&d_dirs, dirs.size() * sizeof(float4)));
    CHECK(cudaMalloc(&d_out, out.size() * sizeof(float)));
    CHECK(cudaMemcpy(d_dirs, dirs.data(), dirs.size() * sizeof(float4), cudaMemcpyHostToDevice));
    for (int f = 0; f < 6; f++)
        read_cube<<<1, w * w>>>(d_out + f * w * w, d_dirs + f * w * w, t);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(out.data(), d_out, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
    for (int i = 0; i < 6 * w * w; i++)
        EXPECT(out[i] == faces[i], "cube texel %d: %f vs %f", i, out[i], faces[i]);
    CHECK(cudaDestroyTextureObject(t));
    CHECK(cudaFreeArray(arr));
    CHECK(cudaFree(d_dirs));
    CHECK(cudaFree(d_out));
    printf("cubemap ok\n");
    return 0;
}

// A captured graph: host -> array copy, a kernel reading it through a texture, the result back;
// replayed with new host data each time.
static int captured_graph()
{
    const int w = 8, h = 4;
    cudaChannelFormatDesc fmt = cudaCreateChannelDesc<float>();
    cudaArray_t arr;
    CHECK(cudaMallocArray(&arr, &fmt, w, h));
    std::vector<float> in(w * h), out(w * h);
    cudaResourceDesc res = {};
    res.resType = cudaResourceTypeArray;
    res.res.array.array = arr;
    cudaTextureDesc td = {};
    cudaTextureObject_t t;
    CHECK(cudaCreateTextureObject(&t, &res, &td, nullptr));
    float *d_out;
    CHECK(cudaMalloc(&d_out, w * h * sizeof(float)));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CHECK(cudaMemcpy2DToArrayAsync(arr, 0, 0, in.data(), w * sizeof(float), w * sizeof(float),
                                   h, cudaMemcpyHostToDevice, s));
    double_texels<<<1, w * h, 0, s>>>(d_out, t, w);
    CHECK(cudaMemcpyAsync(out.data(), d_out, w * h * sizeof(float), cudaMemcpyDeviceToHost, s));
    CHECK(cudaStreamEndCapture(s, &g));
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    for (int rep = 0; rep < 3; rep++) {
        for (int i = 0; i < w * h; i++)
            in[i] = (float)(i + 100 * rep);
        CHECK(cudaGraphLaunch(ge, s));
        CHECK(cudaStreamSynchronize(s));
        for (int i = 0; i < w * h; i++)
            EXPECT(out[i] == 2.0f * in[i], "graph replay %d, texel %d: %f", rep, i, out[i]);
    }
    CHECK(cudaGraphExecDestroy(ge));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaDestroyTextureObject(t));
    CHECK(cudaFreeArray(arr));
    CHECK(cudaFree(d_out));
    printf("graph ok\n");
    return 0;
}

int main()
{
    if (simple_texture() || linear_texture() || pitch_texture() || surfaces() ||
        integer_textures() || copies_3d() || mipmaps() || cubemap() || captured_graph())
        return 1;
    printf("PASSED\n");
    return 0;
}
