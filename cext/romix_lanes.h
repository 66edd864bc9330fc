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

/* one transpose stage swaps the off-diagonal d x d blocks of each 2d x 2d block */
#define T_LO(d, c) (((c) & (d)) ? (LANES + (c) - (d)) : (c))
#define T_HI(d, c) (((c) & (d)) ? (LANES + (c)) : ((c) + (d)))
#define T_STAGE(m, d)                                                                              \
    do {                                                                                           \
        for (int i_ = 0; i_ < LANES; i_++)                                                         \
            if (!(i_ & (d))) {                                                                     \
                LV a_ = m[i_], b_ = m[i_ + (d)];                                                   \
                m[i_] = __builtin_shuffle(a_, b_, (LV)LANE_LIST(T_LO, d));                         \
                m[i_ + (d)] = __builtin_shuffle(a_, b_, (LV)LANE_LIST(T_HI, d));                   \
            }                                                                                      \
    } while (0)

static inline void LANE_CAT(LANE_FN, _transpose)(LV *m)
{
#if LANES >= 16
    T_STAGE(m, 8);
#endif
#if LANES >= 8
    T_STAGE(m, 4);
#endif
    T_STAGE(m, 2);
    T_STAGE(m, 1);
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
#undef T_LO
#undef T_HI
#undef T_STAGE
#undef LANE_ROTL
