/* Portable scalar scrypt: ROMix for any N and r (general RFC 7914 scrypt) and the one-hash
 * N=1024, r=1 kernel that the portable backend uses. */
#include <stdlib.h>
#include <string.h>

#include "salsa.h"
#include "scrypt_core.h"
#include "sha256.h"

#define ROTL32(v, k) (((v) << (k)) | ((v) >> (32 - (k))))

static void salsa8_scalar(uint32_t x[16]) { SALSA20_8(uint32_t, ROTL32, x); }

/* BlockMix_{salsa20/8, r}: B (2r blocks of 16 words) -> Y, with the even/odd reordering. */
static void blockmix(const uint32_t *B, uint32_t *Y, uint32_t r)
{
    uint32_t X[16];
    memcpy(X, B + (2 * r - 1) * 16, sizeof X);
    for (uint32_t i = 0; i < 2 * r; i++) {
        for (int k = 0; k < 16; k++)
            X[k] ^= B[i * 16 + k];
        salsa8_scalar(X);
        /* even blocks go to the first half, odd ones to the second */
        memcpy(Y + ((i & 1) * r + i / 2) * 16, X, sizeof X);
    }
}

/* ROMix on one block of 32r words, V holds N * 32r words, T 32r words of scratch. */
static void romix_general(uint32_t *X, uint64_t N, uint32_t r, uint32_t *V, uint32_t *T)
{
    size_t words = 32u * (size_t)r;
    for (uint64_t i = 0; i < N; i++) {
        memcpy(V + i * words, X, words * 4);
        blockmix(X, T, r);
        memcpy(X, T, words * 4);
    }
    for (uint64_t i = 0; i < N; i++) {
        uint64_t j = (X[(2 * r - 1) * 16] | ((uint64_t)X[(2 * r - 1) * 16 + 1] << 32)) & (N - 1);
        const uint32_t *v = V + j * words;
        for (size_t k = 0; k < words; k++)
            X[k] ^= v[k];
        blockmix(X, T, r);
        memcpy(X, T, words * 4);
    }
}

void romix_scalar(uint32_t *B, uint32_t *V)
{
    uint32_t T[32];
    romix_general(B, POW_N, 1, V, T);
}

int scrypt_general(const uint8_t *pw, size_t pwlen, const uint8_t *salt, size_t saltlen,
                   uint64_t N, uint32_t r, uint32_t p, uint8_t *out, size_t dklen)
{
    /* every size must fit a size_t, which is 32 bits on the armhf board */
    size_t block, blen, xlen, vlen;
    if (__builtin_mul_overflow((size_t)128, r, &block) || __builtin_mul_overflow(block, p, &blen) ||
        __builtin_mul_overflow(block, 2, &xlen) || __builtin_mul_overflow(block, N, &vlen))
        return -1;
    uint8_t *Bb = malloc(blen);
    uint32_t *X = malloc(xlen);
    uint32_t *V = malloc(vlen);
    if (Bb == NULL || X == NULL || V == NULL) {
        free(Bb);
        free(X);
        free(V);
        return -1;
    }
    pbkdf2_sha256(pw, pwlen, salt, saltlen, 1, Bb, blen);
    for (uint32_t i = 0; i < p; i++) {
        uint8_t *bi = Bb + i * block;
        for (size_t k = 0; k < 32u * r; k++)
            X[k] = load_le32(bi + 4 * k);
        romix_general(X, N, r, V, X + 32u * r);
        for (size_t k = 0; k < 32u * r; k++)
            store_le32(bi + 4 * k, X[k]);
    }
    pbkdf2_sha256(pw, pwlen, Bb, blen, 1, out, dklen);
    free(Bb);
    free(X);
    free(V);
    return 0;
}
