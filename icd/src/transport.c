/* The ICD's one connection to the rgpu client daemon: a Unix socket speaking the frames of
 * docs/PROTOCOL.md. Calls from every application thread share it under one (recursive) mutex;
 * BATCH frames are buffered and written before the next request or when the buffer fills.
 * Every wait is a poll() with a deadline, and once the socket closes every call fails at once:
 * an application must never hang on a lost daemon or server. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "rgpu_frame.h"
#include "rgpu_icd.h"

#define HEADER_SIZE RGPU_HEADER_SIZE
#define MAX_BODY RGPU_MAX_BODY
#define MAX_BULK RGPU_MAX_BULK
#define F_BULK RGPU_F_BULK
#define F_RESPONSE RGPU_F_RESPONSE
#define F_MORE RGPU_F_MORE
#define BATCH_FLUSH_BYTES (256u << 10)
#define MAX_DEFERRED 16

int rgpu_log_level;

typedef struct {
    uint32_t session;
    VkResult status;
} deferred_err;

/* The connection's lock is taken in arrival order (a ticket lock) and may be taken again by its
 * holder. A plain mutex is not fair: a thread that waits on a fence in short slices could retake
 * it between slices for seconds while another thread waits to submit the work it waits for. */
typedef struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    unsigned long next, serving;
    pthread_t owner;
    int depth;
} fair_lock;

static struct {
    fair_lock mu;
    int fd;
    int state; /* 0 never tried, 1 connected, 2 no daemon, 3 lost */
    pid_t pid;
    uint32_t next_request;
    mp_buf out;
    deferred_err deferred[MAX_DEFERRED];
    int ndeferred;
    double timeout_s;
} g = {.fd = -1};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_once(void)
{
    pthread_mutex_init(&g.mu.m, NULL);
    pthread_cond_init(&g.mu.c, NULL);
    mp_init(&g.out);
    rgpu_log_init();
    const char *t = getenv("RGPU_CALL_TIMEOUT");
    g.timeout_s = t && atof(t) > 0 ? atof(t) : 600.0;
}

void rgpu_log_init(void)
{
    rgpu_log_level = rgpu_env_log_level();
}

/* Logging is decided when the loader loads the driver. */
__attribute__((constructor)) static void rgpu_log_ctor(void)
{
    rgpu_log_init();
}

void rgpu_logf(int level, const char *fmt, ...)
{
    (void)level;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "rgpu-vk: %s\n", line);
}

/* Take the lock without waiting, or return -1 when another thread holds it or waits for it. */
static int fair_trylock(fair_lock *l)
{
    pthread_mutex_lock(&l->m);
    int ok = l->depth ? pthread_equal(l->owner, pthread_self()) : l->next == l->serving;
    if (ok) {
        if (!l->depth++) {
            l->owner = pthread_self();
            l->next++;
        }
    }
    pthread_mutex_unlock(&l->m);
    return ok ? 0 : -1;
}

void rgpu_lock(void)
{
    pthread_once(&g_once, init_once);
    fair_lock *l = &g.mu;
    pthread_mutex_lock(&l->m);
    if (l->depth && pthread_equal(l->owner, pthread_self())) {
        l->depth++;
    } else {
        unsigned long ticket = l->next++;
        while (l->serving != ticket)
            pthread_cond_wait(&l->c, &l->m);
        l->owner = pthread_self();
        l->depth = 1;
    }
    pthread_mutex_unlock(&l->m);
}

void rgpu_unlock(void)
{
    fair_lock *l = &g.mu;
    pthread_mutex_lock(&l->m);
    if (--l->depth == 0) {
        l->serving++;
        pthread_cond_broadcast(&l->c);
    }
    pthread_mutex_unlock(&l->m);
}

int rgpu_connection_dead(void)
{
    return g.state == 3;
}

