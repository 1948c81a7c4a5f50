/* The msgpack subset rgpu's wire protocol uses (nil, bool, ints, float64, str, bin, array,
 * map), shared by the CUDA shim and the Vulkan ICD: each library compiles common/msgpack.c
 * into itself, and neither exports these names. */
#ifndef RGPU_MSGPACK_H
#define RGPU_MSGPACK_H

#include <stddef.h>
#include <stdint.h>

#pragma GCC visibility push(hidden)

typedef struct {
    uint8_t *data;
    size_t len, cap;
    int oom;
} mp_buf;

void mp_init(mp_buf *b);
void mp_free(mp_buf *b);
void mp_nil(mp_buf *b);
void mp_bool(mp_buf *b, int v);
void mp_int(mp_buf *b, int64_t v);
void mp_uint(mp_buf *b, uint64_t v);
void mp_double(mp_buf *b, double v);
void mp_str(mp_buf *b, const char *s);
void mp_strn(mp_buf *b, const char *s, size_t n);
void mp_bin(mp_buf *b, const void *p, size_t n);
void mp_array(mp_buf *b, uint32_t n);
void mp_map(mp_buf *b, uint32_t n);
void mp_raw(mp_buf *b, const void *p, size_t n);

enum mp_type { MP_NIL, MP_BOOL, MP_INT, MP_UINT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP };

typedef struct {
    enum mp_type type;
    uint32_t count;   /* array: items; map: pairs; str/bin: bytes */
    uint32_t next;    /* index of the node after this one and all its children */
    union {
        int64_t i;
        uint64_t u;
        double f;
        const uint8_t *p; /* str/bin bytes (point into the decoded buffer) */
    } v;
} mp_node;

typedef struct {
    mp_node *nodes;
    uint32_t n, cap;
} mp_doc;

int mp_decode(mp_doc *doc, const uint8_t *data, size_t len);
void mp_doc_free(mp_doc *doc);
int mp_map_get(const mp_doc *d, int map, const char *key);
int mp_array_at(const mp_doc *d, int arr, uint32_t i);
int mp_get_i64(const mp_doc *d, int node, int64_t *out);
int mp_get_double(const mp_doc *d, int node, double *out);
size_t mp_get_str(const mp_doc *d, int node, char *buf, size_t cap);
int mp_is_str(const mp_doc *d, int node, const char *s);
static inline int mp_is_nil(const mp_doc *d, int node)
{
    return node < 0 || (uint32_t)node >= d->n || d->nodes[node].type == MP_NIL;
}
/* First child of an array/map node (or -1) and the sibling after `node`. */
static inline int mp_first(const mp_doc *d, int node)
{
    return node >= 0 && (uint32_t)node + 1 < d->n && d->nodes[node].count ? node + 1 : -1;
}
static inline int mp_next(const mp_doc *d, int node) { return (int)d->nodes[node].next; }

#pragma GCC visibility pop

/* Test hook: decode then re-encode one value. Exported by the CUDA shim (built with default
 * visibility) for tests/shim; hidden in the ICD (built with -fvisibility=hidden). Returns the
 * re-encoded length (copied to out when it fits), or -1 if `data` is not one msgpack value. */
long rgpu_msgpack_roundtrip(const uint8_t *data, size_t len, uint8_t *out, size_t cap);

#endif
