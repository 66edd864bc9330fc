/* The backend table and runtime CPU feature checks. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "scrypt_core.h"

#if defined(__arm__)
#include <sys/auxv.h>
#ifndef HWCAP_NEON
#define HWCAP_NEON (1 << 12)
#endif
#endif

static int always(void) { return 1; }

#if defined(__x86_64__)
/* __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0). */
static int has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
}
static int has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}
#endif

#if defined(__arm__)
static int has_neon(void) { return (getauxval(AT_HWCAP) & HWCAP_NEON) != 0; }
#endif

static const scrypt_backend BACKENDS[] = {
#if defined(__x86_64__)
    {"avx512", 16, romix_lanes_avx512, romix_row_avx512, has_avx512},
    {"avx2", 8, romix_lanes_avx2, romix_row_sse2, has_avx2},
    {"sse2", 4, romix_lanes_sse2, romix_row_sse2, always},
#endif
#if defined(__aarch64__)
    {"neon", 4, romix_lanes_neon, romix_row_neon, always},
#elif defined(__arm__)
    {"neon", 4, romix_lanes_neon, romix_row_neon, has_neon},
#endif
    {"portable", 1, romix_scalar, romix_scalar, always},
};

const scrypt_backend *scrypt_backends(size_t *count)
{
    *count = sizeof BACKENDS / sizeof BACKENDS[0];
    return BACKENDS;
}

/* Scratchpads live as long as their thread: allocating 2 MiB per call would cost page faults
 * on every hash batch. */
typedef struct {
    uint32_t *mem;
    size_t bytes;
} scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
    scratch *s = p;
    free(s->mem);
    free(s);
}

static void scratch_key_init(void) { (void)pthread_key_create(&scratch_key, scratch_free); }

uint32_t *thread_scratch(size_t bytes)
{
    (void)pthread_once(&scratch_once, scratch_key_init);
    scratch *s = pthread_getspecific(scratch_key);
    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL)
            return NULL;
        if (pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->bytes < bytes) {
        size_t rounded = (bytes + 63) & ~(size_t)63;
        void *mem = aligned_alloc(64, rounded);
        if (mem == NULL)
            return NULL;
        free(s->mem);
        s->mem = mem;
        s->bytes = rounded;
    }
    return s->mem;
}

int hash_le_meets(const uint8_t hash[32], const uint8_t target[32])
{
    for (int i = 31; i >= 0; i--) {
        if (hash[i] != target[i])
            return hash[i] < target[i];
    }
    return 1;
}