void rgpu_reply_free(rgpu_reply *r)
{
    mp_doc_free(&r->doc);
    free(r->doc_src);
    r->doc_src = NULL;
    free(r->bulk);
    r->bulk = NULL;
    r->bulk_len = 0;
    r->has_body = 0;
}

#define now_s rgpu_now_s

static void lost(const char *why)
{
    if (g.state == 1) {
        RGPU_DEBUG("connection to the rgpu daemon lost: %s", why);
        if (!rgpu_log_level)
            fprintf(stderr, "rgpu: lost the connection to the rgpu daemon (%s)\n", why);
    }
    if (g.fd >= 0)
        close(g.fd);
    g.fd = -1;
    g.state = 3;
    g.out.len = 0;
}

/* ---- raw I/O ----------------------------------------------------------------------------- */

static int read_full(void *buf, size_t n, double deadline)
{
    const char *why = "?";
    if (rgpu_read_full(g.fd, buf, n, deadline, &why) == 0)
        return 0;
    lost(why);
    return -1;
}

static int flush_locked(double deadline)
{
    if (g.fd < 0)
        return -1;
    const char *why = "?";
    if (rgpu_flush_out(g.fd, &g.out, deadline, &why) == 0)
        return 0;
    lost(why);
    return -1;
}

/* Queue (small) or write (large) one message (rgpu_send_message). */
static int send_message(int kind, uint32_t session, uint32_t request, const mp_buf *body,
                        const uint8_t *bulk, size_t bulk_len, int flush)
{
    const char *why = "?";
    int rc = rgpu_send_message(g.fd, &g.out, BATCH_FLUSH_BYTES, kind, session, request, body,
                               bulk, bulk_len, flush, now_s() + g.timeout_s, &why);
    if (rc == -1)
        lost(why);
    return rc;
}

/* ---- errors ------------------------------------------------------------------------------ */

static VkResult map_error(const mp_doc *d, char *code, size_t code_cap, char *msg, size_t msg_cap)
{
    int vk = mp_map_get(d, 0, "vk");
    mp_get_str(d, mp_map_get(d, 0, "code"), code, code_cap);
    mp_get_str(d, mp_map_get(d, 0, "message"), msg, msg_cap);
    int64_t v;
    if (mp_get_i64(d, vk, &v) == 0 && v < 0)
        return (VkResult)v;
    if (!strcmp(code, "server_lost") || !strcmp(code, "device_lost") ||
        !strcmp(code, "cancelled") || !strcmp(code, "daemon_shutdown"))
        return VK_ERROR_DEVICE_LOST;
    if (!strcmp(code, "unsupported"))
        return VK_ERROR_EXTENSION_NOT_PRESENT;
    if (!strcmp(code, "quota"))
        return VK_ERROR_OUT_OF_DEVICE_MEMORY;
    return VK_ERROR_UNKNOWN;
}

static void note_deferred(uint32_t session, VkResult st)
{
    for (int i = 0; i < g.ndeferred; i++)
        if (g.deferred[i].session == session)
            return; /* the first asynchronous error is the one reported */
    if (g.ndeferred < MAX_DEFERRED)
        g.deferred[g.ndeferred++] = (deferred_err){session, st};
}

VkResult rgpu_take_deferred(uint32_t session)
{
    rgpu_lock();
    VkResult st = VK_SUCCESS;
    for (int i = 0; i < g.ndeferred; i++) {
        if (g.deferred[i].session == session) {
            st = g.deferred[i].status;
            g.deferred[i] = g.deferred[--g.ndeferred];
            break;
        }
    }
    rgpu_unlock();
    return st;
}

/* ---- receiving --------------------------------------------------------------------------- */

