/* Internal interface of the hand-written core of the rgpu CUDA shim (librgpu_cuda.so).
 *
 * The shim replaces libcuda.so.1: driver API calls become CALL/BATCH frames to the rgpu client
 * daemon over a Unix socket (docs/PROTOCOL.md); device facts, handles, the context stack and
 * cudart's private export tables live here, in the application's process. */
#ifndef RGPU_SHIM_H
#define RGPU_SHIM_H

#include "cuda_api.h" /* generated: cuda.h's declarations, no toolkit needed */
#include "rgpu_msgpack.h" /* common/: shared with the Vulkan ICD */

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define RGPU_EXPORT __attribute__((visibility("default")))

/* The library is preloaded into arbitrary programs: only the driver API (declared in
 * cuda_api.h, above) and the few RGPU_EXPORT entries are exported, so internal names can never
 * interpose on an application's own symbols. */
#pragma GCC visibility push(hidden)

/* ---- logging (RGPU_LOG=debug|trace) ------------------------------------------------------ */
extern int rgpu_log_level; /* 0 silent, 1 debug, 2 trace */
void rgpu_log_init(void);
void rgpu_logf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define RGPU_DEBUG(...) do { if (rgpu_log_level >= 1) rgpu_logf(1, __VA_ARGS__); } while (0)
#define RGPU_TRACE(...) do { if (rgpu_log_level >= 2) rgpu_logf(2, __VA_ARGS__); } while (0)

/* ---- transport (transport.c) ------------------------------------------------------------- */
enum {
    RG_HELLO = 1, RG_CHALLENGE, RG_AUTH, RG_AUTH_OK, RG_CALL, RG_REPLY, RG_BATCH, RG_FENCE,
    RG_ERROR, RG_PING, RG_PONG, RG_CONTROL
};

/* A decoded reply: REPLY body (doc, root 0) and bulk, or the error mapped to a CUresult. */
typedef struct {
    CUresult status;
    mp_doc doc;
    uint8_t *doc_src; /* the body bytes the doc's str/bin nodes point into */
    int has_body;
    uint8_t *bulk;
    size_t bulk_len;
    char code[48];
    char message[256];
} rgpu_reply;

void rgpu_reply_free(rgpu_reply *r);

/* Connect lazily (HELLO); CUDA_ERROR_NO_DEVICE (and the one stderr line) without a daemon. */
CUresult rgpu_connect(void);
/* CONTROL request on session 0; body must be a complete msgpack map. */
CUresult rgpu_control(const mp_buf *body, rgpu_reply *out);
/* A CALL on `session`; body = [fn, [args], (bulk_index)]; waits for the reply.
 * A pending deferred error of the session replaces the status only of a successful call that
 * reports asynchronous errors (rgpu_reports_deferred: synchronisations, queries and blocking
 * copies, which create nothing); any other call returns its own result and leaves the error
 * pending, so a call whose work was done never looks failed (docs/PROTOCOL.md). */
CUresult rgpu_call(uint32_t session, const mp_buf *body, const void *bulk, size_t bulk_len,
                   rgpu_reply *out);
/* Whether the call named `fn` is one that reports the session's deferred errors. */
int rgpu_reports_deferred(const char *fn);
/* While held (this thread), no call reports deferred errors: copies the shim makes on its own
 * account before a launch (managed memory coherence) must not return an earlier call's error. */
void rgpu_deferred_hold(int hold);
/* A CALL sent now and answered later (pipelined copies): rgpu_call_start sends it (NULL only
 * when out of memory); rgpu_call_finish waits for the reply, like rgpu_call, and frees it.
 * Every started call must be finished. */
typedef struct rgpu_pending rgpu_pending;
rgpu_pending *rgpu_call_start(uint32_t session, const mp_buf *body);
CUresult rgpu_call_finish(rgpu_pending *p, uint32_t session, rgpu_reply *out);
/* A BATCH on `session` (queued; errors come back deferred). */
CUresult rgpu_batch(uint32_t session, const mp_buf *body, const void *bulk, size_t bulk_len);
/* Take (and clear) the first deferred error seen for `session`, CUDA_SUCCESS if none. */
CUresult rgpu_take_deferred(uint32_t session);
/* The connection mutex: hold it around sequences that must not interleave (set-current + call). */
void rgpu_lock(void);
void rgpu_unlock(void);
int rgpu_connection_dead(void);

