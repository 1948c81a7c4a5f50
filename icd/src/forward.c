/* The generic call path: every generated entry point lands in rgpu_forward, which records
 * vkCmd* calls into the command buffer's stream and sends everything else to the server
 * session of its dispatchable first argument -- a BATCH (no reply) when the command returns
 * nothing and has no outputs, else a CALL whose reply fills the outputs. */
#include <stdio.h>
#include <stdlib.h>

#include "rgpu_icd.h"

rgpu_server *rgpu_server_of(const void *dispatchable)
{
    const rgpu_dobj *o = dispatchable;
    return o ? o->srv : NULL;
}

static uint64_t slot_ptr_u(const uint64_t *args, int i)
{
    return args[i];
}

VkResult rgpu_vk_call(rgpu_server *srv, mp_buf *body, const void *bulk, size_t bulk_len,
                      rgpu_reply *out)
{
    if (body->oom) {
        memset(out, 0, sizeof *out);
        return out->status = VK_ERROR_OUT_OF_HOST_MEMORY;
    }
    VkResult st = rgpu_call(srv->session, body, bulk, bulk_len, out);
    if (st != VK_SUCCESS && out->message[0])
        RGPU_DEBUG("%s: %s", out->code, out->message);
    return st;
}

/* Output handles the application receives (non-dispatchable): fresh ids written into its
 * memory and sent in the request. */
static void encode_new_handles(mp_buf *b, const rgpu_field *fields, uint32_t i,
                               const uint64_t *args)
{
    const rgpu_field *f = &fields[i];
    uint64_t *out = (uint64_t *)(uintptr_t)args[i];
    if (!out) {
        mp_nil(b);
        return;
    }
    if (f->shape == RGPU_SH_PTR) {
        *out = rgpu_new_id();
        mp_uint(b, *out);
        return;
    }
    uint64_t n = rgpu_len_of(fields, i, (const uint8_t *)args);
    mp_array(b, (uint32_t)n);
    for (uint64_t k = 0; k < n; k++) {
        out[k] = rgpu_new_id();
        mp_uint(b, out[k]);
    }
}

static int out_struct_pnext_offset(const rgpu_field *f)
{
    if (f->sub < 0)
        return -1;
    const rgpu_struct *s = &rgpu_structs[f->sub];
    for (uint32_t i = 0; i < s->nfields; i++)
        if (s->fields[i].shape == RGPU_SH_PNEXT)
            return (int)s->fields[i].offset;
    return -1;
}

/* The bytes of a bin output: in the reply, or -- past what a frame's body holds -- named
 * [id] and fetched with vkRgpuFetchBlob into `held` (freed by the caller). NULL if neither. */
static const uint8_t *output_bytes(rgpu_server *srv, const mp_doc *d, int node, size_t *len,
                                   rgpu_reply *held)
{
    if (d->nodes[node].type == MP_BIN) {
        *len = d->nodes[node].count;
        return d->nodes[node].v.p;
    }
    int64_t id;
    if (d->nodes[node].type != MP_ARRAY || d->nodes[node].count != 1 ||
        mp_get_i64(d, mp_first(d, node), &id) != 0)
        return NULL;
    mp_buf b;
    mp_init(&b);
    mp_array(&b, 2);
    mp_str(&b, "vkRgpuFetchBlob");
    mp_array(&b, 1);
    mp_uint(&b, (uint64_t)id);
    VkResult st = rgpu_vk_call(srv, &b, NULL, 0, held);
    mp_free(&b);
    if (st != VK_SUCCESS)
        return NULL;
    *len = held->bulk_len;
    return held->bulk;
}

/* Copy an enumeration's items into the application's array; returns how many fit. */
static uint64_t decode_items(const mp_doc *d, int node, const rgpu_field *af, uint8_t *arr,
                             uint64_t cap, rgpu_server *srv)
{
    if (mp_is_nil(d, node))
        return 0;
    if (af->shape == RGPU_SH_BLOB || d->nodes[node].type == MP_BIN) { /* vkGetPipelineCacheData */
        rgpu_reply held;
        memset(&held, 0, sizeof held);
        size_t len = 0;
        const uint8_t *p = output_bytes(srv, d, node, &len, &held);
        uint64_t n = p ? len : 0;
        if (arr && p) {
            n = n < cap ? n : cap;
            memcpy(arr, p, (size_t)n);
        }
        rgpu_reply_free(&held);
        return n;
    }
    if (d->nodes[node].type != MP_ARRAY)
        return 0;
    uint64_t n = d->nodes[node].count;
    if (!arr)
        return n;
    uint64_t k = 0;
    rgpu_field elem = *af;
    elem.offset = 0;
    elem.shape = RGPU_SH_VAL;
    for (int c = mp_first(d, node); c >= 0 && k < n && k < cap; c = mp_next(d, c), k++)
        rgpu_decode_field(d, c, &elem, arr + k * af->csize, srv);
    return k;
}

