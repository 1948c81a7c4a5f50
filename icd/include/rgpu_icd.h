/* Internal interface of the rgpu Vulkan ICD (librgpu_vk_icd.so).
 *
 * The Khronos loader loads this library as a Vulkan driver; every Vulkan call becomes a CALL or
 * BATCH frame to the rgpu client daemon over its Unix socket (docs/PROTOCOL.md), encoded as
 * docs/VULKAN_ENCODING.md says by one table-driven codec (codec.c) over the descriptors that
 * `python -m rgpu.codegen.vk_icd` generates into icd/generated/. Physical-device facts are
 * fetched once per server and answered locally; command buffers are recorded locally and
 * shipped whole; mapped memory is a local shadow synchronised at submissions and waits. */
#ifndef RGPU_ICD_H
#define RGPU_ICD_H

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan_core.h>

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "rgpu_msgpack.h" /* common/: shared with the CUDA shim */

#define RGPU_EXPORT __attribute__((visibility("default")))
#define RGPU_LOADER_MAGIC 0x01CDC0DE

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

typedef struct {
    VkResult status;
    mp_doc doc;
    uint8_t *doc_src;
    int has_body;
    uint8_t *bulk;
    size_t bulk_len;
    char code[48];
    char message[256];
} rgpu_reply;

void rgpu_reply_free(rgpu_reply *r);
/* Connect lazily; VK_ERROR_INITIALIZATION_FAILED (and one stderr line) without a daemon. */
VkResult rgpu_connect(void);
VkResult rgpu_control(const mp_buf *body, rgpu_reply *out);
VkResult rgpu_call(uint32_t session, const mp_buf *body, const void *bulk, size_t bulk_len,
                   rgpu_reply *out);
VkResult rgpu_batch(uint32_t session, const mp_buf *body, const void *bulk, size_t bulk_len);
VkResult rgpu_take_deferred(uint32_t session);
void rgpu_lock(void);
void rgpu_unlock(void);
int rgpu_connection_dead(void);

/* ---- generated descriptors (icd/generated/) ---------------------------------------------- */
enum {
    RGPU_SH_STYPE, RGPU_SH_PNEXT, RGPU_SH_VAL, RGPU_SH_FIXED, RGPU_SH_CHARS, RGPU_SH_STR,
    RGPU_SH_STRS, RGPU_SH_PTR, RGPU_SH_ARRAY, RGPU_SH_BLOB, RGPU_SH_DROP
};
enum { RGPU_LEN_NONE, RGPU_LEN_FIELD, RGPU_LEN_SAMPLES, RGPU_LEN_CONST, RGPU_LEN_DEREF,
       RGPU_LEN_PTR };
enum { RGPU_RES_VOID, RGPU_RES_VKRESULT, RGPU_RES_U64 };
enum { RGPU_LEVEL_GLOBAL, RGPU_LEVEL_INSTANCE, RGPU_LEVEL_DEVICE };
enum { RGPU_DIR_IN, RGPU_DIR_OUT, RGPU_DIR_INOUT };

/* A struct member or a command parameter. Parameters live in 8-byte slots (offset 8*i). */
typedef struct {
    const char *name;
    uint32_t offset;
    uint32_t csize;    /* scalar size; element size of arrays, fixed arrays and pointers */
    uint8_t shape;     /* RGPU_SH_* */
    char kind;         /* i f h H s u c v p */
    uint8_t is_signed;
    uint8_t optional;
    uint8_t dir;       /* RGPU_DIR_* (parameters) */
    uint8_t len_kind;  /* RGPU_LEN_* */
    int16_t len_field; /* sibling index the length comes from */
    uint32_t len_arg;  /* constant, or offset of the count inside the pointed struct */
    uint32_t len_size; /* size of that count */
    int32_t sub;       /* index in rgpu_structs of kind s/u, else -1 */
    uint32_t count;    /* fixed arrays: element count; chars: capacity */
} rgpu_field;

typedef struct {
    const char *name;
    int32_t stype;     /* -1 without sType */
    uint32_t size;
    uint16_t nfields;
    uint8_t is_union;
    const rgpu_field *fields;
} rgpu_struct;

typedef struct {
    int32_t stype;
    uint32_t index;
} rgpu_stype_entry;

