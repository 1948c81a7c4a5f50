/* Modules, libraries, functions, kernels, globals and launches.
 *
 * Images are sized from their own headers and shipped whole as the bulk segment of the load
 * call: a __fatBinC_Wrapper_t is followed to its fatbin, a fatbin is walked container by
 * container, an ELF is measured by its header tables and sections, PTX is its text and NUL.
 * Kernel parameters are packed with the layout the server reports (cuFuncGetParamInfo /
 * cuKernelGetParamInfo), fetched once per function. Launches are BATCH frames. */
#define _GNU_SOURCE
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coherence.h"

#define WRAPPER_MAGIC 0x466243B1u
#define FATBIN_MAGIC 0xBA55ED50u
#define MAX_IMAGE ((size_t)1 << 30)

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

typedef struct {
    uintptr_t addr;
    uintptr_t end;
} segment_query;

static int find_segment(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    segment_query *q = data;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (q->addr >= start && q->addr < start + ph->p_memsz) {
            q->end = start + ph->p_memsz;
            return 1;
        }
    }
    return 0;
}

/* The end of the loaded ELF segment holding p (0 if p is not in a loaded object). */
static uintptr_t segment_end(const void *p)
{
    segment_query q = {(uintptr_t)p, 0};
    dl_iterate_phdr(find_segment, &q);
    return q.end;
}

/* Bytes of the fatbin at p: its container, and the containers chained after it. Chains live in
 * an executable's .nv_fatbin section (every translation unit's container back to back, 8-byte
 * aligned, zero padded), so they are followed only inside the loaded segment holding p: bytes
 * past an image in the app's heap are not the app's to read. */
static size_t fatbin_size(const uint8_t *p)
{
    uintptr_t limit = segment_end(p);
    size_t off = 0;
    for (;;) {
        uint16_t hs;
        memcpy(&hs, p + off + 6, 2);
        uint64_t fat = rd64(p + off + 8);
        if (hs < 16 || fat > MAX_IMAGE)
            return 0;
        size_t end = off + hs + fat;
        size_t next = (end + 7) & ~(size_t)7;
        while ((uintptr_t)(p + next) + 8 <= limit && rd64(p + next) == 0)
            next += 8;
        if ((uintptr_t)(p + next) + 16 > limit || rd32(p + next) != FATBIN_MAGIC)
            return end;
        off = next;
    }
}

static size_t elf_size(const uint8_t *p)
{
    if (p[4] != 2) /* ELF64 only */
        return 0;
    uint64_t phoff = rd64(p + 0x20), shoff = rd64(p + 0x28);
    uint16_t phentsize, phnum, shentsize, shnum;
    memcpy(&phentsize, p + 0x36, 2);
    memcpy(&phnum, p + 0x38, 2);
    memcpy(&shentsize, p + 0x3a, 2);
    memcpy(&shnum, p + 0x3c, 2);
    uint64_t end = 64;
    if (phoff + (uint64_t)phnum * phentsize > end)
        end = phoff + (uint64_t)phnum * phentsize;
    if (shoff + (uint64_t)shnum * shentsize > end)
        end = shoff + (uint64_t)shnum * shentsize;
    if (end > MAX_IMAGE)
        return 0;
    for (unsigned i = 0; i < shnum && shentsize >= 64; i++) {
        const uint8_t *sh = p + shoff + (uint64_t)i * shentsize;
        if (rd32(sh + 4) == 8) /* SHT_NOBITS */
            continue;
        uint64_t e = rd64(sh + 0x18) + rd64(sh + 0x20);
        if (e > end && e <= MAX_IMAGE)
            end = e;
    }
    for (unsigned i = 0; i < phnum && phentsize >= 56; i++) {
        const uint8_t *ph = p + phoff + (uint64_t)i * phentsize;
        uint64_t e = rd64(ph + 8) + rd64(ph + 0x20);
        if (e > end && e <= MAX_IMAGE)
            end = e;
    }
    return (size_t)end;
}

/* The bytes to ship for an image handed to a load call; 0 if it cannot be sized. */
static size_t image_span(const void *image, const uint8_t **start)
{
    const uint8_t *p = image;
    *start = p;
    if (!p)
        return 0;
    uint32_t magic = rd32(p);
    if (magic == WRAPPER_MAGIC) {
        const uint8_t *data = (const uint8_t *)(uintptr_t)rd64(p + 8);
        if (!data || rd32(data) != FATBIN_MAGIC)
            return 0;
        *start = data;
        return fatbin_size(data);
    }
    if (magic == FATBIN_MAGIC)
        return fatbin_size(p);
    if (!memcmp(p, "\177ELF", 4))
        return elf_size(p);
    return strlen((const char *)p) + 1;
}

static void put_options(mp_buf *b, unsigned n, const int *keys, void **values)
{
    if (!n || !keys || !values) {
        mp_nil(b);
        return;
    }
    mp_map(b, n);
    for (unsigned i = 0; i < n; i++) {
        mp_int(b, keys[i]);
        mp_uint(b, (uint64_t)(uintptr_t)values[i]);
    }
}

