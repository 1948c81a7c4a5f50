/* The msgpack subset the wire protocol uses (nil, bool, ints, float64, str, bin, array, map),
 * compiled into both the CUDA shim and the Vulkan ICD:
 * an appending encoder and a decoder into a flat pre-order node array. Every length read from
 * the daemon is checked against the bytes that are there before it is used. */
#include <stdlib.h>
#include <string.h>

#include "rgpu_msgpack.h"

void mp_init(mp_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

void mp_free(mp_buf *b)
{
    free(b->data);
    mp_init(b);
}

static int mp_reserve(mp_buf *b, size_t n)
{
    if (b->oom)
        return -1;
    if (b->len + n <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap * 2 : 128;
    while (cap < b->len + n)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

static void put(mp_buf *b, const void *p, size_t n)
{
    if (mp_reserve(b, n) == 0) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
    }
}

static void put_be(mp_buf *b, uint8_t tag, uint64_t v, int bytes)
{
    uint8_t tmp[9];
    tmp[0] = tag;
    for (int i = 0; i < bytes; i++)
        tmp[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    put(b, tmp, (size_t)bytes + 1);
}

void mp_nil(mp_buf *b)
{
    uint8_t c = 0xc0;
    put(b, &c, 1);
}

void mp_bool(mp_buf *b, int v)
{
    uint8_t c = v ? 0xc3 : 0xc2;
    put(b, &c, 1);
}

void mp_uint(mp_buf *b, uint64_t v)
{
    if (v < 128) {
        uint8_t c = (uint8_t)v;
        put(b, &c, 1);
    } else if (v <= 0xff) {
        put_be(b, 0xcc, v, 1);
    } else if (v <= 0xffff) {
        put_be(b, 0xcd, v, 2);
    } else if (v <= 0xffffffffu) {
        put_be(b, 0xce, v, 4);
    } else {
        put_be(b, 0xcf, v, 8);
    }
}

void mp_int(mp_buf *b, int64_t v)
{
    if (v >= 0) {
        mp_uint(b, (uint64_t)v);
    } else if (v >= -32) {
        uint8_t c = (uint8_t)(0xe0 | (uint8_t)(v + 32));
        put(b, &c, 1);
    } else if (v >= -128) {
        put_be(b, 0xd0, (uint64_t)v & 0xff, 1);
    } else if (v >= -32768) {
        put_be(b, 0xd1, (uint64_t)v & 0xffff, 2);
    } else if (v >= INT32_MIN) {
        put_be(b, 0xd2, (uint64_t)v & 0xffffffffu, 4);
    } else {
        put_be(b, 0xd3, (uint64_t)v, 8);
    }
}

void mp_double(mp_buf *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    put_be(b, 0xcb, u, 8);
}

void mp_strn(mp_buf *b, const char *s, size_t n)
{
    if (n < 32) {
        uint8_t c = (uint8_t)(0xa0 | n);
        put(b, &c, 1);
    } else if (n <= 0xff) {
        put_be(b, 0xd9, n, 1);
    } else if (n <= 0xffff) {
        put_be(b, 0xda, n, 2);
    } else {
        put_be(b, 0xdb, n, 4);
    }
    put(b, s, n);
}

void mp_str(mp_buf *b, const char *s)
{
    mp_strn(b, s, strlen(s));
}

void mp_bin(mp_buf *b, const void *p, size_t n)
{
    if (n <= 0xff)
        put_be(b, 0xc4, n, 1);
    else if (n <= 0xffff)
        put_be(b, 0xc5, n, 2);
    else
        put_be(b, 0xc6, n, 4);
    put(b, p, n);
}

void mp_array(mp_buf *b, uint32_t n)
{
    if (n < 16) {
        uint8_t c = (uint8_t)(0x90 | n);
        put(b, &c, 1);
    } else if (n <= 0xffff) {
        put_be(b, 0xdc, n, 2);
    } else {
        put_be(b, 0xdd, n, 4);
    }
}

void mp_map(mp_buf *b, uint32_t n)
{
    if (n < 16) {
        uint8_t c = (uint8_t)(0x80 | n);
        put(b, &c, 1);
    } else if (n <= 0xffff) {
        put_be(b, 0xde, n, 2);
    } else {
        put_be(b, 0xdf, n, 4);
    }
}

/* ---- decoder --------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p, *end;
    mp_doc *doc;
    int depth;
} mp_reader;

static int rd_be(mp_reader *r, int bytes, uint64_t *out)
{
    if (r->end - r->p < bytes)
        return -1;
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | r->p[i];
    r->p += bytes;
    *out = v;
    return 0;
}

static int new_node(mp_doc *d)
{
    if (d->n == d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 32;
        if (cap > (1u << 24))
            return -1;
        mp_node *n = realloc(d->nodes, cap * sizeof(mp_node));
        if (!n)
            return -1;
        d->nodes = n;
        d->cap = cap;
    }
    memset(&d->nodes[d->n], 0, sizeof(mp_node));
    return (int)d->n++;
}

static int rd_value(mp_reader *r);

static int rd_bytes(mp_reader *r, int idx, enum mp_type t, uint64_t n)
{
    if ((uint64_t)(r->end - r->p) < n)
        return -1;
    mp_node *node = &r->doc->nodes[idx];
    node->type = t;
    node->count = (uint32_t)n;
    node->v.p = r->p;
    r->p += n;
    return 0;
}

static int rd_container(mp_reader *r, int idx, enum mp_type t, uint64_t n)
{
    uint64_t items = t == MP_MAP ? n * 2 : n;
    /* every item needs at least one byte: refuse counts the input cannot hold */
    if (items > (uint64_t)(r->end - r->p))
        return -1;
    if (++r->depth > 64)
        return -1;
    r->doc->nodes[idx].type = t;
    r->doc->nodes[idx].count = (uint32_t)n;
    for (uint64_t i = 0; i < items; i++)
        if (rd_value(r) != 0)
            return -1;
    r->depth--;
    return 0;
}

static int rd_value(mp_reader *r)
{
    if (r->p >= r->end)
        return -1;
    int idx = new_node(r->doc);
    if (idx < 0)
        return -1;
    uint8_t c = *r->p++;
    uint64_t n = 0;
    int rc = 0;
    mp_node *node = &r->doc->nodes[idx];
    if (c <= 0x7f) {
        node->type = MP_UINT;
        node->v.u = c;
    } else if (c >= 0xe0) {
        node->type = MP_INT;
        node->v.i = (int8_t)c;
    } else if ((c & 0xf0) == 0x80) {
        rc = rd_container(r, idx, MP_MAP, c & 0x0f);
    } else if ((c & 0xf0) == 0x90) {
        rc = rd_container(r, idx, MP_ARRAY, c & 0x0f);
    } else if ((c & 0xe0) == 0xa0) {
        rc = rd_bytes(r, idx, MP_STR, c & 0x1f);
    } else {
        switch (c) {
        case 0xc0: node->type = MP_NIL; break;
        case 0xc2: node->type = MP_BOOL; node->v.u = 0; break;
        case 0xc3: node->type = MP_BOOL; node->v.u = 1; break;
        case 0xc4: rc = rd_be(r, 1, &n) || rd_bytes(r, idx, MP_BIN, n); break;
        case 0xc5: rc = rd_be(r, 2, &n) || rd_bytes(r, idx, MP_BIN, n); break;
        case 0xc6: rc = rd_be(r, 4, &n) || rd_bytes(r, idx, MP_BIN, n); break;
        case 0xca: {
            rc = rd_be(r, 4, &n);
            uint32_t u = (uint32_t)n;
            float f;
            memcpy(&f, &u, 4);
            node->type = MP_FLOAT;
            node->v.f = f;
            break;
        }
        case 0xcb:
            rc = rd_be(r, 8, &n);
            node->type = MP_FLOAT;
            memcpy(&node->v.f, &n, 8);
            break;
        case 0xcc: rc = rd_be(r, 1, &n); node->type = MP_UINT; node->v.u = n; break;
        case 0xcd: rc = rd_be(r, 2, &n); node->type = MP_UINT; node->v.u = n; break;
        case 0xce: rc = rd_be(r, 4, &n); node->type = MP_UINT; node->v.u = n; break;
        case 0xcf: rc = rd_be(r, 8, &n); node->type = MP_UINT; node->v.u = n; break;
        case 0xd0: rc = rd_be(r, 1, &n); node->type = MP_INT; node->v.i = (int8_t)n; break;
        case 0xd1: rc = rd_be(r, 2, &n); node->type = MP_INT; node->v.i = (int16_t)n; break;
        case 0xd2: rc = rd_be(r, 4, &n); node->type = MP_INT; node->v.i = (int32_t)n; break;
        case 0xd3: rc = rd_be(r, 8, &n); node->type = MP_INT; node->v.i = (int64_t)n; break;
        case 0xd9: rc = rd_be(r, 1, &n) || rd_bytes(r, idx, MP_STR, n); break;
        case 0xda: rc = rd_be(r, 2, &n) || rd_bytes(r, idx, MP_STR, n); break;
        case 0xdb: rc = rd_be(r, 4, &n) || rd_bytes(r, idx, MP_STR, n); break;
        case 0xdc: rc = rd_be(r, 2, &n) || rd_container(r, idx, MP_ARRAY, n); break;
        case 0xdd: rc = rd_be(r, 4, &n) || rd_container(r, idx, MP_ARRAY, n); break;
        case 0xde: rc = rd_be(r, 2, &n) || rd_container(r, idx, MP_MAP, n); break;
        case 0xdf: rc = rd_be(r, 4, &n) || rd_container(r, idx, MP_MAP, n); break;
        default: return -1; /* ext types and reserved bytes are not part of the protocol */
        }
    }
    if (rc)
        return -1;
    r->doc->nodes[idx].next = r->doc->n;
    return 0;
}

int mp_decode(mp_doc *doc, const uint8_t *data, size_t len)
{
    doc->nodes = NULL;
    doc->n = doc->cap = 0;
    mp_reader r = {data, data + len, doc, 0};
    if (rd_value(&r) != 0 || r.p != r.end) {
        mp_doc_free(doc);
        return -1;
    }
    return 0;
}

void mp_doc_free(mp_doc *doc)
{
    free(doc->nodes);
    doc->nodes = NULL;
    doc->n = doc->cap = 0;
}

int mp_array_at(const mp_doc *d, int arr, uint32_t i)
{
    if (arr < 0 || (uint32_t)arr >= d->n || d->nodes[arr].type != MP_ARRAY ||
        i >= d->nodes[arr].count)
        return -1;
    uint32_t k = (uint32_t)arr + 1;
    while (i--)
        k = d->nodes[k].next;
    return (int)k;
}

int mp_is_str(const mp_doc *d, int node, const char *s)
{
    if (node < 0 || (uint32_t)node >= d->n || d->nodes[node].type != MP_STR)
        return 0;
    size_t n = strlen(s);
    return d->nodes[node].count == n && memcmp(d->nodes[node].v.p, s, n) == 0;
}

int mp_map_get(const mp_doc *d, int map, const char *key)
{
    if (map < 0 || (uint32_t)map >= d->n || d->nodes[map].type != MP_MAP)
        return -1;
    uint32_t k = (uint32_t)map + 1;
    for (uint32_t i = 0; i < d->nodes[map].count; i++) {
        uint32_t val = d->nodes[k].next;
        if (mp_is_str(d, (int)k, key))
            return (int)val;
        k = d->nodes[val].next;
    }
    return -1;
}

int mp_get_i64(const mp_doc *d, int node, int64_t *out)
{
    if (node < 0 || (uint32_t)node >= d->n)
        return -1;
    const mp_node *n = &d->nodes[node];
    switch (n->type) {
    case MP_INT: *out = n->v.i; return 0;
    case MP_UINT: *out = (int64_t)n->v.u; return 0;
    case MP_BOOL: *out = (int64_t)n->v.u; return 0;
    case MP_FLOAT: *out = (int64_t)n->v.f; return 0;
    default: return -1;
    }
}

int mp_get_double(const mp_doc *d, int node, double *out)
{
    if (node < 0 || (uint32_t)node >= d->n)
        return -1;
    const mp_node *n = &d->nodes[node];
    switch (n->type) {
    case MP_INT: *out = (double)n->v.i; return 0;
    case MP_UINT: *out = (double)n->v.u; return 0;
    case MP_FLOAT: *out = n->v.f; return 0;
    default: return -1;
    }
}

size_t mp_get_str(const mp_doc *d, int node, char *buf, size_t cap)
{
    if (cap)
        buf[0] = 0;
    if (node < 0 || (uint32_t)node >= d->n ||
        (d->nodes[node].type != MP_STR && d->nodes[node].type != MP_BIN))
        return 0;
    size_t n = d->nodes[node].count;
    if (cap) {
        size_t c = n < cap - 1 ? n : cap - 1;
        memcpy(buf, d->nodes[node].v.p, c);
        buf[c] = 0;
    }
    return n;
}

/* ---- self-check: decode, then encode the node tree again (the tests compare the bytes with
 * Python's msgpack, which picks the same smallest encodings) ----------------------------- */

static uint32_t reencode(const mp_doc *d, uint32_t k, mp_buf *b)
{
    const mp_node *n = &d->nodes[k];
    switch (n->type) {
    case MP_NIL: mp_nil(b); break;
    case MP_BOOL: mp_bool(b, (int)n->v.u); break;
    case MP_INT: mp_int(b, n->v.i); break;
    case MP_UINT: mp_uint(b, n->v.u); break;
    case MP_FLOAT: mp_double(b, n->v.f); break;
    case MP_STR: mp_strn(b, (const char *)n->v.p, n->count); break;
    case MP_BIN: mp_bin(b, n->v.p, n->count); break;
    case MP_ARRAY:
    case MP_MAP: {
        uint32_t items = n->type == MP_MAP ? n->count * 2 : n->count;
        if (n->type == MP_MAP)
            mp_map(b, n->count);
        else
            mp_array(b, n->count);
        uint32_t c = k + 1;
        for (uint32_t i = 0; i < items; i++)
            c = reencode(d, c, b);
        break;
    }
    }
    return n->next;
}

/* Returns the re-encoded length (copied to out when it fits), or -1 if `data` is not one
 * valid msgpack value. */
long rgpu_msgpack_roundtrip(const uint8_t *data, size_t len, uint8_t *out, size_t cap)
{
    mp_doc d;
    if (mp_decode(&d, data, len) != 0)
        return -1;
    mp_buf b;
    mp_init(&b);
    reencode(&d, 0, &b);
    mp_doc_free(&d);
    long n = b.oom ? -1 : (long)b.len;
    if (n > 0 && (size_t)n <= cap)
        memcpy(out, b.data, (size_t)n);
    mp_free(&b);
    return n;
}

/* Append bytes that are already msgpack (a pre-encoded value). */
void mp_raw(mp_buf *b, const void *p, size_t n)
{
    put(b, p, n);
}