typedef struct {
    const char *name;
    uint16_t nparams;
    uint8_t result;     /* RGPU_RES_* */
    int8_t pair_count;  /* enumeration: the count parameter, -1 if none */
    int8_t pair_array;
    uint8_t nreply;
    uint8_t reply[4];   /* parameters sent back, in order */
    uint8_t is_cmd;     /* vkCmd*: recorded into the command buffer */
    const rgpu_field *params;
} rgpu_command;

typedef struct {
    const char *name;
    const rgpu_command *cmd;
    PFN_vkVoidFunction fn;
    int level;
    const char *origins;       /* the core versions and extensions providing it, space-separated */
} rgpu_command_entry;

extern const uint32_t rgpu_struct_count;
extern const rgpu_struct rgpu_structs[];
extern const uint32_t rgpu_stype_count;
extern const rgpu_stype_entry rgpu_stypes[];
extern const uint32_t rgpu_command_count;
extern const rgpu_command_entry rgpu_commands[];
extern const uint32_t rgpu_instance_extension_count;
extern const VkExtensionProperties rgpu_instance_extensions[];
extern const uint32_t rgpu_device_extension_count;
extern const VkExtensionProperties rgpu_device_extensions[];

const rgpu_struct *rgpu_struct_by_stype(int32_t stype);
const rgpu_struct *rgpu_struct_by_name(const char *name);
const rgpu_command_entry *rgpu_command_by_name(const char *name);

/* ---- objects (objects.c) ----------------------------------------------------------------- */
enum rgpu_otype { RO_INSTANCE = 1, RO_PHYSICAL_DEVICE, RO_DEVICE, RO_QUEUE, RO_COMMAND_BUFFER };

struct rgpu_server;
struct rgpu_device;

/* Every dispatchable object: word 0 belongs to the loader (magic, then its dispatch table). */
typedef struct rgpu_dobj {
    uintptr_t loader_data;
    uint64_t id;               /* the wire id (physical devices: the server's) */
    enum rgpu_otype type;
    struct rgpu_server *srv;   /* the server session the object lives in */
    struct rgpu_device *dev;   /* queues, command buffers: their device */
    uint32_t api_version;      /* physical devices, devices: the application's apiVersion */
} rgpu_dobj;

typedef struct rgpu_server {
    uint32_t session;
    uint64_t server_id;
    uint64_t instance_id;      /* the ICD's one instance on that server */
    mp_doc facts;              /* vkRgpuGetPhysicalDeviceFacts reply, root 0 = facts map */
    uint8_t *facts_src;
    int facts_root;
} rgpu_server;

typedef struct rgpu_gpu {
    int pool_index;
    int vulkan_index;
    rgpu_server *srv;
    uint64_t pd_id;            /* server id of the physical device */
    int facts_node;            /* its node in srv->facts */
    int fmt_base;              /* node of its "formats" list */
    int nformats;
    int *format_nodes;         /* VkFormat -> node (indexed via a small table) */
    int32_t *format_keys;
} rgpu_gpu;

typedef struct rgpu_instance {
    rgpu_dobj obj;
    uint32_t api_version;
    int npd;
    rgpu_dobj **pds;           /* one per pool GPU, in pool order */
} rgpu_instance;

typedef struct rgpu_memory rgpu_memory;

typedef struct rgpu_device {
    rgpu_dobj obj;
    rgpu_gpu *gpu;
    pthread_mutex_t mu;        /* guards memories and queues */
    rgpu_memory *memories;     /* host-visible allocations with a shadow */
    struct rgpu_dobj **queues;
    int nqueues;
    struct rgpu_cmdbuf *cmdbufs; /* every live command buffer (freed with their pool) */
    char **extensions;           /* the device extensions the application enabled */
    uint32_t nextensions;
    uint64_t seen_semaphore[8];  /* timeline values last read by vkGetSemaphoreCounterValue: */
    uint64_t seen_value[8];      /* a poll that sees nothing new needs no memory read-back */
    unsigned seen_next;
} rgpu_device;

typedef struct rgpu_cmdbuf {
    rgpu_dobj obj;
    uint64_t pool;
    mp_buf stream;             /* encoded [name, [args]] entries */
    uint32_t ncommands;
    mp_buf begin;              /* encoded VkCommandBufferBeginInfo (or nil) */
    int recording;
    struct rgpu_cmdbuf *next;
} rgpu_cmdbuf;