/* Load `image` as module or library `o` with function `fn` (options: NULL or maps). */
static CUresult load_image(rgpu_obj *o, const char *fn, const void *image, int library,
                           unsigned njit, const int *jit_keys, void **jit_vals, unsigned nlib,
                           const int *lib_keys, void **lib_vals)
{
    const uint8_t *start;
    size_t n = image_span(image, &start);
    if (n == 0)
        return CUDA_ERROR_INVALID_IMAGE;
    mp_buf b;
    if (library) {
        rgpu_body_begin_bulk(&b, fn, 3);
        mp_uint(&b, o->id);
        put_options(&b, njit, jit_keys, jit_vals);
        put_options(&b, nlib, lib_keys, lib_vals);
    } else if (njit) {
        rgpu_body_begin_bulk(&b, fn, 2);
        mp_uint(&b, o->id);
        put_options(&b, njit, jit_keys, jit_vals);
    } else {
        rgpu_body_begin_bulk(&b, fn, 1);
        mp_uint(&b, o->id);
    }
    mp_uint(&b, 1); /* bulk_index: the image is the second argument */
    rgpu_reply r;
    CUresult st = rgpu_simple_call(o->dev, &b, start, n, &r);
    if (st == CUDA_SUCCESS)
        rgpu_reply_free(&r);
    RGPU_DEBUG("%s: %zu-byte image -> %d", fn, n, (int)st);
    if (st == CUDA_SUCCESS && library) {
        rgpu_session *s;
        o->image = malloc(n);
        if (!o->image || rgpu_device_session(o->dev, &s) != CUDA_SUCCESS) {
            mp_free(&b);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        memcpy(o->image, start, n);
        o->image_len = n;
        o->load_opts = b; /* reused to load the same image into another session */
        o->sessions[o->nsessions++] = s->id;
        return st;
    }
    mp_free(&b);
    return st;
}

static int on_session(rgpu_obj *o, uint32_t sid)
{
    for (int i = 0; i < o->nsessions; i++)
        if (o->sessions[i] == sid)
            return 1;
    return 0;
}

/* Make library `l` exist on the session of device `dev` (same id: ids are per session). */
static CUresult library_on(rgpu_obj *l, int dev)
{
    rgpu_session *s;
    CUresult st = rgpu_device_session(dev, &s);
    if (st != CUDA_SUCCESS)
        return st;
    pthread_mutex_lock(&l->mu);
    if (on_session(l, s->id)) {
        pthread_mutex_unlock(&l->mu);
        return CUDA_SUCCESS;
    }
    if (l->nsessions >= (int)(sizeof l->sessions / sizeof l->sessions[0]) || !l->image) {
        pthread_mutex_unlock(&l->mu);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    rgpu_reply r;
    st = rgpu_simple_call(dev, &l->load_opts, l->image, l->image_len, &r);
    if (st == CUDA_SUCCESS) {
        rgpu_reply_free(&r);
        l->sessions[l->nsessions++] = s->id;
    }
    RGPU_DEBUG("library %llu loaded on session %u -> %d", (unsigned long long)l->id,
               (unsigned)s->id, (int)st);
    pthread_mutex_unlock(&l->mu);
    return st;
}

/* Make kernel `k` (and its library) exist on the session of device `dev`. */
static CUresult kernel_on(rgpu_obj *k, int dev)
{
    rgpu_session *s;
    CUresult st = rgpu_device_session(dev, &s);
    if (st != CUDA_SUCCESS)
        return st;
    pthread_mutex_lock(&k->mu);
    int bound = on_session(k, s->id);
    pthread_mutex_unlock(&k->mu);
    if (bound)
        return CUDA_SUCCESS;
    if (!k->parent || k->parent->kind != RK_LIBRARY)
        return CUDA_ERROR_INVALID_HANDLE;
    st = library_on(k->parent, dev);
    if (st != CUDA_SUCCESS)
        return st;
    mp_buf b;
    rgpu_body_begin(&b, "cuLibraryGetKernel", 3);
    mp_uint(&b, k->id);
    mp_uint(&b, k->parent->id);
    mp_str(&b, k->name ? k->name : "");
    st = rgpu_status_call(dev, &b, 1);
    if (st == CUDA_SUCCESS) {
        pthread_mutex_lock(&k->mu);
        if (!on_session(k, s->id) && k->nsessions < (int)(sizeof k->sessions / sizeof k->sessions[0]))
            k->sessions[k->nsessions++] = s->id;
        pthread_mutex_unlock(&k->mu);
    }
    return st;
}

static CUresult module_load(CUmodule *module, const void *image, unsigned n, CUjit_option *opts,
                            void **vals, const char *fn)
{
    if (!module || !image)
        return CUDA_ERROR_INVALID_VALUE;
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    rgpu_ctx *ctx = rgpu_current_ctx();
    rgpu_obj *o = rgpu_obj_new(RK_MODULE, ctx ? ctx->dev : 0, ctx);
    if (!o)
        return CUDA_ERROR_OUT_OF_MEMORY;
    /* JIT options carry output pointers (logs); only plain values are forwarded */
    CUresult st = load_image(o, fn, image, 0, n, (const int *)opts, vals, 0, NULL, NULL);
    if (st != CUDA_SUCCESS) {
        rgpu_obj_free(o);
        return st;
    }
    *module = (CUmodule)o;
    return CUDA_SUCCESS;
}

CUresult cuModuleLoadData(CUmodule *module, const void *image)
{
    return module_load(module, image, 0, NULL, NULL, "cuModuleLoadData");
}

/* JIT options mostly name output buffers of this process (logs, wall time): they are not
 * forwarded; the outputs are answered as a compile that printed nothing. */
static void answer_jit_outputs(unsigned n, const CUjit_option *options, void **values)
{
    if (!options || !values)
        return;
    for (unsigned i = 0; i < n; i++) {
        switch (options[i]) {
        case CU_JIT_INFO_LOG_BUFFER:
        case CU_JIT_ERROR_LOG_BUFFER:
            if (values[i])
                *(char *)values[i] = 0;
            break;
        case CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES:
        case CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES:
            values[i] = NULL; /* bytes written: none */
            break;
        case CU_JIT_WALL_TIME: {
            float zero = 0;
            memcpy(&values[i], &zero, sizeof zero);
            break;
        }
        default:
            break;
        }
    }
}

CUresult cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int numOptions,
                            CUjit_option *options, void **optionValues)
{
    CUresult st = module_load(module, image, 0, NULL, NULL, "cuModuleLoadData");
    answer_jit_outputs(numOptions, options, optionValues);
    return st;
}

CUresult cuModuleLoadFatBinary(CUmodule *module, const void *fatCubin)
{
    return module_load(module, fatCubin, 0, NULL, NULL, "cuModuleLoadFatBinary");
}

/* A module or library file, read whole (with a NUL after it, so PTX text is terminated). */
static void *read_file(const char *path)
{
    if (!path)
        return NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && (size_t)n < MAX_IMAGE && fseek(f, 0, SEEK_SET) == 0) {
            buf = malloc((size_t)n + 1);
            if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
                buf[n] = 0;
            } else {
                free(buf);
                buf = NULL;
            }
        }
    }
    fclose(f);
    return buf;
}

CUresult cuModuleLoad(CUmodule *module, const char *fname)
{
    if (!module || !fname)
        return CUDA_ERROR_INVALID_VALUE;
    void *image = read_file(fname);
    if (!image)
        return CUDA_ERROR_FILE_NOT_FOUND;
    CUresult st = module_load(module, image, 0, NULL, NULL, "cuModuleLoadData");
    free(image);
    return st;
}

CUresult cuModuleUnload(CUmodule hmod)
{
    rgpu_obj *o = rgpu_obj_check(hmod, RK_MODULE);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    CUresult st = rgpu_release_remote(o, "cuModuleUnload");
    o->kind = 0; /* functions of the module keep pointing at it: leave the memory */
    return st;
}

static CUresult bind_function(rgpu_obj *parent, uint32_t kind, const char *fn, const char *name,
                              rgpu_obj **out)
{
    rgpu_obj *f = rgpu_obj_new(kind, parent->dev, rgpu_current_ctx());
    if (!f)
        return CUDA_ERROR_OUT_OF_MEMORY;
    f->parent = parent;
    f->name = strdup(name);
    mp_buf b;
    rgpu_body_begin(&b, fn, 3);
    mp_uint(&b, f->id);
    mp_uint(&b, parent->id);
    mp_str(&b, name);
    /* a CALL: a missing name must fail here (CUDA_ERROR_NOT_FOUND), not at the launch */
    rgpu_reply r;
    CUresult st = rgpu_simple_call(parent->dev, &b, NULL, 0, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS) {
        rgpu_obj_free(f);
        return st;
    }
    rgpu_reply_free(&r);
    rgpu_session *s;
    if (rgpu_device_session(parent->dev, &s) == CUDA_SUCCESS)
        f->sessions[f->nsessions++] = s->id;
    *out = f;
    return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name)
{
    rgpu_obj *m = rgpu_obj_check(hmod, RK_MODULE);
    if (!m)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!hfunc || !name)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_obj *f;
    CUresult st = bind_function(m, RK_FUNCTION, "cuModuleGetFunction", name, &f);
    if (st == CUDA_SUCCESS)
        *hfunc = (CUfunction)f;
    return st;
}

