/* Frame I/O shared by the CUDA shim and the Vulkan ICD: the 24-byte header of docs/PROTOCOL.md,
 * blocking reads and writes with a deadline on the daemon's Unix socket, the daemon's socket
 * path and the HELLO both send. Each library compiles common/frame.c into itself, and neither
 * exports these names. Connection state (the descriptor, what to do when it is lost) stays
 * with each library's transport.c. */
#ifndef RGPU_FRAME_H
#define RGPU_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "rgpu_msgpack.h"

#pragma GCC visibility push(hidden)

#define RGPU_FRAME_MAGIC 0x5247
#define RGPU_FRAME_VERSION 1
#define RGPU_HEADER_SIZE 24
#define RGPU_MAX_BODY (8u << 20)
#define RGPU_MAX_BULK (8u << 20)
#define RGPU_F_COMPRESSED 0x01
#define RGPU_F_BULK 0x02
#define RGPU_F_RESPONSE 0x04
#define RGPU_F_ERROR 0x08
#define RGPU_F_MORE 0x20

typedef struct {
    unsigned magic, version;
    int kind;
    unsigned flags;
    uint32_t session, request, body_len, bulk_len;
} rgpu_header;

/* Monotonic seconds. */
double rgpu_now_s(void);

/* Wait until `fd` is ready for `ev` (POLLIN/POLLOUT) or hung up; -1 at the deadline or on an
 * error. */
int rgpu_wait_fd(int fd, short ev, double deadline);

/* Write all of iov (which is consumed); -1 with *why on a timeout or a failed socket. */
int rgpu_write_iov(int fd, struct iovec *iov, int n, double deadline, const char **why);

/* Read exactly n bytes; -1 with *why on a timeout, a closed connection or a failed socket. */
int rgpu_read_full(int fd, void *buf, size_t n, double deadline, const char **why);

void rgpu_put_header(uint8_t *h, int kind, unsigned flags, uint32_t session, uint32_t request,
                     uint32_t body_len, uint32_t bulk_len);
void rgpu_get_header(const uint8_t *h, rgpu_header *out);

/* A header a library can take: our magic and version, lengths within the limits, and no LZ4
 * (the daemon never compresses frames to applications). */
int rgpu_header_ok(const rgpu_header *h);

/* Big-endian 32-bit store (header fields, msgpack array32 counts). */
void rgpu_put_be32(uint8_t *p, uint32_t v);

/* Grow `out` by `need` bytes; returns the offset of the new bytes, or -1 when memory runs
 * out. */
long rgpu_out_reserve(mp_buf *out, size_t need);

/* Append one whole frame (header, body, bulk) to `out`; -1 when memory runs out. */
int rgpu_append_frame(mp_buf *out, int kind, unsigned flags, uint32_t session, uint32_t request,
                      const uint8_t *body, size_t body_len, const uint8_t *bulk,
                      size_t bulk_len);

/* Send one message: small frames are appended to `out` (written when `flush` is set or `out`
 * has grown past flush_at), a bulk segment of 64 KiB or more is written straight from the
 * caller's memory after what `out` holds, and bulk past RGPU_MAX_BULK is split into MORE
 * frames. 0; -2 when the body is too large or memory runs out; -1 with *why when the socket
 * failed or the deadline passed (`out` is then emptied). */
int rgpu_send_message(int fd, mp_buf *out, size_t flush_at, int kind, uint32_t session,
                      uint32_t request, const mp_buf *body, const uint8_t *bulk,
                      size_t bulk_len, int flush, double deadline, const char **why);

/* Write what `out` holds and empty it; -1 with *why as for rgpu_write_iov. */
int rgpu_flush_out(int fd, mp_buf *out, double deadline, const char **why);

/* $RGPU_SOCKET, else $XDG_RUNTIME_DIR/rgpu/rgpu.sock, else /tmp/rgpu-UID/rgpu.sock. */
void rgpu_socket_path(char *buf, size_t cap);

/* The log level RGPU_LOG asks for: 2 trace, 1 debug, 0 otherwise. */
int rgpu_env_log_level(void);

/* The HELLO an application sends the daemon: this process's name and pid, no auth. */
void rgpu_hello_body(mp_buf *b);

/* The function name of a CALL/BATCH body ("?" when there is none), for trace lines. */
void rgpu_body_fn(const mp_buf *body, char *fn, size_t cap);

#pragma GCC visibility pop

#endif
