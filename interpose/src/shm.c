/* Large host copies through a POSIX shared-memory region shared with the rgpu client daemon
 * (docs/PROTOCOL.md, "Shared-memory copies"). On the first copy of at least RGPU_SHM_MIN the
 * shim creates the region (RGPU_SHM_SIZE bytes, 64 MiB by default; RGPU_SHM=0 disables it),
 * has the daemon attach it, and unlinks its name at once: only the two mappings remain. A
 * copy then moves its data through the region, one region-sized chunk per CALL, instead of
 * as bulk segments on the socket; the daemon puts the bytes on the wire as the frame's bulk,
 * so nothing changes towards the server. If anything fails the shim uses socket bulk for
 * the rest of the process.
 *
 * Locking: one copy uses the region at a time. Its thread holds `mu` across the request and
 * the reply, and takes the connection mutex only inside (rgpu_simple_call), never the other
 * way round: no thread holding the connection mutex ever waits for `mu`. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rgpu_shim.h"

#define SHM_DEFAULT_SIZE ((size_t)64 << 20)
#define SHM_MIN_SIZE ((size_t)1 << 20)
#define SHM_MAX_SIZE ((size_t)1 << 30)

static struct {
    pthread_mutex_t mu;
    int state; /* 0 not tried, 1 attached, 2 off (disabled or failed) */
    pid_t pid;
    uint8_t *base;
    size_t size;
} s = {.mu = PTHREAD_MUTEX_INITIALIZER};

static size_t region_size(void)
{
    const char *e = getenv("RGPU_SHM_SIZE");
    size_t n = SHM_DEFAULT_SIZE;
    if (e && *e) {
        char *end = NULL;
        unsigned long long v = strtoull(e, &end, 10);
        if (end && (*end == 'k' || *end == 'K'))
            v <<= 10;
        else if (end && (*end == 'm' || *end == 'M'))
            v <<= 20;
        else if (end && (*end == 'g' || *end == 'G'))
            v <<= 30;
        n = (size_t)v;
    }
    if (n < SHM_MIN_SIZE)
        n = SHM_MIN_SIZE;
    if (n > SHM_MAX_SIZE)
        n = SHM_MAX_SIZE;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) / page * page;
}

/* Create, map and have the daemon attach the region; mu held. 0 on success, else why. */
static const char *attach(void)
{
    const char *off = getenv("RGPU_SHM");
    if (off && !strcmp(off, "0"))
        return "disabled by RGPU_SHM=0";
    size_t size = region_size();
    uint8_t rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return "no random bytes for the region name";
    char name[64];
    snprintf(name, sizeof name, "/rgpu-%u-%02x%02x%02x%02x%02x%02x%02x%02x", (unsigned)getpid(),
             rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        return "shm_open failed";
    const char *why = NULL;
    void *p = MAP_FAILED;
    /* fchmod: the umask must not matter, the daemon insists on 0600 */
    if (fchmod(fd, 0600) != 0 || ftruncate(fd, (off_t)size) != 0)
        why = "could not size the region";
    else if (posix_fallocate(fd, 0, (off_t)size) != 0) /* no SIGBUS later on a full tmpfs */
        why = "no room in /dev/shm for the region";
    else if ((p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED)
        why = "mmap failed";
    close(fd);
    if (!why) {
        mp_buf b;
        mp_init(&b);
        mp_map(&b, 3);
        mp_str(&b, "op");
        mp_str(&b, "shm_attach");
        mp_str(&b, "name");
        mp_str(&b, name + 1);
        mp_str(&b, "size");
        mp_uint(&b, size);
        rgpu_reply r;
        CUresult st = rgpu_control(&b, &r);
        mp_free(&b);
        if (st == CUDA_SUCCESS)
            rgpu_reply_free(&r);
        else
            why = r.message[0] ? "the daemon refused the region" : "shm_attach failed";
        if (why)
            RGPU_DEBUG("shm_attach: %s: %s", r.code, r.message);
    }
    shm_unlink(name); /* attached or not, the name goes: the mappings stay */
    if (why) {
        if (p != MAP_FAILED)
            munmap(p, size);
        return why;
    }
    s.base = p;
    s.size = size;
    RGPU_DEBUG("copies through a %zu MiB shared-memory region", size >> 20);
    return NULL;
}

int rgpu_shm_acquire(size_t n, uint8_t **base, size_t *size)
{
    if (n < RGPU_SHM_MIN)
        return 0;
    pthread_mutex_lock(&s.mu);
    if (s.state != 0 && s.pid != getpid()) {
        /* a forked child: the inherited mapping is the parent's; make one of its own */
        if (s.base)
            munmap(s.base, s.size);
        s.base = NULL;
        s.state = 0;
    }
    if (s.state == 0) {
        s.pid = getpid();
        const char *why = attach();
        s.state = why ? 2 : 1;
        if (why)
            RGPU_DEBUG("large copies go as socket bulk: %s", why);
    }
    if (s.state != 1) {
        pthread_mutex_unlock(&s.mu);
        return 0;
    }
    *base = s.base;
    *size = s.size;
    return 1;
}

void rgpu_shm_release(void)
{
    pthread_mutex_unlock(&s.mu);
}

void rgpu_shm_body(mp_buf *b, const char *fn, uint32_t nargs)
{
    mp_init(b);
    mp_array(b, 4);
    mp_str(b, fn);
    mp_array(b, nargs);
}