static CUresult get_global(uint64_t parent_id, int dev, const char *fn, const char *name,
                           CUdeviceptr *dptr, size_t *bytes)
{
    if (!name)
        return CUDA_ERROR_INVALID_VALUE;
    mp_buf b;
    rgpu_body_begin(&b, fn, 2);
    mp_uint(&b, parent_id);
    mp_str(&b, name);
    rgpu_reply r;
    CUresult st = rgpu_simple_call(dev, &b, NULL, 0, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    int64_t p = 0, n = 0;
    if (rgpu_reply_pair(&r, &p, &n) != 0)
        st = CUDA_ERROR_UNKNOWN;
    rgpu_reply_free(&r);
    if (st == CUDA_SUCCESS) {
        rgpu_range_add_global((uint64_t)p, (size_t)n, dev);
        if (dptr)
            *dptr = (CUdeviceptr)p;
        if (bytes)
            *bytes = (size_t)n;
    }
    return st;
}

CUresult cuModuleGetGlobal_v2(CUdeviceptr *dptr, size_t *bytes, CUmodule hmod, const char *name)
{
    rgpu_obj *m = rgpu_obj_check(hmod, RK_MODULE);
    if (!m)
        return CUDA_ERROR_INVALID_HANDLE;
    return get_global(m->id, m->dev, "cuModuleGetGlobal_v2", name, dptr, bytes);
}

/* ---- libraries --------------------------------------------------------------------------- */

CUresult cuLibraryLoadData(CUlibrary *library, const void *code, CUjit_option *jitOptions,
                           void **jitOptionsValues, unsigned int numJitOptions,
                           CUlibraryOption *libraryOptions, void **libraryOptionValues,
                           unsigned int numLibraryOptions)
{
    answer_jit_outputs(numJitOptions, jitOptions, jitOptionsValues);
    if (!library || !code)
        return CUDA_ERROR_INVALID_VALUE;
    if (!rgpu_initialized)
        return CUDA_ERROR_NOT_INITIALIZED;
    rgpu_obj *o = rgpu_obj_new(RK_LIBRARY, rgpu_current_dev(), NULL);
    if (!o)
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult st = load_image(o, "cuLibraryLoadData", code, 1, 0, NULL, NULL, numLibraryOptions,
                             (const int *)libraryOptions, libraryOptionValues);
    if (st != CUDA_SUCCESS) {
        rgpu_obj_free(o);
        return st;
    }
    *library = (CUlibrary)o;
    return CUDA_SUCCESS;
}

CUresult cuLibraryLoadFromFile(CUlibrary *library, const char *fileName, CUjit_option *jitOptions,
                               void **jitOptionsValues, unsigned int numJitOptions,
                               CUlibraryOption *libraryOptions, void **libraryOptionValues,
                               unsigned int numLibraryOptions)
{
    if (!library || !fileName)
        return CUDA_ERROR_INVALID_VALUE;
    void *image = read_file(fileName);
    if (!image)
        return CUDA_ERROR_FILE_NOT_FOUND;
    /* the image is copied by the load, so the preserved-binary option does not bind us */
    CUresult st = cuLibraryLoadData(library, image, jitOptions, jitOptionsValues, numJitOptions,
                                    libraryOptions, libraryOptionValues, numLibraryOptions);
    free(image);
    return st;
}

CUresult cuLibraryUnload(CUlibrary library)
{
    rgpu_obj *o = rgpu_obj_check(library, RK_LIBRARY);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    CUresult st = rgpu_release_remote(o, "cuLibraryUnload");
    o->kind = 0;
    return st;
}

CUresult cuLibraryGetKernel(CUkernel *pKernel, CUlibrary library, const char *name)
{
    rgpu_obj *l = rgpu_obj_check(library, RK_LIBRARY);
    if (!l)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!pKernel || !name)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_obj *k;
    CUresult st = bind_function(l, RK_KERNEL, "cuLibraryGetKernel", name, &k);
    if (st == CUDA_SUCCESS)
        *pKernel = (CUkernel)k;
    return st;
}

CUresult cuLibraryGetModule(CUmodule *pMod, CUlibrary library)
{
    rgpu_obj *l = rgpu_obj_check(library, RK_LIBRARY);
    if (!l)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!pMod)
        return CUDA_ERROR_INVALID_VALUE;
    int dev = rgpu_current_ctx() ? rgpu_current_dev() : l->dev;
    CUresult st = library_on(l, dev);
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_obj *m = rgpu_obj_new(RK_MODULE, dev, rgpu_current_ctx());
    if (!m)
        return CUDA_ERROR_OUT_OF_MEMORY;
    mp_buf b;
    rgpu_body_begin(&b, "cuLibraryGetModule", 2);
    mp_uint(&b, m->id);
    mp_uint(&b, l->id);
    st = rgpu_status_call(dev, &b, 0);
    if (st != CUDA_SUCCESS) {
        rgpu_obj_free(m);
        return st;
    }
    *pMod = (CUmodule)m;
    return CUDA_SUCCESS;
}

CUresult cuLibraryGetGlobal(CUdeviceptr *dptr, size_t *bytes, CUlibrary library, const char *name)
{
    rgpu_obj *l = rgpu_obj_check(library, RK_LIBRARY);
    if (!l)
        return CUDA_ERROR_INVALID_HANDLE;
    int dev = rgpu_current_ctx() ? rgpu_current_dev() : l->dev;
    CUresult st = library_on(l, dev);
    if (st != CUDA_SUCCESS)
        return st;
    return get_global(l->id, dev, "cuLibraryGetGlobal", name, dptr, bytes);
}

/* A `__managed__` variable: cudart gives host code the address answered here, so it is the
 * variable's host copy, kept coherent with the device's (managed.c); kernels use the
 * variable itself. */
