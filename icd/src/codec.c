/* The one encoder and decoder of Vulkan values (docs/VULKAN_ENCODING.md), driven by the
 * generated descriptors of icd/generated/: a struct member and a command parameter are both a
 * `rgpu_field` at an offset from a base (a parameter's base is the 8-byte slot array the
 * generated entry point filled). */
#include <stdlib.h>

#include "rgpu_icd.h"

static uint64_t read_uint(const uint8_t *p, uint32_t size)
{
    switch (size) {
    case 1: return *p;
    case 2: { uint16_t v; memcpy(&v, p, 2); return v; }
    case 4: { uint32_t v; memcpy(&v, p, 4); return v; }
    default: { uint64_t v; memcpy(&v, p, 8); return v; }
    }
}

static int64_t read_int(const uint8_t *p, uint32_t size)
{
    switch (size) {
    case 1: return (int8_t)*p;
    case 2: { int16_t v; memcpy(&v, p, 2); return v; }
    case 4: { int32_t v; memcpy(&v, p, 4); return v; }
    default: { int64_t v; memcpy(&v, p, 8); return v; }
    }
}

static void write_uint(uint8_t *p, uint32_t size, uint64_t v)
{
    switch (size) {
    case 1: *p = (uint8_t)v; break;
    case 2: { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); break; }
    case 4: { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
    default: memcpy(p, &v, 8); break;
    }
}

static const void *read_ptr(const uint8_t *p)
{
    const void *v;
    memcpy(&v, p, sizeof v);
    return v;
}

