/* ROMix(N=1024, r=1) on LANES hashes at once, lane-sliced: vector k holds word k of every
 * hash, so Salsa20/8 runs as plain vector arithmetic with no shuffles. Each hash keeps its own
 * scratchpad (V + lane * 32K words, the RFC layout), so a random read in loop 2 touches only
 * that hash's two cache lines; blocks move between the two layouts by LANES x LANES
 * transposes. Included once per instruction set with LANES, LANE_FN and a target pragma. */

typedef uint32_t LANE_CAT(LANE_FN, _v) __attribute__((vector_size(LANES * 4)));
#define LV LANE_CAT(LANE_FN, _v)

#if LANES == 4
#define LANE_LIST(E, d) {E(d, 0), E(d, 1), E(d, 2), E(d, 3)}
#elif LANES == 8
#define LANE_LIST(E, d) {E(d, 0), E(d, 1), E(d, 2), E(d, 3), E(d, 4), E(d, 5), E(d, 6), E(d, 7)}
#elif LANES == 16
#define LANE_LIST(E, d)                                                                            \
    {E(d, 0), E(d, 1), E(d, 2),  E(d, 3),  E(d, 4),  E(d, 5),  E(d, 6),  E(d, 7),                  \
     E(d, 8), E(d, 9), E(d, 10), E(d, 11), E(d, 12), E(d, 13), E(d, 14), E(d, 15)}
#else
#error "LANES must be 4, 8 or 16"
#endif

/* Shuffle masks of the native two-source instructions, so that the compiler emits them and
 * not a generic permute that destroys a source: 32- and 64-bit unpacks within 128-bit blocks
 * (d = 0 low, 2 high), and 128-bit block selections for the last stages. */
#define M_UNPACK32(d, p) ((((p) % 4) & 1 ? LANES : 0) + 4 * ((p) / 4) + (((p) % 4) >> 1) + (d))
#define M_UNPACK64(d, p) ((((p) % 4) & 2 ? LANES : 0) + 4 * ((p) / 4) + ((p) % 4 & 1) + (d))
/* 16 lanes: blocks (0+d, 2+d) of a then of b; 8 lanes: block d of a then of b */
#define M_BLOCKS16(d, p) (((p) / 4 >= 2 ? LANES : 0) + 4 * (((p) / 4 & 1) * 2 + (d)) + (p) % 4)
#define M_BLOCKS8(d, p) (((p) / 4 == 1 ? LANES : 0) + 4 * (d) + (p) % 4)
#define SHUF(a, b, M, d) __builtin_shuffle((a), (b), (LV)LANE_LIST(M, d))

/* m[i] = row i (LANES words of hash i) -> m[k] = word k of every hash */
static inline void LANE_CAT(LANE_FN, _transpose)(LV *m)
{
    LV u[LANES], v[LANES];
    for (int p = 0; p < LANES / 2; p++) {
        u[2 * p] = SHUF(m[2 * p], m[2 * p + 1], M_UNPACK32, 0);
        u[2 * p + 1] = SHUF(m[2 * p], m[2 * p + 1], M_UNPACK32, 2);
    }
    /* v[4s + t], 128-bit block q: word 4q + t of rows 4s .. 4s+3 */
    for (int s = 0; s < LANES / 4; s++) {
        v[4 * s] = SHUF(u[4 * s], u[4 * s + 2], M_UNPACK64, 0);
        v[4 * s + 1] = SHUF(u[4 * s], u[4 * s + 2], M_UNPACK64, 2);
        v[4 * s + 2] = SHUF(u[4 * s + 1], u[4 * s + 3], M_UNPACK64, 0);
        v[4 * s + 3] = SHUF(u[4 * s + 1], u[4 * s + 3], M_UNPACK64, 2);
    }
    for (int t = 0; t < 4; t++) {
#if LANES == 4
        m[t] = v[t];
#elif LANES == 8
        m[t] = SHUF(v[t], v[4 + t], M_BLOCKS8, 0);
        m[4 + t] = SHUF(v[t], v[4 + t], M_BLOCKS8, 1);
#else
        LV p0 = SHUF(v[t], v[4 + t], M_BLOCKS16, 0), p1 = SHUF(v[t], v[4 + t], M_BLOCKS16, 1);
        LV p2 = SHUF(v[8 + t], v[12 + t], M_BLOCKS16, 0);
        LV p3 = SHUF(v[8 + t], v[12 + t], M_BLOCKS16, 1);
        m[t] = SHUF(p0, p2, M_BLOCKS16, 0);
        m[4 + t] = SHUF(p1, p3, M_BLOCKS16, 0);
        m[8 + t] = SHUF(p0, p2, M_BLOCKS16, 1);
        m[12 + t] = SHUF(p1, p3, M_BLOCKS16, 1);
#endif
    }
}

