/* The header path of scrypt(N=1024, r=1, p=1, 32): the password and the salt are the same
 * 80-byte header. Both PBKDF2 passes are unrolled into fixed SHA-256 blocks, and the state
 * after header bytes 0..63 (the part no nonce touches) is computed once per header. */
#include <string.h>

#include "scrypt_core.h"
#include "sha256.h"

static const uint32_t IV[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

void pow_init(pow_ctx *ctx, const uint8_t header[80])
{
    memcpy(ctx->mid, IV, sizeof IV);
    sha256_compress(ctx->mid, header);
    memcpy(ctx->tail, header + 64, 16);
}

/* a block holding `len` bytes already placed, padded for a message of `total` bytes */
static void pad_block(uint8_t blk[64], size_t len, uint64_t total)
{
    blk[len] = 0x80;
    memset(blk + len + 1, 0, 55 - len);
    store_be32(blk + 56, (uint32_t)((total * 8) >> 32));
    store_be32(blk + 60, (uint32_t)(total * 8));
}

/* outer HMAC hash of a 32-byte inner digest held as a state */
static void hmac_outer(const uint32_t outer[8], const uint32_t inner_state[8], uint8_t out[32])
{
    uint8_t blk[64];
    uint32_t st[8];
    sha256_store(inner_state, blk);
    pad_block(blk, 32, 64 + 32);
    memcpy(st, outer, sizeof st);
    sha256_compress(st, blk);
    sha256_store(st, out);
}

void pow_start(const pow_ctx *ctx, const uint8_t header[80], uint32_t nonce, uint32_t B[32],
               pow_keys *keys)
{
    uint8_t blk[64];
    uint32_t key[8];

    /* HMAC key = SHA-256(header), since the header is longer than a SHA-256 block */
    memcpy(blk, ctx->tail, 12);
    store_le32(blk + 12, nonce);
    pad_block(blk, 16, 80);
    memcpy(key, ctx->mid, sizeof key);
    sha256_compress(key, blk);

    uint8_t kb[32];
    sha256_store(key, kb);
    for (int i = 0; i < 32; i++)
        blk[i] = kb[i] ^ 0x36;
    memset(blk + 32, 0x36, 32);
    memcpy(keys->inner, IV, sizeof IV);
    sha256_compress(keys->inner, blk);
    for (int i = 0; i < 32; i++)
        blk[i] = kb[i] ^ 0x5c;
    memset(blk + 32, 0x5c, 32);
    memcpy(keys->outer, IV, sizeof IV);
    sha256_compress(keys->outer, blk);

    /* U_i = HMAC(header || INT(i)), i = 1..4; the first 64 header bytes are shared */
    uint32_t s1[8];
    memcpy(s1, keys->inner, sizeof s1);
    sha256_compress(s1, header);
    memcpy(blk, ctx->tail, 12);
    store_le32(blk + 12, nonce);
    pad_block(blk, 20, 64 + 84);
    for (uint32_t i = 1; i <= 4; i++) {
        uint32_t st[8];
        uint8_t t[32];
        memcpy(st, s1, sizeof st);
        store_be32(blk + 16, i);
        sha256_compress(st, blk);
        hmac_outer(keys->outer, st, t);
        for (int k = 0; k < 8; k++)
            B[(i - 1) * 8 + k] = load_le32(t + 4 * k);
    }
}

void pow_finish(const pow_keys *keys, const uint32_t B[32], uint8_t out[32])
{
    uint8_t blk[64];
    uint32_t st[8];
    memcpy(st, keys->inner, sizeof st);
    for (int half = 0; half < 2; half++) {
        for (int k = 0; k < 16; k++)
            store_le32(blk + 4 * k, B[half * 16 + k]);
        sha256_compress(st, blk);
    }
    store_be32(blk, 1);
    pad_block(blk, 4, 64 + 132);
    sha256_compress(st, blk);
    hmac_outer(keys->outer, st, out);
}

void pow_hash_with(romix_fn one, uint32_t *V, const uint8_t header[80], uint8_t out[32])
{
    pow_ctx ctx;
    pow_keys keys;
    uint32_t B[32];
    pow_init(&ctx, header);
    pow_start(&ctx, header, load_le32(header + 76), B, &keys);
    one(B, V);
    pow_finish(&keys, B, out);
}