CUresult cuLibraryGetManaged(CUdeviceptr *dptr, size_t *bytes, CUlibrary library,
                             const char *name)
{
    rgpu_obj *l = rgpu_obj_check(library, RK_LIBRARY);
    if (!l)
        return CUDA_ERROR_INVALID_HANDLE;
    int dev = rgpu_current_ctx() ? rgpu_current_dev() : l->dev;
    CUresult st = library_on(l, dev);
    if (st != CUDA_SUCCESS)
        return st;
    CUdeviceptr d = 0;
    size_t size = 0;
    st = get_global(l->id, dev, "cuLibraryGetManaged", name, &d, &size);
    if (st != CUDA_SUCCESS)
        return st;
    void *host;
    st = rgpu_coherent_global(d, size, &host);
    if (st != CUDA_SUCCESS)
        return st;
    if (dptr)
        *dptr = (CUdeviceptr)(uintptr_t)host;
    if (bytes)
        *bytes = size;
    return CUDA_SUCCESS;
}

CUresult cuLibraryGetKernelCount(unsigned int *count, CUlibrary lib)
{
    rgpu_obj *l = rgpu_obj_check(lib, RK_LIBRARY);
    if (!l)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!count)
        return CUDA_ERROR_INVALID_VALUE;
    mp_buf b;
    rgpu_body_begin(&b, "cuLibraryGetKernelCount", 1);
    mp_uint(&b, l->id);
    rgpu_reply r;
    CUresult st = rgpu_simple_call(l->dev, &b, NULL, 0, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    int64_t v = 0;
    rgpu_reply_i64(&r, &v);
    rgpu_reply_free(&r);
    *count = (unsigned)v;
    return CUDA_SUCCESS;
}

CUresult cuKernelGetFunction(CUfunction *pFunc, CUkernel kernel)
{
    rgpu_obj *k = rgpu_obj_check(kernel, RK_KERNEL);
    if (!k)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!pFunc)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_ctx *ctx = rgpu_current_ctx();
    uint64_t cid = ctx ? ctx->id : 0;
    pthread_mutex_lock(&k->mu);
    if (k->cached_func && k->cached_ctx == cid) {
        *pFunc = (CUfunction)k->cached_func;
        pthread_mutex_unlock(&k->mu);
        return CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&k->mu);
    int dev = ctx ? ctx->dev : k->dev;
    CUresult st = kernel_on(k, dev);
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_obj *f = rgpu_obj_new(RK_FUNCTION, dev, ctx);
    if (!f)
        return CUDA_ERROR_OUT_OF_MEMORY;
    f->parent = k;
    f->name = k->name ? strdup(k->name) : NULL;
    mp_buf b;
    rgpu_body_begin(&b, "cuKernelGetFunction", 2);
    mp_uint(&b, f->id);
    mp_uint(&b, k->id);
    st = rgpu_status_call(dev, &b, 0);
    if (st != CUDA_SUCCESS) {
        rgpu_obj_free(f);
        return st;
    }
    pthread_mutex_lock(&k->mu);
    k->cached_func = f;
    k->cached_ctx = cid;
    pthread_mutex_unlock(&k->mu);
    *pFunc = (CUfunction)f;
    return CUDA_SUCCESS;
}

static rgpu_obj *func_or_kernel(const void *h)
{
    rgpu_obj *o = rgpu_obj_check(h, RK_FUNCTION);
    return o ? o : rgpu_obj_check(h, RK_KERNEL);
}

static CUresult get_name(rgpu_obj *o, const char **name)
{
    if (!name)
        return CUDA_ERROR_INVALID_VALUE;
    *name = o->name ? o->name : "";
    return CUDA_SUCCESS;
}

CUresult cuKernelGetName(const char **name, CUkernel hfunc)
{
    rgpu_obj *o = rgpu_obj_check(hfunc, RK_KERNEL);
    return o ? get_name(o, name) : CUDA_ERROR_INVALID_HANDLE;
}

CUresult cuFuncGetName(const char **name, CUfunction hfunc)
{
    rgpu_obj *o = func_or_kernel(hfunc);
    return o ? get_name(o, name) : CUDA_ERROR_INVALID_HANDLE;
}

CUresult cuFuncGetModule(CUmodule *hmod, CUfunction hfunc)
{
    rgpu_obj *o = rgpu_obj_check(hfunc, RK_FUNCTION);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!hmod)
        return CUDA_ERROR_INVALID_VALUE;
    if (!o->parent || o->parent->kind != RK_MODULE)
        return CUDA_ERROR_NOT_FOUND;
    *hmod = (CUmodule)o->parent;
    return CUDA_SUCCESS;
}

/* ---- parameter layouts ------------------------------------------------------------------- */

static CUresult fetch_params(rgpu_obj *f)
{
    if (f->params.count >= 0)
        return CUDA_SUCCESS;
    int is_kernel = f->kind == RK_KERNEL;
    uint32_t cap = 0, n = 0;
    uint32_t *off = NULL, *size = NULL;
    size_t total = 0;
    CUresult st = CUDA_SUCCESS;
    for (;;) {
        mp_buf b;
        rgpu_body_begin(&b, is_kernel ? "cuKernelGetParamInfo" : "cuFuncGetParamInfo", 2);
        mp_uint(&b, f->id);
        mp_uint(&b, n);
        rgpu_reply r;
        st = rgpu_simple_call(f->dev, &b, NULL, 0, &r);
        mp_free(&b);
        if (st == CUDA_ERROR_INVALID_VALUE) { /* past the last parameter */
            st = CUDA_SUCCESS;
            break;
        }
        if (st != CUDA_SUCCESS)
            break;
        int64_t o = 0, s = 0;
        int bad = rgpu_reply_pair(&r, &o, &s) != 0 || o < 0 || s < 0 || o > (1 << 20) ||
                  s > (1 << 20);
        rgpu_reply_free(&r);
        if (bad) {
            st = CUDA_ERROR_UNKNOWN;
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            uint32_t *no = realloc(off, cap * sizeof *no);
            if (no)
                off = no;
            uint32_t *ns = realloc(size, cap * sizeof *ns);
            if (ns)
                size = ns;
            if (!no || !ns) {
                st = CUDA_ERROR_OUT_OF_MEMORY;
                break;
            }
        }
        off[n] = (uint32_t)o;
        size[n] = (uint32_t)s;
        if ((size_t)(o + s) > total)
            total = (size_t)(o + s);
        n++;
    }
    if (st != CUDA_SUCCESS) {
        free(off);
        free(size);
        return st;
    }
    pthread_mutex_lock(&f->mu);
    if (f->params.count < 0) {
        f->params.offset = off;
        f->params.size = size;
        f->params.total = total;
        f->params.count = (int)n;
        off = size = NULL;
    }
    pthread_mutex_unlock(&f->mu);
    free(off);
    free(size);
    RGPU_DEBUG("%s: %d parameter(s), %zu bytes", f->name ? f->name : "?", (int)n, total);
    return CUDA_SUCCESS;
}

