/* scan: hash consecutive nonces of one header, `lanes` at a time, and keep those whose hash
 * meets the target. Called with the GIL released; allocates only when a hit is recorded. */
#include <stdlib.h>
#include <string.h>

#include "scrypt_core.h"

int hits_add(hits *h, uint32_t nonce, const uint8_t hash[32])
{
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        hit *items = realloc(h->items, cap * sizeof *items);
        if (items == NULL)
            return -1;
        h->items = items;
        h->cap = cap;
    }
    h->items[h->len].nonce = nonce;
    memcpy(h->items[h->len].hash, hash, 32);
    h->len++;
    return 0;
}

/* Runs with the GIL released. Returns 0, or -1 when out of memory. */
int scan_nonces(const scrypt_backend *be, const uint8_t hdr[80], uint32_t start,
                       uint64_t count, const uint8_t target[32], hits *out)
{
    const unsigned lanes = be->lanes;
    uint32_t *V = thread_scratch((size_t)lanes * POW_N * 128);
    if (V == NULL)
        return -1;
    pow_ctx ctx;
    pow_init(&ctx, hdr);
    uint32_t B[MAX_LANES * 32];
    pow_keys keys[MAX_LANES];
    for (uint64_t done = 0; done < count; done += lanes) {
        unsigned live = count - done < lanes ? (unsigned)(count - done) : lanes;
        for (unsigned l = 0; l < lanes; l++) /* dead lanes of the last batch hash a copy */
            pow_start(&ctx, hdr, (uint32_t)(start + done + (l < live ? l : 0)), B + 32 * l,
                      &keys[l]);
        be->romix(B, V);
        for (unsigned l = 0; l < live; l++) {
            uint8_t hash[32];
            pow_finish(&keys[l], B + 32 * l, hash);
            if (hash_le_meets(hash, target) && hits_add(out, (uint32_t)(start + done + l), hash))
                return -1;
        }
    }
    return 0;
}

