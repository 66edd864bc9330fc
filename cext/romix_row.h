/* One-hash ROMix(N=1024, r=1) with each Salsa20/8 state in four 4-word vectors, laid out on
 * diagonals so that column and row rounds are whole-vector operations with a rotation of the
 * vectors in between. Included once per instruction set (romix_x86.c, romix_arm.c) with
 * ROW_FN naming the function and a target pragma in force. */

#ifndef ROW_SHARED_DEFINED
#define ROW_SHARED_DEFINED
typedef uint32_t ROW_V __attribute__((vector_size(16)));

/* word index held at (vector v, element e): A=(0,5,10,15) B=(4,9,14,3) C=(8,13,2,7) D=(12,1,6,11) */
static const unsigned char ROW_DIAG[16] = {0, 5, 10, 15, 4, 9, 14, 3, 8, 13, 2, 7, 12, 1, 6, 11};
#endif

#define ROW_ROTL(v, k) (((v) << (k)) | ((v) >> (32 - (k))))

static inline void ROW_CAT(ROW_FN, _salsa)(ROW_V *x)
{
    const ROW_V m1230 = {1, 2, 3, 0}, m2301 = {2, 3, 0, 1}, m3012 = {3, 0, 1, 2};
    ROW_V a = x[0], b = x[1], c = x[2], d = x[3];
    for (int i = 0; i < 8; i += 2) {
        b ^= ROW_ROTL(a + d, 7);
        c ^= ROW_ROTL(b + a, 9);
        d ^= ROW_ROTL(c + b, 13);
        a ^= ROW_ROTL(d + c, 18);
        d = __builtin_shuffle(d, m1230);
        c = __builtin_shuffle(c, m2301);
        b = __builtin_shuffle(b, m3012);
        d ^= ROW_ROTL(a + b, 7);
        c ^= ROW_ROTL(d + a, 9);
        b ^= ROW_ROTL(c + d, 13);
        a ^= ROW_ROTL(b + c, 18);
        d = __builtin_shuffle(d, m3012);
        c = __builtin_shuffle(c, m2301);
        b = __builtin_shuffle(b, m1230);
    }
    x[0] += a;
    x[1] += b;
    x[2] += c;
    x[3] += d;
}

static inline void ROW_CAT(ROW_FN, _blockmix)(ROW_V *x)
{
    for (int k = 0; k < 4; k++)
        x[k] ^= x[4 + k];
    ROW_CAT(ROW_FN, _salsa)(x);
    for (int k = 0; k < 4; k++)
        x[4 + k] ^= x[k];
    ROW_CAT(ROW_FN, _salsa)(x + 4);
}

void ROW_FN(uint32_t *B, uint32_t *V)
{
    ROW_V x[8];
    uint32_t w[32];
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 16; i++)
            w[h * 16 + i] = B[h * 16 + ROW_DIAG[i]];
    memcpy(x, w, sizeof x);
    for (unsigned i = 0; i < POW_N; i++) {
        memcpy(V + i * 32, x, sizeof x);
        ROW_CAT(ROW_FN, _blockmix)(x);
    }
    for (unsigned i = 0; i < POW_N; i++) {
        unsigned j = x[4][0] & (POW_N - 1);
        ROW_V v[8];
        memcpy(v, V + j * 32, sizeof v);
        for (int k = 0; k < 8; k++)
            x[k] ^= v[k];
        ROW_CAT(ROW_FN, _blockmix)(x);
    }
    memcpy(w, x, sizeof w);
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 16; i++)
            B[h * 16 + ROW_DIAG[i]] = w[h * 16 + i];
}

#undef ROW_ROTL