const rgpu_struct *rgpu_struct_by_stype(int32_t stype)
{
    uint32_t lo = 0, hi = rgpu_stype_count;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (rgpu_stypes[mid].stype == stype)
            return &rgpu_structs[rgpu_stypes[mid].index];
        if (rgpu_stypes[mid].stype < stype)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const rgpu_struct *rgpu_struct_by_name(const char *name)
{
    uint32_t lo = 0, hi = rgpu_struct_count;
    while (lo < hi) { /* the table is sorted by name */
        uint32_t mid = (lo + hi) / 2;
        int c = strcmp(rgpu_structs[mid].name, name);
        if (c == 0)
            return &rgpu_structs[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const rgpu_command_entry *rgpu_command_by_name(const char *name)
{
    uint32_t lo = 0, hi = rgpu_command_count;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        int c = strcmp(rgpu_commands[mid].name, name);
        if (c == 0)
            return &rgpu_commands[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

uint64_t rgpu_len_of(const rgpu_field *fields, uint32_t i, const uint8_t *base)
{
    const rgpu_field *f = &fields[i];
    const rgpu_field *lf = f->len_field >= 0 ? &fields[f->len_field] : NULL;
    switch (f->len_kind) {
    case RGPU_LEN_FIELD:
        return read_uint(base + lf->offset, lf->csize);
    case RGPU_LEN_SAMPLES:
        return (read_uint(base + lf->offset, lf->csize) + 31) / 32;
    case RGPU_LEN_CONST:
        return f->len_arg;
    case RGPU_LEN_DEREF: {
        const uint8_t *p = read_ptr(base + lf->offset);
        return p ? read_uint(p + f->len_arg, f->len_size) : 0;
    }
    case RGPU_LEN_PTR: {
        const uint8_t *p = read_ptr(base + lf->offset);
        return p ? read_uint(p, f->len_size) : 0;
    }
    default:
        return 0;
    }
}

static void encode_struct_node(rgpu_enc *e, mp_buf *b, const rgpu_struct *s, const uint8_t *p,
                               int chain_node);

/* One element of kind `f->kind` at `p`. */
static void encode_elem(rgpu_enc *e, mp_buf *b, const rgpu_field *f, const uint8_t *p)
{
    switch (f->kind) {
    case 'i':
        if (f->is_signed)
            mp_int(b, read_int(p, f->csize));
        else
            mp_uint(b, read_uint(p, f->csize));
        break;
    case 'f':
        if (f->csize == 4) {
            float v;
            memcpy(&v, p, 4);
            mp_double(b, v);
        } else {
            double v;
            memcpy(&v, p, 8);
            mp_double(b, v);
        }
        break;
    case 'h':
        mp_uint(b, read_uint(p, 8));
        break;
    case 'H': {
        const rgpu_dobj *o = read_ptr(p);
        mp_uint(b, o ? o->id : 0);
        break;
    }
    case 's':
        if (f->sub < 0) {
            e->bad = 1;
            mp_nil(b);
        } else {
            encode_struct_node(e, b, &rgpu_structs[f->sub], p, 0);
        }
        break;
    case 'u':
        if (f->sub < 0) {
            e->bad = 1;
            mp_nil(b);
        } else {
            mp_bin(b, p, rgpu_structs[f->sub].size);
        }
        break;
    default:
        e->bad = 1;
        mp_nil(b);
        break;
    }
}

static void encode_in_chain(rgpu_enc *e, mp_buf *b, const void *pnext)
{
    uint32_t n = 0;
    for (const VkBaseInStructure *c = pnext; c; c = c->pNext)
        if (rgpu_struct_by_stype((int32_t)c->sType))
            n++;
    if (!n) {
        mp_nil(b);
        return;
    }
    mp_array(b, n);
    for (const VkBaseInStructure *c = pnext; c; c = c->pNext) {
        const rgpu_struct *s = rgpu_struct_by_stype((int32_t)c->sType);
        if (!s) {
            /* the loader's own structs (VkLayerInstanceCreateInfo, ...) and extensions the
             * wire does not carry stay on this side */
            RGPU_TRACE("pNext: sType %d is not carried; skipped", (int)c->sType);
            continue;
        }
        mp_array(b, 2);
        mp_int(b, s->stype);
        encode_struct_node(e, b, s, (const uint8_t *)c, 1);
    }
}

void rgpu_encode_out_chain(mp_buf *b, const void *pnext)
{
    uint32_t n = 0;
    for (const VkBaseInStructure *c = pnext; c; c = c->pNext)
        if (rgpu_struct_by_stype((int32_t)c->sType))
            n++;
    if (!n) {
        mp_nil(b);
        return;
    }
    mp_array(b, n);
    for (const VkBaseInStructure *c = pnext; c; c = c->pNext)
        if (rgpu_struct_by_stype((int32_t)c->sType))
            mp_int(b, (int64_t)c->sType);
}

/* VkWriteDescriptorSet carries only the array its descriptorType reads. */
static int write_descriptor_skips(const rgpu_struct *s, const uint8_t *p, const rgpu_field *f)
{
    if (strcmp(s->name, "VkWriteDescriptorSet") != 0)
        return 0;
    const VkWriteDescriptorSet *w = (const VkWriteDescriptorSet *)p;
    const char *wanted = NULL;
    switch (w->descriptorType) {
    case VK_DESCRIPTOR_TYPE_SAMPLER:
    case VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER:
    case VK_DESCRIPTOR_TYPE_SAMPLED_IMAGE:
    case VK_DESCRIPTOR_TYPE_STORAGE_IMAGE:
    case VK_DESCRIPTOR_TYPE_INPUT_ATTACHMENT:
        wanted = "pImageInfo";
        break;
    case VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER:
    case VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER:
        wanted = "pTexelBufferView";
        break;
    case VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER:
    case VK_DESCRIPTOR_TYPE_STORAGE_BUFFER:
    case VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER_DYNAMIC:
    case VK_DESCRIPTOR_TYPE_STORAGE_BUFFER_DYNAMIC:
        wanted = "pBufferInfo";
        break;
    default:
        break;
    }
    if (strcmp(f->name, "pImageInfo") && strcmp(f->name, "pTexelBufferView") &&
        strcmp(f->name, "pBufferInfo"))
        return 0;
    return !wanted || strcmp(wanted, f->name) != 0;
}

/* Blobs past this size (a saved pipeline cache, a large SPIR-V module) would overflow a
 * frame's body: they go ahead as the bulk of a vkRgpuStageBlob BATCH, and the body names them
 * as [id] (docs/VULKAN_ENCODING.md). */
#define BLOB_INLINE_MAX (1u << 20)

static void stage_blob(rgpu_enc *e, mp_buf *b, const uint8_t *p, size_t n)
{
    uint64_t id = rgpu_new_id();
    mp_buf body;
    mp_init(&body);
    mp_array(&body, 3);
    mp_str(&body, "vkRgpuStageBlob");
    mp_array(&body, 1);
    mp_uint(&body, id);
    mp_uint(&body, 1); /* bulk_index: the data is the second argument */
    if (body.oom || rgpu_batch(e->srv->session, &body, p, n) != VK_SUCCESS)
        e->bad = 1;
    mp_free(&body);
    mp_array(b, 1);
    mp_uint(b, id);
}

void rgpu_encode_field(rgpu_enc *e, mp_buf *b, const rgpu_field *fields, uint32_t nfields,
                       uint32_t i, const uint8_t *base)
{
    (void)nfields;
    const rgpu_field *f = &fields[i];
    const uint8_t *at = base + f->offset;
    switch (f->shape) {
    case RGPU_SH_STYPE:
        break;
    case RGPU_SH_PNEXT:
        encode_in_chain(e, b, read_ptr(at));
        break;
    case RGPU_SH_VAL:
        encode_elem(e, b, f, at);
        break;
    case RGPU_SH_FIXED: {
        mp_array(b, f->count);
        for (uint32_t k = 0; k < f->count; k++)
            encode_elem(e, b, f, at + (size_t)k * f->csize);
        break;
    }
    case RGPU_SH_CHARS:
        mp_strn(b, (const char *)at, strnlen((const char *)at, f->count));
        break;
    case RGPU_SH_STR: {
        const char *s = read_ptr(at);
        if (s)
            mp_str(b, s);
        else
            mp_nil(b);
        break;
    }
    case RGPU_SH_STRS: {
        uint64_t n = rgpu_len_of(fields, i, base);
        const char *const *s = read_ptr(at);
        if (!s || !n) {
            mp_nil(b);
            break;
        }
        mp_array(b, (uint32_t)n);
        for (uint64_t k = 0; k < n; k++)
            mp_str(b, s[k] ? s[k] : "");
        break;
    }
    case RGPU_SH_PTR: {
        const uint8_t *p = read_ptr(at);
        if (!p)
            mp_nil(b);
        else
            encode_elem(e, b, f, p);
        break;
    }
    case RGPU_SH_ARRAY: {
        uint64_t n = rgpu_len_of(fields, i, base);
        const uint8_t *p = read_ptr(at);
        if (!p || !n) {
            mp_nil(b);
            break;
        }
        mp_array(b, (uint32_t)n);
        for (uint64_t k = 0; k < n; k++)
            encode_elem(e, b, f, p + k * f->csize);
        break;
    }
    case RGPU_SH_BLOB: {
        uint64_t n = rgpu_len_of(fields, i, base);
        const uint8_t *p = read_ptr(at);
        if (!p)
            mp_nil(b);
        else if (n > BLOB_INLINE_MAX && e->srv)
            stage_blob(e, b, p, (size_t)n);
        else
            mp_bin(b, p, (size_t)n);
        break;
    }
    default:
        mp_nil(b);
        break;
    }
}

static void encode_struct_node(rgpu_enc *e, mp_buf *b, const rgpu_struct *s, const uint8_t *p,
                               int chain_node)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->nfields; i++)
        if (s->fields[i].shape != RGPU_SH_STYPE)
            n++;
    mp_array(b, n);
    for (uint32_t i = 0; i < s->nfields; i++) {
        const rgpu_field *f = &s->fields[i];
        if (f->shape == RGPU_SH_STYPE)
            continue;
        if ((chain_node && f->shape == RGPU_SH_PNEXT) || write_descriptor_skips(s, p, f)) {
            mp_nil(b);
            continue;
        }
        rgpu_encode_field(e, b, s->fields, s->nfields, i, p);
    }
}

void rgpu_encode_struct(rgpu_enc *e, mp_buf *b, const rgpu_struct *s, const uint8_t *p)
{
    encode_struct_node(e, b, s, p, 0);
}

/* ---- decoding ----------------------------------------------------------------------------- */

static int decode_elem(const mp_doc *d, int node, const rgpu_field *f, uint8_t *p,
                       rgpu_server *srv)
{
    if (mp_is_nil(d, node))
        return 0;
    switch (f->kind) {
    case 'i': {
        int64_t v;
        if (mp_get_i64(d, node, &v) != 0)
            return -1;
        write_uint(p, f->csize, (uint64_t)v);
        return 0;
    }
    case 'f': {
        double v;
        if (mp_get_double(d, node, &v) != 0)
            return -1;
        if (f->csize == 4) {
            float x = (float)v;
            memcpy(p, &x, 4);
        } else {
            memcpy(p, &v, 8);
        }
        return 0;
    }
    case 'h': {
        int64_t v;
        if (mp_get_i64(d, node, &v) != 0)
            return -1;
        write_uint(p, 8, (uint64_t)v);
        return 0;
    }
    case 'H': {
        int64_t v;
        if (mp_get_i64(d, node, &v) != 0)
            return -1;
        void *h = rgpu_handle_from_id("VkPhysicalDevice", (uint64_t)v, srv);
        memcpy(p, &h, sizeof h);
        return 0;
    }
    case 's':
        if (f->sub < 0)
            return -1;
        return rgpu_decode_struct(d, node, &rgpu_structs[f->sub], p, srv);
    case 'u': {
        if (f->sub < 0 || d->nodes[node].type != MP_BIN)
            return -1;
        size_t n = d->nodes[node].count;
        if (n > rgpu_structs[f->sub].size)
            n = rgpu_structs[f->sub].size;
        memcpy(p, d->nodes[node].v.p, n);
        return 0;
    }
    default:
        return 0;
    }
}

int rgpu_decode_field(const mp_doc *d, int node, const rgpu_field *f, uint8_t *base,
                      rgpu_server *srv)
{
    uint8_t *at = base + f->offset;
    switch (f->shape) {
    case RGPU_SH_VAL:
        return decode_elem(d, node, f, at, srv);
    case RGPU_SH_FIXED: {
        if (mp_is_nil(d, node) || d->nodes[node].type != MP_ARRAY)
            return 0;
        uint32_t k = 0;
        for (int c = mp_first(d, node); c >= 0 && k < d->nodes[node].count && k < f->count;
             c = mp_next(d, c), k++)
            if (decode_elem(d, c, f, at + (size_t)k * f->csize, srv) != 0)
                return -1;
        return 0;
    }
    case RGPU_SH_CHARS: {
        if (mp_is_nil(d, node) || !f->count)
            return 0;
        mp_get_str(d, node, (char *)at, f->count);
        return 0;
    }
    default:
        return 0; /* pointers in returned structs are the application's: left alone */
    }
}

/* Fill the application's chain (starting at `chain`) from the wire chain at `node`. */
static int decode_chain(const mp_doc *d, int node, void *chain, rgpu_server *srv)
{
    if (mp_is_nil(d, node) || d->nodes[node].type != MP_ARRAY)
        return 0;
    uint32_t k = 0;
    for (int c = mp_first(d, node); c >= 0 && k < d->nodes[node].count; c = mp_next(d, c), k++) {
        int64_t stype;
        if (mp_get_i64(d, mp_array_at(d, c, 0), &stype) != 0)
            return -1;
        const rgpu_struct *s = rgpu_struct_by_stype((int32_t)stype);
        if (!s)
            continue;
        for (VkBaseOutStructure *a = chain; a; a = a->pNext)
            if ((int64_t)a->sType == stype)
                if (rgpu_decode_struct(d, mp_array_at(d, c, 1), s, (uint8_t *)a, srv) != 0)
                    return -1;
    }
    return 0;
}

int rgpu_decode_struct(const mp_doc *d, int node, const rgpu_struct *s, uint8_t *p,
                       rgpu_server *srv)
{
    if (mp_is_nil(d, node))
        return 0;
    if (d->nodes[node].type != MP_ARRAY)
        return -1;
    int c = mp_first(d, node);
    uint32_t left = d->nodes[node].count;
    for (uint32_t i = 0; i < s->nfields && c >= 0 && left; i++) {
        const rgpu_field *f = &s->fields[i];
        if (f->shape == RGPU_SH_STYPE)
            continue;
        if (f->shape == RGPU_SH_PNEXT) {
            if (decode_chain(d, c, (void *)read_ptr(p + f->offset), srv) != 0)
                return -1;
        } else if (rgpu_decode_field(d, c, f, p, srv) != 0) {
            return -1;
        }
        c = --left ? mp_next(d, c) : -1;
    }
    return 0;
}