/* ---- devices and sessions (device.c) ----------------------------------------------------- */
typedef struct rgpu_session {
    uint32_t id;
    uint64_t current_ctx; /* last context id sent with cuCtxSetCurrent (0 = none sent) */
} rgpu_session;

typedef struct {
    int pool_index;
    int cuda_index;          /* the server's device ordinal */
    char name[256];
    uint8_t uuid[16];
    size_t total_memory;
    int cc_major, cc_minor;
    int pci_domain, pci_bus, pci_device;
    int *attr;               /* indexed by CUdevice_attribute */
    int attr_count;
    rgpu_session *session;   /* opened on first use */
    struct rgpu_ctx *primary;
    pthread_mutex_t primary_mu;
} rgpu_device;

extern int rgpu_device_count;
extern rgpu_device *rgpu_devices;
extern int rgpu_driver_version;
extern _Atomic int rgpu_initialized;

CUresult rgpu_ensure_init(void);
CUresult rgpu_device_session(int dev, rgpu_session **out);
uint64_t rgpu_new_id(void);

/* ---- handles (handles.c) ----------------------------------------------------------------- */
enum rgpu_kind {
    RK_CTX = 0x52430001, RK_STREAM, RK_EVENT, RK_MODULE, RK_LIBRARY, RK_FUNCTION, RK_KERNEL
};

typedef struct {
    int count;      /* -1 unknown */
    uint32_t *offset;
    uint32_t *size;
    size_t total;
} rgpu_params;

typedef struct rgpu_ctx {
    uint32_t kind;
    uint64_t id;
    int dev;
    int primary;
    int refcount;   /* primary: retain count */
    unsigned flags;
    int destroyed;
} rgpu_ctx;

typedef struct rgpu_obj {
    uint32_t kind;
    uint64_t id;
    int dev;
    rgpu_ctx *ctx;
    struct rgpu_obj *parent;   /* function -> module, kernel -> library */
    rgpu_params params;        /* functions and kernels */
    pthread_mutex_t mu;
    char *name;
    unsigned flags;
    struct rgpu_obj *cached_func; /* kernel: last cuKernelGetFunction result */
    uint64_t cached_ctx;
    /* libraries are context-independent: the image is kept to load it into each session
     * (server) a device of the pool needs it on; kernels are bound per session the same way */
    uint8_t *image;
    size_t image_len;
    mp_buf load_opts; /* the encoded jit and library option arguments */
    uint32_t sessions[16];
    int nsessions;
    /* functions and kernels: the per-function launch limits, fetched on the first launch
     * (module.c); valid while lim_gen is the current limits generation, for device lim_dev */
    unsigned lim_gen;
    int lim_dev;
    int lim_max_threads;  /* CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 0 when unknown */
    int lim_max_dyn_smem; /* CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, -1 when unknown */
} rgpu_obj;

rgpu_obj *rgpu_obj_new(uint32_t kind, int dev, rgpu_ctx *ctx);
void rgpu_obj_free(rgpu_obj *o);
rgpu_obj *rgpu_obj_check(const void *h, uint32_t kind);

/* ---- contexts (context.c) ---------------------------------------------------------------- */
rgpu_ctx *rgpu_current_ctx(void);
/* Device of the thread's current context (0 when none, as cudart's primary on device 0). */
int rgpu_current_dev(void);
/* Lock the connection, open the device's session and send cuCtxSetCurrent when the session's
 * current context differs from this thread's. On success the lock is held: call rgpu_unlock. */
CUresult rgpu_begin(int dev, rgpu_session **sess);
CUresult rgpu_primary_retain(int dev, rgpu_ctx **out);
void rgpu_ctx_note_destroyed(rgpu_ctx *c);