CUresult cuFuncGetParamInfo(CUfunction func, size_t paramIndex, size_t *paramOffset,
                            size_t *paramSize)
{
    rgpu_obj *f = func_or_kernel(func);
    if (!f)
        return CUDA_ERROR_INVALID_HANDLE;
    CUresult st = fetch_params(f);
    if (st != CUDA_SUCCESS)
        return st;
    if (paramIndex >= (size_t)f->params.count)
        return CUDA_ERROR_INVALID_VALUE;
    if (paramOffset)
        *paramOffset = f->params.offset[paramIndex];
    if (paramSize)
        *paramSize = f->params.size[paramIndex];
    return CUDA_SUCCESS;
}

CUresult cuKernelGetParamInfo(CUkernel kernel, size_t paramIndex, size_t *paramOffset,
                              size_t *paramSize)
{
    return cuFuncGetParamInfo((CUfunction)kernel, paramIndex, paramOffset, paramSize);
}

/* Pack kernelParams / extra into the layout's buffer (caller frees *out). */
static CUresult pack_params(rgpu_obj *f, void **kernelParams, void **extra, uint8_t **out,
                            size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (extra) {
        void *buf = NULL;
        size_t size = 0;
        int have_size = 0;
        for (int i = 0; extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
            if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER) {
                buf = extra[i + 1];
            } else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE) {
                size = *(size_t *)extra[i + 1];
                have_size = 1;
            } else {
                return CUDA_ERROR_INVALID_VALUE;
            }
        }
        if (!have_size || (size && !buf))
            return CUDA_ERROR_INVALID_VALUE;
        *out = malloc(size ? size : 1);
        if (!*out)
            return CUDA_ERROR_OUT_OF_MEMORY;
        if (size)
            memcpy(*out, buf, size);
        *out_len = size;
        return CUDA_SUCCESS;
    }
    CUresult st = fetch_params(f);
    if (st != CUDA_SUCCESS)
        return st;
    size_t total = f->params.total;
    *out = calloc(1, total ? total : 1);
    if (!*out)
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (f->params.count > 0 && !kernelParams) {
        free(*out);
        *out = NULL;
        return CUDA_ERROR_INVALID_VALUE;
    }
    for (int i = 0; i < f->params.count; i++)
        if (f->params.size[i])
            memcpy(*out + f->params.offset[i], kernelParams[i], f->params.size[i]);
    *out_len = total;
    return CUDA_SUCCESS;
}

/* Launch configurations the device cannot take fail at the launch, as with the driver (and
 * so cudaGetLastError sees them), not later as a deferred error: checked against the facts.
 * The driver answers CUDA_ERROR_INVALID_VALUE to driver-API programs; under cudart, launches
 * must fail with the code cudart turns into cudaErrorInvalidConfiguration (9: "invalid
 * configuration argument", what runtime programs check for and print), which is not in
 * cuda.h's enum. */
extern __attribute__((visibility("hidden"))) int rgpu_cudart_present; /* export_tables.c */
#define RGPU_INVALID_CONFIGURATION ((CUresult)9)

static CUresult bad_config(void)
{
    return __atomic_load_n(&rgpu_cudart_present, __ATOMIC_ACQUIRE) ? RGPU_INVALID_CONFIGURATION
                                                                   : CUDA_ERROR_INVALID_VALUE;
}

static CUresult check_config(int dev, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                             unsigned by, unsigned bz)
{
    if (dev < 0 || dev >= rgpu_device_count)
        return CUDA_ERROR_INVALID_CONTEXT;
    int a[7] = {0};
    static const CUdevice_attribute which[7] = {
        CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X, CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y,
        CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X,
        CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y, CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z,
        CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK};
    for (int i = 0; i < 7; i++)
        if (cuDeviceGetAttribute(&a[i], which[i], dev) != CUDA_SUCCESS || a[i] <= 0)
            return CUDA_SUCCESS; /* facts incomplete: leave the judgement to the server */
    if (!gx || !gy || !gz || !bx || !by || !bz)
        return bad_config();
    if (bx > (unsigned)a[0] || by > (unsigned)a[1] || bz > (unsigned)a[2] ||
        gx > (unsigned)a[3] || gy > (unsigned)a[4] || gz > (unsigned)a[5] ||
        (uint64_t)bx * by * bz > (uint64_t)a[6])
        return bad_config();
    return CUDA_SUCCESS;
}

/* ---- per-function launch limits ----------------------------------------------------------
 * A function's maximum block size (its __launch_bounds__ / .maxntid, or what its registers
 * allow) and its maximum dynamic shared memory (48 KiB less its static shared memory unless
 * raised with cuFuncSetAttribute) are fetched on its first launch and cached with its
 * parameter layout. Setting CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES on any function or
 * kernel starts a new generation: the object set (and a kernel's current function) keeps the
 * value it was given, every other one fetches its limits again at its next launch, as a
 * kernel's setting reaches the functions made from it on the server. */
static _Atomic unsigned limits_gen = 1;

static void limits_get(rgpu_obj *o, int dev, int *max_threads, int *max_dyn)
{
    unsigned gen = limits_gen;
    pthread_mutex_lock(&o->mu);
    int cached = o->lim_gen == gen && o->lim_dev == dev;
    *max_threads = o->lim_max_threads;
    *max_dyn = o->lim_max_dyn_smem;
    pthread_mutex_unlock(&o->mu);
    if (cached)
        return;
    int t = 0, d = -1;
    CUresult st;
    if (o->kind == RK_KERNEL) {
        st = cuKernelGetAttribute(&t, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, (CUkernel)o, dev);
        if (st == CUDA_SUCCESS)
            st = cuKernelGetAttribute(&d, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                      (CUkernel)o, dev);
    } else {
        st = cuFuncGetAttribute(&t, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, (CUfunction)o);
        if (st == CUDA_SUCCESS)
            st = cuFuncGetAttribute(&d, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                    (CUfunction)o);
    }
    *max_threads = st == CUDA_SUCCESS && t > 0 ? t : 0;
    *max_dyn = st == CUDA_SUCCESS && d >= 0 ? d : -1;
    if (st != CUDA_SUCCESS)
        return; /* unknown (a poisoned context, a lost server): the server judges the launch */
    pthread_mutex_lock(&o->mu);
    o->lim_gen = gen;
    o->lim_dev = dev;
    o->lim_max_threads = *max_threads;
    o->lim_max_dyn_smem = *max_dyn;
    pthread_mutex_unlock(&o->mu);
}

/* After a successful set of the dynamic shared memory limit of `o` on `dev`. */
static void limits_set_dyn(rgpu_obj *o, int dev, int value)
{
    unsigned old = limits_gen++;
    pthread_mutex_lock(&o->mu);
    rgpu_obj *objs[2] = {o, o->kind == RK_KERNEL ? o->cached_func : NULL};
    pthread_mutex_unlock(&o->mu);
    for (int i = 0; i < 2; i++) {
        rgpu_obj *x = objs[i];
        if (!x)
            continue;
        pthread_mutex_lock(&x->mu);
        if (x->lim_gen == old && x->lim_dev == dev) {
            x->lim_gen = old + 1;
            x->lim_max_dyn_smem = value;
        }
        pthread_mutex_unlock(&x->mu);
    }
}

