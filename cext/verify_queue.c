/* The verification queue: see verify_queue.h. One mutex guards both lists; a hash runs outside
 * it. The pipe carries at most one byte: a thread writes it (flag `signalled`) when the first
 * result of a batch arrives, or with lazy_ns when an urgent one arrives or the batch's first
 * result has waited lazy_ns (`due_ns`; an idle thread sleeps until then). vq_take empties the
 * pipe and clears both under the same mutex, so a result never waits past its due time. */
#define _GNU_SOURCE /* syscall(SYS_gettid) */

#include "verify_queue.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

typedef struct {
    uint64_t tag;
    romix_fn one;
    uint8_t header[80];
    uint8_t urgent[32]; /* little-endian target; meaningful when has_urgent */
    int has_urgent;
} vq_item;

struct verify_queue {
    pthread_mutex_t mu;
    pthread_cond_t work;
    vq_item *ring; /* capacity a power of two; head is the oldest */
    size_t cap, head, count;
    vq_result *done;
    size_t done_len, done_cap;
    size_t hashing; /* taken by a thread, result not yet appended */
    int closing, signalled;
    int64_t lazy_ns, due_ns; /* due_ns: CLOCK_MONOTONIC time to wake the loop at, 0: none */
    int rfd, wfd;
    unsigned nthreads;
    pthread_t threads[VQ_MAX_THREADS];
};

static int set_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    int fd_fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fd_fl < 0)
        return -1;
    if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, fd_fl | FD_CLOEXEC) < 0)
        return -1;
    return 0;
}