/* ---- launches (module.c) ------------------------------------------------------------------ */
/* Whether `f` (a CUfunction or CUkernel) may be launched with this configuration on `dev`:
 * the device's and the function's limits, checked here because launches are not answered. */
CUresult rgpu_check_launch(CUfunction f, int dev, unsigned gx, unsigned gy, unsigned gz,
                           unsigned bx, unsigned by, unsigned bz, unsigned shmem);

/* ---- memory (memory.c) ------------------------------------------------------------------- */
/* Look up a device allocation containing [p, p+n); returns 1 and its device if found. */
int rgpu_range_device(uint64_t p, int *dev);
int rgpu_range_host(const void *p, size_t *base_off, size_t *size);
void rgpu_range_add_global(uint64_t base, size_t size, int dev);
/* A copy with a CUDA array on either side (textures.c). */
CUresult rgpu_copy3d_array(const CUDA_MEMCPY3D *c, CUstream stream, int async);

/* ---- shared-memory copies (shm.c) -------------------------------------------------------- */
#define RGPU_SHM_MIN ((size_t)256 << 10) /* smaller copies stay socket bulk */
/* For a copy of `n` bytes: 1 with the region (*base, *size) reserved to this thread until
 * rgpu_shm_release, 0 to use socket bulk (small copy, RGPU_SHM=0, attach failed). Take it
 * before, never while holding, the connection mutex. */
int rgpu_shm_acquire(size_t n, uint8_t **base, size_t *size);
void rgpu_shm_release(void);
/* Starts [fn, [ with `nargs` arguments, then bulk_index (or nil) and the shm map follow. */
void rgpu_shm_body(mp_buf *b, const char *fn, uint32_t nargs);

/* ---- calls: helpers for building bodies (calls.c) ----------------------------------------- */
/* Starts [fn, [ with `nargs` arguments following. */
void rgpu_body_begin(mp_buf *b, const char *fn, uint32_t nargs);
/* Same, with a third element bulk_index (call mp after the args). */
void rgpu_body_begin_bulk(mp_buf *b, const char *fn, uint32_t nargs);

/* A CALL of the thread's current device; locks, sets context, calls, unlocks. */
CUresult rgpu_simple_call(int dev, const mp_buf *body, const void *bulk, size_t bulk_len,
                          rgpu_reply *out);
CUresult rgpu_simple_batch(int dev, const mp_buf *body, const void *bulk, size_t bulk_len);
/* A status-only call on `dev` (CALL when `sync`, else BATCH); frees `b`. */
CUresult rgpu_status_call(int dev, mp_buf *b, int sync);
/* Batched `fn(o->id)`: tells the server to drop the handle (nothing once the connection is
 * gone, when the server has dropped it already). */
CUresult rgpu_release_remote(const rgpu_obj *o, const char *fn);
/* Result helpers for rgpu_reply bodies. */
int rgpu_reply_i64(rgpu_reply *r, int64_t *v);
int rgpu_reply_pair(rgpu_reply *r, int64_t *a, int64_t *b);

/* ---- stream id from a CUstream handle ---------------------------------------------------- */
uint64_t rgpu_stream_id(CUstream s);

/* ---- export tables (export_tables.c) ----------------------------------------------------- */
void rgpu_cls_context_destroyed(CUcontext ctx);
RGPU_EXPORT void rgpu_integrity_mix(uint8_t state[66], const void *data, size_t n, uint8_t mask);
RGPU_EXPORT void rgpu_integrity_final(uint8_t state[66], uint64_t out[2]);
extern void *rgpu_context_identity_table[]; /* 21318c60 (export_private.c) */

/* ---- unsupported -------------------------------------------------------------------------- */
RGPU_EXPORT void rgpu_report_unsupported(const char *name);

/* ---- self-checks the tests call through ctypes ----------------------------------------- */
RGPU_EXPORT long rgpu_msgpack_roundtrip(const uint8_t *data, size_t len, uint8_t *out,
                                        size_t cap);

#pragma GCC visibility pop

#endif