/* What the driver answers (CUDA 12/13): a block larger than the function allows fails with
 * CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES (cudaErrorLaunchOutOfResources, "too many resources
 * requested for launch"), the error for a block beyond what the kernel's registers or launch
 * bounds allow; dynamic shared memory above the function's limit (or the device's opt-in
 * maximum) fails with CUDA_ERROR_INVALID_VALUE (cudaErrorInvalidValue). */
CUresult rgpu_check_launch(CUfunction f, int dev, unsigned gx, unsigned gy, unsigned gz,
                           unsigned bx, unsigned by, unsigned bz, unsigned shmem)
{
    rgpu_obj *o = func_or_kernel(f);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    CUresult st = check_config(dev, gx, gy, gz, bx, by, bz);
    if (st != CUDA_SUCCESS)
        return st;
    int optin = 0;
    if (cuDeviceGetAttribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                             dev) == CUDA_SUCCESS &&
        optin > 0 && shmem > (unsigned)optin) {
        RGPU_DEBUG("%s: %u bytes of dynamic shared memory exceed the device's %d",
                   o->name ? o->name : "?", shmem, optin);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (o->kind == RK_KERNEL) {
        st = kernel_on(o, dev);
        if (st != CUDA_SUCCESS)
            return st;
    }
    int max_threads, max_dyn;
    limits_get(o, dev, &max_threads, &max_dyn);
    if (max_threads > 0 && (uint64_t)bx * by * bz > (uint64_t)max_threads) {
        RGPU_DEBUG("%s: a block of %u x %u x %u threads exceeds its %d", o->name ? o->name : "?",
                   bx, by, bz, max_threads);
        return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
    }
    if (max_dyn >= 0 && shmem > (unsigned)max_dyn) {
        RGPU_DEBUG("%s: %u bytes of dynamic shared memory exceed its %d (raise it with "
                   "cuFuncSetAttribute)", o->name ? o->name : "?", shmem, max_dyn);
        return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

/* A cooperative grid must be resident at once: checked at the launch, as the driver does
 * (the occupancy comes from the server: cooperative launches are rare). */
static CUresult check_cooperative(CUfunction f, int dev, unsigned gx, unsigned gy, unsigned gz,
                                  unsigned bx, unsigned by, unsigned bz, unsigned shmem)
{
    int supported = 0, sms = 0, per_sm = 0;
    if (cuDeviceGetAttribute(&supported, CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH, dev) !=
            CUDA_SUCCESS ||
        !supported) {
        rgpu_report_unsupported("cuLaunchCooperativeKernel");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    CUresult st = cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
    if (st == CUDA_SUCCESS)
        st = cuOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, f, (int)(bx * by * bz), shmem);
    if (st != CUDA_SUCCESS)
        return st;
    if ((uint64_t)gx * gy * gz > (uint64_t)per_sm * (uint64_t)sms)
        return CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE;
    return CUDA_SUCCESS;
}

static CUresult launch(const char *fn, CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                       unsigned bx, unsigned by, unsigned bz, unsigned shmem, CUstream hStream,
                       void **kernelParams, void **extra)
{
    rgpu_obj *o = func_or_kernel(f);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    uint64_t sid = rgpu_stream_id(hStream);
    if (sid == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    int dev = rgpu_current_ctx() ? rgpu_current_dev() : o->dev;
    CUresult cst = rgpu_check_launch(f, dev, gx, gy, gz, bx, by, bz, shmem);
    if (cst == CUDA_SUCCESS && !strcmp(fn, "cuLaunchCooperativeKernel"))
        cst = check_cooperative(f, dev, gx, gy, gz, bx, by, bz, shmem);
    if (cst != CUDA_SUCCESS)
        return cst;
    if (rgpu_capturing(hStream)) {
        CUDA_KERNEL_NODE_PARAMS p = {f, gx, gy, gz, bx, by, bz, shmem, kernelParams, extra,
                                     NULL, NULL};
        return rgpu_capture_kernel(hStream, &p);
    }
    uint8_t *params;
    size_t plen;
    CUresult st = pack_params(o, kernelParams, extra, &params, &plen);
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_coherent_wake_params(params, plen); /* page-locked memory a kernel is given */
    st = rgpu_coherent_push();
    if (st != CUDA_SUCCESS) {
        free(params);
        return st;
    }
    rgpu_coherent_device_wrote(1);
    mp_buf b;
    rgpu_body_begin(&b, fn, 10);
    mp_uint(&b, o->id);
    mp_uint(&b, gx);
    mp_uint(&b, gy);
    mp_uint(&b, gz);
    mp_uint(&b, bx);
    mp_uint(&b, by);
    mp_uint(&b, bz);
    mp_uint(&b, shmem);
    mp_uint(&b, sid);
    mp_bin(&b, params, plen);
    free(params);
    /* launches on the session of the current context's device */
    return rgpu_status_call(dev, &b, 0);
}

CUresult cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                        unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
                        unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream,
                        void **kernelParams, void **extra)
{
    return launch("cuLaunchKernel", f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY,
                  blockDimZ, sharedMemBytes, hStream, kernelParams, extra);
}

CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                             unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
                             unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream,
                             void **kernelParams, void **extra)
{
    return launch("cuLaunchKernel", f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY,
                  blockDimZ, sharedMemBytes, hStream ? hStream : CU_STREAM_PER_THREAD,
                  kernelParams, extra);
}

CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                   unsigned int gridDimZ, unsigned int blockDimX,
                                   unsigned int blockDimY, unsigned int blockDimZ,
                                   unsigned int sharedMemBytes, CUstream hStream,
                                   void **kernelParams)
{
    return launch("cuLaunchCooperativeKernel", f, gridDimX, gridDimY, gridDimZ, blockDimX,
                  blockDimY, blockDimZ, sharedMemBytes, hStream, kernelParams, NULL);
}

