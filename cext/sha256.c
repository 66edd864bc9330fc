/* SHA-256 family; see sha256.h. Byte access goes through load/store helpers or memcpy so the
 * code stays strict-aliasing clean at -O3. */
#include "sha256.h"

#include <string.h>

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static const uint32_t IV256[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

static inline uint32_t ror32(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

void sha256_compress_portable(uint32_t state[8], const uint8_t block[64])
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = load_be32(block + 4 * i);
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) +
                      K256[i] + w[i];
        uint32_t t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

/* SHA-NI: the state is kept as ABEF / CDGH halves, two rounds per sha256rnds2. */
__attribute__((target("sha,sse4.1"))) void sha256_compress_shani(uint32_t state[8],
                                                                 const uint8_t block[64])
{
    const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    __m128i tmp = _mm_loadu_si128((const __m128i *)(const void *)&state[0]); /* DCBA */
    __m128i st1 = _mm_loadu_si128((const __m128i *)(const void *)&state[4]); /* HGFE */
    tmp = _mm_shuffle_epi32(tmp, 0xB1);                                    /* CDAB */
    st1 = _mm_shuffle_epi32(st1, 0x1B);                                    /* EFGH */
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8);                            /* ABEF */
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);                                 /* CDGH */
    const __m128i abef = st0, cdgh = st1;

    __m128i m[4];
    for (int i = 0; i < 4; i++)
        m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(block + 16 * i)),
                                bswap);
    for (int r = 0; r < 16; r++) {
        __m128i cur = m[r & 3];
        if (r >= 4) {
            /* schedule: w[4r..4r+3] from the four previous groups */
            __m128i a = m[(r - 4) & 3], b = m[(r - 3) & 3], c = m[(r - 2) & 3], d = m[(r - 1) & 3];
            __m128i t = _mm_sha256msg1_epu32(a, b);
            t = _mm_add_epi32(t, _mm_alignr_epi8(d, c, 4));
            cur = _mm_sha256msg2_epu32(t, d);
            m[r & 3] = cur;
        }
        __m128i k = _mm_loadu_si128((const __m128i *)(const void *)&K256[4 * r]);
        __m128i wk = _mm_add_epi32(cur, k);
        st1 = _mm_sha256rnds2_epu32(st1, st0, wk);
        st0 = _mm_sha256rnds2_epu32(st0, st1, _mm_shuffle_epi32(wk, 0x0E));
    }
    st0 = _mm_add_epi32(st0, abef);
    st1 = _mm_add_epi32(st1, cdgh);
    tmp = _mm_shuffle_epi32(st0, 0x1B);                 /* FEBA */
    st1 = _mm_shuffle_epi32(st1, 0xB1);                 /* DCHG */
    st0 = _mm_blend_epi16(tmp, st1, 0xF0);              /* DCBA */
    st1 = _mm_alignr_epi8(st1, tmp, 8);                 /* HGFE */
    _mm_storeu_si128((__m128i *)(void *)&state[0], st0);
    _mm_storeu_si128((__m128i *)(void *)&state[4], st1);
}

static int cpu_has_shani(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3))
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b >> 29) & 1;
}
#endif

sha256_compress_fn sha256_compress = sha256_compress_portable;

void sha256_dispatch(int forced_portable)
{
    sha256_compress = sha256_compress_portable;
#if defined(__x86_64__)
    if (!forced_portable && cpu_has_shani())
        sha256_compress = sha256_compress_shani;
#else
    (void)forced_portable;
#endif
}

const char *sha256_impl(void)
{
#if defined(__x86_64__)
    if (sha256_compress == sha256_compress_shani)
        return "sha-ni";
#endif
    return "portable";
}

void sha256_init(uint32_t state[8]) { memcpy(state, IV256, sizeof IV256); }

void sha256_store(const uint32_t state[8], uint8_t out[32])
{
    for (int i = 0; i < 8; i++)
        store_be32(out + 4 * i, state[i]);
}

/* Hashes m1 || m2 on top of a state that has already absorbed `done` bytes (a multiple of 64). */
static void sha256_finish2(uint32_t st[8], uint64_t done, const uint8_t *m1, size_t l1,
                           const uint8_t *m2, size_t l2, uint8_t out[32])
{
    uint8_t buf[64];
    size_t fill = 0;
    uint64_t total = done + l1 + l2;
    const uint8_t *parts[2] = {m1, m2};
    size_t lens[2] = {l1, l2};
    for (int p = 0; p < 2; p++) {
        const uint8_t *m = parts[p];
        size_t l = lens[p];
        while (l > 0) {
            if (fill == 0 && l >= 64) {
                sha256_compress(st, m);
                m += 64;
                l -= 64;
                continue;
            }
            size_t take = 64 - fill < l ? 64 - fill : l;
            memcpy(buf + fill, m, take);
            fill += take;
            m += take;
            l -= take;
            if (fill == 64) {
                sha256_compress(st, buf);
                fill = 0;
            }
        }
    }
    buf[fill++] = 0x80;
    if (fill > 56) {
        memset(buf + fill, 0, 64 - fill);
        sha256_compress(st, buf);
        fill = 0;
    }
    memset(buf + fill, 0, 56 - fill);
    uint64_t bits = total * 8;
    store_be32(buf + 56, (uint32_t)(bits >> 32));
    store_be32(buf + 60, (uint32_t)bits);
    sha256_compress(st, buf);
    sha256_store(st, out);
}

void sha256(const uint8_t *msg, size_t len, uint8_t out[32])
{
    uint32_t st[8];
    sha256_init(st);
    sha256_finish2(st, 0, msg, len, NULL, 0, out);
}

void hmac_sha256_setkey(hmac_sha256_key *k, const uint8_t *key, size_t keylen)
{
    uint8_t kb[64] = {0}, pad[64];
    if (keylen > 64)
        sha256(key, keylen, kb);
    else if (keylen > 0)
        memcpy(kb, key, keylen);
    for (int i = 0; i < 64; i++)
        pad[i] = kb[i] ^ 0x36;
    sha256_init(k->inner);
    sha256_compress(k->inner, pad);
    for (int i = 0; i < 64; i++)
        pad[i] = kb[i] ^ 0x5c;
    sha256_init(k->outer);
    sha256_compress(k->outer, pad);
}

void hmac_sha256_2(const hmac_sha256_key *k, const uint8_t *m1, size_t l1, const uint8_t *m2,
                   size_t l2, uint8_t out[32])
{
    uint32_t st[8];
    uint8_t ih[32];
    memcpy(st, k->inner, sizeof st);
    sha256_finish2(st, 64, m1, l1, m2, l2, ih);
    memcpy(st, k->outer, sizeof st);
    sha256_finish2(st, 64, ih, 32, NULL, 0, out);
}

void pbkdf2_sha256(const uint8_t *pw, size_t pwlen, const uint8_t *salt, size_t saltlen,
                   uint64_t c, uint8_t *out, size_t dklen)
{
    hmac_sha256_key key;
    hmac_sha256_setkey(&key, pw, pwlen);
    for (uint32_t i = 1; dklen > 0; i++) {
        uint8_t ctr[4], u[32], t[32];
        store_be32(ctr, i);
        hmac_sha256_2(&key, salt, saltlen, ctr, 4, u);
        memcpy(t, u, 32);
        for (uint64_t j = 1; j < c; j++) {
            hmac_sha256_2(&key, u, 32, NULL, 0, u);
            for (int b = 0; b < 32; b++)
                t[b] ^= u[b];
        }
        size_t take = dklen < 32 ? dklen : 32;
        memcpy(out, t, take);
        out += take;
        dklen -= take;
    }
}
