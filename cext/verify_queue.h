/* A queue of headers hashed by the core's own threads, which never touch Python.
 *
 * The agent verifies every chip nonce (one scrypt hash). Handing each one to a Python worker
 * thread cost more CPU than the hash itself (a future, a queue, the GIL taken twice, a wake-up of
 * the event loop), so the hashing threads live here: vq_submit copies the header in and wakes a
 * thread; the thread hashes and appends the result; a pipe becomes readable when results wait, so
 * an event loop watches vq_fd() and takes them all with vq_take(), or sooner when it wakes for
 * anything else. */
#ifndef DOGE_VERIFY_QUEUE_H
#define DOGE_VERIFY_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "scrypt_core.h"

#define VQ_MAX_THREADS 16u
#define VQ_MAX_PENDING 65536u /* headers waiting: about 20 s of a whole board at 100x */
#define VQ_NICE 10            /* the hashing threads' nice value (Linux: per thread) */

typedef struct {
    uint64_t tag;
    uint8_t hash[32];
} vq_result;

typedef struct verify_queue verify_queue;

/* `threads` hashing threads (1..VQ_MAX_THREADS), started here. NULL with errno set on failure.
 * lazy_ns 0: the pipe turns readable as soon as a result waits. lazy_ns > 0: a result that does
 * not meet its submit's urgent target waits up to lazy_ns for the loop to come by on its own
 * (vq_take at any wake-up), and the pipe turns readable only then: a nonce that is no share costs
 * no wake-up of its own. */
verify_queue *vq_open(unsigned threads, int64_t lazy_ns);

/* Changes lazy_ns (0: results waiting now make the pipe readable at once, as later ones will). */
void vq_set_lazy(verify_queue *q, int64_t lazy_ns);

/* The read end of the wake-up pipe: readable while results wait to be taken. */
int vq_fd(const verify_queue *q);

/* Queues header (copied) for hashing with kernel `one`. urgent: NULL, or a 32-byte little-endian
 * target: a hash at or under it makes the pipe readable at once, whatever lazy_ns says. 0, or -1
 * with errno ENOBUFS when VQ_MAX_PENDING headers wait, EPIPE after vq_close, ENOMEM. */
int vq_submit(verify_queue *q, uint64_t tag, const uint8_t header[80], romix_fn one,
              const uint8_t *urgent);

/* Moves every finished result out: *out gets a malloc'd array (free it) or NULL; returns its
 * length. Empties the pipe. Cheap when nothing waits (no system call): call it at any wake-up. */
size_t vq_take(verify_queue *q, vq_result **out);

/* Headers submitted and not yet taken as results (queued, being hashed, or finished). */
size_t vq_pending(verify_queue *q);

/* Stops the threads (a hash in progress finishes; queued headers are dropped), joins them,
 * closes the pipe and frees q. */
void vq_close(verify_queue *q);

#endif