static CUresult launch_ex(const CUlaunchConfig *config, CUfunction f, void **kernelParams,
                          void **extra, int per_thread)
{
    if (!config)
        return CUDA_ERROR_INVALID_VALUE;
    rgpu_obj *o = func_or_kernel(f);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    int dev = rgpu_current_ctx() ? rgpu_current_dev() : o->dev;
    CUresult cst = rgpu_check_launch(f, dev, config->gridDimX, config->gridDimY,
                                     config->gridDimZ, config->blockDimX, config->blockDimY,
                                     config->blockDimZ, config->sharedMemBytes);
    for (unsigned i = 0; cst == CUDA_SUCCESS && config->attrs && i < config->numAttrs; i++)
        if (config->attrs[i].id == CU_LAUNCH_ATTRIBUTE_COOPERATIVE &&
            config->attrs[i].value.cooperative)
            cst = check_cooperative(f, dev, config->gridDimX, config->gridDimY, config->gridDimZ,
                                    config->blockDimX, config->blockDimY, config->blockDimZ,
                                    config->sharedMemBytes);
    if (cst != CUDA_SUCCESS)
        return cst;
    CUstream s = config->hStream;
    if (!s && per_thread)
        s = CU_STREAM_PER_THREAD;
    uint64_t sid = rgpu_stream_id(s);
    if (sid == UINT64_MAX)
        return CUDA_ERROR_INVALID_HANDLE;
    if (rgpu_capturing(s)) {
        CUDA_KERNEL_NODE_PARAMS p = {f, config->gridDimX, config->gridDimY, config->gridDimZ,
                                     config->blockDimX, config->blockDimY, config->blockDimZ,
                                     config->sharedMemBytes, kernelParams, extra, NULL, NULL};
        return rgpu_capture_kernel(s, &p);
    }
    uint8_t *params;
    size_t plen;
    CUresult st = pack_params(o, kernelParams, extra, &params, &plen);
    if (st != CUDA_SUCCESS)
        return st;
    rgpu_coherent_wake_params(params, plen); /* page-locked memory a kernel is given */
    st = rgpu_coherent_push();
    if (st != CUDA_SUCCESS) {
        free(params);
        return st;
    }
    rgpu_coherent_device_wrote(1);
    mp_buf b;
    rgpu_body_begin(&b, "cuLaunchKernelEx", 3);
    mp_map(&b, 9);
    mp_str(&b, "gridDimX");
    mp_uint(&b, config->gridDimX);
    mp_str(&b, "gridDimY");
    mp_uint(&b, config->gridDimY);
    mp_str(&b, "gridDimZ");
    mp_uint(&b, config->gridDimZ);
    mp_str(&b, "blockDimX");
    mp_uint(&b, config->blockDimX);
    mp_str(&b, "blockDimY");
    mp_uint(&b, config->blockDimY);
    mp_str(&b, "blockDimZ");
    mp_uint(&b, config->blockDimZ);
    mp_str(&b, "sharedMemBytes");
    mp_uint(&b, config->sharedMemBytes);
    mp_str(&b, "hStream");
    mp_uint(&b, sid);
    mp_str(&b, "attrs");
    unsigned na = config->attrs ? config->numAttrs : 0;
    mp_array(&b, na);
    for (unsigned i = 0; i < na; i++) {
        const CUlaunchAttribute *a = &config->attrs[i];
        mp_array(&b, 2);
        mp_int(&b, a->id);
        switch (a->id) {
        case CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION:
            mp_array(&b, 3);
            mp_uint(&b, a->value.clusterDim.x);
            mp_uint(&b, a->value.clusterDim.y);
            mp_uint(&b, a->value.clusterDim.z);
            break;
        case CU_LAUNCH_ATTRIBUTE_PRIORITY:
            mp_int(&b, a->value.priority);
            break;
        case CU_LAUNCH_ATTRIBUTE_COOPERATIVE:
            mp_int(&b, a->value.cooperative);
            break;
        default: {
            int32_t v;
            memcpy(&v, &a->value, sizeof v);
            mp_int(&b, v);
            break;
        }
        }
    }
    mp_uint(&b, o->id);
    mp_bin(&b, params, plen);
    free(params);
    return rgpu_status_call(dev, &b, 0);
}

CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f, void **kernelParams,
                          void **extra)
{
    return launch_ex(config, f, kernelParams, extra, 0);
}

CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **kernelParams,
                               void **extra)
{
    return launch_ex(config, f, kernelParams, extra, 1);
}

/* ---- function attributes ----------------------------------------------------------------- */

CUresult cuFuncGetAttribute(int *pi, CUfunction_attribute attrib, CUfunction hfunc)
{
    rgpu_obj *o = func_or_kernel(hfunc);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!pi)
        return CUDA_ERROR_INVALID_VALUE;
    mp_buf b;
    rgpu_body_begin(&b, "cuFuncGetAttribute", 2);
    mp_int(&b, attrib);
    mp_uint(&b, o->id);
    rgpu_reply r;
    CUresult st = rgpu_simple_call(o->dev, &b, NULL, 0, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    int64_t v = 0;
    rgpu_reply_i64(&r, &v);
    rgpu_reply_free(&r);
    *pi = (int)v;
    return CUDA_SUCCESS;
}

CUresult cuKernelGetAttribute(int *pi, CUfunction_attribute attrib, CUkernel kernel, CUdevice dev)
{
    rgpu_obj *o = rgpu_obj_check(kernel, RK_KERNEL);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!pi)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= rgpu_device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    CUresult kst = kernel_on(o, dev);
    if (kst != CUDA_SUCCESS)
        return kst;
    mp_buf b;
    rgpu_body_begin(&b, "cuKernelGetAttribute", 3);
    mp_int(&b, attrib);
    mp_uint(&b, o->id);
    mp_int(&b, rgpu_devices[dev].cuda_index);
    rgpu_reply r;
    CUresult st = rgpu_simple_call(dev, &b, NULL, 0, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    int64_t v = 0;
    rgpu_reply_i64(&r, &v);
    rgpu_reply_free(&r);
    *pi = (int)v;
    return CUDA_SUCCESS;
}

CUresult cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value)
{
    rgpu_obj *o = func_or_kernel(hfunc);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    mp_buf b;
    rgpu_body_begin(&b, "cuFuncSetAttribute", 3);
    mp_uint(&b, o->id);
    mp_int(&b, attrib);
    mp_int(&b, value);
    CUresult st = rgpu_status_call(o->dev, &b, 1);
    if (st == CUDA_SUCCESS && attrib == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)
        limits_set_dyn(o, rgpu_current_ctx() ? rgpu_current_dev() : o->dev, value);
    return st;
}

CUresult cuKernelSetAttribute(CUfunction_attribute attrib, int val, CUkernel kernel, CUdevice dev)
{
    rgpu_obj *o = rgpu_obj_check(kernel, RK_KERNEL);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    if (dev < 0 || dev >= rgpu_device_count)
        return CUDA_ERROR_INVALID_DEVICE;
    CUresult kst = kernel_on(o, dev);
    if (kst != CUDA_SUCCESS)
        return kst;
    mp_buf b;
    rgpu_body_begin(&b, "cuKernelSetAttribute", 4);
    mp_int(&b, attrib);
    mp_int(&b, val);
    mp_uint(&b, o->id);
    mp_int(&b, rgpu_devices[dev].cuda_index);
    CUresult st = rgpu_status_call(dev, &b, 1);
    if (st == CUDA_SUCCESS && attrib == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)
        limits_set_dyn(o, dev, val);
    return st;
}

CUresult cuFuncSetCacheConfig(CUfunction hfunc, CUfunc_cache config)
{
    rgpu_obj *o = func_or_kernel(hfunc);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    mp_buf b;
    rgpu_body_begin(&b, "cuFuncSetCacheConfig", 2);
    mp_uint(&b, o->id);
    mp_int(&b, config);
    return rgpu_status_call(o->dev, &b, 0);
}

