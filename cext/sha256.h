/* SHA-256, HMAC-SHA256 and PBKDF2-HMAC-SHA256 (FIPS 180-4, RFC 2104, RFC 8018).
 * sha256_compress() is dispatched at start-up: SHA-NI on x86-64 when the CPU has it,
 * portable C otherwise. */
#ifndef DOGE_SHA256_H
#define DOGE_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef void (*sha256_compress_fn)(uint32_t state[8], const uint8_t block[64]);

extern sha256_compress_fn sha256_compress;

void sha256_compress_portable(uint32_t state[8], const uint8_t block[64]);
#if defined(__x86_64__)
void sha256_compress_shani(uint32_t state[8], const uint8_t block[64]);
#endif
/* Picks the fastest compress function this CPU runs; forced_portable = 1 keeps the C one. */
void sha256_dispatch(int forced_portable);
const char *sha256_impl(void);

void sha256_init(uint32_t state[8]);
/* state -> 32 big-endian bytes */
void sha256_store(const uint32_t state[8], uint8_t out[32]);
void sha256(const uint8_t *msg, size_t len, uint8_t out[32]);

typedef struct {
    uint32_t inner[8]; /* state after the key block xor ipad */
    uint32_t outer[8]; /* state after the key block xor opad */
} hmac_sha256_key;

void hmac_sha256_setkey(hmac_sha256_key *k, const uint8_t *key, size_t keylen);
/* Streams msg1 || msg2 through the inner hash and finishes HMAC. */
void hmac_sha256_2(const hmac_sha256_key *k, const uint8_t *m1, size_t l1, const uint8_t *m2,
                   size_t l2, uint8_t out[32]);
void pbkdf2_sha256(const uint8_t *pw, size_t pwlen, const uint8_t *salt, size_t saltlen,
                   uint64_t c, uint8_t *out, size_t dklen);

static inline uint32_t load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline uint32_t load_le32(const uint8_t *p)
{
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}
static inline void store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

#endif
