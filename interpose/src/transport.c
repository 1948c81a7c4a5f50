/* The shim's one connection to the rgpu client daemon: a Unix socket speaking the frames of
 * docs/PROTOCOL.md. Calls from every application thread share it. Sending happens under one
 * (recursive) mutex; BATCH frames are buffered and written before the next request or when the
 * buffer fills. A thread waiting for its reply does not hold the mutex: one waiter at a time
 * reads frames and hands each reply to the thread that asked, so a long synchronisation in one
 * thread does not stop another from launching. Every wait is a poll() with a deadline, and once
 * the socket closes every call fails at once: an application must never hang on a lost daemon
 * or server. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
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
#include "rgpu_shim.h"

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
    CUresult status;
} deferred_err;

static struct {
    pthread_mutex_t mu;
    int fd;
    int state; /* 0 never tried, 1 connected, 2 no daemon, 3 lost */
    pid_t pid;
    uint32_t next_request;
    mp_buf out;
    deferred_err deferred[MAX_DEFERRED];
    int ndeferred;
    double timeout_s;
    pthread_cond_t cond;       /* a reply was handed over, or the reader stepped down */
    struct waiter *waiters;    /* requests sent and not answered yet */
    int reading;               /* a waiter is reading frames (outside the mutex) */
    int close_pending;         /* lost while a reader used the fd: the reader closes it */
    int co_open;               /* g.out ends with a coalesced BATCH frame more calls may join */
    size_t co_start;           /* ... its header's offset in g.out */
    uint32_t co_session;       /* ... its session */
    uint32_t co_count;         /* ... how many calls it holds */
} g = {.fd = -1};

/* One request waiting for its reply. */
typedef struct waiter {
    uint32_t request;
    rgpu_reply *out;
    int have_head;
    int done;
    struct waiter *next;
} waiter;

static __thread int lock_depth; /* this thread's hold count of the recursive mutex */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_once(void)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&g.mu, &a);
    pthread_mutexattr_destroy(&a);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g.cond, &ca);
    pthread_condattr_destroy(&ca);
    mp_init(&g.out);
    rgpu_log_init();
    const char *t = getenv("RGPU_CALL_TIMEOUT");
    g.timeout_s = t && atof(t) > 0 ? atof(t) : 600.0;
}

void rgpu_log_init(void)
{
    rgpu_log_level = rgpu_env_log_level();
}

/* Logging is decided before the first driver call (cudart resolves entry points before cuInit). */
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
    fprintf(stderr, "rgpu-cuda: %s\n", line);
}

void rgpu_lock(void)
{
    pthread_once(&g_once, init_once);
    pthread_mutex_lock(&g.mu);
    lock_depth++;
}

void rgpu_unlock(void)
{
    lock_depth--;
    pthread_mutex_unlock(&g.mu);
}

/* Give up every hold of the mutex (for a blocking read); returns how many to take back. */
static int release_all(void)
{
    int depth = lock_depth;
    for (int i = 0; i < depth; i++)
        rgpu_unlock();
    return depth;
}