CUresult cuKernelSetCacheConfig(CUkernel kernel, CUfunc_cache config, CUdevice dev)
{
    (void)dev;
    return cuFuncSetCacheConfig((CUfunction)kernel, config);
}

CUresult cuFuncGetParamCount(CUfunction func, size_t *paramCount)
{
    rgpu_obj *f = func_or_kernel(func);
    if (!f)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!paramCount)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult st = fetch_params(f);
    if (st == CUDA_SUCCESS)
        *paramCount = (size_t)f->params.count;
    return st;
}

CUresult cuFuncIsLoaded(CUfunctionLoadingState *state, CUfunction function)
{
    if (!func_or_kernel(function))
        return CUDA_ERROR_INVALID_HANDLE;
    if (!state)
        return CUDA_ERROR_INVALID_VALUE;
    *state = CU_FUNCTION_LOADING_STATE_LOADED;
    return CUDA_SUCCESS;
}

CUresult cuFuncLoad(CUfunction function)
{
    return func_or_kernel(function) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *numBlocks, CUfunction func,
                                                     int blockSize, size_t dynamicSMemSize)
{
    rgpu_obj *o = func_or_kernel(func);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!numBlocks)
        return CUDA_ERROR_INVALID_VALUE;
    mp_buf b;
    rgpu_body_begin(&b, "cuOccupancyMaxActiveBlocksPerMultiprocessor", 3);
    mp_uint(&b, o->id);
    mp_int(&b, blockSize);
    mp_uint(&b, dynamicSMemSize);
    rgpu_reply r;
    CUresult st = rgpu_simple_call(o->dev, &b, NULL, 0, &r);
    mp_free(&b);
    if (st != CUDA_SUCCESS)
        return st;
    int64_t v = 0;
    rgpu_reply_i64(&r, &v);
    rgpu_reply_free(&r);
    *numBlocks = (int)v;
    return CUDA_SUCCESS;
}

CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *numBlocks, CUfunction func,
                                                              int blockSize, size_t dynamicSMemSize,
                                                              unsigned int flags)
{
    (void)flags;
    return cuOccupancyMaxActiveBlocksPerMultiprocessor(numBlocks, func, blockSize,
                                                       dynamicSMemSize);
}

/* The dynamic shared memory a block may use when numBlocks blocks of blockSize threads share
 * a multiprocessor: the multiprocessor's shared memory split between them, less the kernel's
 * static shared memory, within what the kernel may ask for per block. */
CUresult cuOccupancyAvailableDynamicSMemPerBlock(size_t *dynamicSmemSize, CUfunction func,
                                                 int numBlocks, int blockSize)
{
    rgpu_obj *o = func_or_kernel(func);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!dynamicSmemSize || numBlocks <= 0 || blockSize <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    int dev = rgpu_current_ctx() ? rgpu_current_dev() : o->dev;
    int per_sm = 0, threads_sm = 0, static_smem = 0, max_dyn = 0, max_threads = 0;
    CUresult st = cuDeviceGetAttribute(&per_sm,
                                       CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
                                       dev);
    if (st == CUDA_SUCCESS)
        st = cuDeviceGetAttribute(&threads_sm,
                                  CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR, dev);
    if (st == CUDA_SUCCESS)
        st = cuFuncGetAttribute(&static_smem, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, func);
    if (st == CUDA_SUCCESS)
        st = cuFuncGetAttribute(&max_dyn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, func);
    if (st == CUDA_SUCCESS)
        st = cuFuncGetAttribute(&max_threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, func);
    if (st != CUDA_SUCCESS)
        return st;
    if (blockSize > max_threads || (long long)numBlocks * blockSize > threads_sm) {
        *dynamicSmemSize = 0;
        return CUDA_SUCCESS;
    }
    long long avail = per_sm / numBlocks - static_smem;
    if (avail < 0)
        avail = 0;
    if (avail > max_dyn)
        avail = max_dyn;
    *dynamicSmemSize = (size_t)avail;
    return CUDA_SUCCESS;
}

/* The block size with the most resident threads per multiprocessor (the smallest such), and
 * the grid that fills the device with it; as the driver computes it, from the occupancy of each
 * block size in warp steps. */
CUresult cuOccupancyMaxPotentialBlockSizeWithFlags(int *minGridSize, int *blockSize,
                                                   CUfunction func,
                                                   CUoccupancyB2DSize blockSizeToDynamicSMemSize,
                                                   size_t dynamicSMemSize, int blockSizeLimit,
                                                   unsigned int flags)
{
    (void)flags;
    rgpu_obj *o = func_or_kernel(func);
    if (!o)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!minGridSize || !blockSize)
        return CUDA_ERROR_INVALID_VALUE;
    int dev = rgpu_current_ctx() ? rgpu_current_dev() : o->dev;
    int sms = 0, warp = 0, max_threads = 0;
    CUresult st = cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
    if (st == CUDA_SUCCESS)
        st = cuDeviceGetAttribute(&warp, CU_DEVICE_ATTRIBUTE_WARP_SIZE, dev);
    if (st == CUDA_SUCCESS)
        st = cuFuncGetAttribute(&max_threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, func);
    if (st != CUDA_SUCCESS)
        return st;
    if (warp <= 0)
        warp = 32;
    int limit = max_threads;
    if (blockSizeLimit > 0 && blockSizeLimit < limit)
        limit = blockSizeLimit;
    int best_size = 0, best_blocks = 0;
    long long best_threads = -1;
    for (int size = limit - limit % warp; size > 0; size -= warp) {
        size_t smem = blockSizeToDynamicSMemSize ? blockSizeToDynamicSMemSize(size)
                                                 : dynamicSMemSize;
        int blocks = 0;
        st = cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, func, size, smem);
        if (st != CUDA_SUCCESS)
            return st;
        if ((long long)blocks * size > best_threads) {
            best_threads = (long long)blocks * size;
            best_size = size;
            best_blocks = blocks;
        }
        if (best_threads > 0 && (long long)size * 64 < best_threads)
            break; /* smaller blocks cannot do better: at most 64 resident per SM here */
    }
    *blockSize = best_size;
    *minGridSize = best_blocks * sms;
    return CUDA_SUCCESS;
}

CUresult cuOccupancyMaxPotentialBlockSize(int *minGridSize, int *blockSize, CUfunction func,
                                          CUoccupancyB2DSize blockSizeToDynamicSMemSize,
                                          size_t dynamicSMemSize, int blockSizeLimit)
{
    return cuOccupancyMaxPotentialBlockSizeWithFlags(minGridSize, blockSize, func,
                                                     blockSizeToDynamicSMemSize, dynamicSMemSize,
                                                     blockSizeLimit, 0);
}