struct rgpu_memory {
    uint64_t id;
    VkDeviceSize size;
    uint8_t *shadow;           /* the application's mapping (NULL until first mapped) */
    uint8_t *base;             /* the bytes as last synchronised with the server */
    uint64_t *chunk_hash;      /* hash of each chunk of base: shadow differs where the host wrote */
    uint32_t *crc;             /* CRC-32 of each chunk of base, valid where crc_ok[k] */
    uint8_t *crc_ok;
    size_t nchunks;
    int mapped;
    rgpu_memory *next;
};

extern rgpu_gpu *rgpu_gpus;
extern int rgpu_ngpus;

uint64_t rgpu_new_id(void);
rgpu_gpu *rgpu_gpu_of(VkPhysicalDevice pd);
int rgpu_facts_gpu_field(rgpu_gpu *g, const char *key); /* node of facts.physical_devices[i][key] */
VkResult rgpu_pool_init(void);
void *rgpu_handle_from_id(const char *type, uint64_t id, rgpu_server *srv);

/* ---- codec (codec.c) --------------------------------------------------------------------- */
typedef struct {
    rgpu_server *srv;          /* where dispatchable/physical ids are looked up */
    int bad;                   /* set on input the encoder cannot carry */
} rgpu_enc;

/* Encode one field of the object at `base` (struct member or parameter slot). */
void rgpu_encode_field(rgpu_enc *e, mp_buf *b, const rgpu_field *fields, uint32_t nfields,
                       uint32_t i, const uint8_t *base);
/* Encode a struct in wire form (members without sType). */
void rgpu_encode_struct(rgpu_enc *e, mp_buf *b, const rgpu_struct *s, const uint8_t *p);
/* Encode the sTypes of an output chain (nil when empty). */
void rgpu_encode_out_chain(mp_buf *b, const void *pnext);
/* Decode a wire struct at `node` into the C struct at `p`, filling the application's own pNext
 * chain members of the same sType; sType/pNext of `p` are kept. */
int rgpu_decode_struct(const mp_doc *d, int node, const rgpu_struct *s, uint8_t *p,
                       rgpu_server *srv);
/* Decode the value of one field at `node` into base+offset. */
int rgpu_decode_field(const mp_doc *d, int node, const rgpu_field *f, uint8_t *base,
                      rgpu_server *srv);
uint64_t rgpu_len_of(const rgpu_field *fields, uint32_t i, const uint8_t *base);

/* ---- calls (forward.c) ------------------------------------------------------------------- */
/* The generic path of every generated entry point; returns VkResult / the u64 result. */
uint64_t rgpu_forward(const rgpu_command *cmd, const uint64_t *args);
VkResult rgpu_forward_async(const rgpu_command *cmd, const uint64_t *args);
int rgpu_encode_call(const rgpu_command *cmd, const uint64_t *args, mp_buf *b);
VkResult rgpu_call_pair(uint32_t session, const mp_buf *first, rgpu_reply *out1,
                        const mp_buf *second, rgpu_reply *out2);

/* The read-back of every mapped allocation of a device, encoded ahead so that it can follow a
 * wait without a round trip of its own (memory.c). */
typedef struct {
    struct rd_piece *pieces;
    size_t npieces;
    mp_buf body;
} rgpu_readback;
int rgpu_readback_begin(struct rgpu_device *dev, rgpu_readback *rb);
VkResult rgpu_readback_end(struct rgpu_device *dev, rgpu_readback *rb, const rgpu_reply *r);
VkResult rgpu_vk_call(rgpu_server *srv, mp_buf *body, const void *bulk, size_t bulk_len,
                      rgpu_reply *out);
VkResult rgpu_error_of(rgpu_reply *r);
/* The session a dispatchable handle belongs to. */
rgpu_server *rgpu_server_of(const void *dispatchable);

/* ---- hand-written entry points (entry.c, memory.c) --------------------------------------- */
PFN_vkVoidFunction rgpu_special_proc(const char *name);
VkResult rgpu_sync_to_server(rgpu_device *dev);
VkResult rgpu_sync_from_server(rgpu_device *dev);

#endif