/* Read frames until the reply to `request` is complete (request 0: until none is buffered). */
static VkResult wait_reply(uint32_t request, rgpu_reply *out)
{
    double deadline = now_s() + g.timeout_s;
    int have_head = 0;
    for (;;) {
        uint8_t h[HEADER_SIZE];
        if (read_full(h, HEADER_SIZE, deadline) != 0)
            break;
        rgpu_header hd;
        rgpu_get_header(h, &hd);
        int kind = hd.kind;
        unsigned flags = hd.flags;
        uint32_t session = hd.session, req = hd.request, blen = hd.body_len, klen = hd.bulk_len;
        if (!rgpu_header_ok(&hd)) {
            lost("the daemon sent a malformed frame");
            break;
        }
        uint8_t *body = malloc(blen ? blen : 1);
        if (!body) {
            lost("out of memory");
            break;
        }
        if (read_full(body, blen, deadline) != 0) {
            free(body);
            break;
        }
        int mine = request && req == request && (flags & F_RESPONSE);
        uint8_t *bulk_dst = NULL;
        if (mine && klen) {
            size_t nl = out->bulk_len + klen;
            uint8_t *nb = realloc(out->bulk, nl);
            if (!nb) {
                free(body);
                lost("out of memory for a reply");
                break;
            }
            out->bulk = nb;
            bulk_dst = nb + out->bulk_len;
        } else if (klen) {
            bulk_dst = malloc(klen);
            if (!bulk_dst) {
                free(body);
                lost("out of memory");
                break;
            }
        }
        if (klen && read_full(bulk_dst, klen, deadline) != 0) {
            if (!mine)
                free(bulk_dst);
            free(body);
            break;
        }
        if (!mine) {
            if (klen)
                free(bulk_dst);
            if (kind == RG_ERROR) {
                mp_doc d;
                char code[48], msg[256];
                VkResult st = VK_ERROR_UNKNOWN;
                if (mp_decode(&d, body, blen) == 0) {
                    st = map_error(&d, code, sizeof code, msg, sizeof msg);
                    mp_doc_free(&d);
                    RGPU_DEBUG("deferred error on session %u: %s: %s (VkResult %d)", session,
                               code, msg, (int)st);
                }
                if (session)
                    note_deferred(session, st);
                else {
                    free(body);
                    lost("the daemon closed the connection");
                    break;
                }
            } else if (kind == RG_PING) {
                mp_buf nb;
                mp_init(&nb);
                mp_nil(&nb);
                send_message(RG_PONG, 0, req, &nb, NULL, 0, 1);
                mp_free(&nb);
            }
            free(body);
            continue;
        }
        out->bulk_len += klen;
        if (!have_head) {
            have_head = 1;
            if (kind == RG_ERROR) {
                mp_doc d;
                if (mp_decode(&d, body, blen) == 0) {
                    out->status = map_error(&d, out->code, sizeof out->code, out->message,
                                            sizeof out->message);
                    mp_doc_free(&d);
                } else {
                    out->status = VK_ERROR_UNKNOWN;
                }
            } else {
                if (mp_decode(&out->doc, body, blen) != 0) {
                    free(body);
                    lost("the daemon sent an undecodable reply");
                    break;
                }
                out->has_body = 1;
                out->status = VK_SUCCESS;
                out->doc_src = body;
                body = NULL;
            }
        }
        free(body);
        if (!(flags & F_MORE))
            return out->status;
    }
    return VK_ERROR_DEVICE_LOST;
}

/* ---- connecting -------------------------------------------------------------------------- */