static int append_result(verify_queue *q, uint64_t tag, const uint8_t hash[32])
{
    if (q->done_len == q->done_cap) {
        size_t ncap = q->done_cap ? q->done_cap * 2 : 16;
        vq_result *n = realloc(q->done, ncap * sizeof *n);
        if (n == NULL)
            return -1;
        q->done = n;
        q->done_cap = ncap;
    }
    q->done[q->done_len].tag = tag;
    memcpy(q->done[q->done_len].hash, hash, 32);
    q->done_len++;
    return 0;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* hash <= target, both 256-bit little-endian */
static int meets(const uint8_t hash[32], const uint8_t target[32])
{
    for (int i = 31; i >= 0; i--)
        if (hash[i] != target[i])
            return hash[i] < target[i];
    return 1;
}

/* Under the mutex: make the pipe readable (results wait). */
static void wake_loop(verify_queue *q)
{
    static const uint8_t one = 1;
    /* the pipe holds at most this byte, so the write cannot block or fail for room */
    if (!q->signalled && write(q->wfd, &one, 1) == 1)
        q->signalled = 1;
    q->due_ns = 0;
}

/* Under the mutex, with no header queued: sleep until work, closing, or the due time. */
static void idle_wait(verify_queue *q)
{
    if (q->due_ns == 0 || q->signalled || q->done_len == 0) {
        pthread_cond_wait(&q->work, &q->mu);
        return;
    }
    struct timespec ts = {.tv_sec = (time_t)(q->due_ns / 1000000000),
                          .tv_nsec = (long)(q->due_ns % 1000000000)};
    if (pthread_cond_timedwait(&q->work, &q->mu, &ts) == ETIMEDOUT && q->due_ns != 0 &&
        now_ns() >= q->due_ns && q->done_len != 0)
        wake_loop(q);
}

static void *worker(void *arg)
{
    verify_queue *q = arg;
#if defined(__linux__)
    /* Below the event loop's priority: a hash (0.2 ms here, ~2.5 ms on the board's Cortex-A8)
     * woken by a nonce must not preempt the loop as a notify comes in; it runs when the loop
     * waits, which at any real rate is nearly always. On Linux, nice is per thread. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), VQ_NICE);
#endif
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->closing && q->count == 0)
            idle_wait(q);
        if (q->closing)
            break;
        vq_item it = q->ring[q->head];
        q->head = (q->head + 1) & (q->cap - 1);
        q->count--;
        q->hashing++;
        pthread_mutex_unlock(&q->mu);

        uint8_t out[32];
        uint32_t *V = thread_scratch((size_t)POW_N * 128);
        if (V != NULL)
            pow_hash_with(it.one, V, it.header, out);
        else
            memset(out, 0xff, sizeof out); /* no memory: a hash no target accepts */

        pthread_mutex_lock(&q->mu);
        q->hashing--;
        if (append_result(q, it.tag, out) == 0 && !q->signalled) {
            if (q->lazy_ns == 0 || (it.has_urgent && meets(out, it.urgent)))
                wake_loop(q);
            else if (q->due_ns == 0)
                q->due_ns = now_ns() + q->lazy_ns;
            else if (now_ns() >= q->due_ns) /* overdue while headers kept this thread busy */
                wake_loop(q);
        }
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

verify_queue *vq_open(unsigned threads, int64_t lazy_ns)
{
    if (threads < 1 || threads > VQ_MAX_THREADS) {
        errno = EINVAL;
        return NULL;
    }
    verify_queue *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    int fds[2];
    if (pipe(fds) < 0) {
        free(q);
        return NULL;
    }
    q->rfd = fds[0];
    q->wfd = fds[1];
    if (set_flags(q->rfd) < 0 || set_flags(q->wfd) < 0 || pthread_mutex_init(&q->mu, NULL) != 0) {
        int e = errno;
        close(q->rfd);
        close(q->wfd);
        free(q);
        errno = e;
        return NULL;
    }
    q->lazy_ns = lazy_ns > 0 ? lazy_ns : 0;
    pthread_condattr_t ca;
    int cond_rc = pthread_condattr_init(&ca);
    if (cond_rc == 0) {
        cond_rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* due_ns is monotonic */
        if (cond_rc == 0)
            cond_rc = pthread_cond_init(&q->work, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (cond_rc != 0) {
        pthread_mutex_destroy(&q->mu);
        close(q->rfd);
        close(q->wfd);
        free(q);
        errno = ENOMEM;
        return NULL;
    }
    for (unsigned i = 0; i < threads; i++) {
        int rc = pthread_create(&q->threads[i], NULL, worker, q);
        if (rc != 0) {
            q->nthreads = i;
            vq_close(q);
            errno = rc;
            return NULL;
        }
    }
    q->nthreads = threads;
    return q;
}

int vq_fd(const verify_queue *q) { return q->rfd; }

void vq_set_lazy(verify_queue *q, int64_t lazy_ns)
{
    pthread_mutex_lock(&q->mu);
    q->lazy_ns = lazy_ns > 0 ? lazy_ns : 0;
    if (q->lazy_ns == 0 && q->done_len != 0)
        wake_loop(q);
    pthread_mutex_unlock(&q->mu);
}

static int grow_ring(verify_queue *q)
{
    size_t ncap = q->cap ? q->cap * 2 : 64;
    vq_item *n = malloc(ncap * sizeof *n);
    if (n == NULL)
        return -1;
    for (size_t i = 0; i < q->count; i++) /* unwrap: the oldest first */
        n[i] = q->ring[(q->head + i) & (q->cap - 1)];
    free(q->ring);
    q->ring = n;
    q->cap = ncap;
    q->head = 0;
    return 0;
}

int vq_submit(verify_queue *q, uint64_t tag, const uint8_t header[80], romix_fn one,
              const uint8_t *urgent)
{
    int err = 0;
    pthread_mutex_lock(&q->mu);
    if (q->closing)
        err = EPIPE;
    else if (q->count + q->hashing + q->done_len >= VQ_MAX_PENDING)
        err = ENOBUFS;
    else if (q->count == q->cap && grow_ring(q) < 0)
        err = ENOMEM;
    if (err == 0) {
        vq_item *it = &q->ring[(q->head + q->count) & (q->cap - 1)];
        it->tag = tag;
        it->one = one;
        memcpy(it->header, header, 80);
        it->has_urgent = urgent != NULL;
        if (urgent != NULL)
            memcpy(it->urgent, urgent, 32);
        q->count++;
    }
    pthread_mutex_unlock(&q->mu);
    /* after the unlock: a thread woken while the mutex is held would block on it at once */
    if (err == 0)
        pthread_cond_signal(&q->work);
    if (err != 0) {
        errno = err;
        return -1;
    }
    return 0;
}

size_t vq_take(verify_queue *q, vq_result **out)
{
    pthread_mutex_lock(&q->mu);
    if (q->signalled) { /* the pipe holds one byte at most */
        uint8_t sink[16];
        while (read(q->rfd, sink, sizeof sink) > 0)
            ;
        q->signalled = 0;
    }
    q->due_ns = 0;
    size_t n = q->done_len;
    *out = n ? q->done : NULL;
    if (n) {
        q->done = NULL;
        q->done_len = q->done_cap = 0;
    }
    pthread_mutex_unlock(&q->mu);
    return n;
}

size_t vq_pending(verify_queue *q)
{
    pthread_mutex_lock(&q->mu);
    size_t n = q->count + q->hashing + q->done_len;
    pthread_mutex_unlock(&q->mu);
    return n;
}

void vq_close(verify_queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->closing = 1;
    pthread_cond_broadcast(&q->work);
    pthread_mutex_unlock(&q->mu);
    for (unsigned i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    pthread_cond_destroy(&q->work);
    pthread_mutex_destroy(&q->mu);
    close(q->rfd);
    close(q->wfd);
    free(q->ring);
    free(q->done);
    free(q);
}