static void reacquire(int depth)
{
    for (int i = 0; i < depth; i++)
        rgpu_lock();
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

/* Called with the mutex held. Every waiting request fails; a reader still inside a read on
 * the socket is woken by the shutdown and closes it, so its descriptor is never reused under
 * it. */
static void lost(const char *why)
{
    if (g.state == 1) {
        RGPU_DEBUG("connection to the rgpu daemon lost: %s", why);
        if (!rgpu_log_level)
            fprintf(stderr, "rgpu: lost the connection to the rgpu daemon (%s)\n", why);
    }
    if (g.fd >= 0) {
        if (g.reading) {
            shutdown(g.fd, SHUT_RDWR);
            g.close_pending = 1;
        } else {
            close(g.fd);
            g.fd = -1;
        }
    }
    g.state = 3;
    g.out.len = 0;
    g.co_open = 0;
    for (waiter *w = g.waiters; w; w = w->next) {
        if (!w->done) {
            w->done = 1;
            rgpu_reply_free(w->out);
            w->out->status = CUDA_ERROR_DEVICE_UNAVAILABLE;
        }
    }
    pthread_cond_broadcast(&g.cond);
}

/* ---- raw I/O ----------------------------------------------------------------------------- */

static int flush_locked(double deadline)
{
    if (g.fd < 0)
        return -1;
    const char *why = "?";
    g.co_open = 0;
    if (rgpu_flush_out(g.fd, &g.out, deadline, &why) == 0)
        return 0;
    lost(why);
    return -1;
}

/* Queue (small) or write (large) one message (rgpu_send_message). */
static int send_message(int kind, uint32_t session, uint32_t request, const mp_buf *body,
                        const uint8_t *bulk, size_t bulk_len, int flush)
{
    g.co_open = 0; /* later calls must not join a BATCH queued before this message */
    const char *why = "?";
    int rc = rgpu_send_message(g.fd, &g.out, BATCH_FLUSH_BYTES, kind, session, request, body,
                               bulk, bulk_len, flush, now_s() + g.timeout_s, &why);
    if (rc == -1)
        lost(why);
    return rc;
}

/* ---- errors ------------------------------------------------------------------------------ */

static CUresult map_error(const mp_doc *d, char *code, size_t code_cap, char *msg, size_t msg_cap)
{
    int cuda = mp_map_get(d, 0, "cuda");
    mp_get_str(d, mp_map_get(d, 0, "code"), code, code_cap);
    mp_get_str(d, mp_map_get(d, 0, "message"), msg, msg_cap);
    int64_t v;
    if (mp_get_i64(d, cuda, &v) == 0 && v > 0)
        return (CUresult)v;
    if (!strcmp(code, "server_lost"))
        return CUDA_ERROR_DEVICE_UNAVAILABLE;
    if (!strcmp(code, "unsupported"))
        return CUDA_ERROR_NOT_SUPPORTED;
    if (!strcmp(code, "unknown_session"))
        return CUDA_ERROR_INVALID_CONTEXT;
    if (!strcmp(code, "bad_call"))
        return CUDA_ERROR_INVALID_VALUE;
    if (!strcmp(code, "cancelled") || !strcmp(code, "daemon_shutdown"))
        return CUDA_ERROR_DEVICE_UNAVAILABLE;
    return CUDA_ERROR_UNKNOWN;
}

static void note_deferred(uint32_t session, CUresult st)
{
    for (int i = 0; i < g.ndeferred; i++)
        if (g.deferred[i].session == session)
            return; /* CUDA reports the first asynchronous error */
    if (g.ndeferred < MAX_DEFERRED)
        g.deferred[g.ndeferred++] = (deferred_err){session, st};
}

CUresult rgpu_take_deferred(uint32_t session)
{
    rgpu_lock();
    CUresult st = CUDA_SUCCESS;
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

/* One frame as read from the socket. */
typedef struct {
    int kind;
    unsigned flags;
    uint32_t session, request;
    uint8_t *body;
    uint32_t body_len;
    uint8_t *bulk;
    uint32_t bulk_len;
} frame;

static void frame_free(frame *f)
{
    free(f->body);
    free(f->bulk);
    f->body = f->bulk = NULL;
}

/* Read one whole frame; touches no shared state. */
static int read_frame(int fd, double deadline, frame *f, const char **why)
{
    uint8_t h[HEADER_SIZE];
    memset(f, 0, sizeof *f);
    if (rgpu_read_full(fd, h, HEADER_SIZE, deadline, why) != 0)
        return -1;
    rgpu_header hd;
    rgpu_get_header(h, &hd);
    f->kind = hd.kind;
    f->flags = hd.flags;
    f->session = hd.session;
    f->request = hd.request;
    f->body_len = hd.body_len;
    f->bulk_len = hd.bulk_len;
    if (!rgpu_header_ok(&hd)) {
        *why = "the daemon sent a malformed frame";
        return -1;
    }
    f->body = malloc(f->body_len ? f->body_len : 1);
    f->bulk = f->bulk_len ? malloc(f->bulk_len) : NULL;
    if (!f->body || (f->bulk_len && !f->bulk)) {
        frame_free(f);
        *why = "out of memory for a frame";
        return -1;
    }
    if (rgpu_read_full(fd, f->body, f->body_len, deadline, why) != 0 ||
        rgpu_read_full(fd, f->bulk, f->bulk_len, deadline, why) != 0) {
        frame_free(f);
        return -1;
    }
    return 0;
}

/* Hand a frame to the request it answers, or note it (deferred errors, pings). Mutex held. */
static void dispatch(frame *f)
{
    waiter *w = NULL;
    if (f->request && (f->flags & F_RESPONSE))
        for (w = g.waiters; w && w->request != f->request; w = w->next)
            ;
    if (!w) {
        if (f->kind == RG_ERROR) {
            mp_doc d;
            char code[48] = "", msg[256] = "";
            CUresult st = CUDA_ERROR_UNKNOWN;
            if (mp_decode(&d, f->body, f->body_len) == 0) {
                st = map_error(&d, code, sizeof code, msg, sizeof msg);
                mp_doc_free(&d);
            }
            RGPU_DEBUG("deferred error on session %u: %s: %s (CUresult %d)", f->session, code,
                       msg, (int)st);
            if (f->session)
                note_deferred(f->session, st);
            else
                lost("the daemon closed the connection");
        } else if (f->kind == RG_PING) {
            mp_buf nb;
            mp_init(&nb);
            mp_nil(&nb);
            send_message(RG_PONG, 0, f->request, &nb, NULL, 0, 1);
            mp_free(&nb);
        }
        return; /* anything else (a reply nobody waits for any more) is dropped */
    }
    if (w->done)
        return;
    rgpu_reply *out = w->out;
    if (f->bulk_len) {
        uint8_t *nb = realloc(out->bulk, out->bulk_len + f->bulk_len);
        if (!nb) {
            lost("out of memory for a reply");
            return;
        }
        memcpy(nb + out->bulk_len, f->bulk, f->bulk_len);
        out->bulk = nb;
        out->bulk_len += f->bulk_len;
    }
    if (!w->have_head) {
        w->have_head = 1;
        if (f->kind == RG_ERROR) {
            mp_doc d;
            if (mp_decode(&d, f->body, f->body_len) == 0) {
                out->status = map_error(&d, out->code, sizeof out->code, out->message,
                                        sizeof out->message);
                mp_doc_free(&d);
            } else {
                out->status = CUDA_ERROR_UNKNOWN;
            }
        } else if (mp_decode(&out->doc, f->body, f->body_len) == 0) {
            out->has_body = 1;
            out->status = CUDA_SUCCESS;
            out->doc_src = f->body; /* the doc's str/bin nodes point into it */
            f->body = NULL;
        } else {
            lost("the daemon sent an undecodable reply");
            return;
        }
    }
    if (!(f->flags & F_MORE))
        w->done = 1;
}

/* Before a thread sleeps on the socket for a reply, it polls it for up to RGPU_SPIN_US
 * microseconds (default 1000; 0: never), yielding the CPU between polls. As the CUDA driver's
 * default scheduling (CU_CTX_SCHED_AUTO / SPIN / YIELD) spins while it waits for the GPU: a
 * round trip of a few hundred microseconds then finds the thread still running instead of
 * waking it, which on a VM with idle CPUs is a large part of the round trip. A context made
 * with CU_CTX_SCHED_BLOCKING_SYNC sleeps at once, as it asked. */
#define SPIN_DEFAULT_US 1000
static int spin_us = -1;

static int spin_budget_us(void)
{
    if (spin_us < 0) {
        const char *e = getenv("RGPU_SPIN_US");
        char *end;
        long v = e && *e ? strtol(e, &end, 10) : SPIN_DEFAULT_US;
        if (e && *e && (*end || v < 0))
            v = SPIN_DEFAULT_US;
        spin_us = v > 100000 ? 100000 : (int)v;
    }
    rgpu_ctx *c = rgpu_current_ctx();
    if (c && (c->flags & CU_CTX_SCHED_MASK) == CU_CTX_SCHED_BLOCKING_SYNC)
        return 0;
    return spin_us;
}

static void spin_for_reply(int fd, int us)
{
    double end = now_s() + us / 1e6;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    do {
        if (poll(&p, 1, 0) != 0)
            return; /* readable, hung up, or an error the read will report */
        sched_yield();
    } while (now_s() < end);
}

/* Wait, with the mutex held (any depth), until `w` is answered: the first waiter to find no
 * reader becomes it and reads frames without the mutex; the others sleep until woken. */
static void wait_reply(waiter *w)
{
    double deadline = now_s() + g.timeout_s;
    while (!w->done) {
        if (g.state != 1) {
            lost("the connection is closed");
            break;
        }
        if (now_s() > deadline) {
            lost("no answer from the rgpu daemon in time");
            break;
        }
        if (!g.reading) {
            g.reading = 1;
            int fd = g.fd;
            int spin = spin_budget_us();
            int depth = release_all();
            if (spin > 0)
                spin_for_reply(fd, spin);
            frame f;
            const char *why = "?";
            int rc = read_frame(fd, deadline, &f, &why);
            reacquire(depth);
            g.reading = 0;
            if (g.close_pending) {
                close(fd);
                g.fd = -1;
                g.close_pending = 0;
            }
            if (rc != 0) {
                lost(why);
            } else {
                dispatch(&f);
                frame_free(&f);
            }
            pthread_cond_broadcast(&g.cond); /* a reply handed over, or the reader role free */
        } else {
            /* pthread_cond_timedwait releases one hold only: keep exactly one */
            int extra = lock_depth - 1;
            for (int i = 0; i < extra; i++)
                rgpu_unlock();
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += 1;
            lock_depth--;
            pthread_cond_timedwait(&g.cond, &g.mu, &ts);
            lock_depth++;
            reacquire(extra);
        }
    }
}


/* ---- connecting -------------------------------------------------------------------------- */

static CUresult connect_locked(void)
{
    if (g.state != 0 && g.pid != getpid()) { /* a forked child gets a connection of its own */
        if (g.fd >= 0)
            close(g.fd);
        g.fd = -1;
        g.state = 0;
        g.out.len = 0;
        g.co_open = 0;
        g.ndeferred = 0;
        g.waiters = NULL; /* the parent's waiting threads do not exist here */
        g.reading = 0;
        g.close_pending = 0;
    }
    if (g.state == 1)
        return CUDA_SUCCESS;
    if (g.state == 2)
        return CUDA_ERROR_NO_DEVICE;
    if (g.state == 3)
        return CUDA_ERROR_DEVICE_UNAVAILABLE;
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
        return CUDA_ERROR_NO_DEVICE;
    }
    g.fd = fd;
    g.state = 1;
    mp_buf b;
    mp_init(&b);
    rgpu_hello_body(&b);
    int rc = send_message(RG_HELLO, 0, 0, &b, NULL, 0, 1);
    mp_free(&b);
    if (rc != 0)
        return CUDA_ERROR_DEVICE_UNAVAILABLE;
    /* nobody else reads yet: the connection is not published until the handshake is over */
    frame f;
    const char *why = "?";
    if (read_frame(g.fd, now_s() + 30, &f, &why) != 0) {
        lost(why);
        return CUDA_ERROR_DEVICE_UNAVAILABLE;
    }
    int kind = f.kind;
    frame_free(&f);
    if (kind != RG_AUTH_OK) {
        lost("the daemon refused the handshake");
        return CUDA_ERROR_DEVICE_UNAVAILABLE;
    }
    RGPU_DEBUG("connected to the rgpu daemon at %s", path);
    return CUDA_SUCCESS;
}

CUresult rgpu_connect(void)
{
    rgpu_lock();
    CUresult st = connect_locked();
    rgpu_unlock();
    return st;
}

/* ---- requests ---------------------------------------------------------------------------- */

static void unregister_waiter(waiter *w)
{
    for (waiter **pp = &g.waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
}

/* Send a request and register its waiter (mutex held); on failure `w` is done with the
 * status set. Registered before sending: its reply may be read by another waiter at once. */
static void send_request(waiter *w, int kind, uint32_t session, const mp_buf *body,
                         const void *bulk, size_t bulk_len)
{
    CUresult st = connect_locked();
    if (st != CUDA_SUCCESS) {
        w->out->status = st;
        w->done = 1;
        return;
    }
    uint32_t req = ++g.next_request;
    if (req == 0)
        req = ++g.next_request;
    w->request = req;
    w->next = g.waiters;
    g.waiters = w;
    int rc = send_message(kind, session, req, body, bulk, bulk_len, 1);
    if (rc == -2) {
        w->out->status = CUDA_ERROR_OUT_OF_MEMORY;
        w->done = 1;
    } else if (rc != 0 && !w->done) {
        w->out->status = CUDA_ERROR_DEVICE_UNAVAILABLE;
        w->done = 1;
    }
}

/* Wait for a sent request's reply (mutex held) and unregister it; a failed reply is freed. */
static void await_request(waiter *w)
{
    if (!w->done)
        wait_reply(w);
    unregister_waiter(w);
    if (w->out->status != CUDA_SUCCESS)
        rgpu_reply_free(w->out);
}

static CUresult request(int kind, uint32_t session, const mp_buf *body, const void *bulk,
                        size_t bulk_len, rgpu_reply *out)
{
    memset(out, 0, sizeof *out);
    waiter w = {.out = out};
    rgpu_lock();
    send_request(&w, kind, session, body, bulk, bulk_len);
    await_request(&w);
    rgpu_unlock();
    return out->status;
}

CUresult rgpu_control(const mp_buf *body, rgpu_reply *out)
{
    return request(RG_CONTROL, 0, body, NULL, 0, out);
}

/* Deferred errors are the failures of calls that were queued without waiting (BATCH). CUDA
 * reports asynchronous errors at the calls that wait for or ask about the device's work, and a
 * call that did its work returns success: a cuMemAlloc answered with an earlier launch's error
 * would leak its allocation. So only these calls, which create nothing, report them; every
 * other call leaves the error pending for the next one of these. */
int rgpu_reports_deferred(const char *fn)
{
    static const char *const waits[] = {"cuCtxSynchronize", "cuStreamSynchronize",
                                        "cuStreamQuery", "cuEventSynchronize", "cuEventQuery"};
    for (size_t i = 0; i < sizeof waits / sizeof *waits; i++)
        if (!strcmp(fn, waits[i]))
            return 1;
    /* blocking copies (cuMemcpy, cuMemcpyDtoH_v2, cuMemcpy2D_v2 ...) wait for earlier work */
    return !strncmp(fn, "cuMemcpy", 8) && !strstr(fn, "Async");
}

/* The call's status, or the session's deferred error in place of a success when the call
 * reports them (`reports`). A reporting call that fails itself reports its own error (a sticky
 * one the deferred error led to, as a rule) and the deferred one is dropped; so is one pending
 * when the context is reset or destroyed, with the work that failed. */
static __thread int deferred_held;

void rgpu_deferred_hold(int hold)
{
    deferred_held = hold;
}

static CUresult deliver_deferred(uint32_t session, const char *fn, int reports, rgpu_reply *out)
{
    CUresult st = out->status;
    /* "not ready" is an answer, not a failure: an earlier error stays pending */
    reports = reports && !deferred_held && st != CUDA_ERROR_NOT_READY;
    if (!reports) {
        if (st == CUDA_SUCCESS &&
            (!strcmp(fn, "cuDevicePrimaryCtxReset_v2") || !strcmp(fn, "cuCtxDestroy_v2")))
            rgpu_take_deferred(session);
        return st;
    }
    CUresult def = rgpu_take_deferred(session);
    if (st == CUDA_SUCCESS && def != CUDA_SUCCESS) {
        rgpu_reply_free(out);
        out->status = st = def;
    }
    return st;
}

CUresult rgpu_call(uint32_t session, const mp_buf *body, const void *bulk, size_t bulk_len,
                   rgpu_reply *out)
{
    CUresult st = request(RG_CALL, session, body, bulk, bulk_len, out);
    char fn[64];
    rgpu_body_fn(body, fn, sizeof fn);
    RGPU_TRACE("CALL %s (%zu bulk bytes) -> %d%s%s", fn, bulk_len, (int)st,
               out->message[0] ? ": " : "", out->message);
    return deliver_deferred(session, fn, rgpu_reports_deferred(fn), out);
}

/* A CALL sent now and answered later: pipelined copies keep a few pieces in flight. */
struct rgpu_pending {
    waiter w;
    rgpu_reply out;
    int reports_deferred;
};

rgpu_pending *rgpu_call_start(uint32_t session, const mp_buf *body)
{
    rgpu_pending *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->w.out = &p->out;
    char fn[64];
    rgpu_body_fn(body, fn, sizeof fn);
    p->reports_deferred = rgpu_reports_deferred(fn);
    rgpu_lock();
    send_request(&p->w, RG_CALL, session, body, NULL, 0);
    rgpu_unlock();
    return p;
}

CUresult rgpu_call_finish(rgpu_pending *p, uint32_t session, rgpu_reply *out)
{
    if (!p) {
        memset(out, 0, sizeof *out);
        out->status = CUDA_ERROR_OUT_OF_MEMORY;
        return out->status;
    }
    rgpu_lock();
    await_request(&p->w);
    rgpu_unlock();
    *out = p->out;
    int reports = p->reports_deferred;
    free(p);
    return deliver_deferred(session, "", reports, out);
}

/* Calls queued back to back for one session (launches, memsets, event records) travel as one
 * BATCH frame whose body is an array of calls, `[[function, [args]], ...]`: the daemon relays
 * and the server queues one frame instead of one per call. The array's length is an array32
 * header patched as calls join. */
#define CO_MAX_CALLS 4096u
#define CO_MAX_BYTES (512u << 10)
static int queue_coalesced(uint32_t session, const mp_buf *body)
{
    if (g.co_open) {
        size_t blen = g.out.len - g.co_start - HEADER_SIZE;
        if (g.co_session != session || g.co_count >= CO_MAX_CALLS ||
            blen + body->len > CO_MAX_BYTES)
            g.co_open = 0;
    }
    if (!g.co_open) {
        long at = rgpu_out_reserve(&g.out, HEADER_SIZE + 5);
        if (at < 0)
            return -2;
        uint8_t *h = g.out.data + at;
        rgpu_put_header(h, RG_BATCH, 0, session, 0, 5, 0);
        h[HEADER_SIZE] = 0xdd; /* array32, count patched below */
        rgpu_put_be32(h + HEADER_SIZE + 1, 0);
        g.co_open = 1;
        g.co_start = (size_t)at;
        g.co_session = session;
        g.co_count = 0;
    }
    long at = rgpu_out_reserve(&g.out, body->len);
    if (at < 0)
        return -2;
    memcpy(g.out.data + at, body->data, body->len);
    uint8_t *h = g.out.data + g.co_start;
    g.co_count++;
    rgpu_put_be32(h + HEADER_SIZE + 1, g.co_count);
    rgpu_put_be32(h + 16, (uint32_t)(g.out.len - g.co_start - HEADER_SIZE));
    if (g.out.len >= BATCH_FLUSH_BYTES)
        return flush_locked(now_s() + g.timeout_s);
    return 0;
}

CUresult rgpu_batch(uint32_t session, const mp_buf *body, const void *bulk, size_t bulk_len)
{
    if (rgpu_log_level >= 2) {
        char fn[64];
        rgpu_body_fn(body, fn, sizeof fn);
        RGPU_TRACE("BATCH %s (%zu bulk bytes)", fn, bulk_len);
    }
    rgpu_lock();
    CUresult st = connect_locked();
    if (st == CUDA_SUCCESS) {
        /* only plain [function, [args]] calls coalesce (no bulk, no bulk index, no shm) */
        int plain = !bulk_len && !body->oom && body->len && body->data[0] == 0x92 &&
                    body->len <= (64u << 10);
        int rc = plain ? queue_coalesced(session, body)
                       : send_message(RG_BATCH, session, 0, body, bulk, bulk_len, 0);
        st = rc == -2 ? CUDA_ERROR_OUT_OF_MEMORY : rc ? CUDA_ERROR_DEVICE_UNAVAILABLE : CUDA_SUCCESS;
    }
    rgpu_unlock();
    return st;
}

__attribute__((destructor)) static void rgpu_transport_fini(void)
{
    /* Queued BATCH work (frees, launches) must reach the daemon before the process exits. */
    if (g.state == 1 && g.pid == getpid() && pthread_mutex_trylock(&g.mu) == 0) {
        flush_locked(now_s() + 5);
        pthread_mutex_unlock(&g.mu);
    }
}