static VkResult connect_locked(void)
{
    if (g.state != 0 && g.pid != getpid()) { /* a forked child gets a connection of its own */
        if (g.fd >= 0)
            close(g.fd);
        g.fd = -1;
        g.state = 0;
        g.out.len = 0;
        g.ndeferred = 0;
    }
    if (g.state == 1)
        return VK_SUCCESS;
    if (g.state == 2)
        return VK_ERROR_INITIALIZATION_FAILED;
    if (g.state == 3)
        return VK_ERROR_DEVICE_LOST;
    g.pid = getpid();
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    rgpu_socket_path(path, sizeof path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        g.state = 2;
        fprintf(stderr, "rgpu: no rgpu daemon at %s; start one with rgpu client -s HOST:PORT -t TOKEN\n",
                path);
        return VK_ERROR_INITIALIZATION_FAILED;
    }
    g.fd = fd;
    g.state = 1;
    mp_buf b;
    mp_init(&b);
    rgpu_hello_body(&b);
    int rc = send_message(RG_HELLO, 0, 0, &b, NULL, 0, 1);
    mp_free(&b);
    if (rc != 0)
        return VK_ERROR_DEVICE_LOST;
    double deadline = now_s() + 30;
    uint8_t h[HEADER_SIZE];
    if (read_full(h, HEADER_SIZE, deadline) != 0)
        return VK_ERROR_DEVICE_LOST;
    uint32_t blen = (uint32_t)h[16] << 24 | (uint32_t)h[17] << 16 | (uint32_t)h[18] << 8 | h[19];
    uint32_t klen = (uint32_t)h[20] << 24 | (uint32_t)h[21] << 16 | (uint32_t)h[22] << 8 | h[23];
    if (blen > MAX_BODY || klen) {
        lost("bad handshake");
        return VK_ERROR_DEVICE_LOST;
    }
    uint8_t *body = malloc(blen ? blen : 1);
    if (!body || read_full(body, blen, deadline) != 0) {
        free(body);
        return VK_ERROR_DEVICE_LOST;
    }
    free(body);
    if (h[3] != RG_AUTH_OK) {
        lost("the daemon refused the handshake");
        return VK_ERROR_DEVICE_LOST;
    }
    RGPU_DEBUG("connected to the rgpu daemon at %s", path);
    return VK_SUCCESS;
}

VkResult rgpu_connect(void)
{
    rgpu_lock();
    VkResult st = connect_locked();
    rgpu_unlock();
    return st;
}

/* ---- requests ---------------------------------------------------------------------------- */

static VkResult request(int kind, uint32_t session, const mp_buf *body, const void *bulk,
                        size_t bulk_len, rgpu_reply *out)
{
    memset(out, 0, sizeof *out);
    rgpu_lock();
    VkResult st = connect_locked();
    if (st != VK_SUCCESS) {
        out->status = st;
        rgpu_unlock();
        return st;
    }
    uint32_t req = ++g.next_request;
    if (req == 0)
        req = ++g.next_request;
    int rc = send_message(kind, session, req, body, bulk, bulk_len, 1);
    if (rc == -2) {
        out->status = VK_ERROR_OUT_OF_HOST_MEMORY;
    } else if (rc != 0) {
        out->status = VK_ERROR_DEVICE_LOST;
    } else {
        out->status = wait_reply(req, out); /* DEVICE_LOST when the connection went away */
    }
    if (out->status != VK_SUCCESS)
        rgpu_reply_free(out);
    rgpu_unlock();
    return out->status;
}

/* Two CALLs of one session sent back to back, then both replies read: the second costs no
 * extra round trip (the server runs a session's calls in order). out2 is valid only when the
 * first call succeeded on the wire. */
static VkResult request_pair(uint32_t session, const mp_buf *first, rgpu_reply *out1,
                             const mp_buf *second, rgpu_reply *out2)
{
    memset(out1, 0, sizeof *out1);
    memset(out2, 0, sizeof *out2);
    out2->status = VK_ERROR_UNKNOWN;
    rgpu_lock();
    VkResult st = connect_locked();
    if (st != VK_SUCCESS) {
        out1->status = st;
        rgpu_unlock();
        return st;
    }
    uint32_t req1 = ++g.next_request;
    if (req1 == 0)
        req1 = ++g.next_request;
    uint32_t req2 = ++g.next_request;
    if (req2 == 0)
        req2 = ++g.next_request;
    int rc = send_message(RG_CALL, session, req1, first, NULL, 0, 0);
    if (rc == 0)
        rc = send_message(RG_CALL, session, req2, second, NULL, 0, 1);
    if (rc == -2) {
        out1->status = VK_ERROR_OUT_OF_HOST_MEMORY;
    } else if (rc != 0) {
        out1->status = VK_ERROR_DEVICE_LOST;
    } else {
        out1->status = wait_reply(req1, out1);
        if (g.state == 1)
            out2->status = wait_reply(req2, out2);
    }
    if (out1->status != VK_SUCCESS)
        rgpu_reply_free(out1);
    if (out2->status != VK_SUCCESS)
        rgpu_reply_free(out2);
    rgpu_unlock();
    return out1->status;
}

