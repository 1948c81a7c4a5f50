/* Frame I/O shared by the CUDA shim and the Vulkan ICD (rgpu_frame.h). */
#define _GNU_SOURCE
#include "rgpu_frame.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

double rgpu_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int rgpu_wait_fd(int fd, short ev, double deadline)
{
    for (;;) {
        double left = deadline - rgpu_now_s();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = ev};
        int ms = left > 1.0 ? 1000 : (int)(left * 1000) + 1;
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            continue;
        if (p.revents & (POLLERR | POLLNVAL))
            return -1;
        return 0; /* readable, writable, or hung up (the read or write will tell) */
    }
}

int rgpu_write_iov(int fd, struct iovec *iov, int n, double deadline, const char **why)
{
    while (n > 0) {
        if (fd < 0 || rgpu_wait_fd(fd, POLLOUT, deadline) != 0) {
            *why = "write timed out";
            return -1;
        }
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            *why = strerror(errno);
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

int rgpu_read_full(int fd, void *buf, size_t n, double deadline, const char **why)
{
    uint8_t *p = buf;
    while (n > 0) {
        if (rgpu_wait_fd(fd, POLLIN, deadline) != 0) {
            *why = "no answer from the rgpu daemon in time";
            return -1;
        }
        ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
        if (r == 0) {
            *why = "the daemon closed the connection";
            return -1;
        }
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            *why = "the socket failed";
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

void rgpu_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void rgpu_put_header(uint8_t *h, int kind, unsigned flags, uint32_t session, uint32_t request,
                     uint32_t body_len, uint32_t bulk_len)
{
    h[0] = RGPU_FRAME_MAGIC >> 8;
    h[1] = RGPU_FRAME_MAGIC & 0xff;
    h[2] = RGPU_FRAME_VERSION;
    h[3] = (uint8_t)kind;
    h[4] = (uint8_t)(flags >> 8);
    h[5] = (uint8_t)flags;
    h[6] = h[7] = 0;
    rgpu_put_be32(h + 8, session);
    rgpu_put_be32(h + 12, request);
    rgpu_put_be32(h + 16, body_len);
    rgpu_put_be32(h + 20, bulk_len);
}

void rgpu_get_header(const uint8_t *h, rgpu_header *out)
{
    out->magic = (unsigned)(h[0] << 8 | h[1]);
    out->version = h[2];
    out->kind = h[3];
    out->flags = (unsigned)(h[4] << 8 | h[5]);
    out->session = get_be32(h + 8);
    out->request = get_be32(h + 12);
    out->body_len = get_be32(h + 16);
    out->bulk_len = get_be32(h + 20);
}

int rgpu_header_ok(const rgpu_header *h)
{
    return h->magic == RGPU_FRAME_MAGIC && h->version == RGPU_FRAME_VERSION &&
           h->body_len <= RGPU_MAX_BODY && h->bulk_len <= RGPU_MAX_BULK &&
           !(h->flags & RGPU_F_COMPRESSED);
}

long rgpu_out_reserve(mp_buf *out, size_t need)
{
    if (out->len + need > out->cap) {
        size_t cap = out->cap ? out->cap : 4096;
        while (cap < out->len + need)
            cap *= 2;
        uint8_t *p = realloc(out->data, cap);
        if (!p)
            return -1;
        out->data = p;
        out->cap = cap;
    }
    size_t at = out->len;
    out->len += need;
    return (long)at;
}

int rgpu_append_frame(mp_buf *out, int kind, unsigned flags, uint32_t session, uint32_t request,
                      const uint8_t *body, size_t body_len, const uint8_t *bulk,
                      size_t bulk_len)
{
    long off = rgpu_out_reserve(out, RGPU_HEADER_SIZE + body_len + bulk_len);
    if (off < 0)
        return -1;
    uint8_t *at = out->data + off;
    rgpu_put_header(at, kind, flags, session, request, (uint32_t)body_len, (uint32_t)bulk_len);
    memcpy(at + RGPU_HEADER_SIZE, body, body_len);
    if (bulk_len)
        memcpy(at + RGPU_HEADER_SIZE + body_len, bulk, bulk_len);
    return 0;
}

int rgpu_flush_out(int fd, mp_buf *out, double deadline, const char **why)
{
    if (out->len == 0)
        return fd < 0 ? -1 : 0;
    struct iovec iov = {out->data, out->len};
    int rc = rgpu_write_iov(fd, &iov, 1, deadline, why);
    out->len = 0;
    return rc;
}

int rgpu_send_message(int fd, mp_buf *out, size_t flush_at, int kind, uint32_t session,
                      uint32_t request, const mp_buf *body, const uint8_t *bulk,
                      size_t bulk_len, int flush, double deadline, const char **why)
{
    if (body->oom || body->len > RGPU_MAX_BODY)
        return -2;
    size_t pos = 0;
    int first = 1;
    do {
        size_t chunk = bulk_len - pos > RGPU_MAX_BULK ? RGPU_MAX_BULK : bulk_len - pos;
        int more = pos + chunk < bulk_len;
        static const uint8_t nil = 0xc0; /* the body of every frame after the first */
        const uint8_t *b = first ? body->data : &nil;
        size_t blen = first ? body->len : 1;
        unsigned flags = (chunk ? RGPU_F_BULK : 0) | (more ? RGPU_F_MORE : 0);
        if (chunk < (64u << 10)) {
            if (rgpu_append_frame(out, kind, flags, session, request, b, blen, bulk + pos,
                                  chunk) != 0)
                return -2;
        } else {
            if (rgpu_flush_out(fd, out, deadline, why) != 0)
                return -1;
            uint8_t h[RGPU_HEADER_SIZE];
            rgpu_put_header(h, kind, flags, session, request, (uint32_t)blen, (uint32_t)chunk);
            struct iovec iov[3] = {{h, RGPU_HEADER_SIZE}, {(void *)b, blen},
                                   {(void *)(bulk + pos), chunk}};
            if (rgpu_write_iov(fd, iov, 3, deadline, why) != 0)
                return -1;
        }
        pos += chunk;
        first = 0;
    } while (pos < bulk_len);
    if (flush || out->len >= flush_at)
        return rgpu_flush_out(fd, out, deadline, why);
    return 0;
}

void rgpu_socket_path(char *buf, size_t cap)
{
    const char *s = getenv("RGPU_SOCKET");
    const char *x = getenv("XDG_RUNTIME_DIR");
    if (s && *s)
        snprintf(buf, cap, "%s", s);
    else if (x && *x)
        snprintf(buf, cap, "%s/rgpu/rgpu.sock", x);
    else
        snprintf(buf, cap, "/tmp/rgpu-%u/rgpu.sock", (unsigned)getuid());
}

int rgpu_env_log_level(void)
{
    const char *l = getenv("RGPU_LOG");
    if (!l)
        return 0;
    if (!strcmp(l, "trace"))
        return 2;
    return !strcmp(l, "debug") ? 1 : 0;
}

void rgpu_hello_body(mp_buf *b)
{
    uint8_t nonce[32];
    if (getrandom(nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce)
        memset(nonce, 0x5a, sizeof nonce);
    mp_map(b, 6);
    mp_str(b, "versions");
    mp_array(b, 1);
    mp_uint(b, RGPU_FRAME_VERSION);
    mp_str(b, "nonce");
    mp_bin(b, nonce, sizeof nonce);
    mp_str(b, "name");
    mp_str(b, program_invocation_short_name);
    mp_str(b, "pid");
    mp_uint(b, (uint64_t)getpid());
    mp_str(b, "features");
    mp_array(b, 0);
    mp_str(b, "auth");
    mp_bool(b, 0);
}

void rgpu_body_fn(const mp_buf *body, char *fn, size_t cap)
{
    mp_doc d;
    snprintf(fn, cap, "?");
    if (mp_decode(&d, body->data, body->len) == 0) {
        mp_get_str(&d, mp_array_at(&d, 0, 0), fn, cap);
        mp_doc_free(&d);
    }
}