#define LANE_ROTL(v, k) (((v) << (k)) | ((v) >> (32 - (k))))

static inline void LANE_CAT(LANE_FN, _salsa)(LV *x) { SALSA20_8(LV, LANE_ROTL, x); }

/* word-major X (32 vectors) <-> lane-major records at rec[lane * stride + 0..31] */
static inline void LANE_CAT(LANE_FN, _to_records)(const LV *X, uint32_t *rec, size_t stride)
{
    for (unsigned blk = 0; blk < 32 / LANES; blk++) {
        LV m[LANES];
        memcpy(m, X + blk * LANES, sizeof m);
        LANE_CAT(LANE_FN, _transpose)(m);
        for (unsigned l = 0; l < LANES; l++)
            memcpy(rec + l * stride + blk * LANES, &m[l], sizeof(LV));
    }
}

void LANE_FN(uint32_t *B, uint32_t *V)
{
    LV X[32];
    const size_t vstride = (size_t)POW_N * 32; /* words of one hash's scratchpad */

    for (unsigned blk = 0; blk < 32 / LANES; blk++) {
        LV m[LANES];
        for (unsigned l = 0; l < LANES; l++)
            memcpy(&m[l], B + l * 32 + blk * LANES, sizeof(LV));
        LANE_CAT(LANE_FN, _transpose)(m);
        memcpy(X + blk * LANES, m, sizeof m);
    }

    for (unsigned i = 0; i < POW_N; i++) {
        LANE_CAT(LANE_FN, _to_records)(X, V + i * 32, vstride);
        for (int k = 0; k < 16; k++)
            X[k] ^= X[16 + k];
        LANE_CAT(LANE_FN, _salsa)(X);
        for (int k = 0; k < 16; k++)
            X[16 + k] ^= X[k];
        LANE_CAT(LANE_FN, _salsa)(X + 16);
    }

    for (unsigned i = 0; i < POW_N; i++) {
        const uint32_t *src[LANES];
        for (unsigned l = 0; l < LANES; l++)
            src[l] = V + l * vstride + (size_t)(X[16][l] & (POW_N - 1)) * 32;
        for (unsigned blk = 0; blk < 32 / LANES; blk++) {
            LV m[LANES];
            for (unsigned l = 0; l < LANES; l++)
                memcpy(&m[l], src[l] + blk * LANES, sizeof(LV));
            LANE_CAT(LANE_FN, _transpose)(m);
            for (unsigned k = 0; k < LANES; k++)
                X[blk * LANES + k] ^= m[k];
        }
        for (int k = 0; k < 16; k++)
            X[k] ^= X[16 + k];
        LANE_CAT(LANE_FN, _salsa)(X);
        for (int k = 0; k < 16; k++)
            X[16 + k] ^= X[k];
        LANE_CAT(LANE_FN, _salsa)(X + 16);
    }

    LANE_CAT(LANE_FN, _to_records)(X, B, 32);
}

#undef LV
#undef LANE_LIST
#undef M_UNPACK32
#undef M_UNPACK64
#undef M_BLOCKS16
#undef M_BLOCKS8
#undef SHUF
#undef LANE_ROTL
