/* Internal interface of the scrypt core: backends, the header (PoW) path and general scrypt. */
#ifndef DOGE_SCRYPT_CORE_H
#define DOGE_SCRYPT_CORE_H

#include <stddef.h>
#include <stdint.h>

#define POW_N 1024u
#define BLOCK_WORDS 32u /* 128 bytes: one scrypt block at r = 1 */
#define MAX_LANES 16u

/* ROMix(N=1024, r=1) on `lanes` independent blocks B[l*32 .. l*32+31] (little-endian words,
 * the RFC 7914 order) in place, using V (lanes * 128 KiB, 64-byte aligned) as scratch. */
typedef void (*romix_fn)(uint32_t *B, uint32_t *V);

typedef struct {
    const char *name;
    unsigned lanes;      /* hashes per romix call */
    romix_fn romix;      /* lanes-wide kernel, used by scan() */
    romix_fn romix_one;  /* one-hash kernel, used by pow_hash() */
    int (*available)(void);
} scrypt_backend;

/* Backends this build knows, fastest first; the caller filters by available(). */
const scrypt_backend *scrypt_backends(size_t *count);

/* Kernels (romix_*.c) */
void romix_scalar(uint32_t *B, uint32_t *V);
#if defined(__x86_64__)
void romix_row_sse2(uint32_t *B, uint32_t *V);
void romix_row_avx512(uint32_t *B, uint32_t *V);
void romix_lanes_sse2(uint32_t *B, uint32_t *V);
void romix_lanes_avx2(uint32_t *B, uint32_t *V);
void romix_lanes_avx512(uint32_t *B, uint32_t *V);
#endif
#if defined(__arm__) || defined(__aarch64__)
void romix_row_neon(uint32_t *B, uint32_t *V);
void romix_lanes_neon(uint32_t *B, uint32_t *V);
#endif

/* The header path. pow_ctx holds what every nonce of one header shares. */
typedef struct {
    uint32_t mid[8];     /* SHA-256 state after header bytes 0..63 */
    uint8_t tail[16];    /* header bytes 64..79; bytes 12..15 are replaced by the nonce */
} pow_ctx;

typedef struct {
    uint32_t inner[8];
    uint32_t outer[8];
} pow_keys;

void pow_init(pow_ctx *ctx, const uint8_t header[80]);
/* PBKDF2-HMAC-SHA256(P = S = header with `nonce`, c = 1, 128 bytes) as 32 LE words; keys
 * receives the HMAC states for pow_finish. */
void pow_start(const pow_ctx *ctx, const uint8_t header[80], uint32_t nonce, uint32_t B[32],
               pow_keys *keys);
/* PBKDF2-HMAC-SHA256(P = header, S = ROMix output, c = 1, 32 bytes): the raw PoW hash. */
void pow_finish(const pow_keys *keys, const uint32_t B[32], uint8_t out[32]);

/* Whole scrypt(N=1024, r=1, p=1, 32) of one 80-byte header with a given kernel. */
void pow_hash_with(romix_fn one, uint32_t *V, const uint8_t header[80], uint8_t out[32]);

/* General RFC 7914 scrypt. Returns 0, or -1 when the scratch memory cannot be allocated. */
int scrypt_general(const uint8_t *pw, size_t pwlen, const uint8_t *salt, size_t saltlen,
                   uint64_t N, uint32_t r, uint32_t p, uint8_t *out, size_t dklen);

/* Per-thread scratch of at least `bytes`, 64-byte aligned, kept for the thread's life. */
uint32_t *thread_scratch(size_t bytes);

/* 1 when hash (32 bytes, read little-endian) <= target (32 bytes, little-endian). */
int hash_le_meets(const uint8_t hash[32], const uint8_t target[32]);

/* scan() results: grown on demand, freed by the caller with free(items) */
typedef struct {
    uint32_t nonce;
    uint8_t hash[32];
} hit;

typedef struct {
    hit *items;
    size_t len, cap;
} hits;

int hits_add(hits *h, uint32_t nonce, const uint8_t hash[32]);
/* Nonces start .. start+count-1 (wrapping at 2**32) of header; returns 0, or -1 when out of
 * memory. target is 32 little-endian bytes. */
int scan_nonces(const scrypt_backend *be, const uint8_t hdr[80], uint32_t start, uint64_t count,
                const uint8_t target[32], hits *out);

#endif