/* The CALL/BATCH body [name, [args...]] of a (non-vkCmd) command; returns whether the command
 * has outputs to decode from a reply. */
static int encode_call(const rgpu_command *cmd, const uint64_t *args, rgpu_enc *enc, mp_buf *b)
{
    const uint8_t *base = (const uint8_t *)args;
    const rgpu_field *P = cmd->params;
    mp_init(b);
    mp_array(b, 2);
    mp_str(b, cmd->name);
    mp_array(b, cmd->nparams);
    int has_out = 0;
    for (uint32_t i = 0; i < cmd->nparams; i++) {
        const rgpu_field *f = &P[i];
        if (f->dir == RGPU_DIR_IN) {
            rgpu_encode_field(enc, b, P, cmd->nparams, i, base);
        } else if (f->kind == 'h' && (f->shape == RGPU_SH_PTR || f->shape == RGPU_SH_ARRAY)) {
            encode_new_handles(b, P, i, args);
        } else if ((int)i == cmd->pair_count) {
            has_out = 1;
            const void *arr = (const void *)(uintptr_t)slot_ptr_u(args, cmd->pair_array);
            const uint8_t *cnt = (const uint8_t *)(uintptr_t)args[i];
            if (!arr || !cnt) {
                mp_nil(b);
            } else {
                uint64_t cap = f->csize == 8 ? *(const uint64_t *)cnt : *(const uint32_t *)cnt;
                mp_uint(b, cap);
            }
        } else if (f->kind == 's' && f->shape == RGPU_SH_PTR && (int)i != cmd->pair_array) {
            has_out = 1;
            const uint8_t *p = (const uint8_t *)(uintptr_t)args[i];
            int off = out_struct_pnext_offset(f);
            if (p && off >= 0) {
                const void *chain;
                memcpy(&chain, p + off, sizeof chain);
                rgpu_encode_out_chain(b, chain);
            } else {
                mp_nil(b);
            }
        } else {
            has_out = 1;
            mp_nil(b);
        }
    }
    return has_out;
}

/* The CALL body of a command, for callers that send it themselves (rgpu_call_pair). */
int rgpu_encode_call(const rgpu_command *cmd, const uint64_t *args, mp_buf *b)
{
    rgpu_dobj *owner = (rgpu_dobj *)(uintptr_t)args[0];
    rgpu_enc enc = {owner ? owner->srv : NULL, 0};
    encode_call(cmd, args, &enc, b);
    return b->oom || enc.bad ? -1 : 0;
}

/* A command whose only result is a VkResult, sent as a BATCH (no reply): its error, if any,
 * comes back with the session's next reply. VK_SUCCESS unless it could not be sent. */
VkResult rgpu_forward_async(const rgpu_command *cmd, const uint64_t *args)
{
    rgpu_dobj *owner = (rgpu_dobj *)(uintptr_t)args[0];
    if (!owner || !owner->srv)
        return VK_ERROR_UNKNOWN;
    rgpu_enc enc = {owner->srv, 0};
    mp_buf b;
    int has_out = encode_call(cmd, args, &enc, &b);
    VkResult st = VK_SUCCESS;
    if (has_out || cmd->nreply)
        st = VK_ERROR_UNKNOWN; /* a programming error: the command has outputs */
    else if (b.oom)
        st = VK_ERROR_OUT_OF_HOST_MEMORY;
    else if (rgpu_batch(owner->srv->session, &b, NULL, 0) != VK_SUCCESS)
        st = VK_ERROR_DEVICE_LOST;
    mp_free(&b);
    return st;
}