VkResult rgpu_control(const mp_buf *body, rgpu_reply *out)
{
    return request(RG_CONTROL, 0, body, NULL, 0, out);
}

VkResult rgpu_call(uint32_t session, const mp_buf *body, const void *bulk, size_t bulk_len,
                   rgpu_reply *out)
{
    VkResult st = request(RG_CALL, session, body, bulk, bulk_len, out);
    if (rgpu_log_level >= 2) {
        char fn[64];
        rgpu_body_fn(body, fn, sizeof fn);
        RGPU_TRACE("CALL %s (%zu bulk bytes) -> %d%s%s", fn, bulk_len, (int)st,
                   out->message[0] ? ": " : "", out->message);
    }
    VkResult def = rgpu_take_deferred(session);
    if (st == VK_SUCCESS && def != VK_SUCCESS) {
        rgpu_reply_free(out);
        out->status = def;
        return def;
    }
    return st;
}

VkResult rgpu_call_pair(uint32_t session, const mp_buf *first, rgpu_reply *out1,
                        const mp_buf *second, rgpu_reply *out2)
{
    VkResult st = request_pair(session, first, out1, second, out2);
    if (rgpu_log_level >= 2) {
        char fn1[64], fn2[64];
        rgpu_body_fn(first, fn1, sizeof fn1);
        rgpu_body_fn(second, fn2, sizeof fn2);
        RGPU_TRACE("CALL %s -> %d, pipelined CALL %s -> %d", fn1, (int)st, fn2,
                   (int)out2->status);
    }
    VkResult def = rgpu_take_deferred(session);
    if (st == VK_SUCCESS && def != VK_SUCCESS) {
        rgpu_reply_free(out1);
        out1->status = def;
        return def;
    }
    return st;
}

VkResult rgpu_batch(uint32_t session, const mp_buf *body, const void *bulk, size_t bulk_len)
{
    if (rgpu_log_level >= 2) {
        char fn[64];
        rgpu_body_fn(body, fn, sizeof fn);
        RGPU_TRACE("BATCH %s (%zu bulk bytes)", fn, bulk_len);
    }
    rgpu_lock();
    VkResult st = connect_locked();
    if (st == VK_SUCCESS) {
        int rc = send_message(RG_BATCH, session, 0, body, bulk, bulk_len, 0);
        st = rc == -2 ? VK_ERROR_OUT_OF_HOST_MEMORY : rc ? VK_ERROR_DEVICE_LOST : VK_SUCCESS;
    }
    rgpu_unlock();
    return st;
}

void rgpu_flush(void)
{
    rgpu_lock();
    if (g.state == 1 && g.pid == getpid())
        flush_locked(now_s() + g.timeout_s);
    rgpu_unlock();
}

__attribute__((destructor)) static void rgpu_transport_fini(void)
{
    /* Queued BATCH work (destroys, recorded command buffers) must reach the daemon before the
     * process exits. The loader also unloads the driver after the last vkDestroyInstance, and
     * may load it again: closing the connection then ends this process's sessions (the server
     * frees what they held) and the next load starts afresh. */
    if (g.state == 1 && g.pid == getpid() && fair_trylock(&g.mu) == 0) {
        flush_locked(now_s() + 5);
        rgpu_unlock();
    }
    if (g.fd >= 0 && g.pid == getpid())
        close(g.fd);
    g.fd = -1;
    mp_free(&g.out);
}