uint64_t rgpu_forward(const rgpu_command *cmd, const uint64_t *args)
{
    const uint8_t *base = (const uint8_t *)args;
    const rgpu_field *P = cmd->params;
    rgpu_dobj *owner = (rgpu_dobj *)(uintptr_t)args[0];
    if (!owner || !owner->srv) {
        RGPU_DEBUG("%s: no dispatchable object", cmd->name);
        return cmd->result == RGPU_RES_VKRESULT ? (uint64_t)(int64_t)VK_ERROR_UNKNOWN : 0;
    }
    rgpu_enc enc = {owner->srv, 0};

    if (cmd->is_cmd) { /* recorded, shipped at vkEndCommandBuffer */
        rgpu_cmdbuf *cb = (rgpu_cmdbuf *)owner;
        mp_array(&cb->stream, 2);
        mp_str(&cb->stream, cmd->name);
        mp_array(&cb->stream, cmd->nparams - 1u);
        for (uint32_t i = 1; i < cmd->nparams; i++) {
            if (P[i].shape == RGPU_SH_FIXED) { /* array parameters arrive as pointers */
                const uint8_t *p = (const uint8_t *)(uintptr_t)args[i];
                mp_array(&cb->stream, P[i].count);
                for (uint32_t k = 0; k < P[i].count; k++) {
                    rgpu_field one = P[i];
                    one.offset = 0;
                    one.shape = RGPU_SH_VAL;
                    rgpu_encode_field(&enc, &cb->stream, &one, 1, 0, p + (size_t)k * one.csize);
                }
                continue;
            }
            rgpu_encode_field(&enc, &cb->stream, P, cmd->nparams, i, base);
        }
        cb->ncommands++;
        if (enc.bad)
            RGPU_DEBUG("%s: an argument could not be encoded", cmd->name);
        return 0;
    }

    mp_buf b;
    int has_out = encode_call(cmd, args, &enc, &b);
    if (enc.bad)
        RGPU_DEBUG("%s: an argument could not be encoded", cmd->name);

    if (cmd->result == RGPU_RES_VOID && cmd->nreply == 0 && !has_out) {
        VkResult st = b.oom ? VK_ERROR_OUT_OF_HOST_MEMORY
                            : rgpu_batch(owner->srv->session, &b, NULL, 0);
        if (st != VK_SUCCESS)
            RGPU_DEBUG("%s: not sent (VkResult %d)", cmd->name, (int)st);
        mp_free(&b);
        return 0;
    }

    rgpu_reply r;
    VkResult st = rgpu_vk_call(owner->srv, &b, NULL, 0, &r);
    mp_free(&b);
    if (st != VK_SUCCESS) {
        rgpu_reply_free(&r);
        return cmd->result == RGPU_RES_VKRESULT ? (uint64_t)(int64_t)st : 0;
    }
    uint64_t result = 0;
    const mp_doc *d = &r.doc;
    if (r.has_body && d->n && d->nodes[0].type == MP_ARRAY) {
        int item = mp_first(d, 0);
        if (item >= 0) {
            int64_t v = 0;
            if (mp_get_i64(d, item, &v) == 0)
                result = (uint64_t)v;
            for (uint32_t k = 0; k < cmd->nreply; k++) {
                item = mp_next(d, item);
                if ((uint32_t)item >= d->n || k + 1 >= d->nodes[0].count)
                    break;
                int idx = cmd->reply[k];
                const rgpu_field *f = &P[idx];
                uint8_t *dst = (uint8_t *)(uintptr_t)args[idx];
                if (idx == cmd->pair_count) {
                    const rgpu_field *af = &P[cmd->pair_array];
                    uint8_t *arr = (uint8_t *)(uintptr_t)args[cmd->pair_array];
                    uint64_t cap = 0;
                    if (dst)
                        cap = f->csize == 8 ? *(uint64_t *)dst : *(uint32_t *)dst;
                    uint64_t n = decode_items(d, item, af, arr, cap, owner->srv);
                    if (dst) {
                        if (f->csize == 8)
                            *(uint64_t *)dst = n;
                        else
                            *(uint32_t *)dst = (uint32_t)n;
                    }
                } else if (!dst) {
                    continue;
                } else if (f->shape == RGPU_SH_PTR && f->kind == 's') {
                    rgpu_decode_struct(d, item, &rgpu_structs[f->sub], dst, owner->srv);
                } else if (f->shape == RGPU_SH_PTR) {
                    rgpu_field one = *f;
                    one.offset = 0;
                    one.shape = RGPU_SH_VAL;
                    rgpu_decode_field(d, item, &one, dst, owner->srv);
                } else if (f->shape == RGPU_SH_BLOB) { /* vkGetQueryPoolResults' pData */
                    uint64_t n = rgpu_len_of(P, (uint32_t)idx, base);
                    rgpu_reply held;
                    memset(&held, 0, sizeof held);
                    size_t got = 0;
                    const uint8_t *p = output_bytes(owner->srv, d, item, &got, &held);
                    if (p)
                        memcpy(dst, p, (size_t)(got < n ? got : n));
                    rgpu_reply_free(&held);
                } else if (f->shape == RGPU_SH_ARRAY) {
                    decode_items(d, item, f, dst, rgpu_len_of(P, (uint32_t)idx, base),
                                 owner->srv);
                }
            }
        }
    }
    rgpu_reply_free(&r);
    return result;
}
